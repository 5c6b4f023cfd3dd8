/**
 * Fault injection in the middle of a write: rules that delay one named operation only (`latencyMs`), and rules with
 * phase `after` that apply the call and then replace, drop (status 0) or delay its answer — so a test can lose the
 * answer of a write that happened, or stop a worker while one particular write is in flight. Driven through the real
 * azure-iothub Registry, ProvisioningServiceClient, provisioning device client and device client.
 */
import { Client } from 'azure-iot-device';
import { Mqtt } from 'azure-iot-device-mqtt';
import { NoRetry } from 'azure-iot-common';
import { ProvisioningDeviceClient } from 'azure-iot-provisioning-device';
import { Http } from 'azure-iot-provisioning-device-http';
import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type { IndividualEnrollment } from 'azure-iot-provisioning-service/dist/interfaces';
import { SymmetricKeySecurityClient } from 'azure-iot-security-symmetric-key';
import { Registry } from 'azure-iothub';
import { configureDps } from '../../emulator/dps/runtime';
import { startRegistryFixture, type RegistryFixture } from './registry-helpers';
import { controlFetch } from '../helpers/control';

let fx: RegistryFixture & { stop(): Promise<void> };
let production: Registry;
let dps: ProvisioningServiceClient;

beforeAll(async () => {
  fx = await startRegistryFixture();
  production = Registry.fromConnectionString(fx.emulator.connectionStrings.hubs.production);
  dps = ProvisioningServiceClient.fromConnectionString(fx.emulator.connectionStrings.dps);
});

afterAll(async () => {
  await fx.stop();
});

beforeEach(async () => {
  await fx.emulator.reset();
  configureDps(fx.emulator.state.dps, { retryAfterSeconds: 0 });
});

const key = (fill: number): string => Buffer.alloc(32, fill).toString('base64');
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function timed<T>(work: () => Promise<T>): Promise<{ ms: number; outcome: T | unknown }> {
  const started = Date.now();
  const outcome = await work().catch((err: unknown) => err);
  return { ms: Date.now() - started, outcome };
}

describe('phase after: the write is applied and its answer is lost', () => {
  it('applies a device delete, then answers 500: the retry finds the device gone, deleted exactly once', async () => {
    await fx.registry.create({ deviceId: 'dev-1' });
    fx.emulator.faults.addRule({ surface: 'hub', hub: 'test', operation: 'deviceDelete', phase: 'after', status: 500 });

    await expect(fx.registry.delete('dev-1')).rejects.toMatchObject({ name: 'InternalServerError' });
    await expect(fx.registry.get('dev-1')).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
    await expect(fx.registry.delete('dev-1')).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
    expect(fx.emulator.counters.get({ surface: 'hub', hub: 'test', operation: 'deviceDelete', id: 'dev-1' })).toBe(1);
    expect(fx.emulator.faults.rules()).toEqual([]);
  });

  it('drops the connection after a create (status 0): the client gets no answer, the device exists', async () => {
    fx.emulator.faults.addRule({ surface: 'hub', operation: 'deviceCreate', phase: 'after', status: 0 });
    const err = (await fx.registry.create({ deviceId: 'dev-2' }).catch((e: unknown) => e)) as Error;
    // No HTTP answer at all: the socket closed under the request.
    expect(err.message).toMatch(/socket hang up|ECONNRESET/);
    expect((await fx.registry.get('dev-2')).responseBody.deviceId).toBe('dev-2');
    await expect(fx.registry.create({ deviceId: 'dev-2' })).rejects.toMatchObject({
      name: 'DeviceAlreadyExistsError',
    });
  });

  it('is used up only by a call that succeeded: a failed call is answered as it is', async () => {
    fx.emulator.faults.addRule({ surface: 'hub', operation: 'deleteDevice', phase: 'after', status: 503 });
    await expect(fx.registry.delete('missing')).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
    expect(fx.emulator.faults.rules()).toHaveLength(1);
    await fx.registry.create({ deviceId: 'dev-3' });
    await expect(fx.registry.delete('dev-3')).rejects.toMatchObject({ name: 'ServiceUnavailableError' });
    expect(fx.emulator.faults.rules()).toHaveLength(0);
  });

  it('holds back the answer of a write that already happened (latencyMs with phase after)', async () => {
    await fx.registry.create({ deviceId: 'dev-4' });
    fx.emulator.faults.addRule({ surface: 'hub', operation: 'deviceDelete', phase: 'after', latencyMs: 1_000 });
    const pending = timed(() => fx.registry.delete('dev-4'));
    await sleep(300);
    // In flight: the device is already gone, the client has no answer yet.
    expect(fx.emulator.state.hubs.get('test')!.devices.has('dev-4')).toBe(false);
    const { ms, outcome } = await pending;
    expect(outcome).not.toBeInstanceOf(Error);
    expect(ms).toBeGreaterThanOrEqual(950);
  });

  it('applies a DPS enrollment update and answers 503: the enrollment has changed', async () => {
    const created = (
      await dps.createOrUpdateIndividualEnrollment({
        registrationId: 'enr-1',
        attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key(1), secondaryKey: key(2) } },
      } as unknown as IndividualEnrollment)
    ).responseBody;
    fx.emulator.faults.addRule({ surface: 'dpsService', operation: 'enrollmentUpdate', phase: 'after', status: 503 });
    const update = dps.createOrUpdateIndividualEnrollment({ ...created, provisioningStatus: 'disabled' });
    await expect(update).rejects.toBeDefined();
    const now = (await dps.getIndividualEnrollment('enr-1')).responseBody;
    expect(now.provisioningStatus).toBe('disabled');
    expect(now.etag).not.toBe(created.etag);
    expect(fx.emulator.counters.get({ surface: 'dps', operation: 'enrollmentUpdate', id: 'enr-1' })).toBe(1);
  });

  it('applies a device registration and answers 500: registered and counted, the device registers again', async () => {
    await dps.createOrUpdateIndividualEnrollment({
      registrationId: 'reg-1',
      attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key(3), secondaryKey: key(4) } },
    } as unknown as IndividualEnrollment);
    fx.emulator.faults.addRule({ surface: 'dpsDevice', operation: 'register', phase: 'after', status: 500 });
    const register = (): Promise<unknown> =>
      ProvisioningDeviceClient.create(
        'global.azure-devices-provisioning.net',
        fx.emulator.idScope,
        new Http(),
        new SymmetricKeySecurityClient('reg-1', key(3)) as unknown as Parameters<
          typeof ProvisioningDeviceClient.create
        >[3],
      ).register() as Promise<unknown>;
    await expect(register()).rejects.toMatchObject({ name: 'InternalServerError' });
    expect((await dps.getDeviceRegistrationState('reg-1')).responseBody.status).toBe('assigned');
    await expect(register()).resolves.toMatchObject({ substatus: 'reprovisionedToInitialAssignment' });
    expect(fx.emulator.counters.get({ surface: 'dps', operation: 'register', id: 'reg-1' })).toBe(2);
  });

  it('applies a reported-properties patch over MQTT and drops the connection (status 0)', async () => {
    const { responseBody } = await fx.registry.create({ deviceId: 'mqtt-1' });
    const client = Client.fromConnectionString(
      `HostName=${fx.hostName};DeviceId=mqtt-1;SharedAccessKey=${responseBody.authentication!.symmetricKey!.primaryKey};` +
        `GatewayHostName=127.0.0.1:${fx.emulator.mqttPort}`,
      Mqtt,
    );
    client.setRetryPolicy(new NoRetry());
    try {
      await client.setOptions({ ca: fx.emulator.caPem });
      await client.open();
      const twin = await client.getTwin();
      const dropped = new Promise<void>((resolve) => client.once('disconnect', () => resolve()));
      fx.emulator.faults.addRule({ surface: 'mqtt', operation: 'deviceUpdateReported', phase: 'after', status: 0 });
      twin.properties.reported.update({ firmware: '2.0' }, () => undefined);
      await dropped;
      expect((await fx.registry.getTwin('mqtt-1')).responseBody.properties.reported).toMatchObject({
        firmware: '2.0',
      });
    } finally {
      await client.close().catch(() => undefined);
    }
  });
});

