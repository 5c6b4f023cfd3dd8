/**
 * Registry answers that depend on credentials, quotas, injected faults and concurrency — through the real
 * azure-iothub Registry.
 */
import { SharedAccessSignature, anHourFromNow } from 'azure-iot-common';
import { Registry } from 'azure-iothub';
import { createSasToken } from '../../emulator/security/sas';
import { policyOf, startRegistryFixture, type RegistryFixture } from './registry-helpers';

let fx: RegistryFixture & { stop(): Promise<void> };

beforeAll(async () => {
  fx = await startRegistryFixture();
});

afterAll(async () => {
  await fx.stop();
});

beforeEach(async () => {
  await fx.control('POST', '/reset');
});

function registryWithToken(token: string): Registry {
  return Registry.fromSharedAccessSignature(token);
}

function policyToken(hub: string, keyName: string, options: { expiry?: number; resource?: string } = {}): string {
  const policy = policyOf(fx.emulator, hub, keyName);
  const resource = options.resource ?? fx.emulator.state.hubs.get(hub)!.hostName;
  return SharedAccessSignature.create(
    resource,
    policy.keyName,
    policy.primaryKey,
    options.expiry ?? anHourFromNow(),
  ).toString();
}

describe('shared access signatures', () => {
  it('accepts the secondary key of a policy', async () => {
    const policy = policyOf(fx.emulator, 'test', 'iothubowner') as { secondaryKey?: string; primaryKey: string };
    const cs = fx.connectionString.replace(policy.primaryKey, policy.secondaryKey!);
    await expect(Registry.fromConnectionString(cs).create({ deviceId: 'secondary' })).resolves.toBeDefined();
  });

  it('answers a wrong key with UnauthorizedError', async () => {
    const cs = fx.connectionString.replace(
      /SharedAccessKey=[^;]+/,
      `SharedAccessKey=${Buffer.alloc(32, 7).toString('base64')}`,
    );
    await expect(Registry.fromConnectionString(cs).get('x')).rejects.toMatchObject({ name: 'UnauthorizedError' });
  });

  it('answers an expired token with UnauthorizedError', async () => {
    const expired = policyToken('test', 'iothubowner', { expiry: Math.floor(Date.now() / 1000) - 10 });
    const answer = registryWithToken(expired).get('x');
    await expect(answer).rejects.toMatchObject({ name: 'UnauthorizedError' });
  });

  it("answers another hub's token with UnauthorizedError", async () => {
    // Signed correctly for the production hub, sent to the test hub.
    const production = policyToken('production', 'iothubowner');
    const reg = new Registry({ host: fx.hostName, sharedAccessSignature: production });
    await expect(reg.list()).rejects.toMatchObject({ name: 'UnauthorizedError' });
  });

  it('answers a device-scoped token with UnauthorizedError for registry calls', async () => {
    const { responseBody: device } = await fx.registry.create({ deviceId: 'dev' });
    const token = createSasToken({
      resource: `${fx.hostName}/devices/dev`,
      key: device.authentication!.symmetricKey!.primaryKey!,
    });
    const reg = new Registry({ host: fx.hostName, sharedAccessSignature: token });
    await expect(reg.get('dev')).rejects.toMatchObject({ name: 'UnauthorizedError' });
  });

  it('answers an unknown policy name with UnauthorizedError', async () => {
    const cs = fx.connectionString.replace('SharedAccessKeyName=iothubowner', 'SharedAccessKeyName=nobody');
    await expect(Registry.fromConnectionString(cs).get('x')).rejects.toMatchObject({ name: 'UnauthorizedError' });
  });

  it('lets a registryRead policy read but not write', async () => {
    await fx.registry.create({ deviceId: 'ro' });
    const reader = registryWithToken(policyToken('test', 'registryRead'));
    await expect(reader.get('ro')).resolves.toBeDefined();
    await expect(reader.list()).resolves.toBeDefined();
    await expect(reader.getRegistryStatistics()).resolves.toBeDefined();
    await expect(reader.create({ deviceId: 'nope' })).rejects.toMatchObject({ name: 'UnauthorizedError' });
    await expect(reader.delete('ro')).rejects.toMatchObject({ name: 'UnauthorizedError' });
    await expect(reader.addDevices([{ deviceId: 'nope' }])).rejects.toMatchObject({ name: 'UnauthorizedError' });
    await expect(reader.updateTwin('ro', { tags: { a: 1 } }, '*')).rejects.toMatchObject({
      name: 'UnauthorizedError',
    });
    expect((await fx.registry.getRegistryStatistics()).responseBody.totalDeviceCount).toBe(1);
  });

  it('lets the service policy use twins but not the identity registry', async () => {
    await fx.registry.create({ deviceId: 'svc' });
    const service = registryWithToken(policyToken('test', 'service'));
    await expect(service.getTwin('svc')).resolves.toBeDefined();
    await expect(service.updateTwin('svc', { tags: { a: 1 } }, '*')).resolves.toBeDefined();
    await expect(service.get('svc')).rejects.toMatchObject({ name: 'UnauthorizedError' });
  });

  it('accepts sr=<hub>/devices with registryRead for the identity registry (iot-hub-dev-guide-sas example)', async () => {
    await fx.registry.create({ deviceId: 'scoped' });
    const token = policyToken('test', 'registryRead', { resource: `${fx.hostName}/devices` });
    const reader = new Registry({ host: fx.hostName, sharedAccessSignature: token });
    await expect(reader.get('scoped')).resolves.toMatchObject({ responseBody: { deviceId: 'scoped' } });
    await expect(reader.list()).resolves.toBeDefined();
    // The policy's rights still apply inside the scope.
    await expect(reader.create({ deviceId: 'nope' })).rejects.toMatchObject({ name: 'UnauthorizedError' });
  });

  it('accepts sr=<hub>/devices/<id> for that device only, matching by whole path segments', async () => {
    await fx.registry.addDevices([{ deviceId: 'dev-1' }, { deviceId: 'dev-10' }, { deviceId: 'dev-2' }]);
    const token = policyToken('test', 'registryReadWrite', { resource: `${fx.hostName}/devices/dev-1` });
    const scoped = new Registry({ host: fx.hostName, sharedAccessSignature: token });
    await expect(scoped.get('dev-1')).resolves.toBeDefined();
    await expect(scoped.delete('dev-1')).resolves.toBeDefined();
    for (const other of ['dev-10', 'dev-2']) {
      await expect(scoped.get(other)).rejects.toMatchObject({ name: 'UnauthorizedError' });
    }
    // The registry-wide list is outside a one-device scope.
    await expect(scoped.list()).rejects.toMatchObject({ name: 'UnauthorizedError' });
  });

  it('refuses a scoped token for another hub or another path', async () => {
    const otherHub = fx.emulator.state.hubs.get('production')!.hostName;
    for (const resource of [`${otherHub}/devices`, `${fx.hostName}/jobs`]) {
      const token = policyToken('test', 'iothubowner', { resource });
      const reg = new Registry({ host: fx.hostName, sharedAccessSignature: token });
      await expect(reg.list()).rejects.toMatchObject({ name: 'UnauthorizedError' });
    }
  });

  it('lets a registryReadWrite policy create and delete', async () => {
    const writer = registryWithToken(policyToken('test', 'registryReadWrite'));
    await writer.create({ deviceId: 'rw' });
    await writer.delete('rw');
    await expect(fx.registry.get('rw')).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
  });
});

