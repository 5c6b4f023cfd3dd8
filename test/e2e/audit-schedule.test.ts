/**
 * The audit schedule through the real stack: a Temporal Schedule that starts an audit every interval with overlap
 * policy SKIP — while a slow audit runs (every registry query delayed in the emulator), the schedule's due runs are
 * skipped, never stacked; and an audit of a fleet split into several buckets finds every device exactly once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { AuditResult, Finding } from '../../common/audit';
import { REQUESTED_BY_MEMO } from '../../common/requested-by';
import { SA } from '../../common/search-attributes';
import { authed } from '../helpers/credentials';
import { startStack, uniqueId, type Stack } from '../helpers/stack';

jest.setTimeout(180_000);

let stack: Stack;

beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.stop();
});

describe('the audit schedule', () => {
  it('audits every interval and skips a due run while the previous audit still runs', async () => {
    await stack.registries.test.create({ deviceId: uniqueId('scheduled') } as never);
    // Each registry query takes 2 s: an audit (a COUNT and a page per hub) outlasts many 1 s intervals.
    const slow = stack.emulator.faults.addRule({
      surface: 'hub',
      operation: 'queryDevices',
      latencyMs: 2_000,
      times: 1_000,
    });
    const set = await authed(stack.app, 'admin')
      .post('/v1/audits/schedule')
      .send({ interval: '1s', audit: { staleAfterDays: 7 } })
      .expect(200);
    expect(set.body).toMatchObject({ interval: '1s', overlap: 'skip', paused: false, audit: { staleAfterDays: 7 } });

    let schedule = set.body as { actionsTaken: number; skippedOverlaps: number; runningAudits: string[] };
    const deadline = Date.now() + 30_000;
    let mostRunning = 0;
    while (Date.now() < deadline && !(schedule.actionsTaken >= 1 && schedule.skippedOverlaps >= 3)) {
      await sleep(300);
      schedule = (await authed(stack.app, 'viewer').get('/v1/audits/schedule').expect(200)).body;
      mostRunning = Math.max(mostRunning, schedule.runningAudits.length);
    }
    expect(schedule.skippedOverlaps).toBeGreaterThanOrEqual(3);
    expect(schedule.actionsTaken).toBe(1);
    expect(mostRunning).toBe(1);

    // It is a plain audit: listed with the others, and it completes once the registry answers at speed again.
    stack.emulator.faults.removeRule(slow.id);
    const [auditId] = schedule.runningAudits;
    expect(auditId).toMatch(/^audit-scheduled\./);
    const result: AuditResult = await stack.temporal.client.workflow.getHandle(auditId).result();
    expect(result).toMatchObject({ phase: 'completed', request: { staleAfterDays: 7 } });
    // It records who set up the schedule, as an audit started through the API records its caller.
    const admin = { subject: 'test-admin', name: 'test admin', authMethod: 'apiKey' };
    expect(result.requestedBy).toEqual(admin);
    const description = await stack.temporal.client.workflow.getHandle(auditId).describe();
    expect(description.memo?.[REQUESTED_BY_MEMO]).toEqual(admin);
    expect(description.typedSearchAttributes.get(SA.requestedBy)).toBe('apiKey:test-admin');
    const listed = await authed(stack.app, 'viewer').get('/v1/audits').expect(200);
    expect(listed.body.audits.map((a: { auditId: string }) => a.auditId)).toContain(auditId);

    // Replaced in place, then deleted (an audit it started goes on).
    const changed = await authed(stack.app, 'admin')
      .post('/v1/audits/schedule')
      .send({ interval: '6h', paused: true })
      .expect(200);
    expect(changed.body).toMatchObject({ interval: '6h', paused: true });
    await authed(stack.app, 'admin').delete('/v1/audits/schedule').expect(204);
    await authed(stack.app, 'viewer').get('/v1/audits/schedule').expect(404);
    await authed(stack.app, 'admin').delete('/v1/audits/schedule').expect(404);
    const bad = await authed(stack.app, 'admin')
      .post('/v1/audits/schedule')
      .send({ interval: '1h', offset: '2h' })
      .expect(400);
    expect(bad.body.issues).toEqual([expect.objectContaining({ path: ['body', 'offset'] })]);
    await authed(stack.app, 'viewer').get('/v1/audits/schedule').expect(404);
    // An audit it started after the first one (at speed, so short) is let finish.
    for await (const run of stack.temporal.client.workflow.list({
      query: `WorkflowType = 'auditFleet' AND ExecutionStatus = 'Running' AND TaskQueue = '${stack.taskQueue}'`,
    })) {
      await stack.temporal.client.workflow.getHandle(run.workflowId).result();
    }
  });
});

describe('a fleet larger than one bucket', () => {
  it('joins bucket by bucket over two runs and reports every device exactly once, findings kept in chunks', async () => {
    await stack.emulator.reset();
    const ids = Array.from({ length: 2_050 }, (_, i) => `bulk-${String(i).padStart(4, '0')}`);
    for (let i = 0; i < ids.length; i += 100) {
      await stack.registries.production.addDevices(ids.slice(i, i + 100).map((deviceId) => ({ deviceId })));
    }
    // 2,050 identities, at most 100 per bucket: 21 buckets, so the audit continues as new after its 20th. (At S1's
    // default pace of 20 queries a minute, its 84 queries would take more than 4 minutes.)
    const res = await authed(stack.app, 'operator')
      .post('/v1/audits')
      .send({ bucketDevices: 100, hubQueriesPerMinute: 10_000 })
      .expect(202);
    const result: AuditResult = await stack.temporal.client.workflow.getHandle(res.body.workflowId).result();
    expect(result).toMatchObject({ buckets: { total: 21, done: 21 }, runs: 2 });
    expect(result.counts.orphan).toBe(2_050);
    expect(result.bucketResults.map((b) => b.identities).reduce((a, b) => a + b)).toBe(2_050);
    // Every bucket read every page: three of production, one (empty) of test.
    expect(result.hubQueries).toBe(21 * 4);

    const seen: Finding[] = [];
    for (let token: string | undefined; ;) {
      const page = await authed(stack.app, 'viewer')
        .get(`/v1/audits/${res.body.workflowId}/findings`)
        .query({ type: 'orphan', pageSize: 500, ...(token ? { nextPageToken: token } : {}) })
        .expect(200);
      seen.push(...page.body.findings);
      token = page.body.nextPageToken;
      if (!token) break;
    }
    expect(seen.map((f) => f.deviceId).sort()).toEqual(ids);

    const one: AuditResult = await stack.temporal.client.workflow
      .getHandle((await authed(stack.app, 'operator').post('/v1/audits').send({}).expect(202)).body.workflowId)
      .result();
    expect(one).toMatchObject({ buckets: { total: 1, done: 1 }, runs: 1 });
    expect(one.bucketResults[0].chunks.orphan).toBe(11);
  });
});

describe('throttling', () => {
  it('retries throttled and failing queries inside the bucket, without starting the bucket again', async () => {
    await stack.emulator.reset();
    await stack.registries.test.addDevices([{ deviceId: 'throttled-1' }, { deviceId: 'throttled-2' }]);
    stack.emulator.faults.addRule({ surface: 'hub', operation: 'queryDevices', status: 429, times: 2 });
    stack.emulator.faults.addRule({ surface: 'dpsService', operation: 'queryEnrollments', status: 503, times: 1 });
    const res = await authed(stack.app, 'operator').post('/v1/audits').send({}).expect(202);
    const result: AuditResult = await stack.temporal.client.workflow.getHandle(res.body.workflowId).result();
    expect(result.counts.orphan).toBe(2);
    expect(result.bucketResults[0].attempt).toBe(1);
    expect(stack.emulator.faults.rules()).toEqual([]);
  });
  it('lets a worker shut down at once while an audit waits a minute for its quota, and the audit goes on elsewhere', async () => {
    await stack.emulator.reset();
    // One DPS operation a minute: the bucket's second DPS call waits up to 60 s for the quota. A worker shutting
    // down (deploy, Ctrl-C) cancels the waiting activity instead of waiting it out.
    const res = await authed(stack.app, 'operator')
      .post('/v1/audits')
      .send({ dpsOperationsPerMinute: 1, hubQueriesPerMinute: 1 })
      .expect(202);
    const handle = stack.temporal.client.workflow.getHandle(res.body.workflowId);
    const waiting = async () => {
      const { raw } = await handle.describe();
      return (raw.pendingActivities ?? []).some((a) => a.activityType?.name === 'auditBucket' && a.state === 2);
    };
    const deadline = Date.now() + 30_000;
    while (!(await waiting()) && Date.now() < deadline) await sleep(200);
    expect(await waiting()).toBe(true);
    await sleep(1_000); // into the quota wait
    const started = Date.now();
    await stack.stopWorker();
    expect(Date.now() - started).toBeLessThan(10_000);
    await stack.startWorker();
    try {
      // The audit itself is not lost: its bucket runs again on the new worker.
      const { raw } = await handle.describe();
      expect(raw.workflowExecutionInfo?.status).toBe(1); // running
    } finally {
      await handle.terminate('test over: a 1-a-minute audit would take minutes');
    }
  });
});
