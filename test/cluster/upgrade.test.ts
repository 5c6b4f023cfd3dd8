/**
 * Upgrade drill: promotions wait for their devices (offline) while the workers are replaced, one by one, by
 * workers of a new build deployed beside the running one (`npm run build -- --out-dir`); then the devices come
 * back and the promotions finish, on the new workers. Histories started by the old build must replay on the new
 * one: the replay suite guards that for every released version, and `patched()` or worker deployment versioning
 * carry incompatible changes.
 */
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { tsToMs } from '@temporalio/common/lib/time';
import { promotionStatusQuery, promotionWorkflowId } from '../../common/messages';
import { projectRoot } from '../../scripts/cluster/settings';
import { startDrillCluster, type DrillCluster } from './helpers/cluster';
import { waitUntil } from './helpers/drill';
import { PromotionsWorkload } from './helpers/promotions';

let drill: DrillCluster | undefined;

beforeAll(async () => {
  drill = await startDrillCluster('upgrade');
});
afterAll(async () => {
  await drill?.stop();
});

it('finishes waiting promotions on a new worker build deployed while they wait', async () => {
  const { cluster, client } = drill!;
  const started = Date.now();
  const mark = (what: string) =>
    process.stdout.write(`[drill upgrade] +${((Date.now() - started) / 1000).toFixed(1)}s ${what}\n`);
  const nextBuild = path.join(cluster.settings.dataDir, 'next-build');
  const build = spawnSync('npx', ['tsx', 'scripts/build.ts', '--out-dir', nextBuild], {
    cwd: projectRoot,
    encoding: 'utf8',
  });
  if (build.status !== 0) throw new Error(`the new build failed:\n${build.stdout}${build.stderr}`);
  mark(`new build in ${path.relative(projectRoot, nextBuild)}`);

  const workload = new PromotionsWorkload(drill!, { count: 4, late: 4, staggerMs: 0, prefix: 'upgrade' });
  const ids = ['upgrade-1', 'upgrade-2', 'upgrade-3', 'upgrade-4'];
  try {
    await workload.prepare();
    await workload.start();
    await waitUntil('every promotion waiting for its device', 60_000, async () => {
      const phases = await Promise.all(
        ids.map((id) => client.workflow.getHandle(promotionWorkflowId(id)).query(promotionStatusQuery)),
      );
      return phases.every((s) => s.phase === 'awaitingReconnection');
    });
    mark('4 promotions waiting for their devices');

    // Rolling deploy: a new worker polls before an old one is stopped (SIGTERM: it finishes what it holds).
    const oldWorkers = cluster.workers;
    const newIdentities = new Set<string>();
    for (const old of oldWorkers) {
      const next = await cluster.startWorker({ distDir: nextBuild, label: 'worker-next' });
      newIdentities.add(`${next.pid}@${os.hostname()}`);
      const stopping = Date.now();
      await old.stop();
      mark(`${next.name} polling; ${old.name} stopped in ${Date.now() - stopping} ms`);
    }
    const deployedAt = Date.now();
    expect(cluster.workers.map((w) => w.name).every((name) => name.startsWith('worker-next'))).toBe(true);
    expect(workload.inFlight()).toBe(4);

    await workload.release();
    await workload.settled(180_000);
    mark('devices back, promotions finished');
    await workload.verify();
    mark('verified');

    // Everything after the deploy ran on the new build.
    for (const id of ids) {
      const history = await client.workflow.getHandle(promotionWorkflowId(id)).fetchHistory();
      const afterDeploy = (history.events ?? []).filter((e) => tsToMs(e.eventTime) > deployedAt);
      const identities = afterDeploy
        .map(
          (e) =>
            e.workflowTaskCompletedEventAttributes?.identity ?? e.activityTaskStartedEventAttributes?.identity ?? null,
        )
        .filter((identity): identity is string => !!identity);
      expect(identities.length).toBeGreaterThan(0);
      for (const identity of identities) expect(newIdentities).toContain(identity);
    }
  } finally {
    await workload.dispose();
  }
});
