import type request from 'supertest';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Client, Connection, ServiceError } from '@temporalio/client';
import { createApp } from '../../api/app';
import { createLogger } from '../../common/logger';
import { eventually } from '../fixtures/promotion-fixture';
import { freePort, resolveTemporalCli, startDevServer, type DevServer } from '../../common/temporal-server';
import { authed, testSecurity } from '../helpers/credentials';

const SECRET = 'a-shared-secret-of-some-length';
const DEADLINE_MS = 1_000;
/** The deadline, the grace the route gets, and room for a busy 2-core machine: far below the SDK's ~20 s retries. */
const PROMPT_MS = 4_000;

async function timed(req: Promise<request.Response>): Promise<{ res: request.Response; ms: number }> {
  const started = Date.now();
  const res = await req;
  return { res, ms: Date.now() - started };
}

function expectUnavailable({ res, ms }: { res: request.Response; ms: number }) {
  expect(res.status).toBe(503);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(res.headers['retry-after']).toBe('5');
  expect(res.body).toMatchObject({ type: '/problems/temporal-unavailable', status: 503, detail: expect.any(String) });
  expect(ms).toBeLessThan(PROMPT_MS);
}

/** A logger whose lines the test can read. */
function capturingLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()));
      done();
    },
  });
  return { log: pino({ level: 'debug' }, stream), lines };
}

/**
 * A 503 is answered by the deadline itself or by the route's own failure. In the first case the route's own calls
 * still end by themselves soon after (their deadline has passed) rather than retrying on: waits for that.
 */
async function routesSettled(lines: Array<Record<string, unknown>>, answers: Array<{ res: request.Response }>) {
  const byDeadline = answers.filter(({ res }) =>
    lines.some((l) => l.correlationId === res.body.correlationId && l.msg === 'request not served' && !l.type),
  );
  await eventually(async () => {
    for (const { res } of byDeadline) {
      const after = (l: Record<string, unknown>) =>
        l.correlationId === res.body.correlationId && l.msg === 'error after the answer was sent';
      expect([res.body.instance, lines.some(after)]).toEqual([res.body.instance, true]);
    }
  }, 10_000);
}

