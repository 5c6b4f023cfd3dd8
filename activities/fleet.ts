import type { Client } from '@temporalio/client';
import type { AzureClients } from './azure-clients';
import { AzureFailureTypes, azureCall, permanent } from './azure-errors';
import { FleetErrors, type FleetDevice, type FleetOperationRequest } from '../common/fleet';
import { chunkDevicesPage } from '../common/fleet-devices';
import { fleetQuota, type QuotasConfig } from '../common/quotas';

/** Devices asked of a closed chunk per query. */
const FAILED_PAGE = 1_000;

export function fleetActivities(clients: AzureClients, quotas: QuotasConfig, temporal?: Client) {
  return {
    /** See fleetQuota: the configured quotas' device rate for this operation over these hubs. */
    async fleetQuotaPlan(input: {
      operation: FleetOperationRequest['operation'];
      environments: string[];
    }): Promise<{ devicesPerMinute: number; binding: string; callsPerDevice: Record<string, number> }> {
      return fleetQuota(quotas, input.operation, input.environments);
    },

    /**
     * One page of a registry query, `SELECT * FROM devices WHERE <where>` on one hub: the devices a fleet operation
     * targets (DPS devices are registered under their registration id). A query Azure refuses is a named failure.
     */
    async hubQueryDevices(input: {
      environment: string;
      where: string;
      continuation?: string;
      pageSize: number;
    }): Promise<{ devices: FleetDevice[]; continuation?: string }> {
      const hub = clients.hubs.get(input.environment);
      if (!hub)
        throw permanent('UnknownEnvironment', `no IoT hub is configured for environment "${input.environment}"`);
      const query = hub.registry.createQuery(`SELECT * FROM devices WHERE ${input.where}`, input.pageSize);
      try {
        const page = await azureCall('query devices', () =>
          input.continuation ? query.next(input.continuation) : query.next(),
        );
        const devices = ((page.result ?? []) as Array<{ deviceId: string }>).map((d) => ({
          registrationId: d.deviceId,
          deviceId: d.deviceId,
        }));
        return { devices, continuation: query.continuationToken || undefined };
      } catch (err) {
        if ((err as { type?: string }).type === AzureFailureTypes.badRequest) {
          throw permanent(FleetErrors.invalidTargetQuery, `the hub refused the query: ${(err as Error).message}`);
        }
        throw err;
      }
    },

    /** The failed and timed-out devices of one chunk of an earlier fleet operation (for retry-failed). */
    async fleetFailedDevices(input: { chunkWorkflowId: string }): Promise<{ exists: boolean; devices: FleetDevice[] }> {
      if (!temporal) throw permanent('TemporalClientNotConfigured', 'the worker has no Temporal client for activities');
      const handle = temporal.workflow.getHandle(input.chunkWorkflowId);
      try {
        await handle.describe();
      } catch {
        return { exists: false, devices: [] };
      }
      // The chunk answers its devices by state, a page at a time (from its result once it has completed).
      const devices: FleetDevice[] = [];
      for (const state of ['failed', 'timedOut'] as const) {
        for (let offset = 0; ;) {
          const page = await chunkDevicesPage(temporal, input.chunkWorkflowId, { state, offset, limit: FAILED_PAGE });
          for (const r of page.devices) {
            devices.push({ registrationId: r.registrationId, ...(r.deviceId ? { deviceId: r.deviceId } : {}) });
          }
          offset += page.devices.length;
          if (!page.devices.length || offset >= page.total) break;
        }
      }
      return { exists: true, devices };
    },
  };
}
