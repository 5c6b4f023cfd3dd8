/**
 * Devices that use HTTPS, driven by the real azure-iot-device client with the azure-iot-device-http transport against
 * the in-process emulator's hub device endpoints, with devices managed through the real azure-iothub Registry. Where
 * the SDK hides what went over the wire (cloud-to-device poll failures, header shapes), a raw request on the same
 * routing shows it.
 *
 * Sources: IoT Hub REST "Device" operations (Send Device Event, Receive / Complete / Abandon Device Bound
 * Notification), azure-iot-sdk-node device/transport/http (http.ts, http_errors.ts), "Understand cloud-to-device
 * messaging" (iot-hub-devguide-messages-c2d), the identity registry's device properties
 * (iot-hub-devguide-identity-registry) and IoT Hub's common REST error codes.
 */
import https from 'node:https';
import {
  Client,
  Message,
  SharedAccessSignatureAuthenticationProvider,
  X509AuthenticationProvider,
} from 'azure-iot-device';
import { Http } from 'azure-iot-device-http/dist/http';
import { NoRetry } from 'azure-iot-common';
import { Registry } from 'azure-iothub';
import { installAzureEndpointRouting } from '../../common/azure-routing';
import {
  CloudToDeviceQueues,
  LOCK_TIMEOUT_MS,
  MAX_DELIVERY_COUNT,
  DEFAULT_TTL_MS,
} from '../../emulator/hub/cloud-to-device';
import { resetLimits } from '../../emulator/limits/decide';
import { deviceBroker } from '../../emulator/mqtt/listener';
import { mintCertificate, type MintedCert } from '../../emulator/security/certs';
import { createSasToken } from '../../emulator/security/sas';
import { startEmulator, type RunningEmulator } from '../../emulator/server';
import type { DeviceEvent, DeviceTelemetryEvent } from '../../emulator/state';

const NEVER = '0001-01-01T00:00:00Z';

let emulator: RunningEmulator;
let uninstallRouting: () => void;
let registry: Registry;
let hubHost: string;
const openClients: Client[] = [];

beforeAll(async () => {
  emulator = await startEmulator({ controlPort: false });
  uninstallRouting = installAzureEndpointRouting({ address: emulator.address, caPem: emulator.caPem });
  registry = Registry.fromConnectionString(emulator.connectionStrings.hubs.test);
  hubHost = emulator.state.hubs.get('test')!.hostName;
});

afterEach(async () => {
  await Promise.all(openClients.splice(0).map((c) => c.close().catch(() => undefined)));
  emulator.faults.clear();
  resetLimits(emulator.state.limits);
});

afterAll(async () => {
  uninstallRouting();
  await emulator.stop();
});

let counter = 0;
const uniqueId = (prefix: string): string => `${prefix}-${Date.now().toString(36)}-${++counter}`;
const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await pause(20);
  }
}

async function createSasDevice(deviceId = uniqueId('https')) {
  const { responseBody } = await registry.create({ deviceId });
  return { deviceId, key: responseBody.authentication!.symmetricKey!.primaryKey! };
}

function track(client: Client): Client {
  // One attempt per call, so that every answer of the hub reaches the test.
  client.setRetryPolicy(new NoRetry());
  openClients.push(client);
  return client;
}

function sasClient(deviceId: string, key: string): Client {
  return track(Client.fromConnectionString(`HostName=${hubHost};DeviceId=${deviceId};SharedAccessKey=${key}`, Http));
}

function tokenClient(deviceId: string, sharedAccessSignature: string): Client {
  const provider = new SharedAccessSignatureAuthenticationProvider({ host: hubHost, deviceId, sharedAccessSignature });
  return track(Client.fromAuthenticationProvider(provider, Http));
}

function x509Client(deviceId: string, cert: { certPem: string; keyPem: string }): Client {
  const provider = new X509AuthenticationProvider({
    host: hubHost,
    deviceId,
    x509: { cert: cert.certPem, key: cert.keyPem },
  });
  return track(Client.fromAuthenticationProvider(provider, Http));
}

/** The SDK's error for a refused call keeps the HTTP response (azure-iot-device-http http_errors.ts). */
function refusedWith(status: number, name: string) {
  return expect.objectContaining({ name, response: expect.objectContaining({ statusCode: status }) });
}