describe('latency for one named operation', () => {
  it('delays only the matching surface, hub and operation, and runs the write after the delay', async () => {
    await fx.registry.addDevices([{ deviceId: 'slow' }, { deviceId: 'fast' }]);
    await production.create({ deviceId: 'slow' });
    fx.emulator.faults.addRule({ surface: 'hub', hub: 'test', operation: 'deviceDelete', latencyMs: 800, times: 1 });

    const slow = timed(() => fx.registry.delete('slow'));
    await sleep(300);
    // Phase before: the write has not happened yet.
    expect(fx.emulator.state.hubs.get('test')!.devices.has('slow')).toBe(true);
    const other = await timed(() => production.delete('slow'));
    const read = await timed(() => fx.registry.get('fast'));
    expect((await slow).ms).toBeGreaterThanOrEqual(750);
    expect(other.ms).toBeLessThan(400);
    expect(read.ms).toBeLessThan(400);
    expect(fx.emulator.state.hubs.get('test')!.devices.has('slow')).toBe(false);
  });
});

describe('control API', () => {
  it('adds rules with latencyMs and phase, removes them, and refuses bad ones with 400 and issues', async () => {
    const created = await fx.control<{ id: string; phase: string; times: number }>('POST', '/faults/rules', {
      surface: 'hub',
      hub: 'test',
      operation: 'deviceDelete',
      phase: 'after',
      status: 0,
    });
    expect(created).toMatchObject({ phase: 'after', times: 1, status: 0 });

    for (const bad of [
      { operation: 'deviceDelete' },
      { operation: 'deviceDelete', status: 302 },
      { operation: 'deviceDelete', status: 500, phase: 'during' },
      { operation: 'connect', surface: 'mqtt', status: 500, phase: 'after' },
      { operation: 'deviceDelete', status: 500, colour: 'red' },
    ]) {
      const res = await controlFetch(fx.emulator, `${fx.emulator.controlUrl}/faults/rules`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(bad),
      });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { issues: unknown[] }).issues.length).toBeGreaterThan(0);
    }

    await fx.control('DELETE', `/faults/rules/${created.id}`);
    expect((await fx.control<{ rules: unknown[] }>('GET', '/faults')).rules).toEqual([]);
    const again = await controlFetch(fx.emulator, `${fx.emulator.controlUrl}/faults/rules/${created.id}`, {
      method: 'DELETE',
    });
    expect(again.status).toBe(404);
  });
});
