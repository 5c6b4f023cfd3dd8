/**
 * IoT hub registry conformance through the real azure-iothub Registry: devices, twins, queries, bulk operations,
 * statistics, and Azure's error answers.
 */
import { Registry } from 'azure-iothub';
import type { DeviceIdentity } from 'azure-iothub/dist/device';
import { startRegistryFixture, type RegistryFixture } from './registry-helpers';

let fx: RegistryFixture & { stop(): Promise<void> };
let registry: Registry;

beforeAll(async () => {
  fx = await startRegistryFixture();
  registry = fx.registry;
});

afterAll(async () => {
  await fx.stop();
});

beforeEach(async () => {
  await fx.control('POST', '/reset');
});

const THUMB_A = 'A'.repeat(40);
const THUMB_B = 'B'.repeat(64);

/** The SDK's Device class lacks the scope fields its DeviceIdentity has. */
const createIdentity = async (d: DeviceIdentity): Promise<DeviceIdentity> =>
  (await registry.create(d as Parameters<Registry['create']>[0])).responseBody as DeviceIdentity;
const updateIdentity = async (d: DeviceIdentity): Promise<DeviceIdentity> =>
  (await registry.update(d as Parameters<Registry['update']>[0])).responseBody as DeviceIdentity;
const getIdentity = async (id: string): Promise<DeviceIdentity> =>
  (await registry.get(id)).responseBody as DeviceIdentity;