describe('while Temporal is down the API answers 503 promptly, and recovers by itself', () => {
  it('answers every Temporal route 503 with Retry-After when its server is not there', async () => {
    const connection = Connection.lazy({ address: `127.0.0.1:${await freePort()}` });
    const client = new Client({ connection });
    const { log, lines } = capturingLogger();
    const app = createApp({
      security: testSecurity(),
      client,
      taskQueue: 'unused',
      log,
      environments: { test: 't.azure-devices.net', production: 'p.azure-devices.net' },
      eventGridSecret: SECRET,
      temporalDeadlineMs: DEADLINE_MS,
    });
    try {
      const deviceConnected = {
        id: 'e1',
        subject: 'devices/dev-1',
        eventType: 'Microsoft.Devices.DeviceConnected',
        eventTime: new Date().toISOString(),
        data: { hubName: 'p', deviceId: 'dev-1', deviceConnectionStateEventInfo: { sequenceNumber: '1' } },
        dataVersion: '',
      };
      const answers = await Promise.all([
        timed(authed(app).get('/v1/promotions/dev-1')),
        timed(authed(app).get('/v1/promotions')),
        timed(authed(app).post('/v1/promotions').send({ registrationId: 'dev-1' })),
        timed(authed(app).post('/v1/promotions/dev-1/cancel')),
        timed(authed(app).post('/v1/diagnostics/connectivity')),
        timed(authed(app).post('/v1/eventgrid').set('x-iot-lifecycle-secret', SECRET).send([deviceConnected])),
      ]);
      answers.forEach(expectUnavailable);
      // Requests Temporal is not needed for are still answered.
      await authed(app).get('/healthz').expect(200);
      await authed(app).post('/v1/promotions').send({ registrationId: '..' }).expect(400);
      await routesSettled(lines, answers);
    } finally {
      await connection.close();
    }
  });

  it('answers 503 at the deadline even while a Temporal call is still pending', async () => {
    // The SDK's retries only notice a passed deadline at their next attempt (up to 5 s later); a call that has not
    // returned must not hold the answer either.
    const hanging = {
      withDeadline: (_deadline: number, fn: () => Promise<unknown>) => fn(),
      workflow: { getHandle: () => ({ describe: () => new Promise(() => undefined) }) },
    } as unknown as Client;
    const app = createApp({
      security: testSecurity(),
      client: hanging,
      taskQueue: 'unused',
      log: createLogger('silent'),
      temporalDeadlineMs: DEADLINE_MS,
    });
    const answer = await timed(authed(app).get('/v1/promotions/dev-1'));
    expectUnavailable(answer);
    expect(answer.ms).toBeGreaterThanOrEqual(DEADLINE_MS);
    expect(answer.res.body.detail).toBe(`Temporal did not answer within ${DEADLINE_MS} ms`);
  });

  it('answers 503 while its server is stopped and serves again once it is back on the same address', async () => {
    const cli = resolveTemporalCli(process.env.TEMPORAL_CLI_PATH);
    const port = await freePort();
    let server: DevServer | undefined = await startDevServer({ cli, port });
    const connection = Connection.lazy({ address: server.address });
    const client = new Client({ connection });
    const { log, lines } = capturingLogger();
    const app = createApp({
      security: testSecurity(),
      client,
      taskQueue: 'unused',
      log,
      temporalDeadlineMs: DEADLINE_MS,
    });
    try {
      await authed(app).get('/v1/promotions/never-promoted').expect(404);

      await server.stop();
      server = undefined;
      const down = [
        await timed(authed(app).get('/v1/promotions/never-promoted')),
        await timed(authed(app).get('/v1/promotions')),
      ];
      down.forEach(expectUnavailable);
      await routesSettled(lines, down);

      server = await startDevServer({ cli, port });
      const deadline = Date.now() + 20_000;
      let status = 0;
      while (status !== 404 && Date.now() < deadline) {
        status = (await authed(app).get('/v1/promotions/never-promoted')).status;
        if (status !== 404) await new Promise((resolve) => setTimeout(resolve, 250));
      }
      expect(status).toBe(404);
    } finally {
      await connection.close();
      await server?.stop();
    }
  }, 120_000);
  it('answers a query no worker is there to run with 503, not 500', async () => {
    // A fleet operation's device list is answered by queries. When no worker has polled its task queue for a while
    // (all down, or all busy), Temporal fails a query at once with FAILED_PRECONDITION "no poller seen for task
    // queue recently": temporary, like an unreachable server. (A unit test of the mapping: on the real server the
    // state needs a worker that ran the workflow and then stayed away for 20 s.)
    const grpc = Object.assign(new Error('9 FAILED_PRECONDITION: no poller seen for task queue recently'), {
      code: 9,
      details: 'no poller seen for task queue recently, worker may be down',
      metadata: {},
    });
    const noPoller = {
      withDeadline: (_deadline: number, fn: () => Promise<unknown>) => fn(),
      workflow: {
        getHandle: () => ({
          describe: async () => ({ runId: 'r1', status: { name: 'RUNNING' } }),
          query: async () => {
            throw new ServiceError('Failed to query Workflow', { cause: grpc });
          },
        }),
      },
    } as unknown as Client;
    const app = createApp({
      security: testSecurity(),
      client: noPoller,
      taskQueue: 'unused',
      log: createLogger('silent'),
    });
    const answer = await timed(authed(app).get('/v1/fleet-operations/op-1/devices'));
    expectUnavailable(answer);
    expect(answer.res.body.detail).toMatch(/^no worker has polled the task queue recently/);
  });
});
