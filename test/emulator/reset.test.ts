/**
 * The control API's reset and DPS settings: after `POST /reset` nothing of the old state answers — registry, DPS,
 * device sessions, Event Grid subscriptions, quotas and faults — while hubs, links and policy keys stay.
 */
import { Client as DeviceClient } from 'azure-iot-device';
import { Mqtt } from 'azure-iot-device-mqtt';
import { NoRetry } from 'azure-iot-common';
import { ProvisioningDeviceClient, type RegistrationResult } from 'azure-iot-provisioning-device';
import { Http } from 'azure-iot-provisioning-device-http';
import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type { EnrollmentGroup, IndividualEnrollment } from 'azure-iot-provisioning-service/dist/interfaces';
import { SymmetricKeySecurityClient } from 'azure-iot-security-symmetric-key';
import { Client as ServiceClient, Registry } from 'azure-iothub';
import { mintCertificate } from '../../emulator/security/certs';
import { deviceBroker } from '../../emulator/mqtt/listener';
import { installAzureEndpointRouting } from '../../common/azure-routing';
import { startEmulator, type RunningEmulator } from '../../emulator/server';
import { WebhookSubscriber } from './webhook-subscriber';
import { controlFetch } from '../helpers/control';

let emulator: RunningEmulator;
let uninstallRouting: () => void;
let subscriber: WebhookSubscriber;
let webhookUrl: string;
const openDevices: DeviceClient[] = [];

beforeAll(async () => {
  emulator = await startEmulator();
  uninstallRouting = installAzureEndpointRouting({ address: emulator.address, caPem: emulator.caPem });
  subscriber = new WebhookSubscriber();
  webhookUrl = await subscriber.start();
});

afterEach(async () => {
  await Promise.all(openDevices.splice(0).map((c) => c.close().catch(() => undefined)));
});

afterAll(async () => {
  uninstallRouting();
  await emulator.stop();
  await subscriber.stop();
});