describe('devices', () => {
  it('creates a sas device with service-generated keys and Azure default fields', async () => {
    const { responseBody: device } = await registry.create({ deviceId: 'sas-1' });
    expect(device).toMatchObject({
      deviceId: 'sas-1',
      status: 'enabled',
      connectionState: 'Disconnected',
      lastActivityTime: '0001-01-01T00:00:00Z',
      cloudToDeviceMessageCount: 0,
      capabilities: { iotEdge: false },
      authentication: { type: 'sas', x509Thumbprint: { primaryThumbprint: null, secondaryThumbprint: null } },
    });
    expect(device.generationId).toMatch(/^\d{18}$/);
    expect(device.etag).toBeTruthy();
    const keys = device.authentication!.symmetricKey!;
    expect(Buffer.from(keys.primaryKey!, 'base64')).toHaveLength(32);
    expect(keys.secondaryKey).not.toBe(keys.primaryKey);
  });

  it('keeps supplied keys, and creates selfSigned and certificateAuthority devices', async () => {
    const primaryKey = Buffer.alloc(32, 1).toString('base64');
    const secondaryKey = Buffer.alloc(32, 2).toString('base64');
    const sas = await registry.create({
      deviceId: 'keys',
      authentication: { symmetricKey: { primaryKey, secondaryKey } },
    });
    expect(sas.responseBody.authentication!.symmetricKey).toEqual({ primaryKey, secondaryKey });

    const selfSigned = await registry.create({
      deviceId: 'x509',
      authentication: { x509Thumbprint: { primaryThumbprint: THUMB_A.toLowerCase(), secondaryThumbprint: THUMB_B } },
    });
    expect(selfSigned.responseBody.authentication).toMatchObject({
      type: 'selfSigned',
      x509Thumbprint: { primaryThumbprint: THUMB_A, secondaryThumbprint: THUMB_B },
      symmetricKey: { primaryKey: null, secondaryKey: null },
    });

    const ca = await registry.create({ deviceId: 'ca', authentication: { type: 'certificateAuthority' } });
    expect(ca.responseBody.authentication).toMatchObject({
      type: 'certificateAuthority',
      symmetricKey: { primaryKey: null, secondaryKey: null },
      x509Thumbprint: { primaryThumbprint: null, secondaryThumbprint: null },
    });
  });

  it('keeps edge scopes as IoT Hub does: generated for an edge, parentScopes set or copied from a leaf scope', async () => {
    // After azure-iot-sdk-csharp e2e RegistryManagerE2ETests.RegistryManager_AddAndRemoveDeviceWithScope.
    const edge1 = await createIdentity({ deviceId: 'edge-1', capabilities: { iotEdge: true } });
    expect(edge1.capabilities).toEqual({ iotEdge: true });
    expect(edge1.deviceScope).toMatch(/^ms-azure-iot-edge:\/\/edge-1-\d+$/);
    expect(edge1.parentScopes).toEqual([]);
    const edge2 = await createIdentity({
      deviceId: 'edge-2',
      capabilities: { iotEdge: true },
      parentScopes: [edge1.deviceScope!],
    });
    expect(edge2.parentScopes).toEqual([edge1.deviceScope]);
    const leaf = await createIdentity({ deviceId: 'leaf', deviceScope: edge2.deviceScope });
    expect(leaf).toMatchObject({ deviceScope: edge2.deviceScope, parentScopes: [edge2.deviceScope] });
    expect(await getIdentity('leaf')).toMatchObject({
      deviceScope: edge2.deviceScope,
      parentScopes: [edge2.deviceScope],
      capabilities: { iotEdge: false },
    });
  });

  it('updates by replacing every settable field: sent fields round-trip, left-out ones reset, identity stays', async () => {
    const edge = await createIdentity({ deviceId: 'edge', capabilities: { iotEdge: true } });
    const leaf = await createIdentity({ deviceId: 'child', deviceScope: edge.deviceScope });

    const updated = await updateIdentity({ ...leaf, status: 'disabled', statusReason: 'revoked' });
    expect(updated).toMatchObject({
      status: 'disabled',
      statusReason: 'revoked',
      deviceScope: edge.deviceScope,
      parentScopes: [edge.deviceScope],
      generationId: leaf.generationId,
      authentication: leaf.authentication,
    });
    expect(updated.etag).not.toBe(leaf.etag);

    // Registry.update documents that what is left out is reset (statusReason, capabilities, deviceScope).
    const bare = await updateIdentity({
      deviceId: 'child',
      status: 'enabled',
      authentication: leaf.authentication,
    });
    expect(bare).toMatchObject({ statusReason: null, capabilities: { iotEdge: false }, parentScopes: [] });
    expect(bare.deviceScope).toBeUndefined();

    // An edge device's own scope is immutable.
    const edgeAgain = await updateIdentity({ ...edge, statusReason: 'maintenance' });
    expect(edgeAgain).toMatchObject({ deviceScope: edge.deviceScope, capabilities: { iotEdge: true } });
  });

  it('copies a bulk-created leaf scope to its parentScopes (RegistryManager_AddDevices2Async_Works)', async () => {
    await registry.addDevices([
      { deviceId: 'bulk-edge', deviceScope: 'someScope-1' },
      { deviceId: 'bulk-leaf', deviceScope: 'someScope-1' },
    ]);
    expect((await getIdentity('bulk-edge')).deviceScope).toBe('someScope-1');
    expect((await getIdentity('bulk-leaf')).parentScopes).toEqual(['someScope-1']);
  });

  it('gets a device with the etag it was created with', async () => {
    const created = await registry.create({ deviceId: 'get-me' });
    const got = await registry.get('get-me');
    expect(got.responseBody).toMatchObject({ deviceId: 'get-me', etag: created.responseBody.etag });
  });

  it('updates a device: new etag, same generationId, status change recorded', async () => {
    const { responseBody: created } = await registry.create({ deviceId: 'upd' });
    const { responseBody: updated } = await registry.update({
      ...created,
      status: 'disabled',
      statusReason: 'revoked',
    });
    expect(updated).toMatchObject({ status: 'disabled', statusReason: 'revoked', generationId: created.generationId });
    expect(updated.etag).not.toBe(created.etag);
    expect(updated.statusUpdatedTime).not.toBe('0001-01-01T00:00:00Z');
    expect(updated.authentication!.symmetricKey).toEqual(created.authentication!.symmetricKey);
  });

  it('deletes a device; a re-created one has a new generationId', async () => {
    const { responseBody: first } = await registry.create({ deviceId: 'del' });
    await registry.delete('del');
    await expect(registry.get('del')).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
    const { responseBody: second } = await registry.create({ deviceId: 'del' });
    expect(second.generationId).not.toBe(first.generationId);
  });

  it('lists devices', async () => {
    await registry.create({ deviceId: 'l1' });
    await registry.create({ deviceId: 'l2' });
    const { responseBody } = await registry.list();
    expect(responseBody.map((d) => d.deviceId).sort()).toEqual(['l1', 'l2']);
  });

  it('answers a duplicate create with DeviceAlreadyExistsError', async () => {
    await registry.create({ deviceId: 'dup' });
    await expect(registry.create({ deviceId: 'dup' })).rejects.toMatchObject({ name: 'DeviceAlreadyExistsError' });
  });

  it('answers get, update and delete of a missing device with DeviceNotFoundError', async () => {
    await expect(registry.get('ghost')).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
    await expect(registry.update({ deviceId: 'ghost', status: 'disabled' })).rejects.toMatchObject({
      name: 'DeviceNotFoundError',
    });
    await expect(registry.delete('ghost')).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
  });

  it('answers invalid ids, keys and thumbprints with ArgumentError', async () => {
    await expect(registry.create({ deviceId: 'bad/id' })).rejects.toMatchObject({ name: 'ArgumentError' });
    await expect(
      registry.create({
        deviceId: 'short-key',
        authentication: { symmetricKey: { primaryKey: 'AAAA', secondaryKey: 'BBBB' } },
      }),
    ).rejects.toMatchObject({ name: 'ArgumentError' });
    await expect(
      registry.create({ deviceId: 'bad-thumb', authentication: { x509Thumbprint: { primaryThumbprint: 'XYZ' } } }),
    ).rejects.toMatchObject({ name: 'ArgumentError' });
  });

  it('enforces If-Match etags on update and delete', async () => {
    const { responseBody: device } = await registry.create({ deviceId: 'etag' });
    const stale = await fx.rest(
      'PUT',
      '/devices/etag?api-version=2021-04-12',
      { deviceId: 'etag', status: 'disabled' },
      {
        'If-Match': '"not-the-etag"',
      },
    );
    expect(stale.status).toBe(412);
    expect(stale.error).toMatchObject({ name: 'InvalidEtagError' });
    expect(stale.headers['iothub-errorcode']).toBe('PreconditionFailed');

    const fresh = await fx.rest(
      'PUT',
      '/devices/etag?api-version=2021-04-12',
      { deviceId: 'etag', status: 'disabled' },
      {
        'If-Match': `"${device.etag}"`,
      },
    );
    expect(fresh.status).toBe(200);

    const staleDelete = await fx.rest('DELETE', '/devices/etag?api-version=2021-04-12', undefined, {
      'If-Match': `"${device.etag}"`,
    });
    expect(staleDelete.error).toMatchObject({ name: 'InvalidEtagError' });
    const { etag } = fresh.body as { etag: string };
    const deleted = await fx.rest('DELETE', '/devices/etag?api-version=2021-04-12', undefined, {
      'If-Match': `"${etag}"`,
    });
    expect(deleted.status).toBe(204);
  });

  it('sends Azure legacy error bodies with iothub-errorcode', async () => {
    const missing = await fx.rest('GET', '/devices/nobody?api-version=2021-04-12');
    expect(missing.status).toBe(404);
    expect(missing.headers['iothub-errorcode']).toBe('DeviceNotFound');
    expect(missing.headers['content-type']).toMatch(/^application\/json/);
    expect(missing.body).toEqual({
      Message: expect.stringMatching(/^ErrorCode:DeviceNotFound;/),
      ExceptionMessage: expect.stringMatching(/^Tracking ID:/),
    });
  });

  it('answers a host that is no emulated hub with IotHubNotFoundError', async () => {
    const other = Registry.fromConnectionString(
      fx.connectionString.replace(fx.hostName, 'no-such-hub.azure-devices.net'),
    );
    await expect(other.get('x')).rejects.toMatchObject({ name: 'IotHubNotFoundError' });
  });
});