describe('quotas', () => {
  afterEach(async () => {
    await fx.control('PUT', '/quotas', { enabled: false, scale: 1, overrides: {} });
  });

  it('throttles registry operations beyond the S1 quota with ThrottlingError and recovers', async () => {
    // S1, 1 unit: 100 registry operations per minute; scaled by 0.03 that is 3 before the bucket is empty.
    await fx.control('PUT', '/quotas', { enabled: true, scale: 0.03 });
    const answers = await Promise.allSettled(
      Array.from({ length: 5 }, (_, i) => fx.registry.create({ deviceId: `q${i}` })),
    );
    const rejected = answers.filter((a) => a.status === 'rejected') as PromiseRejectedResult[];
    expect(answers.filter((a) => a.status === 'fulfilled')).toHaveLength(3);
    expect(rejected.map((r) => (r.reason as Error).name)).toEqual(['ThrottlingError', 'ThrottlingError']);

    const throttled = await fx.rest('GET', '/devices/q0?api-version=2021-04-12');
    expect(throttled.status).toBe(429);
    expect(throttled.headers['iothub-errorcode']).toBe('ThrottlingException');
    expect(Number(throttled.headers['retry-after'])).toBeGreaterThan(0);

    await fx.control('PUT', '/quotas', { enabled: false });
    await expect(fx.registry.get('q0')).resolves.toBeDefined();
  });

  it('scales the quota with the hub units', async () => {
    await fx.control('PATCH', '/hubs/test', { units: 2 });
    try {
      await fx.control('PUT', '/quotas', { enabled: true, scale: 0.03 });
      const answers = await Promise.allSettled(
        Array.from({ length: 8 }, (_, i) => fx.registry.create({ deviceId: `u${i}` })),
      );
      expect(answers.filter((a) => a.status === 'fulfilled')).toHaveLength(6);
    } finally {
      await fx.control('PATCH', '/hubs/test', { units: 1 });
    }
  });

  it('keeps queries in their own, smaller bucket', async () => {
    // 20 queries per minute per unit; scaled by 0.1 that is 2.
    await fx.control('PUT', '/quotas', { enabled: true, scale: 0.1 });
    const run = () => fx.registry.createQuery('SELECT * FROM devices').next();
    await run();
    await run();
    await expect(run()).rejects.toMatchObject({ name: 'ThrottlingError' });
    await expect(fx.registry.list()).resolves.toBeDefined();
  });
});

