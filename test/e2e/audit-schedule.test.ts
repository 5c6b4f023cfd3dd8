/**
 * The audit schedule through the real stack: a Temporal Schedule that starts an audit every interval with overlap
 * policy SKIP — while a slow audit runs (every registry query delayed in the emulator), the schedule's due runs are
 * skipped, never stacked; and an audit of a fleet split into several buckets finds every device exactly once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import type { AuditResult, Finding } from '../../common/audit';
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
    const set = await request(stack.app)
      .post('/v1/audits/schedule')
      .send({ interval: '1s', audit: { staleAfterDays: 7 } })
      .expect(200);
    expect(set.body).toMatchObject({ interval: '1s', overlap: 'skip', paused: false, audit: { staleAfterDays: 7 } });

    let schedule = set.body as { actionsTaken: number; skippedOverlaps: number; runningAudits: string[] };
    const deadline = Date.now() + 30_000;
    let mostRunning = 0;
    while (Date.now() < deadline && !(schedule.actionsTaken >= 1 && schedule.skippedOverlaps >= 3)) {
      await sleep(300);
      schedule = (await request(stack.app).get('/v1/audits/schedule').expect(200)).body;
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
    const listed = await request(stack.app).get('/v1/audits').expect(200);
    expect(listed.body.audits.map((a: { auditId: string }) => a.auditId)).toContain(auditId);

    // Replaced in place, then deleted (an audit it started goes on).
    const changed = await request(stack.app)
      .post('/v1/audits/schedule')
      .send({ interval: '6h', paused: true })
      .expect(200);
    expect(changed.body).toMatchObject({ interval: '6h', paused: true });
    await request(stack.app).delete('/v1/audits/schedule').expect(204);
    await request(stack.app).get('/v1/audits/schedule').expect(404);
    await request(stack.app).delete('/v1/audits/schedule').expect(404);
    // An audit it started after the first one (at speed, so short) is let finish.
    for await (const run of stack.temporal.client.workflow.list({
      query: `WorkflowType = 'auditFleet' AND ExecutionStatus = 'Running' AND TaskQueue = '${stack.taskQueue}'`,
    })) {
      await stack.temporal.client.workflow.getHandle(run.workflowId).result();
    }
  });
});

describe('a fleet larger than one bucket', () => {
  it('joins bucket by bucket and reports every device exactly once, findings kept in several chunks', async () => {
    await stack.emulator.reset();
    const ids = Array.from({ length: 450 }, (_, i) => `bulk-${String(i).padStart(4, '0')}`);
    for (let i = 0; i < ids.length; i += 100) {
      await stack.registries.production.addDevices(ids.slice(i, i + 100).map((deviceId) => ({ deviceId })));
    }
    // 450 identities, at most 100 per bucket: 5 buckets; 450 orphans, 200 per chunk. (At S1's default pace of 20
    // queries a minute, this audit's 50 queries would take 2.5 minutes.)
    const res = await request(stack.app)
      .post('/v1/audits')
      .send({ bucketDevices: 100, hubPageSize: 50, hubQueriesPerMinute: 10_000 })
      .expect(202);
    const result: AuditResult = await stack.temporal.client.workflow.getHandle(res.body.workflowId).result();
    expect(result.buckets).toEqual({ total: 5, done: 5 });
    expect(result.counts.orphan).toBe(450);
    expect(result.bucketResults.map((b) => b.identities).reduce((a, b) => a + b)).toBe(450);
    // Every bucket read every page: 10 pages of 50 per audit of production, one of test, per bucket.
    expect(result.hubQueries).toBe(5 * (9 + 1));

    const seen: Finding[] = [];
    for (let token: string | undefined; ;) {
      const page = await request(stack.app)
        .get(`/v1/audits/${res.body.workflowId}/findings`)
        .query({ type: 'orphan', pageSize: 500, ...(token ? { nextPageToken: token } : {}) })
        .expect(200);
      seen.push(...page.body.findings);
      token = page.body.nextPageToken;
      if (!token) break;
    }
    expect(seen.map((f) => f.deviceId).sort()).toEqual(ids);

    const one: AuditResult = await stack.temporal.client.workflow
      .getHandle((await request(stack.app).post('/v1/audits').send({}).expect(202)).body.workflowId)
      .result();
    expect(one.buckets.total).toBe(1);
    expect(one.bucketResults[0].chunks.orphan).toBe(3);
  });
});