describe('twins', () => {
  it('returns the twin of a new device at version 1 with empty properties', async () => {
    await registry.create({ deviceId: 'tw' });
    const { responseBody: twin } = await registry.getTwin('tw');
    expect(twin).toMatchObject({ deviceId: 'tw', tags: {}, version: 1, status: 'enabled', authenticationType: 'sas' });
    expect(twin.properties.desired.$version).toBe(1);
    expect(twin.properties.reported.$version).toBe(1);
  });

  it('patches tags and desired properties with the current etag and bumps the versions', async () => {
    await registry.create({ deviceId: 'tw' });
    const { responseBody: before } = await registry.getTwin('tw');
    const { responseBody: after } = await registry.updateTwin(
      'tw',
      { tags: { site: 'plant-1' }, properties: { desired: { interval: 30, nested: { a: 1 } } } },
      before.etag,
    );
    expect(after.tags).toEqual({ site: 'plant-1' });
    expect(after.properties.desired).toMatchObject({ interval: 30, nested: { a: 1 }, $version: 2 });
    expect(after.etag).not.toBe(before.etag);

    const { responseBody: removed } = await registry.updateTwin(
      'tw',
      { properties: { desired: { nested: null } } },
      '*',
    );
    expect(removed.properties.desired.nested).toBeUndefined();
    expect(removed.properties.desired.interval).toBe(30);
    expect(removed.properties.desired.$version).toBe(3);
  });

  it('answers a twin patch with a stale etag with InvalidEtagError', async () => {
    await registry.create({ deviceId: 'tw' });
    const { responseBody: twin } = await registry.getTwin('tw');
    await registry.updateTwin('tw', { tags: { a: 1 } }, twin.etag);
    await expect(registry.updateTwin('tw', { tags: { a: 2 } }, twin.etag)).rejects.toMatchObject({
      name: 'InvalidEtagError',
    });
  });

  it('answers twin calls for a missing device with DeviceNotFoundError', async () => {
    await expect(registry.getTwin('ghost')).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
    await expect(registry.updateTwin('ghost', { tags: {} }, '*')).rejects.toMatchObject({
      name: 'DeviceNotFoundError',
    });
  });
});

