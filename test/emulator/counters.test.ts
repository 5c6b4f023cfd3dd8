/**
 * Write counters: what the emulated services were asked to write, counted per surface, hub, operation and resource,
 * so tests can assert "exactly once" on Azure-side effects. Driven through the real azure-iothub Registry,
 * ProvisioningServiceClient and ProvisioningDeviceClient; read in-process and over the control API.
 */
import { ProvisioningDeviceClient } from 'azure-iot-provisioning-device';
import { Http } from 'azure-iot-provisioning-device-http';
import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type {
  BulkEnrollmentOperation,
  BulkEnrollmentOperationResult,
  EnrollmentGroup,
  IndividualEnrollment,
} from 'azure-iot-provisioning-service/dist/interfaces';
import { SymmetricKeySecurityClient } from 'azure-iot-security-symmetric-key';
import { WriteCounters } from '../../emulator/counters';
import { configureDps } from '../../emulator/dps/runtime';
import { startRegistryFixture, type RegistryFixture } from './registry-helpers';
import { controlFetch } from '../helpers/control';

let fx: RegistryFixture & { stop(): Promise<void> };
let dps: ProvisioningServiceClient;

beforeAll(async () => {
  fx = await startRegistryFixture();
  dps = ProvisioningServiceClient.fromConnectionString(fx.emulator.connectionStrings.dps);
});

afterAll(async () => {
  await fx.stop();
});

beforeEach(async () => {
  await fx.control('POST', '/reset');
  configureDps(fx.emulator.state.dps, { retryAfterSeconds: 0 });
});

const key = (fill: number): string => Buffer.alloc(32, fill).toString('base64');

function enrollment(registrationId: string, extra: Record<string, unknown> = {}): IndividualEnrollment {
  return {
    registrationId,
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key(1), secondaryKey: key(2) } },
    ...extra,
  } as unknown as IndividualEnrollment;
}

function runBulk(operation: BulkEnrollmentOperation): Promise<BulkEnrollmentOperationResult> {
  // The SDK's promise form of runBulkEnrollmentOperation never settles; the callback form works.
  return new Promise((resolve, reject) =>
    dps.runBulkEnrollmentOperation(operation, (err, result) => (err ? reject(err) : resolve(result!))),
  );
}

describe('WriteCounters', () => {
  it('sums what matches a filter, lists counters in a stable order, and diffs against a snapshot', () => {
    const counters = new WriteCounters();
    counters.record({ surface: 'hub', hub: 'test', operation: 'deviceDelete', id: 'dev-1' });
    counters.record({ surface: 'hub', hub: 'test', operation: 'deviceDelete', id: 'dev-1' });
    counters.record({ surface: 'hub', hub: 'production', operation: 'deviceDelete', id: 'dev-1' });
    const before = counters.snapshot();
    counters.record({ surface: 'dps', operation: 'enrollmentUpdate', id: 'Dev-1' });
    counters.record({ surface: 'hub', hub: 'test', operation: 'deviceCreate', id: 'dev-2' });

    expect(counters.get({ surface: 'hub', hub: 'test', operation: 'deviceDelete', id: 'dev-1' })).toBe(2);
    expect(counters.get({ operation: 'deviceDelete' })).toBe(3);
    expect(counters.get({ surface: 'hub', id: 'DEV-1' })).toBe(0); // device ids are case-sensitive
    expect(counters.get({ surface: 'dps', id: 'dev-1' })).toBe(1); // DPS ids are not
    expect(counters.get()).toBe(5);
    expect(counters.diff(before)).toEqual([
      { surface: 'dps', operation: 'enrollmentUpdate', id: 'Dev-1', count: 1 },
      { surface: 'hub', hub: 'test', operation: 'deviceCreate', id: 'dev-2', count: 1 },
    ]);
    expect(counters.list({ hub: 'test' }).map((c) => c.count)).toEqual([1, 2]);
    counters.reset();
    expect(counters.get()).toBe(0);
  });
});