describe('fault injection', () => {
  afterEach(async () => {
    await fx.control('DELETE', '/faults');
  });

  it('fails a named operation N times with the chosen status, then answers normally', async () => {
    await fx.registry.create({ deviceId: 'f' });
    await fx.control('POST', '/faults/rules', { operation: 'getDevice', status: 503, times: 2 });
    await expect(fx.registry.get('f')).rejects.toMatchObject({ name: 'ServiceUnavailableError' });
    await expect(fx.registry.list()).resolves.toBeDefined();
    await expect(fx.registry.get('f')).rejects.toMatchObject({ name: 'ServiceUnavailableError' });
    await expect(fx.registry.get('f')).resolves.toBeDefined();
  });

  it('injects a 500 as InternalServerError and limits a rule to one hub', async () => {
    await fx.control('POST', '/faults/rules', { operation: 'createOrUpdateDevice', status: 500, hub: 'test' });
    const production = Registry.fromConnectionString(fx.emulator.connectionStrings.hubs.production);
    await expect(production.create({ deviceId: 'p' })).resolves.toBeDefined();
    await expect(fx.registry.create({ deviceId: 't' })).rejects.toMatchObject({ name: 'InternalServerError' });
    await expect(fx.registry.get('t')).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
  });

  it('fails every call at error rate 1 and adds latency', async () => {
    await fx.control('PUT', '/faults', { errorRate: 1, errorStatus: 503 });
    await expect(fx.registry.list()).rejects.toMatchObject({ name: 'ServiceUnavailableError' });
    await fx.control('PUT', '/faults', { errorRate: 0, latencyMs: 150 });
    const started = Date.now();
    await fx.registry.list();
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
  });
});

