/**
 * Cluster drill over single promotions: while promotions run through the production topology (PostgreSQL,
 * Temporal one process per service, two workers, API and emulator as separate processes), a worker is killed
 * with -9 three times, the history service once, and PostgreSQL's connections are terminated once. Every device
 * must end on production, each promotion having run once and changed Azure once.
 */
import { reportUnexpectedExits, setEmulatorFaults, startDrillCluster, type DrillCluster } from './helpers/cluster';
import { runDrill, standardFaults } from './helpers/drill';
import { PromotionsWorkload } from './helpers/promotions';

let drill: DrillCluster | undefined;

beforeAll(async () => {
  drill = await startDrillCluster('promotions');
});
afterAll(async () => {
  await drill?.stop();
});

it('promotes every device exactly once while workers, the history service and PostgreSQL connections fail', async () => {
  // 300 ms on every Azure call keeps activities in flight on the workers when they are killed.
  await setEmulatorFaults(drill!, { latencyMs: 300 });
  const workload = new PromotionsWorkload(drill!, { count: 12, late: 3, staggerMs: 1_500, prefix: 'drill' });

  const events = await runDrill(drill!, workload, standardFaults());

  expect(events.map((e) => e.fault)).toEqual([
    'kill -9 a worker',
    'kill -9 the history service',
    'kill -9 a worker',
    "terminate PostgreSQL's connections",
    'kill -9 a worker',
  ]);
  for (const event of events) expect(event.inFlight).toBeGreaterThan(0);
  process.stdout.write(`[drill] activity attempts after the first: ${await workload.retriedActivities()}\n`);
  reportUnexpectedExits(drill!);
});
