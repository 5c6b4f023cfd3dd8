/**
 * Log lines through the real stack: the API (in process, its logger captured) and the worker (a process of its own,
 * its output captured), at debug. No line may hold a secret the test knows: API keys, a bearer token, a cookie, the
 * Event Grid secret (sent as `?code=` by the emulator's Event Grid and as `aeg-sas-key`), the emulator's connection
 * strings and their keys, a device's key. And every answered request has its info line with method, route template,
 * status, duration and request id; probes have theirs at debug.
 */
import { randomBytes } from 'node:crypto';
import { promotionWorkflowId } from '../../common/messages';
import { createLogger } from '../../common/logger';
import { eventGridFor } from '../../emulator/eventgrid/event-grid';
import type { SimulatedDevice } from '../../emulator/simulator/device';
import { authed, TEST_KEYS } from '../helpers/credentials';
import { connectedTo, enrollDevice, simulate, startStack, uniqueId, type Stack } from '../helpers/stack';
import { startLoggedProcess, stopGracefully, workerEnv, type LoggedProcess } from '../helpers/worker-process';
import request from 'supertest';

jest.setTimeout(180_000);

const apiLines: string[] = [];
let stack: Stack;
let worker: LoggedProcess;
const devices: SimulatedDevice[] = [];

beforeAll(async () => {
  const log = createLogger('debug', 'iot-lifecycle-api', { write: (line: string) => void apiLines.push(line) });
  stack = await startStack({ log });
  await stack.stopWorker();
  worker = startLoggedProcess('worker', { ...(await workerEnv(stack)), LOG_LEVEL: 'debug' });
  await worker.waitForLine((l) => l.includes('"worker started"'), 120_000);
});
afterAll(async () => {
  await Promise.all(devices.map((d) => d.stop()));
  if (worker) await stopGracefully(worker.child);
  await stack?.stop();
});

const json = (line: string) => JSON.parse(line) as Record<string, unknown>;

/** Every secret string the stack and this test hold, with what it is (for the failure message). */
function knownSecrets(extra: Record<string, string>): Record<string, string> {
  const { dps, hubs } = stack.emulator.connectionStrings;
  const connectionStrings: Record<string, string> = { dps, ...hubs };
  const secrets: Record<string, string> = { ...extra, 'Event Grid secret': stack.eventGridSecret };
  for (const [role, key] of Object.entries(TEST_KEYS)) secrets[`${role} API key`] = key;
  for (const [name, cs] of Object.entries(connectionStrings)) {
    secrets[`${name} connection string`] = cs;
    secrets[`${name} SharedAccessKey`] = /SharedAccessKey=([^;]+)/.exec(cs)![1];
  }
  return secrets;
}

describe('log lines', () => {
  it('hold no secret through a promotion, an Event Grid delivery with ?code= and requests with credentials', async () => {
    // Event Grid delivers the production hub's DeviceConnected to the webhook, the secret in its URL.
    const grid = eventGridFor(stack.emulator.state, { initialRetryDelayMs: 100, maxRetryDelayMs: 1_000 });
    const subscription = uniqueId('logs').slice(0, 60);
    await grid.subscribe({
      hub: 'production',
      name: subscription,
      endpointUrl: `${stack.apiUrl}/v1/eventgrid?code=${stack.eventGridSecret}`,
      includedEventTypes: ['Microsoft.Devices.DeviceConnected'],
    });
    const bearer = `eyJ${randomBytes(24).toString('base64url')}`;
    const cookie = randomBytes(16).toString('hex');
    try {
      const enrolled = await enrollDevice(stack, 'symmetricKey');
      const device = simulate(stack, enrolled);
      devices.push(device);
      await connectedTo(device, stack.hosts.test);
      const id = enrolled.registrationId;
      const started = await authed(stack.app, 'operator').post('/v1/promotions').send({ registrationId: id });
      expect(started.status).toBe(202);
      const result = await stack.temporal.client.workflow.getHandle(promotionWorkflowId(id)).result();
      expect(result).toMatchObject({ outcome: 'promoted' });
      await connectedTo(device, stack.hosts.production);
      expect((await authed(stack.app, 'viewer').get(`/v1/promotions/${id}`)).status).toBe(200);

      // Credentials the API refuses are no more logged than those it accepts.
      expect((await request(stack.app).get('/v1/promotions').set('Authorization', `Bearer ${bearer}`)).status).toBe(
        401,
      );
      await request(stack.app).get('/v1/promotions').set('Cookie', `session=${cookie}`);
      await request(stack.app)
        .post('/v1/eventgrid')
        .set('aeg-sas-key', stack.eventGridSecret)
        .set('aeg-sas-token', bearer)
        .send([]);
      await request(stack.app).post(`/v1/eventgrid?code=${stack.eventGridSecret}&x=1`).send('not json');

      const secrets = knownSecrets({ 'device key': enrolled.secret, 'bearer token': bearer, cookie });
      const lines = [...apiLines, ...worker.lines];
      const leaks = Object.entries(secrets).flatMap(([what, secret]) =>
        lines.filter((l) => l.includes(secret)).map((l) => `${what}: ${l}`),
      );
      expect(leaks).toEqual([]);
      // Not by leaving them out: the delivery and the refused requests were logged, credentials redacted.
      expect(apiLines.some((l) => l.includes('/v1/eventgrid?code=[Redacted]'))).toBe(true);
      expect(apiLines.some((l) => l.includes('"x-api-key":"[Redacted]"'))).toBe(true);
      expect(apiLines.some((l) => l.includes('"authorization":"[Redacted]"'))).toBe(true);
      expect(apiLines.some((l) => l.includes('"aeg-sas-key":"[Redacted]"'))).toBe(true);
      expect(worker.lines.some((l) => l.includes('"Activity completed"'))).toBe(true);
    } finally {
      grid.unsubscribe('production', subscription);
    }
  });

  it('writes one info line per request with method, route template, status, duration and request id', async () => {
    const res = await authed(stack.app, 'viewer').get('/v1/promotions/no-such-device');
    expect(res.status).toBe(404);
    const requestId = res.headers['x-correlation-id'] as string;
    const line = apiLines.map(json).find((l) => l.requestId === requestId && l.msg === 'request');
    expect(line).toMatchObject({
      level: 30,
      method: 'GET',
      route: '/v1/promotions/{registrationId}',
      status: 404,
      requestId,
    });
    expect(line!.durationMs).toEqual(expect.any(Number));
    // The raw path (with the id) only in the request's URL, never as the route.
    expect((line!.req as { url: string }).url).toBe('/v1/promotions/no-such-device');

    const probe = await request(stack.app).get('/readyz');
    const probeLine = apiLines
      .map(json)
      .find((l) => l.requestId === probe.headers['x-correlation-id'] && l.msg === 'request');
    expect(probeLine).toMatchObject({ level: 20, route: '/readyz', status: probe.status });
  });
});