async function control(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  const res = await controlFetch(emulator, `${emulator.controlUrl}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as unknown) : undefined };
}

function deviceClient(hubHost: string, deviceId: string, key: string): DeviceClient {
  const client = DeviceClient.fromConnectionString(
    `HostName=${hubHost};DeviceId=${deviceId};SharedAccessKey=${key};GatewayHostName=127.0.0.1:${emulator.mqttPort}`,
    Mqtt,
  );
  client.setRetryPolicy(new NoRetry());
  openDevices.push(client);
  return client;
}

function register(registrationId: string, key: string): Promise<RegistrationResult> {
  const client = ProvisioningDeviceClient.create(
    'global.azure-devices-provisioning.net',
    emulator.idScope,
    new Http(),
    new SymmetricKeySecurityClient(registrationId, key) as unknown as Parameters<
      typeof ProvisioningDeviceClient.create
    >[3],
  );
  return client.register() as Promise<RegistrationResult>;
}

const statusOf = (err: unknown): number | undefined =>
  (err as { response?: { statusCode?: number } }).response?.statusCode;

async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('POST /reset', () => {
  it('leaves nothing of the old registry, DPS, sessions, subscriptions, quotas, faults or settings', async () => {
    const hubHost = emulator.state.hubs.get('test')!.hostName;
    const registry = Registry.fromConnectionString(emulator.connectionStrings.hubs.test);
    const dps = ProvisioningServiceClient.fromConnectionString(emulator.connectionStrings.dps);
    const broker = deviceBroker(emulator.state)!;

    // The old state: a subscription, settings, an enrollment, a group, a registration, a connected device.
    expect(
      (await control('PUT', '/eventgrid/hubs/test/subscriptions/before-reset', { endpointUrl: webhookUrl })).status,
    ).toBe(201);
    expect((await control('PUT', '/dps/settings', { retryAfterSeconds: 0 })).status).toBe(200);
    expect((await control('PUT', '/quotas', { enabled: true, overrides: { registry: 10_000 } })).status).toBe(200);
    expect(
      (await control('POST', '/faults/rules', { operation: 'getDevice', hub: 'production', status: 500, times: 9 }))
        .status,
    ).toBe(201);
    const registrationId = `reset-enrolled-${Date.now().toString(36)}`;
    const enrolled = await dps.createOrUpdateIndividualEnrollment({
      registrationId,
      attestation: { type: 'symmetricKey' },
    } as unknown as IndividualEnrollment);
    const enrollmentKey = enrolled.responseBody.attestation.symmetricKey!.primaryKey;
    await dps.createOrUpdateEnrollmentGroup({
      enrollmentGroupId: 'reset-group',
      attestation: { type: 'symmetricKey' },
    } as unknown as EnrollmentGroup);
    const registered = await register(registrationId, enrollmentKey);
    expect(registered.status).toBe('assigned');

    const deviceId = 'reset-connected';
    const key = (await registry.create({ deviceId })).responseBody.authentication!.symmetricKey!.primaryKey!;
    const device = deviceClient(hubHost, deviceId, key);
    await device.setOptions({ ca: emulator.caPem });
    await device.open();
    device.onDeviceMethod('ping', (_request, response) => void response.send(200, 'pong'));
    await until(() => broker.connections('test').some((c) => c.subscriptions.includes('$iothub/methods/POST/#')));
    broker.addVerifiedCaCertificate('test', mintCertificate({ commonName: 'Reset CA', isCa: true }).certPem);
    await subscriber.until(
      (e) => e.eventType === 'Microsoft.Devices.DeviceConnected' && e.subject === `devices/${deviceId}`,
    );

    const dropped = new Promise<void>((resolve) => device.once('disconnect', () => resolve()));
    expect((await control('POST', '/reset')).status).toBe(204);
    await dropped;
    const notificationsAtReset = subscriber.notifications.length;

    // Registry: no devices on either hub, through the same (kept) connection strings.
    await expect(registry.get(deviceId)).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
    expect((await registry.list()).responseBody).toEqual([]);
    expect(
      (await Registry.fromConnectionString(emulator.connectionStrings.hubs.production).list()).responseBody,
    ).toEqual([]);

    // DPS: no enrollment, group or registration; the old key no longer registers.
    expect(statusOf(await dps.getIndividualEnrollment(registrationId).catch((e: unknown) => e))).toBe(404);
    expect(statusOf(await dps.getEnrollmentGroup('reset-group').catch((e: unknown) => e))).toBe(404);
    expect(statusOf(await dps.getDeviceRegistrationState(registrationId).catch((e: unknown) => e))).toBe(404);
    await expect(register(registrationId, enrollmentKey)).rejects.toBeDefined();

    // Sessions: no connection, no verified CA; the old key is refused; a new device of the same id gets a fresh
    // session without the old one's subscriptions.
    expect(broker.connections()).toEqual([]);
    expect(broker.verifiedCaCertificates('test')).toEqual([]);
    const stale = deviceClient(hubHost, deviceId, key);
    await stale.setOptions({ ca: emulator.caPem });
    await expect(stale.open()).rejects.toThrow(/Connection refused: Not authorized/);
    const newKey = (await registry.create({ deviceId })).responseBody.authentication!.symmetricKey!.primaryKey!;
    const fresh = deviceClient(hubHost, deviceId, newKey);
    await fresh.setOptions({ ca: emulator.caPem });
    await fresh.open();
    await until(() => broker.connections('test').some((c) => c.deviceId === deviceId));
    await new Promise((r) => setTimeout(r, 200));
    expect(broker.connections('test').find((c) => c.deviceId === deviceId)!.subscriptions).toEqual([]);
    const service = ServiceClient.fromConnectionString(emulator.connectionStrings.hubs.test);
    await expect(service.invokeDeviceMethod(deviceId, { methodName: 'ping' })).rejects.toMatchObject({
      response: { statusCode: 404 },
    });

    // Event Grid: the subscription, its counters and dead letters are gone; nothing more reached the old webhook.
    expect((await control('GET', '/eventgrid/subscriptions')).body).toEqual([]);
    expect((await control('GET', '/eventgrid/dead-letters')).body).toEqual([]);
    expect(subscriber.notifications.length).toBe(notificationsAtReset);
    const again = await control('PUT', '/eventgrid/hubs/test/subscriptions/before-reset', { endpointUrl: webhookUrl });
    expect(again).toMatchObject({ status: 201, body: { delivered: 0, deadLettered: 0, pending: 0 } });

    // Quotas, faults and settings are back to their defaults; hubs and links stay.
    expect((await control('GET', '/quotas')).body).toEqual({ enabled: false, scale: 1, overrides: {} });
    expect((await control('GET', '/faults')).body).toEqual({ errorRate: 0, errorStatus: 500, latencyMs: 0, rules: [] });
    expect((await control('GET', '/dps/settings')).body).toEqual({ retryAfterSeconds: 3 });
    expect((await control('GET', '/dps')).body).toMatchObject({
      enrollmentCount: 0,
      enrollmentGroupCount: 0,
      registrationCount: 0,
    });
    expect(((await control('GET', '/dps')).body as { linkedHubs: unknown[] }).linkedHubs).toHaveLength(2);
  });
});

describe('GET/PUT /dps/settings', () => {
  it('reads and sets retryAfterSeconds, and answers 400 with issues for bad input', async () => {
    expect(await control('PUT', '/dps/settings', { retryAfterSeconds: 1 })).toEqual({
      status: 200,
      body: { retryAfterSeconds: 1 },
    });
    expect((await control('GET', '/dps/settings')).body).toEqual({ retryAfterSeconds: 1 });
    for (const bad of [
      {},
      { retryAfterSeconds: -1 },
      { retryAfterSeconds: 1.5 },
      { retryAfterSeconds: '2' },
      { retryAfter: 2 },
    ]) {
      const answer = await control('PUT', '/dps/settings', bad);
      expect(answer.status).toBe(400);
      expect((answer.body as { issues: unknown[] }).issues.length).toBeGreaterThan(0);
    }
    expect((await control('GET', '/dps/settings')).body).toEqual({ retryAfterSeconds: 1 });

    // The setting reaches devices: the registration answer's retry-after is what the SDK waits before polling.
    await control('PUT', '/dps/settings', { retryAfterSeconds: 2 });
    const dps = ProvisioningServiceClient.fromConnectionString(emulator.connectionStrings.dps);
    const registrationId = `settings-${Date.now().toString(36)}`;
    const { responseBody } = await dps.createOrUpdateIndividualEnrollment({
      registrationId,
      attestation: { type: 'symmetricKey' },
    } as unknown as IndividualEnrollment);
    const started = Date.now();
    await register(registrationId, responseBody.attestation.symmetricKey!.primaryKey);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_900);
  });
});
