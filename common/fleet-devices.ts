import type { Client } from '@temporalio/client';
import type { DeviceRecord, DeviceState } from './fleet';
import { fleetDevicesQuery } from './messages';

/** What a fleet chunk workflow returns once closed: its counts, and (since fleet v2) every device's record. */
export interface ChunkResult {
  devices?: DeviceRecord[];
}

/**
 * One page of a chunk's devices, filtered by state. A completed chunk answers from its result, which the server
 * holds: no worker needs to replay it (a busy or absent worker cannot slow the listing of a finished operation). A
 * running chunk, or one of the first release (its result held counts only), answers its devices query.
 */
export async function chunkDevicesPage(
  client: Client,
  chunkWorkflowId: string,
  options: { state?: DeviceState; offset: number; limit: number },
): Promise<{ devices: DeviceRecord[]; total: number }> {
  const handle = client.workflow.getHandle(chunkWorkflowId);
  const description = await handle.describe();
  if (description.status.name === 'COMPLETED') {
    const result = (await client.workflow.getHandle(chunkWorkflowId, description.runId).result()) as ChunkResult;
    if (Array.isArray(result?.devices)) {
      const matching = options.state ? result.devices.filter((r) => r.state === options.state) : result.devices;
      return { devices: matching.slice(options.offset, options.offset + options.limit), total: matching.length };
    }
  }
  return client.workflow
    .getHandle(chunkWorkflowId, description.runId)
    .query(fleetDevicesQuery, { state: options.state, offset: options.offset, limit: options.limit });
}