/** A raw HTTPS request to the test hub, through the same routing the SDK uses. */
function hubRequest(
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: hubHost, method, path, headers }, (res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => (text += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function deviceToken(deviceId: string, key: string): string {
  return createSasToken({ resource: `${hubHost}/devices/${deviceId}`, key });
}

function telemetryOf(deviceId: string): DeviceTelemetryEvent[] {
  const seen: DeviceTelemetryEvent[] = [];
  emulator.state.events.on('deviceTelemetry', (e) => {
    if (e.deviceId === deviceId) seen.push(e);
  });
  return seen;
}

function connectionEventsOf(deviceId: string): DeviceEvent[] {
  const seen: DeviceEvent[] = [];
  const listener = (e: DeviceEvent): void => {
    if (e.deviceId === deviceId) seen.push(e);
  };
  emulator.state.events.on('deviceConnected', listener);
  emulator.state.events.on('deviceDisconnected', listener);
  return seen;
}

describe('HTTPS devices', () => {
  it('accepts telemetry from a SAS device, single and batched, moving lastActivityTime and never connectionState', async () => {
    // POST /devices/{id}/messages/events → 204 (REST "Send Device Event"); sendEventBatch posts a JSON array as
    // application/vnd.microsoft.iothub.json, properties prefixed iothub-app- (azure-iot-device-http http.ts). IoT Hub
    // tracks connectionState only for MQTT and AMQP (iot-hub-devguide-identity-registry).
    const { deviceId, key } = await createSasDevice();
    const before = (await registry.get(deviceId)).responseBody;
    expect(before).toMatchObject({ connectionState: 'Disconnected', lastActivityTime: NEVER });
    const telemetry = telemetryOf(deviceId);
    const connections = connectionEventsOf(deviceId);

    const client = sasClient(deviceId, key);
    await client.open();
    const single = new Message('{"t":21}');
    single.messageId = 'm-1';
    single.properties.add('unit', 'C');
    await client.sendEvent(single);
    const afterOne = (await registry.get(deviceId)).responseBody;
    expect(afterOne.lastActivityTime).not.toBe(NEVER);
    expect(afterOne.connectionState).toBe('Disconnected');
    expect(afterOne.connectionStateUpdatedTime).toBe(before.connectionStateUpdatedTime);

    await pause(5);
    const batch = ['a', 'b', 'c'].map((body) => new Message(body));
    batch[1].properties.add('part', '2');
    await client.sendEventBatch(batch);
    const afterBatch = (await registry.get(deviceId)).responseBody;
    expect(Date.parse(afterBatch.lastActivityTime!)).toBeGreaterThan(Date.parse(afterOne.lastActivityTime!));
    expect(afterBatch.connectionState).toBe('Disconnected');
    expect(afterBatch.connectionStateUpdatedTime).toBe(before.connectionStateUpdatedTime);

    expect(deviceBroker(emulator.state)!.telemetryCount('test', deviceId)).toBe(4);
    expect(
      telemetry.map((e) => ({ body: e.body.toString(), properties: e.properties, messageId: e.messageId })),
    ).toEqual([
      { body: '{"t":21}', properties: { unit: 'C' }, messageId: 'm-1' },
      { body: 'a', properties: {}, messageId: undefined },
      { body: 'b', properties: { part: '2' }, messageId: undefined },
      { body: 'c', properties: {}, messageId: undefined },
    ]);
    expect(telemetry.every((e) => e.protocol === 'https')).toBe(true);
    expect(connections).toEqual([]);
  });

  it('authenticates X.509 devices by thumbprint and by a chain to a verified CA, and refuses other certificates', async () => {
    // "If using x509 authentication the Authorization header shall not be set and the x509 parameters shall instead be
    // passed to the underlying transport" (azure-iot-device-http http.ts): the TLS client certificate is the
    // credential, judged as at MQTT CONNECT.
    const selfSignedId = uniqueId('x509');
    const cert = mintCertificate({ commonName: selfSignedId });
    await registry.create({
      deviceId: selfSignedId,
      authentication: {
        x509Thumbprint: { primaryThumbprint: cert.thumbprintSha1, secondaryThumbprint: null as unknown as string },
      },
    });
    await expect(x509Client(selfSignedId, cert).sendEvent(new Message('hot'))).resolves.toBeDefined();
    await expect(
      x509Client(selfSignedId, mintCertificate({ commonName: selfSignedId })).sendEvent(new Message('x')),
    ).rejects.toEqual(refusedWith(401, 'UnauthorizedError'));

    const root = mintCertificate({ commonName: 'HTTPS Fleet Root', isCa: true });
    const intermediate = mintCertificate({ commonName: 'HTTPS Fleet Intermediate', isCa: true, issuer: root });
    const caId = uniqueId('ca');
    const leaf: MintedCert = mintCertificate({ commonName: caId, issuer: intermediate });
    await registry.create({ deviceId: caId, authentication: { type: 'certificateAuthority' } } as Parameters<
      Registry['create']
    >[0]);
    const chain = { certPem: leaf.chainPem, keyPem: leaf.keyPem };
    await expect(x509Client(caId, chain).sendEvent(new Message('x'))).rejects.toEqual(
      refusedWith(401, 'UnauthorizedError'),
    );
    deviceBroker(emulator.state)!.addVerifiedCaCertificate('test', root.certPem);
    await expect(x509Client(caId, chain).sendEvent(new Message('warm'))).resolves.toBeDefined();

    for (const deviceId of [selfSignedId, caId]) {
      const device = (await registry.get(deviceId)).responseBody;
      expect(device.lastActivityTime).not.toBe(NEVER);
      expect(device.connectionState).toBe('Disconnected');
    }
  });

  it('accepts a hub policy token with DeviceConnect, and refuses tokens without it or not for this device', async () => {
    // A policy with DeviceConnect signs tokens any device may use (iot-hub-dev-guide-sas, "Use a shared access policy
    // to access on behalf of a device"); the hub-scoped form works over HTTP (azure-iot-sdk-csharp#776).
    const { deviceId, key } = await createSasDevice();
    const other = await createSasDevice();
    const hub = emulator.state.hubs.get('test')!;
    const policy = (name: string) => hub.policies.find((p) => p.keyName === name)!;
    const send = (token: string) => tokenClient(deviceId, token).sendEvent(new Message('x'));

    await expect(
      send(createSasToken({ resource: hubHost, key: policy('device').primaryKey, keyName: 'device' })),
    ).resolves.toBeDefined();
    await expect(
      send(createSasToken({ resource: hubHost, key: policy('registryRead').primaryKey, keyName: 'registryRead' })),
    ).rejects.toEqual(refusedWith(401, 'UnauthorizedError'));
    // A device key signs for its own device only.
    await expect(send(deviceToken(other.deviceId, other.key))).rejects.toEqual(refusedWith(401, 'UnauthorizedError'));
    await expect(send(deviceToken(deviceId, other.key))).rejects.toEqual(refusedWith(401, 'UnauthorizedError'));
    await expect(send(deviceToken(deviceId, key))).resolves.toBeDefined();

    // No credential at all: "Authorization header missing" (401003 IoTHubUnauthorized).
    const bare = await hubRequest('POST', `/devices/${deviceId}/messages/events?api-version=2021-04-12`, {}, 'x');
    expect(bare.status).toBe(401);
    expect(bare.headers['iothub-errorcode']).toBe('IotHubUnauthorizedAccess');
  });

  it('refuses a disabled device with 401 and a deleted one with 404, recording no activity for either', async () => {
    // Disabled: "If Disabled, this device can't connect" (iot-hub-devguide-identity-registry) — 401, the token is
    // not accepted (REST common error codes). Deleted: "a device identity does not exist" — 404, which the SDK raises
    // as DeviceNotFoundError, as azure-iot-sdk-node#777 reports for a device removed from its hub.
    const { deviceId, key } = await createSasDevice();
    const client = sasClient(deviceId, key);
    await client.sendEvent(new Message('ok'));
    const device = (await registry.get(deviceId)).responseBody;

    await registry.update({ ...device, status: 'disabled', statusReason: 'revoked' });
    await pause(5);
    await expect(client.sendEvent(new Message('x'))).rejects.toEqual(refusedWith(401, 'UnauthorizedError'));
    const disabled = (await registry.get(deviceId)).responseBody;
    expect(disabled.lastActivityTime).toBe(device.lastActivityTime);

    await registry.update({ ...device, status: 'enabled' });
    await expect(client.sendEvent(new Message('back'))).resolves.toBeDefined();

    await registry.delete(deviceId);
    await expect(client.sendEvent(new Message('x'))).rejects.toEqual(refusedWith(404, 'DeviceNotFoundError'));
    const raw = await hubRequest('GET', `/devices/${deviceId}/messages/deviceBound?api-version=2021-04-12`, {
      Authorization: deviceToken(deviceId, key),
    });
    expect(raw.status).toBe(404);
    expect(raw.headers['iothub-errorcode']).toBe('DeviceNotFound');
  });

  it('delivers cloud-to-device messages to a polling device, which completes, rejects and abandons them', async () => {
    // GET …/messages/deviceBound locks the next message (ETag = lock token) or answers 204; DELETE …/{etag} completes,
    // with ?reject rejects; POST …/{etag}/abandon puts it back (REST Device operations; iot-hub-devguide-messages-c2d).
    const { deviceId, key } = await createSasDevice();
    const broker = deviceBroker(emulator.state)!;
    const client = sasClient(deviceId, key);
    await client.setOptions({ http: { receivePolicy: { interval: 0.05 } } });
    await client.open();
    const received: Message[] = [];
    let abandoned = false;
    const settled: string[] = [];
    client.on('message', (msg: Message) => {
      received.push(msg);
      const id = String(msg.messageId);
      if (id === 'c-2') void client.reject(msg).then(() => settled.push('rejected c-2'));
      else if (id === 'c-3' && !abandoned) {
        abandoned = true;
        void client.abandon(msg).then(() => settled.push('abandoned c-3'));
      } else void client.complete(msg).then(() => settled.push(`completed ${id}`));
    });

    broker.sendCloudToDevice('test', deviceId, { payload: 'one', messageId: 'c-1', properties: { kind: 'greeting' } });
    broker.sendCloudToDevice('test', deviceId, { payload: 'two', messageId: 'c-2' });
    broker.sendCloudToDevice('test', deviceId, { payload: 'three', messageId: 'c-3', correlationId: 'r-3' });
    await until(() => settled.length >= 4, 'four settlements');

    expect(settled.sort()).toEqual(['abandoned c-3', 'completed c-1', 'completed c-3', 'rejected c-2']);
    expect(received.map((m) => String(m.messageId))).toEqual(['c-1', 'c-2', 'c-3', 'c-3']);
    const first = received[0];
    expect(first.data.toString()).toBe('one');
    // azure-iot-http-base's toMessage keeps the header name as the property key.
    expect(first.properties.getValue('iothub-app-kind')).toBe('greeting');
    expect(received[2].correlationId).toBe('r-3');
    expect(broker.cloudToDevice.receive('test', deviceId)).toBeUndefined();

    // A lock already settled is lost: 412 DeviceMessageLockLost.
    await expect(client.complete(first)).rejects.toMatchObject({ response: { statusCode: 412 } });
    const device = (await registry.get(deviceId)).responseBody;
    expect(device.lastActivityTime).not.toBe(NEVER);
    expect(device.connectionState).toBe('Disconnected');
  });

  it('answers polls in the REST shapes: 204 when empty, a quoted lock token in ETag, 412 for a lock it lost', async () => {
    const { deviceId, key } = await createSasDevice();
    const auth = { Authorization: deviceToken(deviceId, key) };
    const path = `/devices/${deviceId}/messages/deviceBound`;
    const empty = await hubRequest('GET', `${path}?api-version=2021-04-12`, auth);
    expect(empty).toMatchObject({ status: 204, body: '' });

    deviceBroker(emulator.state)!.sendCloudToDevice('test', deviceId, { payload: 'hi', messageId: 'p-1' });
    const got = await hubRequest('GET', `${path}?api-version=2021-04-12`, auth);
    expect(got).toMatchObject({ status: 200, body: 'hi' });
    expect(got.headers).toMatchObject({ 'iothub-messageid': 'p-1', 'iothub-deliverycount': '1' });
    const etag = got.headers.etag as string;
    expect(etag).toMatch(/^"[0-9a-f-]{36}"$/);
    const lockToken = etag.slice(1, -1);
    // Locked: a second poll does not see it.
    expect((await hubRequest('GET', `${path}?api-version=2021-04-12`, auth)).status).toBe(204);

    const lost = await hubRequest('DELETE', `${path}/not-a-lock?api-version=2021-04-12`, auth);
    expect(lost.status).toBe(412);
    expect(lost.headers['iothub-errorcode']).toBe('DeviceMessageLockLost');
    expect((await hubRequest('DELETE', `${path}/${lockToken}?api-version=2021-04-12`, auth)).status).toBe(204);
    expect((await hubRequest('DELETE', `${path}/${lockToken}?api-version=2021-04-12`, auth)).status).toBe(412);
  });

  it('drops the queued messages of a deleted device, so a new device of that id starts empty', async () => {
    // The queue is the device identity's: deleting the identity removes it (iot-hub-devguide-messages-c2d).
    const { deviceId } = await createSasDevice();
    deviceBroker(emulator.state)!.sendCloudToDevice('test', deviceId, { payload: 'for the old identity' });
    await registry.delete(deviceId);
    const again = await createSasDevice(deviceId);
    const poll = await hubRequest('GET', `/devices/${deviceId}/messages/deviceBound?api-version=2021-04-12`, {
      Authorization: deviceToken(deviceId, again.key),
    });
    expect(poll.status).toBe(204);
  });

  it('puts device calls under their own fault and quota names, and writes no registry counter', async () => {
    const { deviceId, key } = await createSasDevice();
    const client = sasClient(deviceId, key);
    const written = emulator.counters.snapshot();

    emulator.faults.addRule({ surface: 'hub', hub: 'test', operation: 'deviceTelemetry', status: 503 });
    await expect(client.sendEvent(new Message('x'))).rejects.toEqual(refusedWith(503, 'ServiceUnavailableError'));
    await expect(client.sendEvent(new Message('y'))).resolves.toBeDefined();

    emulator.faults.addRule({ surface: 'hub', operation: 'receiveCloudToDevice', status: 500 });
    const auth = { Authorization: deviceToken(deviceId, key) };
    const poll = `/devices/${deviceId}/messages/deviceBound?api-version=2021-04-12`;
    expect((await hubRequest('GET', poll, auth)).status).toBe(500);
    expect((await hubRequest('GET', poll, auth)).status).toBe(204);

    // "Device-to-cloud sends" and "Cloud-to-device receives" are throttled apart from registry operations.
    emulator.state.limits.quotas = {
      enabled: true,
      scale: 1,
      overrides: { deviceToCloud: 1, cloudToDeviceReceive: 1 },
    };
    await expect(client.sendEvent(new Message('z'))).resolves.toBeDefined();
    await expect(client.sendEvent(new Message('z'))).rejects.toMatchObject({ response: { statusCode: 429 } });
    expect((await hubRequest('GET', poll, auth)).status).toBe(204);
    const throttled = await hubRequest('GET', poll, auth);
    expect(throttled.status).toBe(429);
    expect(throttled.headers['iothub-errorcode']).toBe('ThrottlingException');
    await expect(registry.get(deviceId)).resolves.toBeDefined();

    expect(emulator.counters.diff(written)).toEqual([]);
  });
});

describe('cloud-to-device queue', () => {
  // Lifecycle per iot-hub-devguide-messages-c2d: one-minute lock, maximum delivery count, time to live.
  it('puts a message back when its lock runs out, and dead-letters it after the maximum delivery count', () => {
    const queues = new CloudToDeviceQueues();
    const t0 = Date.parse('2025-01-01T00:00:00Z');
    queues.enqueue('hub', 'dev', { payload: 'x', messageId: 'm' }, t0);
    let now = t0;
    for (let delivery = 1; delivery <= MAX_DELIVERY_COUNT; delivery++) {
      const got = queues.receive('hub', 'dev', now);
      expect(got).toMatchObject({ messageId: 'm', deliveryCount: delivery });
      expect(queues.receive('hub', 'dev', now + LOCK_TIMEOUT_MS - 1)).toBeUndefined();
      expect(queues.settle('hub', 'dev', got!.lockToken, 'complete', now + LOCK_TIMEOUT_MS)).toBe(false);
      now += LOCK_TIMEOUT_MS;
    }
    expect(queues.receive('hub', 'dev', now)).toBeUndefined();
    expect(queues.hasReady('hub', 'dev', now)).toBe(false);
  });

  it('drops expired messages, and leaves messages locked by a poll out of MQTT delivery', () => {
    const queues = new CloudToDeviceQueues();
    const t0 = Date.parse('2025-01-01T00:00:00Z');
    queues.enqueue('hub', 'dev', { payload: 'old' }, t0);
    queues.enqueue('hub', 'dev', { payload: 'a' }, t0 + DEFAULT_TTL_MS);
    queues.enqueue('hub', 'dev', { payload: 'b' }, t0 + DEFAULT_TTL_MS);
    const locked = queues.receive('hub', 'dev', t0 + DEFAULT_TTL_MS);
    expect(locked?.payload).toBe('a');
    expect(queues.takeReady('hub', 'dev', t0 + DEFAULT_TTL_MS).map((m) => m.payload)).toEqual(['b']);
    expect(queues.settle('hub', 'dev', locked!.lockToken, 'abandon', t0 + DEFAULT_TTL_MS)).toBe(true);
    expect(queues.takeReady('hub', 'dev', t0 + DEFAULT_TTL_MS).map((m) => m.payload)).toEqual(['a']);
  });
});
