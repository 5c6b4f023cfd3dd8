/**
 * Device connections over MQTT, driven by the real azure-iot-device (+ -mqtt) client against the in-process
 * emulator, with devices managed through the real azure-iothub Registry.
 */
import {
  Client,
  SharedAccessSignatureAuthenticationProvider,
  X509AuthenticationProvider,
  Message,
  type Twin,
} from 'azure-iot-device';
import { Mqtt } from 'azure-iot-device-mqtt';
import { MqttBase } from 'azure-iot-mqtt-base';
import tls from 'node:tls';
import mqttPacket, { type IConnackPacket } from 'mqtt-packet';
import { NoRetry } from 'azure-iot-common';
import { Registry } from 'azure-iothub';
import { mintCertificate } from '../../emulator/security/certs';
import { addFaultRule, resetLimits } from '../../emulator/limits/decide';
import { deviceBroker } from '../../emulator/mqtt/listener';
import { installAzureEndpointRouting } from '../../common/azure-routing';
import { createSasToken } from '../../emulator/security/sas';
import { startEmulator, type RunningEmulator } from '../../emulator/server';
import type { DeviceEvent, DeviceTelemetryEvent } from '../../emulator/state';
import { controlFetch } from '../helpers/control';

let emulator: RunningEmulator;
let uninstallRouting: () => void;
let registry: Registry;
let hubHost: string;
const openClients: Client[] = [];

beforeAll(async () => {
  emulator = await startEmulator();
  uninstallRouting = installAzureEndpointRouting({ address: emulator.address, caPem: emulator.caPem });
  registry = Registry.fromConnectionString(emulator.connectionStrings.hubs.test);
  hubHost = emulator.state.hubs.get('test')!.hostName;
});

afterEach(async () => {
  await Promise.all(openClients.splice(0).map((c) => c.close().catch(() => undefined)));
});

afterAll(async () => {
  uninstallRouting();
  await emulator.stop();
});

const gateway = (): string => `127.0.0.1:${emulator.mqttPort}`;
let counter = 0;
const uniqueId = (prefix: string): string => `${prefix}-${Date.now().toString(36)}-${++counter}`;

async function createSasDevice(deviceId = uniqueId('sas'), status: 'enabled' | 'disabled' = 'enabled') {
  const { responseBody } = await registry.create({ deviceId, status });
  return { deviceId, key: responseBody.authentication!.symmetricKey!.primaryKey! };
}

function track(client: Client): Client {
  client.setRetryPolicy(new NoRetry());
  openClients.push(client);
  return client;
}

async function sasClient(deviceId: string, key: string): Promise<Client> {
  const client = track(
    Client.fromConnectionString(
      `HostName=${hubHost};DeviceId=${deviceId};SharedAccessKey=${key};GatewayHostName=${gateway()}`,
      Mqtt,
    ),
  );
  await client.setOptions({ ca: emulator.caPem });
  return client;
}

async function tokenClient(deviceId: string, sharedAccessSignature: string): Promise<Client> {
  const provider = new SharedAccessSignatureAuthenticationProvider({
    host: hubHost,
    deviceId,
    sharedAccessSignature,
    gatewayHostName: gateway(),
  });
  const client = track(Client.fromAuthenticationProvider(provider, Mqtt));
  await client.setOptions({ ca: emulator.caPem });
  return client;
}

async function x509Client(deviceId: string, cert: { certPem: string; keyPem: string }): Promise<Client> {
  const provider = new X509AuthenticationProvider({
    host: hubHost,
    deviceId,
    gatewayHostName: gateway(),
    x509: { cert: cert.certPem, key: cert.keyPem },
  });
  const client = track(Client.fromAuthenticationProvider(provider, Mqtt));
  await client.setOptions({ ca: emulator.caPem });
  return client;
}

function nextDisconnect(client: Client): Promise<void> {
  return new Promise((resolve) => client.once('disconnect', () => resolve()));
}

