/**
 * What every measurement shares: scoped clean-up (whatever a measurement starts is stopped when it ends, fails or
 * times out), bounded concurrency, percentiles, memory readings, and the emulator set up as the tests do.
 */
import { randomBytes } from 'node:crypto';
import https from 'node:https';
import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type { EnrollmentGroup } from 'azure-iot-provisioning-service/dist/interfaces';
import { configureDps } from '../emulator/dps/runtime';
import { resetLimits } from '../emulator/limits/decide';
import { installAzureEndpointRouting } from '../common/azure-routing';
import { startEmulator, type RunningEmulator } from '../emulator/server';

export type Defer = (stop: () => unknown) => void;

const openScopes = new Set<Array<() => unknown>>();

async function runStops(stops: Array<() => unknown>): Promise<void> {
  for (const stop of stops.splice(0).reverse()) {
    try {
      await stop();
    } catch (err) {
      console.error(`clean-up failed: ${(err as Error).message ?? err}`);
    }
  }
}

/**
 * Runs `body` with a `defer` for its clean-ups, which run in reverse order when the body ends, throws, or
 * overruns `timeoutMs` (the body is then abandoned: its servers are stopped under it).
 */
export async function scoped<T>(label: string, timeoutMs: number, body: (defer: Defer) => Promise<T>): Promise<T> {
  const stops: Array<() => unknown> = [];
  openScopes.add(stops);
  let timer: NodeJS.Timeout | undefined;
  const overrun = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${label} did not finish within ${timeoutMs / 1000} s`)), timeoutMs);
  });
  try {
    return await Promise.race([body((stop) => stops.push(stop)), overrun]);
  } finally {
    clearTimeout(timer);
    await runStops(stops);
    openScopes.delete(stops);
  }
}

/** Stops whatever is still open (on SIGINT/SIGTERM). */
export async function stopAllScopes(): Promise<void> {
  for (const stops of openScopes) await runStops(stops);
}

/**
 * Calls `fn` for every item with at most `concurrency` calls in flight. A dozen lines rather than a new
 * dependency: the project's dependency list is not the bench's to change, and p-limit is only transitive here.
 */
export async function forEachConcurrently<T>(
  items: readonly T[],
  concurrency: number,
  fn: (item: T, index: number) => Promise<unknown>,
): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const index = next++;
      await fn(items[index], index);
    }
  });
  await Promise.all(lanes);
}

/** Seconds `fn` takes (monotonic clock). */
export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

/** Nearest-rank percentile (p in 0–100) of unsorted values. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1];
}

const gc = (globalThis as { gc?: () => void }).gc;
export const gcExposed = typeof gc === 'function';

/** Memory after a full collection when `--expose-gc` is on (twice: the first pass runs finalizers). */
export async function settledMemory(): Promise<NodeJS.MemoryUsage> {
  if (gc) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
    gc();
  }
  return process.memoryUsage();
}

/**
 * The in-process emulator, reached by the unchanged Azure SDKs through the endpoint routing, as
 * test/helpers/stack.ts sets it up: loopback only, quotas and faults off (so the emulator's own speed is
 * measured, not Azure's limits), and DPS answering `retry-after: 0` so device registrations poll at once.
 */
export async function startBenchEmulator(defer: Defer): Promise<RunningEmulator> {
  // Last clean-up: the DPS clients pool keep-alive sockets in the global agent under Azure host names, so the
  // next suite's emulator (same names, new port) would otherwise be handed a socket to this one, closed.
  defer(() => https.globalAgent.destroy());
  const emulator = await startEmulator({ controlPort: false, host: '127.0.0.1' });
  defer(() => emulator.stop());
  const uninstallRouting = installAzureEndpointRouting({ address: emulator.address, caPem: emulator.caPem });
  defer(uninstallRouting);
  resetLimits(emulator.state.limits);
  if (emulator.state.limits.quotas.enabled) throw new Error('emulator quotas must be off for the bench');
  configureDps(emulator.state.dps, { retryAfterSeconds: 0 });
  return emulator;
}

export function hubHost(emulator: RunningEmulator, name: 'test' | 'production'): string {
  const hub = emulator.state.hubs.get(name);
  if (!hub) throw new Error(`emulator has no hub ${name}`);
  return hub.hostName;
}

/** A symmetric-key enrollment group on the test hub (the group key is the bench's own; device keys derive from it). */
export async function enrollSymmetricKeyGroup(emulator: RunningEmulator, enrollmentGroupId: string): Promise<string> {
  const groupKey = randomBytes(64).toString('base64');
  const dps = ProvisioningServiceClient.fromConnectionString(emulator.connectionStrings.dps);
  await dps.createOrUpdateEnrollmentGroup({
    enrollmentGroupId,
    attestation: {
      type: 'symmetricKey',
      symmetricKey: { primaryKey: groupKey, secondaryKey: randomBytes(64).toString('base64') },
    },
    iotHubs: [hubHost(emulator, 'test')],
    allocationPolicy: 'hashed',
    provisioningStatus: 'enabled',
  } as unknown as EnrollmentGroup);
  return groupKey;
}