describe('queries', () => {
  async function seed(): Promise<void> {
    await registry.addDevices(
      Array.from({ length: 7 }, (_, i) => ({ deviceId: `q-${i}`, status: i % 3 === 0 ? 'disabled' : 'enabled' })),
    );
  }

  it('pages SELECT * FROM devices by x-ms-max-item-count and stops at the last page', async () => {
    await seed();
    const query = registry.createQuery('SELECT * FROM devices', 3);
    const pages: number[] = [];
    const ids: string[] = [];
    do {
      const { result } = await query.nextAsTwin();
      pages.push(result.length);
      ids.push(...result.map((t) => t.deviceId));
    } while (query.hasMoreResults);
    expect(pages).toEqual([3, 3, 1]);
    expect(ids.sort()).toEqual(['q-0', 'q-1', 'q-2', 'q-3', 'q-4', 'q-5', 'q-6']);
  });

  it('filters with WHERE on status, deviceId and connectionState', async () => {
    await seed();
    const run = async (sql: string): Promise<string[]> => {
      const { result } = await registry.createQuery(sql).nextAsTwin();
      return result.map((t) => t.deviceId).sort();
    };
    expect(await run("SELECT * FROM devices WHERE status = 'disabled'")).toEqual(['q-0', 'q-3', 'q-6']);
    expect(await run("SELECT * FROM devices WHERE deviceId = 'q-4'")).toEqual(['q-4']);
    expect(await run("SELECT * FROM devices WHERE deviceId IN ['q-1', 'q-2'] AND status = 'enabled'")).toEqual([
      'q-1',
      'q-2',
    ]);
    expect(await run("SELECT * FROM devices WHERE connectionState = 'Connected'")).toEqual([]);
    expect(await run("select * from devices where status != 'disabled' or deviceId = 'q-0'")).toHaveLength(5);
  });

  it('counts with SELECT COUNT()', async () => {
    await seed();
    const { result } = await registry.createQuery("SELECT COUNT() AS n FROM devices WHERE status = 'enabled'").next();
    expect(result).toEqual([{ n: 4 }]);
  });

  it('filters on tags set through the twin', async () => {
    await seed();
    await registry.updateTwin('q-5', { tags: { ring: 'canary' } }, '*');
    const { result } = await registry.createQuery("SELECT * FROM devices WHERE tags.ring = 'canary'").nextAsTwin();
    expect(result.map((t) => t.deviceId)).toEqual(['q-5']);
  });

  it('returns the identity fields a fleet audit reads: status and its reason, authentication, connection, activity', async () => {
    await registry.create({ deviceId: 'audit-sas', status: 'disabled', statusReason: 'RMA 4711' } as never);
    await registry.create({
      deviceId: 'audit-x509',
      authentication: {
        type: 'selfSigned',
        x509Thumbprint: { primaryThumbprint: THUMB_A, secondaryThumbprint: THUMB_A },
      },
    } as never);
    const query = registry.createQuery("SELECT * FROM devices WHERE deviceId IN ['audit-sas', 'audit-x509']", 10);
    const { result } = await query.next();
    const byId = Object.fromEntries((result as Array<Record<string, unknown>>).map((t) => [t.deviceId, t]));
    expect(byId['audit-sas']).toMatchObject({
      status: 'disabled',
      statusReason: 'RMA 4711',
      authenticationType: 'sas',
      connectionState: 'Disconnected',
      lastActivityTime: '0001-01-01T00:00:00Z',
    });
    expect(byId['audit-x509']).toMatchObject({
      status: 'enabled',
      statusReason: null,
      authenticationType: 'selfSigned',
      x509Thumbprint: { primaryThumbprint: THUMB_A },
    });
  });

  it('answers an unparsable query with ArgumentError', async () => {
    await expect(registry.createQuery('DROP TABLE devices').next()).rejects.toMatchObject({ name: 'ArgumentError' });
  });
});