function nextBusEvent(name: 'deviceConnected' | 'deviceDisconnected', deviceId: string): Promise<DeviceEvent> {
  return new Promise((resolve) => {
    const listener = (e: DeviceEvent): void => {
      if (e.deviceId !== deviceId) return;
      emulator.state.events.off(name, listener);
      resolve(e);
    };
    emulator.state.events.on(name, listener);
  });
}

/** The SDK subscribes in the background when a listener is added: wait until the hub has the subscription. */
async function untilSubscribed(deviceId: string, filter: string): Promise<void> {
  const broker = deviceBroker(emulator.state)!;
  while (!broker.connections('test').some((c) => c.deviceId === deviceId && c.subscriptions.includes(filter))) {
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('MQTT device connections', () => {
  it('connects a SAS device and tracks its connection state and activity in the registry', async () => {
    const { deviceId, key } = await createSasDevice();
    const before = (await registry.get(deviceId)).responseBody;
    expect(before.connectionState).toBe('Disconnected');

    const client = await sasClient(deviceId, key);
    const connected = nextBusEvent('deviceConnected', deviceId);
    await client.open();
    await connected;
    const during = (await registry.get(deviceId)).responseBody;
    expect(during.connectionState).toBe('Connected');
    expect(during.lastActivityTime).not.toBe('0001-01-01T00:00:00Z');
    expect(Date.parse(during.connectionStateUpdatedTime!)).toBeGreaterThan(Date.now() - 60_000);

    await client.sendEvent(new Message('{"t":21}'));
    expect(deviceBroker(emulator.state)!.telemetryCount('test', deviceId)).toBe(1);

    const disconnected = nextBusEvent('deviceDisconnected', deviceId);
    await client.close();
    await disconnected;
    expect((await registry.get(deviceId)).responseBody.connectionState).toBe('Disconnected');
  });

  it('announces each telemetry message with its properties on the state bus', async () => {
    // The topic carries the property bag: `$.mid`, `$.cid` … are system properties, the rest the application's
    // (iot-hub-mqtt-support, "Sending device-to-cloud messages").
    const { deviceId, key } = await createSasDevice();
    const client = await sasClient(deviceId, key);
    await client.open();
    const announced = new Promise<DeviceTelemetryEvent>((resolve) =>
      emulator.state.events.on('deviceTelemetry', (e) => {
        if (e.deviceId === deviceId) resolve(e);
      }),
    );
    const message = new Message('{"t":22}');
    message.messageId = 'mq-1';
    message.correlationId = 'corr-1';
    message.properties.add('unit', 'C');
    await client.sendEvent(message);
    const event = await announced;
    expect(event).toMatchObject({
      hubName: 'test',
      protocol: 'mqtt',
      messageId: 'mq-1',
      correlationId: 'corr-1',
    });
    expect(event.properties).toEqual({ unit: 'C' });
    expect(event.body.toString()).toBe('{"t":22}');
  });

  it('updates lastActivityTime when the device connects, sends or receives, not on keep-alive pings', async () => {
    // "The last time the device authenticated, sent a message, or received a message" (azure-iothub Device).
    const { deviceId, key } = await createSasDevice();
    const client = await sasClient(deviceId, key);
    // setOptions replaces the transport options: the CA again, plus a 1 s keep-alive.
    await client.setOptions({ ca: emulator.caPem, keepalive: 1 });
    const connected = nextBusEvent('deviceConnected', deviceId);
    await client.open();
    await connected;
    const atConnect = (await registry.get(deviceId)).responseBody;
    expect(atConnect.lastActivityTime).toBe(atConnect.connectionStateUpdatedTime);

    await new Promise((resolve) => setTimeout(resolve, 2_500)); // two keep-alive pings
    expect((await registry.get(deviceId)).responseBody.lastActivityTime).toBe(atConnect.lastActivityTime);

    const received = new Promise<void>((resolve) => client.on('message', () => resolve()));
    await untilSubscribed(deviceId, `devices/${deviceId}/messages/devicebound/#`);
    deviceBroker(emulator.state)!.sendCloudToDevice('test', deviceId, { payload: 'hi' });
    await received;
    const afterC2d = (await registry.get(deviceId)).responseBody.lastActivityTime!;
    expect(Date.parse(afterC2d)).toBeGreaterThan(Date.parse(atConnect.lastActivityTime!));

    await client.sendEvent(new Message('{"t":1}'));
    const afterSend = (await registry.get(deviceId)).responseBody.lastActivityTime!;
    expect(Date.parse(afterSend)).toBeGreaterThanOrEqual(Date.parse(afterC2d));

    const disconnected = nextBusEvent('deviceDisconnected', deviceId);
    await client.close();
    await disconnected;
    const after = (await registry.get(deviceId)).responseBody;
    expect(after.lastActivityTime).toBe(afterSend);
    expect(Date.parse(after.connectionStateUpdatedTime!)).toBeGreaterThan(
      Date.parse(atConnect.connectionStateUpdatedTime!),
    );
  });

  it('answers every refused CONNECT with CONNACK 5 and then closes the connection, as IoT Hub does', async () => {
    // "The Azure IoT Hub ... always returning Not Authorized (MQTT CONNECT Return Code 5) on MQTT CONNECT failure"
    // (azure-iot-sdk-c doc/connection_and_messaging_reliability.md).
    const { deviceId, key } = await createSasDevice();
    const disabled = await createSasDevice(uniqueId('off'), 'disabled');
    const token = (id: string, k: string): string => createSasToken({ resource: `${hubHost}/devices/${id}`, key: k });
    const attempts: Array<{ clientId: string; username: string; password: string }> = [
      { clientId: deviceId, username: `${hubHost}/${deviceId}`, password: token(deviceId, key) }, // malformed
      {
        clientId: 'someone-else',
        username: `${hubHost}/${deviceId}/?api-version=2021-04-12`,
        password: token(deviceId, key),
      },
      { clientId: 'ghost', username: `${hubHost}/ghost/?api-version=2021-04-12`, password: token('ghost', key) },
      {
        clientId: disabled.deviceId,
        username: `${hubHost}/${disabled.deviceId}/?api-version=2021-04-12`,
        password: token(disabled.deviceId, disabled.key),
      },
      {
        clientId: deviceId,
        username: `${hubHost}/${deviceId}/?api-version=2021-04-12`,
        password: 'SharedAccessSignature x',
      },
    ];
    for (const attempt of attempts) {
      const socket = tls.connect({
        host: '127.0.0.1',
        port: emulator.mqttPort,
        ca: emulator.caPem,
        servername: hubHost,
      });
      const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      const connack = new Promise<IConnackPacket>((resolve) => {
        const parser = mqttPacket.parser();
        parser.on('packet', (packet) => resolve(packet as IConnackPacket));
        socket.on('data', (chunk: Buffer) => parser.parse(chunk));
      });
      socket.write(
        mqttPacket.generate({
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: 4,
          clean: false,
          keepalive: 180,
          ...attempt,
          password: Buffer.from(attempt.password),
        }),
      );
      expect(await connack).toMatchObject({ cmd: 'connack', returnCode: 5 });
      await closed;
    }
  });

  it('refuses a device key that is not the device’s', async () => {
    const { deviceId } = await createSasDevice();
    const client = await sasClient(deviceId, Buffer.alloc(32, 7).toString('base64'));
    await expect(client.open()).rejects.toThrow(/Connection refused: Not authorized/);
    expect((await registry.get(deviceId)).responseBody.connectionState).toBe('Disconnected');
  });

  it('accepts the secondary key', async () => {
    const deviceId = uniqueId('sec');
    const { responseBody } = await registry.create({ deviceId });
    const client = await sasClient(deviceId, responseBody.authentication!.symmetricKey!.secondaryKey!);
    await expect(client.open()).resolves.toBeDefined();
  });

  it('refuses an expired token', async () => {
    const { deviceId, key } = await createSasDevice();
    const token = createSasToken({
      resource: `${hubHost}/devices/${deviceId}`,
      key,
      expiry: Math.floor(Date.now() / 1000) - 10,
    });
    const client = await tokenClient(deviceId, token);
    await expect(client.open()).rejects.toThrow(/Connection refused: Not authorized/);
  });

  it('refuses a token issued for another device', async () => {
    const victim = await createSasDevice();
    const other = await createSasDevice();
    const token = createSasToken({ resource: `${hubHost}/devices/${other.deviceId}`, key: other.key });
    const client = await tokenClient(victim.deviceId, token);
    await expect(client.open()).rejects.toThrow(/Connection refused: Not authorized/);
  });

  it('refuses a device-key token scoped to the whole hub', async () => {
    const { deviceId, key } = await createSasDevice();
    const client = await tokenClient(deviceId, createSasToken({ resource: hubHost, key }));
    await expect(client.open()).rejects.toThrow(/Connection refused: Not authorized/);
  });

  it('accepts a hub policy token with DeviceConnect and refuses one without it', async () => {
    const { deviceId } = await createSasDevice();
    const hub = emulator.state.hubs.get('test')!;
    const devicePolicy = hub.policies.find((p) => p.keyName === 'device')!;
    const readPolicy = hub.policies.find((p) => p.keyName === 'registryRead')!;
    const resource = `${hubHost}/devices/${deviceId}`;

    const refused = await tokenClient(
      deviceId,
      createSasToken({ resource, key: readPolicy.primaryKey, keyName: 'registryRead' }),
    );
    await expect(refused.open()).rejects.toThrow(/Connection refused: Not authorized/);

    const accepted = await tokenClient(
      deviceId,
      createSasToken({ resource, key: devicePolicy.primaryKey, keyName: 'device' }),
    );
    await expect(accepted.open()).resolves.toBeDefined();
  });

  it('accepts one DeviceConnect policy token with sr=<hub>/devices for every device, as a protocol gateway uses', async () => {
    // iot-hub-dev-guide-sas: "A protocol gateway could use the same token for all devices simply setting the resource
    // URI to myhub.azure-devices.net/devices".
    const first = await createSasDevice();
    const second = await createSasDevice();
    const policy = emulator.state.hubs.get('test')!.policies.find((p) => p.keyName === 'device')!;
    const token = createSasToken({ resource: `${hubHost}/devices`, key: policy.primaryKey, keyName: 'device' });
    for (const { deviceId } of [first, second]) {
      await expect((await tokenClient(deviceId, token)).open()).resolves.toBeDefined();
    }
  });

  it('refuses unknown and disabled devices', async () => {
    const unknown = await sasClient(uniqueId('ghost'), Buffer.alloc(32, 1).toString('base64'));
    await expect(unknown.open()).rejects.toThrow(/Connection refused: Not authorized/);

    const { deviceId, key } = await createSasDevice(uniqueId('off'), 'disabled');
    const disabled = await sasClient(deviceId, key);
    await expect(disabled.open()).rejects.toThrow(/Connection refused: Not authorized/);
  });

  it('closes the connection when the SAS token expires', async () => {
    const { deviceId, key } = await createSasDevice();
    const token = createSasToken({
      resource: `${hubHost}/devices/${deviceId}`,
      key,
      expiry: Math.floor(Date.now() / 1000) + 2,
    });
    const client = await tokenClient(deviceId, token);
    await client.open();
    const dropped = nextDisconnect(client);
    await dropped;
    expect((await registry.get(deviceId)).responseBody.connectionState).toBe('Disconnected');
  });

  it('connects an X.509 device by thumbprint and refuses another certificate', async () => {
    const deviceId = uniqueId('x509');
    const cert = mintCertificate({ commonName: deviceId });
    const stranger = mintCertificate({ commonName: deviceId });
    await registry.create({
      deviceId,
      authentication: {
        x509Thumbprint: { primaryThumbprint: cert.thumbprintSha1, secondaryThumbprint: null as unknown as string },
      },
    });

    const wrong = await x509Client(deviceId, stranger);
    await expect(wrong.open()).rejects.toThrow(/Connection refused: Not authorized/);

    const client = await x509Client(deviceId, cert);
    await client.open();
    expect((await registry.get(deviceId)).responseBody.connectionState).toBe('Connected');
  });

  it('connects an X.509 CA device whose chain ends at a verified hub CA', async () => {
    const root = mintCertificate({ commonName: 'Fleet Root', isCa: true });
    const intermediate = mintCertificate({ commonName: 'Fleet Intermediate', isCa: true, issuer: root });
    const deviceId = uniqueId('ca');
    const leaf = mintCertificate({ commonName: deviceId, issuer: intermediate });
    await registry.create({ deviceId, authentication: { type: 'certificateAuthority' } } as Parameters<
      Registry['create']
    >[0]);

    const unverified = await x509Client(deviceId, { certPem: leaf.chainPem, keyPem: leaf.keyPem });
    await expect(unverified.open()).rejects.toThrow(/Connection refused: Not authorized/);

    deviceBroker(emulator.state)!.addVerifiedCaCertificate('test', root.certPem);
    const client = await x509Client(deviceId, { certPem: leaf.chainPem, keyPem: leaf.keyPem });
    await expect(client.open()).resolves.toBeDefined();
  });

  it('disconnects a device that is deleted, and announces the disconnect', async () => {
    const { deviceId, key } = await createSasDevice();
    const client = await sasClient(deviceId, key);
    await client.open();
    const dropped = nextDisconnect(client);
    const announced = nextBusEvent('deviceDisconnected', deviceId);
    await registry.delete(deviceId);
    await dropped;
    await announced;
    await expect(client.open()).rejects.toThrow(/Connection refused: Not authorized/);
  });

  it('closes a disabled device, refuses it until re-enabled, then lets it in again (revocation and its undo)', async () => {
    const { deviceId, key } = await createSasDevice();
    const client = await sasClient(deviceId, key);
    await client.open();
    const device = (await registry.get(deviceId)).responseBody;
    const dropped = nextDisconnect(client);
    await registry.update({ ...device, status: 'disabled', statusReason: 'revoked' });
    await dropped;
    await expect(client.open()).rejects.toThrow(/Connection refused: Not authorized/);

    const hub = emulator.state.hubs.get('test')!;
    const devicePolicy = hub.policies.find((p) => p.keyName === 'device')!;
    const viaPolicy = await tokenClient(
      deviceId,
      createSasToken({ resource: `${hubHost}/devices/${deviceId}`, key: devicePolicy.primaryKey, keyName: 'device' }),
    );
    await expect(viaPolicy.open()).rejects.toThrow(/Connection refused: Not authorized/);

    await registry.update({ ...device, status: 'enabled' });
    await expect(client.open()).resolves.toBeDefined();
  });

  it('disconnects a device that is disabled or whose key is replaced', async () => {
    const { deviceId, key } = await createSasDevice();
    const client = await sasClient(deviceId, key);
    await client.open();
    const device = (await registry.get(deviceId)).responseBody;

    // A change that keeps the credential valid keeps the connection.
    await registry.update({ ...device, statusReason: 'audit' });
    expect(
      deviceBroker(emulator.state)!
        .connections('test')
        .map((c) => c.deviceId),
    ).toContain(deviceId);

    const rotatedOut = nextDisconnect(client);
    await registry.update({
      deviceId,
      authentication: {
        symmetricKey: {
          primaryKey: Buffer.alloc(32, 3).toString('base64'),
          secondaryKey: Buffer.alloc(32, 4).toString('base64'),
        },
      },
    });
    await rotatedOut;

    const { deviceId: second, key: secondKey } = await createSasDevice();
    const other = await sasClient(second, secondKey);
    await other.open();
    const disabled = nextDisconnect(other);
    await registry.update({ deviceId: second, status: 'disabled' });
    await disabled;
  });

  it('answers twin GET and stores reported patches with an increasing version', async () => {
    const { deviceId, key } = await createSasDevice();
    const client = await sasClient(deviceId, key);
    await client.open();
    const twin: Twin = await client.getTwin();
    const reportedBefore = (await registry.getTwin(deviceId)).responseBody.properties.reported.$version as number;

    await new Promise<void>((resolve, reject) =>
      twin.properties.reported.update({ firmware: '1.2.3', telemetry: { interval: 30 } }, (err?: Error) =>
        err ? reject(err) : resolve(),
      ),
    );
    const stored = (await registry.getTwin(deviceId)).responseBody;
    expect(stored.properties.reported.firmware).toBe('1.2.3');
    expect(stored.properties.reported.telemetry).toEqual({ interval: 30 });
    expect(stored.properties.reported.$version).toBe(reportedBefore + 1);

    // The device's own view after a fresh GET.
    const again = await client.getTwin();
    expect(again.properties.reported.firmware).toBe('1.2.3');
  });

  it('pushes desired property patches to a subscribed device', async () => {
    const { deviceId, key } = await createSasDevice();
    const client = await sasClient(deviceId, key);
    await client.open();
    const twin = await client.getTwin();
    const received = new Promise<Record<string, unknown>>((resolve) => {
      twin.on('properties.desired', (delta: Record<string, unknown>) => {
        if (delta.sampling !== undefined) resolve(delta);
      });
    });
    await untilSubscribed(deviceId, '$iothub/twin/PATCH/properties/desired/#');
    const { responseBody } = await registry.getTwin(deviceId);
    await registry.updateTwin(deviceId, { properties: { desired: { sampling: 5 } } }, responseBody.etag);
    const delta = await received;
    expect(delta.sampling).toBe(5);
    expect(delta.$version).toBeGreaterThan(1);
  });

  it('keeps a persistent session: after a dropped connection the SDK reconnects and still gets desired patches', async () => {
    const { deviceId, key } = await createSasDevice();
    const client = Client.fromConnectionString(
      `HostName=${hubHost};DeviceId=${deviceId};SharedAccessKey=${key};GatewayHostName=${gateway()}`,
      Mqtt,
    );
    openClients.push(client); // default retry policy: the SDK reconnects on its own
    await client.setOptions({ ca: emulator.caPem });
    await client.open();
    const twin = await client.getTwin();
    const patches: Array<Record<string, unknown>> = [];
    twin.on('properties.desired', (delta: Record<string, unknown>) => patches.push(delta));
    await untilSubscribed(deviceId, '$iothub/twin/PATCH/properties/desired/#');

    const reconnected = nextBusEvent('deviceConnected', deviceId);
    expect(deviceBroker(emulator.state)!.disconnectDevice('test', deviceId)).toBe(1);
    await reconnected;
    await untilSubscribed(deviceId, '$iothub/twin/PATCH/properties/desired/#');
    const { responseBody } = await registry.getTwin(deviceId);
    await registry.updateTwin(deviceId, { properties: { desired: { mode: 'eco' } } }, responseBody.etag);
    while (!patches.some((p) => p.mode === 'eco')) await new Promise((r) => setTimeout(r, 10));
  });

  it('delivers direct methods and cloud-to-device messages to the connected device', async () => {
    const { deviceId, key } = await createSasDevice();
    const client = await sasClient(deviceId, key);
    await client.open();
    const broker = deviceBroker(emulator.state)!;

    await expect(broker.invokeMethod('test', deviceId, { methodName: 'reboot' })).rejects.toMatchObject({
      status: 404,
      code: 'DeviceNotOnline',
    });
    client.onDeviceMethod('reboot', (request, response) => {
      void response.send(200, { delayed: (request.payload as { delay: number }).delay });
    });
    await untilSubscribed(deviceId, '$iothub/methods/POST/#');
    await expect(
      broker.invokeMethod('test', deviceId, { methodName: 'reboot', payload: { delay: 3 } }),
    ).resolves.toEqual({
      status: 200,
      payload: { delayed: 3 },
    });

    const message = new Promise<Message>((resolve) => client.on('message', (m: Message) => resolve(m)));
    broker.sendCloudToDevice('test', deviceId, {
      payload: 'hello',
      messageId: 'm-1',
      properties: { kind: 'greeting' },
    });
    const got = await message;
    expect(got.data.toString()).toBe('hello');
    expect(got.messageId).toBe('m-1');
    expect(got.properties.getValue('kind')).toBe('greeting');
    expect((await registry.get(deviceId)).responseBody.cloudToDeviceMessageCount).toBe(1);
  });

  it('refuses over-quota connections with CONNACK 5 and answers injected twin faults with their status', async () => {
    const { limits } = emulator.state;
    const { deviceId, key } = await createSasDevice();
    limits.quotas = { enabled: true, scale: 1, overrides: { connection: 1 } };
    try {
      const first = await sasClient(deviceId, key);
      await first.open();
      await first.close();
      const second = await sasClient(deviceId, key);
      await expect(second.open()).rejects.toThrow(/Connection refused: Not authorized/);
    } finally {
      resetLimits(limits);
    }

    const client = await sasClient(deviceId, key);
    await client.open();
    addFaultRule(limits, { surface: 'mqtt', operation: 'deviceGetTwin', status: 500, times: 1, message: 'boom' });
    await expect(client.getTwin()).rejects.toThrow(/boom/);
    await expect(client.getTwin()).resolves.toBeDefined();
  });

  it('lists, drops and messages device connections through the control API', async () => {
    const { deviceId, key } = await createSasDevice();
    const client = await sasClient(deviceId, key);
    await client.open();
    const base = `${emulator.controlUrl}/mqtt`;
    const post = (path: string, body: unknown): Promise<Response> =>
      controlFetch(emulator, `${base}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });

    const listed = (await (await controlFetch(emulator, `${base}/connections?hub=test`)).json()) as Array<{
      deviceId: string;
      authentication: string;
    }>;
    expect(listed).toContainEqual(expect.objectContaining({ deviceId, authentication: 'sas' }));

    const offline = await post(`/hubs/test/devices/${deviceId}/methods`, { methodName: 'ping' });
    expect(offline.status).toBe(404);
    expect(await offline.json()).toMatchObject({ code: 'DeviceNotOnline' });
    expect((await post(`/hubs/nope/devices/${deviceId}/disconnect`, {})).status).toBe(404);
    expect((await post(`/hubs/test/devices/${deviceId}/methods`, { methodName: '' })).status).toBe(400);

    const dropped = nextDisconnect(client);
    expect(await (await post(`/hubs/test/devices/${deviceId}/disconnect`, {})).json()).toEqual({ closed: 1 });
    await dropped;
  });

  it('keeps a device to its own topics', async () => {
    const victim = await createSasDevice();
    const intruder = await createSasDevice();
    const base = new MqttBase();
    base.setOptions({ ca: emulator.caPem });
    const config = {
      uri: `mqtts://${gateway()}`,
      clientId: intruder.deviceId,
      username: `${hubHost}/${intruder.deviceId}/?api-version=2021-04-12`,
      sharedAccessSignature: createSasToken({ resource: `${hubHost}/devices/${intruder.deviceId}`, key: intruder.key }),
    };
    await new Promise<void>((resolve, reject) => base.connect(config, (err) => (err ? reject(err) : resolve())));
    try {
      const granted = await new Promise<Array<{ qos: number }>>((resolve, reject) =>
        base.subscribe(`devices/${victim.deviceId}/messages/devicebound/#`, { qos: 1 }, (err, result) =>
          err ? reject(err) : resolve(result as Array<{ qos: number }>),
        ),
      );
      expect(granted[0].qos).toBe(128);

      const closed = new Promise<void>((resolve) => base.once('error', () => resolve()));
      base.publish(`devices/${victim.deviceId}/messages/events/`, 'spoof', { qos: 0 }, () => undefined);
      await closed;
      expect(deviceBroker(emulator.state)!.telemetryCount('test', victim.deviceId)).toBe(0);
    } finally {
      await new Promise<void>((resolve) => base.disconnect(() => resolve()));
    }
  });
});
