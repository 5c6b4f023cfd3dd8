/**
 * Cluster drill over one fleet operation: a 1,000-device revoke runs through the production topology while a
 * worker is killed with -9 three times, the history service once, and PostgreSQL's connections are terminated once.
 * Every device must end revoked, each written once in DPS and once in the hub, and the operation's counts exact.
 */
import { reportUnexpectedExits, setEmulatorFaults, startDrillCluster, type DrillCluster } from './helpers/cluster';
import { runDrill, standardFaults } from './helpers/drill';
import { FleetRevokeWorkload } from './helpers/fleet';

let drill: DrillCluster | undefined;

beforeAll(async () => {
  // S1 quotas scaled 20× (the emulator does not slow down for them): 1,000 devices a minute at most.
  drill = await startDrillCluster('fleet', { azureQuotas: JSON.stringify({ scale: 20 }) });
});
afterAll(async () => {
  await drill?.stop();
});

it('revokes 1,000 devices exactly once while workers, the history service and PostgreSQL connections fail', async () => {
  // 50 ms on every Azure call keeps batches in flight on the workers when they are killed.
  await setEmulatorFaults(drill!, { latencyMs: 50 });
  const workload = new FleetRevokeWorkload(drill!, { count: 1_000, ratePerMinute: 1_000, prefix: 'fleet-drill' });

  const events = await runDrill(drill!, workload, standardFaults(), { gapMs: 3_000 });

  expect(events.map((e) => e.fault)).toEqual([
    'kill -9 a worker',
    'kill -9 the history service',
    'kill -9 a worker',
    "terminate PostgreSQL's connections",
    'kill -9 a worker',
  ]);
  for (const event of events) expect(event.inFlight).toBeGreaterThan(0);
  reportUnexpectedExits(drill!);
});