describe('concurrency', () => {
  it('loses nothing when bulk and single creates run in parallel', async () => {
    const bulks = Array.from({ length: 6 }, (_, b) =>
      fx.registry.addDevices(Array.from({ length: 50 }, (_, i) => ({ deviceId: `bulk-${b}-${i}` }))),
    );
    const singles = Array.from({ length: 60 }, (_, i) => fx.registry.create({ deviceId: `single-${i}` }));
    await Promise.all([...bulks, ...singles]);
    const { responseBody } = await fx.registry.getRegistryStatistics();
    expect(responseBody.totalDeviceCount).toBe(360);
    const { result } = await fx.registry.createQuery('SELECT COUNT() AS n FROM devices').next();
    expect(result).toEqual([{ n: 360 }]);
  });

  it('lets exactly one of many parallel creates of the same id win', async () => {
    const answers = await Promise.allSettled(
      Array.from({ length: 20 }, () => fx.registry.create({ deviceId: 'race' })),
    );
    expect(answers.filter((a) => a.status === 'fulfilled')).toHaveLength(1);
    const losers = answers.filter((a) => a.status === 'rejected') as PromiseRejectedResult[];
    expect(new Set(losers.map((l) => (l.reason as Error).name))).toEqual(new Set(['DeviceAlreadyExistsError']));
  });

  it('applies every one of many parallel twin patches', async () => {
    await fx.registry.create({ deviceId: 'tw' });
    await Promise.all(
      Array.from({ length: 25 }, (_, i) =>
        fx.registry.updateTwin('tw', { properties: { desired: { [`k${i}`]: i } } }, '*'),
      ),
    );
    const { responseBody: twin } = await fx.registry.getTwin('tw');
    expect(twin.properties.desired.$version).toBe(26);
    expect(Object.keys(twin.properties.desired).filter((k) => k.startsWith('k'))).toHaveLength(25);
  });

  it('keeps etag checks exact under parallel conditional deletes', async () => {
    await fx.registry.addDevices(Array.from({ length: 20 }, (_, i) => ({ deviceId: `c-${i}` })));
    const { responseBody: devices } = await fx.registry.list();
    const stale = devices.slice(0, 10).map((d) => ({ deviceId: d.deviceId, etag: 'stale' }));
    const fresh = devices.slice(10).map((d) => ({ deviceId: d.deviceId, etag: d.etag }));
    const answers = await Promise.allSettled([
      fx.registry.removeDevices(stale, false),
      ...fresh.map((d) =>
        fx.rest('DELETE', `/devices/${d.deviceId}?api-version=2021-04-12`, undefined, { 'If-Match': `"${d.etag}"` }),
      ),
    ]);
    expect(answers[0]).toMatchObject({ status: 'rejected' });
    expect((await fx.registry.getRegistryStatistics()).responseBody.totalDeviceCount).toBe(10);
  });
});

describe('control API', () => {
  it('creates a hub that answers the Registry with its own keys and is linked to the DPS', async () => {
    const hub = await fx.control<{ hostName: string; policies: Array<{ keyName: string; connectionString: string }> }>(
      'POST',
      '/hubs',
      { name: 'extra', tier: 'S2', units: 2 },
    );
    expect(hub.hostName).toBe('extra-hub.azure-devices.net');
    const owner = hub.policies.find((p) => p.keyName === 'iothubowner')!;
    const extra = Registry.fromConnectionString(owner.connectionString);
    await extra.create({ deviceId: 'only-here' });
    await expect(fx.registry.get('only-here')).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
    const dps = await fx.control<{ linkedHubs: Array<{ hostName: string }> }>('GET', '/dps');
    expect(dps.linkedHubs.map((l) => l.hostName)).toContain('extra-hub.azure-devices.net');
    const devices = await fx.control<Array<{ deviceId: string }>>('GET', '/hubs/extra/devices');
    expect(devices.map((d) => d.deviceId)).toEqual(['only-here']);
    // The test hub's keys do not open the new hub.
    const wrongHub = Registry.fromConnectionString(
      fx.connectionString.replace(fx.hostName, 'extra-hub.azure-devices.net'),
    );
    await expect(wrongHub.get('only-here')).rejects.toMatchObject({ name: 'UnauthorizedError' });
  });

  it('refuses invalid control requests with 400 and unknown objects with 404', async () => {
    await expect(fx.control('POST', '/hubs', { name: '' })).rejects.toThrow(/: 400 /);
    await expect(fx.control('PUT', '/faults', { errorRate: 2 })).rejects.toThrow(/: 400 /);
    await expect(fx.control('GET', '/hubs/nope')).rejects.toThrow(/: 404 /);
    await expect(fx.control('POST', '/hubs', { name: 'test' })).rejects.toThrow(/: 409 /);
  });
});
