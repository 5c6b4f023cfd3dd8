import type request from 'supertest';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Client, Connection } from '@temporalio/client';
import { createApp } from '../../api/app';
import { authed, testSecurity } from '../helpers/credentials';

const SECRET = 'a-shared-secret-of-some-length';

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

function expectProblem(res: request.Response, status: number, type: string) {
  expect(res.status).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(res.body).toEqual(
    expect.objectContaining({
      type,
      title: expect.any(String),
      status,
      detail: expect.any(String),
      instance: expect.stringMatching(/^\//),
      correlationId: res.headers['x-correlation-id'],
    }),
  );
  expect(res.headers['x-correlation-id']).toMatch(/^[0-9a-f-]{36}$/);
}

describe('API errors are RFC 9457 problems, and what a client sends never makes a 5xx', () => {
  // Nothing here reaches Temporal: every request is refused before (the client points at a closed port).
  const connection = Connection.lazy({ address: '127.0.0.1:1' });
  const client = new Client({ connection });
  const { log, lines } = capturingLogger();
  const app = createApp({
    security: testSecurity(),
    client,
    taskQueue: 'unused',
    log,
    eventGridSecret: SECRET,
    environments: {},
  });
  afterAll(() => connection.close());
  beforeEach(() => lines.splice(0));

  const tooLarge = JSON.stringify({ registrationId: 'dev-1', padding: 'x'.repeat(1024 * 1024) });

  it('passes the body parser’s 413 through for a body over 1 MiB', async () => {
    const res = await authed(app).post('/v1/promotions').set('content-type', 'application/json').send(tooLarge);
    expectProblem(res, 413, '/problems/payload-too-large');
  });

  it('checks the webhook secret before reading the body: 401 without it, 413 with it', async () => {
    const eventGrid = () => authed(app).post('/v1/eventgrid').set('content-type', 'application/json');
    expectProblem(await eventGrid().send(tooLarge), 401, '/problems/unauthorized');
    expectProblem(
      await eventGrid().set('x-iot-lifecycle-secret', SECRET).send(tooLarge),
      413,
      '/problems/payload-too-large',
    );
  });

  it('answers 400 for a malformed %-escape in the path', async () => {
    const res = await authed(app).get('/v1/promotions/%E0%A4%A');
    expectProblem(res, 400, '/problems/malformed-request');
    await authed(app).post('/v1/promotions/%E0%A4%A/cancel').expect(400);
  });

  it('answers 400 for a body that is not JSON', async () => {
    const res = await authed(app).post('/v1/promotions').set('content-type', 'application/json').send('{"x": ');
    expectProblem(res, 400, '/problems/malformed-request');
  });

  it('answers 415 with Accept-Post for a body of another media type', async () => {
    const res = await authed(app).post('/v1/promotions').set('content-type', 'text/plain').send('registrationId=x');
    expectProblem(res, 415, '/problems/unsupported-media-type');
    expect(res.headers['accept-post']).toBe('application/json');
    const charset = await authed(app)
      .post('/v1/promotions')
      .set('content-type', 'application/json; charset=koi8-r')
      .send('{}');
    expectProblem(charset, 415, '/problems/unsupported-media-type');
    const webhook = await authed(app)
      .post('/v1/eventgrid')
      .set('x-iot-lifecycle-secret', SECRET)
      .set('content-type', 'application/xml')
      .send('<events/>');
    expectProblem(webhook, 415, '/problems/unsupported-media-type');
    expect(webhook.headers['accept-post']).toContain('application/cloudevents+json');
  });

  it('answers unknown routes with a 404 problem, not express’s HTML page', async () => {
    const res = await authed(app).get('/v1/nothing-here');
    expectProblem(res, 404, '/problems/not-found');
    expectProblem(await authed(app).post('/'), 404, '/problems/not-found');
  });

  it('answers undocumented methods of a route with 405 and Allow, and OPTIONS with Allow', async () => {
    const res = await authed(app).delete('/v1/promotions');
    expectProblem(res, 405, '/problems/method-not-allowed');
    expect(res.headers.allow).toBe('GET, HEAD, OPTIONS, POST');
    expectProblem(await authed(app).put('/v1/promotions/dev-1'), 405, '/problems/method-not-allowed');
    const options = await authed(app).options('/v1/promotions/dev-1/cancel').expect(204);
    expect(options.headers.allow).toBe('OPTIONS, POST');
    expect(options.text).toBe('');
  });

  it('never echoes the query (it may hold the webhook secret) and logs client errors below error level', async () => {
    const res = await authed(app).post('/v1/eventgrid').query({ code: 'wrong-secret' }).send([]);
    expectProblem(res, 401, '/problems/unauthorized');
    expect(res.body.instance).toBe('/v1/eventgrid');
    expect(res.text).not.toContain('wrong-secret');
    expect(res.headers['www-authenticate']).toBeDefined();
    const refused = lines.find((l) => l.correlationId === res.body.correlationId && l.msg === 'request refused');
    expect(refused).toMatchObject({ level: 30, status: 401 });
    expect(lines.filter((l) => (l.level as number) >= 50)).toEqual([]);
  });

  it('answers an unexpected failure with a 500 problem carrying the correlation id, logged, without a stack', async () => {
    // A client whose every call fails with a plain error, as a bug would.
    const broken = {
      withDeadline: (_deadline: number, fn: () => Promise<unknown>) => fn(),
      workflow: { getHandle: () => ({ describe: () => Promise.reject(new Error('kaboom at secret place')) }) },
    } as unknown as Client;
    const brokenApp = createApp({ security: testSecurity(), client: broken, taskQueue: 'unused', log });
    const res = await authed(brokenApp).get('/v1/promotions/dev-1');
    expectProblem(res, 500, '/problems/internal-error');
    expect(res.text).not.toMatch(/kaboom|at .*\.ts/);
    const logged = lines.find((l) => l.correlationId === res.body.correlationId && l.level === 50);
    expect(logged).toMatchObject({
      msg: 'request failed',
      err: expect.objectContaining({ message: expect.stringContaining('kaboom') }),
    });
  });
});
