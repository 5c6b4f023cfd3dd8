import { createAzureClients } from '../../activities/azure-clients';
import { createApp } from '../../api/app';
import { createLogger } from '../../common/logger';
import { connectToHarness, uniqueTaskQueue, withProjectWorker, type TemporalTestContext } from '../helpers/temporal';
import { authed, testSecurity } from '../helpers/credentials';

describe('POST /v1/diagnostics/connectivity', () => {
  let ctx: TemporalTestContext;
  beforeAll(async () => {
    ctx = await connectToHarness();
  });
  afterAll(() => ctx.close());

  it('runs concurrent checks as separate workflows with unique ids, none refused as a conflict', async () => {
    const taskQueue = uniqueTaskQueue('diagnostics');
    const app = createApp({ security: testSecurity(), client: ctx.client, taskQueue, log: createLogger('silent') });
    // Nothing configured: each probe reports "not configured" at once, so the check is quick.
    await withProjectWorker(ctx, taskQueue, { azure: createAzureClients({}) }, async () => {
      const answers = await Promise.all(
        Array.from({ length: 20 }, () => authed(app).post('/v1/diagnostics/connectivity')),
      );
      expect(answers.map((r) => r.status)).toEqual(Array(20).fill(200));
      const ids = answers.map((r) => r.body.workflowId as string);
      expect(new Set(ids).size).toBe(20);
      for (const id of ids) expect(id).toMatch(/^connectivity\/[0-9a-f-]{36}$/);
      expect(answers[0].body).toMatchObject({
        allReachable: false,
        endpoints: [{ kind: 'dps', reachable: false, detail: 'DPS is not configured' }],
      });
    });
  });
});