describe('hub writes', () => {
  it('counts creates, updates, deletes and twin writes per device, and not the calls that failed', async () => {
    const { counters } = fx.emulator;
    const { responseBody: device } = await fx.registry.create({ deviceId: 'dev-1' });
    await fx.registry.update({ ...device, status: 'disabled' });
    await fx.registry.updateTwin('dev-1', { tags: { a: 1 } }, '*');
    await fx.registry.delete('dev-1');
    await expect(fx.registry.delete('dev-1')).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
    await expect(fx.registry.create({ deviceId: 'bad id!' })).rejects.toMatchObject({ name: 'ArgumentError' });

    expect(counters.list({ surface: 'hub' })).toEqual([
      { surface: 'hub', hub: 'test', operation: 'deviceCreate', id: 'dev-1', count: 1 },
      { surface: 'hub', hub: 'test', operation: 'deviceDelete', id: 'dev-1', count: 1 },
      { surface: 'hub', hub: 'test', operation: 'deviceUpdate', id: 'dev-1', count: 1 },
      { surface: 'hub', hub: 'test', operation: 'twinUpdate', id: 'dev-1', count: 1 },
    ]);
  });

  it('counts a bulk call once and each device it wrote, not the ones it refused', async () => {
    await fx.registry.create({ deviceId: 'taken' });
    const before = fx.emulator.counters.snapshot();
    await expect(
      fx.registry.addDevices([{ deviceId: 'b-1' }, { deviceId: 'taken' }, { deviceId: 'b-2' }]),
    ).rejects.toMatchObject({ name: 'ArgumentError' });
    await fx.registry.removeDevices([{ deviceId: 'b-1' }], true);

    expect(fx.emulator.counters.diff(before)).toEqual([
      { surface: 'hub', hub: 'test', operation: 'deviceBulk', count: 2 },
      { surface: 'hub', hub: 'test', operation: 'deviceCreate', id: 'b-1', count: 1 },
      { surface: 'hub', hub: 'test', operation: 'deviceCreate', id: 'b-2', count: 1 },
      { surface: 'hub', hub: 'test', operation: 'deviceDelete', id: 'b-1', count: 1 },
    ]);
  });

  it('replaces a twin with PUT /twins/{id} (Replace Twin) under its etag and counts it', async () => {
    await fx.registry.create({ deviceId: 'twin' });
    await fx.registry.updateTwin('twin', { tags: { old: 1 }, properties: { desired: { a: 1, b: 2 } } }, '*');
    const { responseBody: twin } = await fx.registry.getTwin('twin');

    const stale = await fx.rest('PUT', '/twins/twin?api-version=2021-04-12', twin, { 'If-Match': '"stale"' });
    expect(stale.status).toBe(412);
    const replaced = await fx.rest(
      'PUT',
      '/twins/twin?api-version=2021-04-12',
      { ...twin, tags: { new: 2 }, properties: { ...twin.properties, desired: { a: 3 } } },
      { 'If-Match': `"${twin.etag}"` },
    );
    expect(replaced.status).toBe(200);
    const { responseBody: after } = await fx.registry.getTwin('twin');
    expect(after.tags).toEqual({ new: 2 });
    expect(after.properties.desired).toMatchObject({ a: 3 });
    expect((after.properties.desired as Record<string, unknown>).b).toBeUndefined();
    expect(fx.emulator.counters.get({ operation: 'twinReplace', id: 'twin' })).toBe(1);
  });
});

