import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { DeterminismViolationError } from '@temporalio/workflow';
import { Worker } from '@temporalio/worker';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { loadWorkflowBundle } from '../worker/worker';
import { historiesDir, workflowIdFile } from './helpers/histories';

/** Recorded histories (test/histories, from real end-to-end runs) must replay on the current workflow code. */
async function recorded() {
  const files = (await readdir(historiesDir)).filter((f) => f.endsWith('.json')).sort();
  return Promise.all(
    files.map(async (file) => ({
      name: path.basename(file, '.json'),
      history: historyFromJSON(JSON.parse(await readFile(path.join(historiesDir, file), 'utf8'))),
      workflowId: await readFile(workflowIdFile(path.basename(file, '.json')), 'utf8').then(
        (id) => id.trim(),
        () => path.basename(file, '.json'),
      ),
    })),
  );
}

describe('replay of recorded workflow histories', () => {
  it('has recorded histories of every workflow, for every released promotion version and its main paths', async () => {
    const names = (await recorded()).map((r) => r.name);
    expect(names).toEqual(
      expect.arrayContaining([
        // The first release (v1): runs started on it finish on today's code.
        'promotion-polling',
        'promotion-event-grid',
        'promotion-group-member',
        'promotion-rollback',
        'promotion-cancelled',
        // v2: saga, events as hints, relayed events, an operator's compensation retry.
        'promotion-v2-polling',
        'promotion-v2-event-grid',
        'promotion-v2-group-member',
        'promotion-v2-rollback',
        'promotion-v2-cancelled',
        'promotion-v2-relayed',
        'promotion-v2-compensation-retried',
        'promotion-v2-stopped-for-revocation',
        'promotion-event-relay-v1',
        'connectivity-v1',
        // Revocation and reinstatement: one device, one member of a group, a whole group.
        'revocation-v1-device',
        'revocation-v1-group-member',
        'revocation-v1-group',
        'reinstatement-v1-device',
        'reinstatement-v1-group',
        // Fleet audit and a findings chunk.
        'audit-v1',
        'audit-findings-v1',
        // Fleet operations: the operation and one of its chunks.
        'fleet-v1-revoke',
        'fleet-v1-revoke-chunk',
        // v2: controls while planning, revoke batches bounded by deviceTimeout (patch fleet-batch-timeout).
        'fleet-v2-revoke',
        'fleet-v2-revoke-chunk',
        'fleet-v2-reinstate',
        'fleet-v2-reinstate-chunk',
        'fleet-v2-promote',
        'fleet-v2-promote-chunk',
        // A large Event Grid delivery's relay.
        'eventgrid-relay-v1',
      ]),
    );
  });

  it('replays every recorded history on the current workflows without a determinism error', async () => {
    // The very bundle the workers load: the build's, or from the sources the workflows with their interceptors
    // (workflows/tracing.ts, which pass untraced histories through untouched); one replay worker for them all.
    const workflows = { workflowBundle: await loadWorkflowBundle() };
    const histories = await recorded();
    const failed: string[] = [];
    let replayed = 0;
    for await (const result of Worker.runReplayHistories(workflows, histories)) {
      replayed += 1;
      if (result.error) failed.push(`${result.workflowId}: ${String(result.error)}`);
    }
    expect(failed).toEqual([]);
    expect(replayed).toBe(histories.length);
  }, 180_000);

  it('holds no key material in any recorded history', async () => {
    for (const file of (await readdir(historiesDir)).filter((f) => f.endsWith('.json'))) {
      const text = await readFile(path.join(historiesDir, file), 'utf8');
      expect(text).not.toMatch(/SharedAccessKey|PRIVATE KEY|primaryKey|secondaryKey/);
    }
  });

  it('fails with a determinism error when the promotion changes its command order (negative control)', async () => {
    const first = (await recorded()).find((r) => r.name === 'promotion-polling')!;
    const changed = require.resolve('./fixtures/nondeterministic');
    await expect(Worker.runReplayHistory({ workflowsPath: changed }, first.history, first.name)).rejects.toBeInstanceOf(
      DeterminismViolationError,
    );
  });
});