describe('bulk operations', () => {
  it('creates, updates and removes up to 100 devices', async () => {
    const devices = Array.from({ length: 100 }, (_, i) => ({ deviceId: `b-${i}` }));
    const created = await registry.addDevices(devices);
    expect(created.responseBody).toEqual({ isSuccessful: true, errors: [], warnings: [] });
    expect((await registry.getRegistryStatistics()).responseBody.totalDeviceCount).toBe(100);

    await registry.updateDevices(
      devices.slice(0, 10).map((d) => ({ ...d, status: 'disabled' })),
      true,
    );
    expect((await registry.get('b-3')).responseBody.status).toBe('disabled');

    await registry.removeDevices(devices.slice(0, 50), true);
    expect((await registry.getRegistryStatistics()).responseBody).toEqual({
      totalDeviceCount: 50,
      enabledDeviceCount: 50,
      disabledDeviceCount: 0,
    });
  });

  it('honours etags in UpdateIfMatchETag and DeleteIfMatchETag, reporting failures per device', async () => {
    await registry.addDevices([{ deviceId: 'e-1' }, { deviceId: 'e-2' }]);
    const e1 = (await registry.get('e-1')).responseBody;
    const result = await registry
      .updateDevices(
        [
          { ...e1, status: 'disabled' },
          { deviceId: 'e-2', status: 'disabled', etag: 'stale' },
        ],
        false,
      )
      .catch((err: Error & { responseBody?: string }) => err);
    expect(result).toMatchObject({ name: 'ArgumentError' });
    expect(JSON.parse((result as { responseBody: string }).responseBody)).toMatchObject({
      isSuccessful: false,
      errors: [{ deviceId: 'e-2', errorCode: 'PreconditionFailed' }],
    });
    expect((await registry.get('e-1')).responseBody.status).toBe('disabled');
    expect((await registry.get('e-2')).responseBody.status).toBe('enabled');

    const removal = await registry
      .removeDevices([{ deviceId: 'e-2', etag: 'stale' }], false)
      .catch((err: Error) => err);
    expect(removal).toMatchObject({ name: 'ArgumentError' });
    expect((await registry.get('e-2')).responseBody.deviceId).toBe('e-2');
  });

  it('reports duplicates in a bulk create and keeps the rest', async () => {
    await registry.create({ deviceId: 'taken' });
    const err: unknown = await registry
      .addDevices([{ deviceId: 'taken' }, { deviceId: 'free' }])
      .catch((e: Error) => e);
    expect(JSON.parse((err as { responseBody: string }).responseBody).errors).toEqual([
      { deviceId: 'taken', errorCode: 'DeviceAlreadyExists', errorStatus: expect.any(String) },
    ]);
    expect((await registry.get('free')).responseBody.deviceId).toBe('free');
  });

  it('accepts importMode in any case and eTag spelled either way', async () => {
    await registry.addDevices([{ deviceId: 'm-1' }, { deviceId: 'm-2' }]);
    const etag = (await registry.get('m-1')).responseBody.etag;
    const answer = await fx.rest('POST', '/devices?api-version=2021-04-12', [
      { id: 'm-1', importMode: 'deleteIfMatchETag', eTag: etag },
      { id: 'm-2', importMode: 'DELETE' },
      { id: 'm-3', importMode: 'Create' },
    ]);
    expect(answer.status).toBe(200);
    expect((await registry.list()).responseBody.map((d) => d.deviceId)).toEqual(['m-3']);
  });

  it('refuses a bulk of 0 or 101 devices: the SDK before sending, the service with 400', async () => {
    await expect(registry.addDevices([])).rejects.toMatchObject({ name: 'ArgumentError' });
    const tooMany = Array.from({ length: 101 }, (_, i) => ({ deviceId: `t-${i}` }));
    await expect(registry.addDevices(tooMany)).rejects.toMatchObject({ name: 'ArgumentError' });

    for (const items of [[], tooMany.map((d) => ({ id: d.deviceId, importMode: 'create' }))]) {
      const answer = await fx.rest('POST', '/devices?api-version=2021-04-12', items);
      expect(answer.status).toBe(400);
      expect(answer.error).toMatchObject({ name: 'ArgumentError' });
    }
    expect((await registry.getRegistryStatistics()).responseBody.totalDeviceCount).toBe(0);
  });
});