describe('DPS writes', () => {
  it('counts enrollment and group creates, updates and deletes, bulk items, and registration-state deletes', async () => {
    const { counters } = fx.emulator;
    const created = (await dps.createOrUpdateIndividualEnrollment(enrollment('Dev-A'))).responseBody;
    await dps.createOrUpdateIndividualEnrollment({ ...created, provisioningStatus: 'disabled' });
    await expect(dps.createOrUpdateIndividualEnrollment(enrollment('dev-a'))).rejects.toBeDefined(); // 409
    await dps.deleteIndividualEnrollment('dev-a');

    const group = (
      await dps.createOrUpdateEnrollmentGroup({
        enrollmentGroupId: 'line-3',
        attestation: { type: 'symmetricKey' },
      } as unknown as EnrollmentGroup)
    ).responseBody;
    await dps.createOrUpdateEnrollmentGroup({ ...group, provisioningStatus: 'disabled' });
    await dps.deleteEnrollmentGroup('line-3');

    const bulk = await runBulk({ mode: 'create', enrollments: [enrollment('bulk-1'), enrollment('bulk-2')] });
    expect(bulk.isSuccessful).toBe(true);

    expect(counters.get({ surface: 'dps', operation: 'enrollmentCreate', id: 'dev-a' })).toBe(1);
    expect(counters.get({ surface: 'dps', operation: 'enrollmentUpdate', id: 'dev-a' })).toBe(1);
    expect(counters.get({ surface: 'dps', operation: 'enrollmentDelete', id: 'dev-a' })).toBe(1);
    expect(counters.list({ surface: 'dps', id: 'line-3' }).map((c) => [c.operation, c.count])).toEqual([
      ['enrollmentGroupCreate', 1],
      ['enrollmentGroupDelete', 1],
      ['enrollmentGroupUpdate', 1],
    ]);
    expect(counters.get({ operation: 'enrollmentBulk' })).toBe(1);
    expect(counters.get({ operation: 'enrollmentCreate' })).toBe(3);
  });

  it('counts device registrations per registration id, and the deletion of a registration state', async () => {
    await dps.createOrUpdateIndividualEnrollment(enrollment('reg-1'));
    const register = (): Promise<unknown> =>
      ProvisioningDeviceClient.create(
        'global.azure-devices-provisioning.net',
        fx.emulator.idScope,
        new Http(),
        new SymmetricKeySecurityClient('reg-1', key(1)) as unknown as Parameters<
          typeof ProvisioningDeviceClient.create
        >[3],
      ).register() as Promise<unknown>;
    await register();
    await register();
    const wrongKey = ProvisioningDeviceClient.create(
      'global.azure-devices-provisioning.net',
      fx.emulator.idScope,
      new Http(),
      new SymmetricKeySecurityClient('reg-1', key(9)) as unknown as Parameters<
        typeof ProvisioningDeviceClient.create
      >[3],
    );
    await expect(wrongKey.register() as Promise<unknown>).rejects.toBeDefined();
    await dps.deleteDeviceRegistrationState('reg-1');

    expect(fx.emulator.counters.get({ surface: 'dps', operation: 'register', id: 'reg-1' })).toBe(2);
    expect(fx.emulator.counters.get({ surface: 'dps', operation: 'registrationStateDelete', id: 'reg-1' })).toBe(1);
  });
});

describe('control API', () => {
  it('answers GET /counters with a filter, resets with DELETE /counters and /reset, and refuses bad filters', async () => {
    await fx.registry.create({ deviceId: 'dev-1' });
    await fx.registry.delete('dev-1');
    await fx.registry.create({ deviceId: 'dev-2' });

    const deleted = await fx.control<{ total: number; counters: unknown[] }>(
      'GET',
      '/counters?surface=hub&hub=test&operation=deviceDelete&id=dev-1',
    );
    expect(deleted).toEqual({
      total: 1,
      counters: [{ surface: 'hub', hub: 'test', operation: 'deviceDelete', id: 'dev-1', count: 1 }],
    });
    expect((await fx.control<{ total: number }>('GET', '/counters')).total).toBe(3);

    const bad = await controlFetch(
      fx.emulator,
      `${fx.emulator.controlUrl}/counters?operation=deviceExplode&colour=red`,
    );
    expect(bad.status).toBe(400);
    const problem = (await bad.json()) as { issues: Array<{ path: string[] }> };
    expect(problem.issues.map((i) => i.path.join('.') || 'query')).toEqual(expect.arrayContaining(['operation']));

    await fx.control('DELETE', '/counters');
    expect((await fx.control<{ total: number }>('GET', '/counters')).total).toBe(0);
    await fx.registry.create({ deviceId: 'dev-3' });
    await fx.control('POST', '/reset');
    expect(fx.emulator.counters.get()).toBe(0);
  });
});
