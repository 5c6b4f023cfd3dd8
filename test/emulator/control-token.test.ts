import { Registry } from 'azure-iothub';
import { startEmulator, type RunningEmulator } from '../../emulator/server';
import { installAzureEndpointRouting } from '../../common/azure-routing';
import { controlFetch } from '../helpers/control';

/** The control API hands out owner connection strings, device keys and webhook secrets: only with its token. */

let emulator: RunningEmulator;
let uninstall: () => void;

beforeAll(async () => {
  emulator = await startEmulator();
  uninstall = installAzureEndpointRouting({ address: emulator.address, caPem: emulator.caPem });
  await Registry.fromConnectionString(emulator.connectionStrings.hubs.test).create({ deviceId: 'kept-1' });
});
afterAll(async () => {
  uninstall();
  await emulator.stop();
});

const READS = [
  '/hubs',
  '/hubs/test',
  '/hubs/test/devices',
  '/hubs/test/devices/kept-1',
  '/dps',
  '/dps/enrollments',
  '/dps/registrations',
  '/eventgrid/subscriptions',
  '/mqtt/connections',
  '/counters',
  '/quotas',
  '/faults',
  '/ca',
];

/** What must never reach a caller without the token. */
function secretsOf(e: RunningEmulator): string[] {
  const keys = [...e.state.hubs.values()].flatMap((hub) => hub.policies.flatMap((p) => [p.primaryKey, p.secondaryKey]));
  const device = e.state.hubs.get('test')!.devices.get('kept-1')!;
  const deviceKey = device.authentication.symmetricKey?.primaryKey;
  expect(deviceKey).toBeTruthy();
  return [...keys, deviceKey!, 'SharedAccessKey'];
}

describe('the emulator control API token', () => {
  it('answers 401 to every route without the token or with a wrong one, and the answers hold no secret', async () => {
    for (const route of READS) {
      const wrong: Array<Record<string, string>> = [
        {},
        { authorization: 'Bearer not-the-token' },
        { authorization: emulator.controlToken },
      ];
      for (const headers of wrong) {
        const res = await fetch(`${emulator.controlUrl}${route}`, { headers });
        const body = await res.text();
        expect([route, res.status, res.headers.get('www-authenticate')]).toEqual([
          route,
          401,
          'Bearer realm="emulator control"',
        ]);
        for (const secret of secretsOf(emulator)) expect(body).not.toContain(secret);
      }
    }
  });

  it('refuses a cross-site form post to /reset, which leaves everything in place', async () => {
    const res = await fetch(`${emulator.controlUrl}/reset`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'https://evil.example' },
      body: '',
    });
    expect(res.status).toBe(401);
    expect(emulator.state.hubs.get('test')!.devices.has('kept-1')).toBe(true);
  });

  it('serves the same routes with the token, secrets included (what the refusals above keep back)', async () => {
    const res = await controlFetch(emulator, `${emulator.controlUrl}/hubs/test`);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('SharedAccessKey=');
    expect((await fetch(`${emulator.controlUrl}/health`)).status).toBe(200);
  });

  it('takes the token it is given, e.g. the one npm start keeps in the data dir', async () => {
    const given = await startEmulator({ controlToken: 'a-token-of-some-length', httpsPort: 0, mqttPort: 0 });
    try {
      expect(given.controlToken).toBe('a-token-of-some-length');
      const ok = await fetch(`${given.controlUrl}/dps`, {
        headers: { authorization: 'Bearer a-token-of-some-length' },
      });
      expect(ok.status).toBe(200);
    } finally {
      await given.stop();
    }
  });
});
