/**
 * 1. Emulator registry throughput through the real azure-iothub Registry (HTTPS, SAS, the SDK's keep-alive
 * agent): create, get and delete of single devices, and bulk create of 100 devices per call.
 *
 * Target: Azure's identity registry quota on the top tier, S3, one unit: 5,000 operations/min = 83.3/s
 * (/work/shared/notes/azure-wire.md "Quotas"; the same figure as S1 with 50 units). With quotas off, a
 * rehearsal against the emulator must not be slower than the hub it stands in for. A bulk call is counted as
 * one registry operation, which is how the emulator's quota classifies it (emulator/limits/classify.ts); the notes give
 * 100 devices per bulk call as Azure's cap.
 */
import { Registry } from 'azure-iothub';
import type { RunningEmulator } from '../emulator/server';
import { forEachConcurrently, timed } from './harness';
import type { Measurement } from './report';

const S3_REGISTRY_OPS_PER_S = 5_000 / 60;
const TARGET_SOURCE = 'Azure S3 x1 unit, 5,000 registry ops/min';
const BULK_SIZE = 100;

export interface RegistryBenchOptions {
  ops: number;
  bulkCalls: number;
  concurrency: number;
}

export async function benchRegistry(emulator: RunningEmulator, options: RegistryBenchOptions): Promise<Measurement[]> {
  const registry = Registry.fromConnectionString(emulator.connectionStrings.hubs.test);
  const { ops, concurrency } = options;

  // Warm-up: open the agent's TLS connections (one per lane) and let the JIT see every route once.
  const warmIds = Array.from({ length: concurrency }, (_, i) => `bench-warm-${i}`);
  await forEachConcurrently(warmIds, concurrency, (id) => registry.create({ deviceId: id, status: 'enabled' }));
  await forEachConcurrently(warmIds, concurrency, (id) => registry.get(id));
  await forEachConcurrently(warmIds, concurrency, (id) => registry.delete(id));

  const ids = Array.from({ length: ops }, (_, i) => `bench-reg-${i}`);
  const single = async (name: string, call: (id: string) => Promise<unknown>): Promise<Measurement> => {
    const seconds = await timed(() => forEachConcurrently(ids, concurrency, call));
    return {
      name: `registry.${name}`,
      value: ops / seconds,
      unit: 'ops/s',
      better: 'higher',
      target: S3_REGISTRY_OPS_PER_S,
      targetSource: TARGET_SOURCE,
      details: { operations: ops, seconds, concurrency },
    };
  };
  const results = [
    await single('create', (id) => registry.create({ deviceId: id, status: 'enabled' })),
    await single('get', (id) => registry.get(id)),
    await single('delete', (id) => registry.delete(id)),
  ];

  const batches = Array.from({ length: options.bulkCalls }, (_, b) =>
    Array.from({ length: BULK_SIZE }, (_, i) => ({ deviceId: `bench-bulk-${b}-${i}`, status: 'enabled' as const })),
  );
  const bulkSeconds = await timed(() =>
    forEachConcurrently(batches, concurrency, async (batch) => {
      const { responseBody } = await registry.addDevices(batch);
      if (!responseBody.isSuccessful) throw new Error(`bulk create failed: ${JSON.stringify(responseBody.errors)}`);
    }),
  );
  const created = emulator.state.hubs.get('test')!.devices.size;
  if (created !== options.bulkCalls * BULK_SIZE) {
    throw new Error(`expected ${options.bulkCalls * BULK_SIZE} devices after bulk create, the hub has ${created}`);
  }
  const calls = options.bulkCalls / bulkSeconds;
  results.push({
    name: `registry.bulkCreate${BULK_SIZE}`,
    value: calls,
    unit: 'calls/s',
    better: 'higher',
    target: S3_REGISTRY_OPS_PER_S,
    targetSource: `${TARGET_SOURCE}, a bulk call as one op`,
    details: { calls: options.bulkCalls, devicesPerCall: BULK_SIZE, seconds: bulkSeconds, concurrency },
    note: `= ${Math.round(calls * BULK_SIZE)} devices/s`,
  });
  return results;
}
