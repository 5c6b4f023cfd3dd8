/**
 * Service-side direct methods (`POST /twins/{id}/methods`) through the real azure-iothub Client, answered by a
 * device connected with the real azure-iot-device MQTT client.
 */
import { Client as DeviceClient } from 'azure-iot-device';
import { Mqtt } from 'azure-iot-device-mqtt';
import { NoRetry } from 'azure-iot-common';
import { Client as ServiceClient, Registry } from 'azure-iothub';
import { deviceBroker } from '../../emulator/mqtt/listener';
import { installAzureEndpointRouting } from '../../common/azure-routing';
import { hubConnectionString, startEmulator, type RunningEmulator } from '../../emulator/server';

let emulator: RunningEmulator;
let uninstallRouting: () => void;
let registry: Registry;
let service: ServiceClient;
let hubHost: string;
const openDevices: DeviceClient[] = [];

beforeAll(async () => {
  emulator = await startEmulator({ controlPort: false });
  uninstallRouting = installAzureEndpointRouting({ address: emulator.address, caPem: emulator.caPem });
  registry = Registry.fromConnectionString(emulator.connectionStrings.hubs.test);
  service = ServiceClient.fromConnectionString(emulator.connectionStrings.hubs.test);
  hubHost = emulator.state.hubs.get('test')!.hostName;
});

afterEach(async () => {
  await Promise.all(openDevices.splice(0).map((c) => c.close().catch(() => undefined)));
});

afterAll(async () => {
  uninstallRouting();
  await emulator.stop();
});

let counter = 0;
const uniqueId = (prefix: string): string => `${prefix}-${Date.now().toString(36)}-${++counter}`;

async function createDevice(): Promise<{ deviceId: string; key: string }> {
  const deviceId = uniqueId('dm');
  const { responseBody } = await registry.create({ deviceId });
  return { deviceId, key: responseBody.authentication!.symmetricKey!.primaryKey! };
}

async function deviceClient(deviceId: string, key: string): Promise<DeviceClient> {
  const client = DeviceClient.fromConnectionString(
    `HostName=${hubHost};DeviceId=${deviceId};SharedAccessKey=${key};GatewayHostName=127.0.0.1:${emulator.mqttPort}`,
    Mqtt,
  );
  client.setRetryPolicy(new NoRetry());
  openDevices.push(client);
  await client.setOptions({ ca: emulator.caPem });
  return client;
}

/** The device SDK subscribes to methods in the background once a handler is added. */
async function untilMethodsSubscribed(deviceId: string): Promise<void> {
  const broker = deviceBroker(emulator.state)!;
  const subscribed = (): boolean =>
    broker
      .connections('test')
      .some((c) => c.deviceId === deviceId && c.subscriptions.includes('$iothub/methods/POST/#'));
  while (!subscribed()) await new Promise((r) => setTimeout(r, 10));
}

/** What the service SDK rejected with (it gives HTTP errors their response). */
async function failure(
  call: Promise<unknown>,
): Promise<Error & { response?: { statusCode: number; headers: Record<string, string> } }> {
  try {
    await call;
  } catch (err) {
    return err as Error & { response?: { statusCode: number; headers: Record<string, string> } };
  }
  throw new Error('expected the call to fail');
}

describe('direct methods from the service side', () => {
  it('invokes a method on a connected device and returns its status and payload', async () => {
    const { deviceId, key } = await createDevice();
    const device = await deviceClient(deviceId, key);
    await device.open();
    const received: unknown[] = [];
    device.onDeviceMethod('reboot', (request, response) => {
      received.push(request.payload);
      void response.send(200, { rebootingIn: (request.payload as { delay: number }).delay });
    });
    device.onDeviceMethod('missing', (_request, response) => void response.send(404, { reason: 'no such thing' }));
    await untilMethodsSubscribed(deviceId);

    const { result, message } = await service.invokeDeviceMethod(deviceId, {
      methodName: 'reboot',
      payload: { delay: 3 },
      responseTimeoutInSeconds: 10,
    });
    expect(message.statusCode).toBe(200);
    expect(result).toEqual({ status: 200, payload: { rebootingIn: 3 } });
    expect(received).toEqual([{ delay: 3 }]);

    // The device's own status is reported in the body; the HTTP call itself succeeded.
    const notFound = await service.invokeDeviceMethod(deviceId, { methodName: 'missing' });
    expect(notFound.result).toEqual({ status: 404, payload: { reason: 'no such thing' } });
  });

  it('works with a policy that has ServiceConnect only', async () => {
    const { deviceId, key } = await createDevice();
    const device = await deviceClient(deviceId, key);
    await device.open();
    device.onDeviceMethod('ping', (_request, response) => void response.send(200, 'pong'));
    await untilMethodsSubscribed(deviceId);
    const servicePolicy = ServiceClient.fromConnectionString(
      hubConnectionString(emulator.state.hubs.get('test')!, 'service'),
    );
    const { result } = await servicePolicy.invokeDeviceMethod(deviceId, { methodName: 'ping' });
    expect(result).toEqual({ status: 200, payload: 'pong' });
  });

  it('answers 404 DeviceNotOnline for a device that is not connected or not listening for methods', async () => {
    const { deviceId, key } = await createDevice();
    const offline = await failure(service.invokeDeviceMethod(deviceId, { methodName: 'reboot' }));
    // The SDK has no class for DeviceNotOnline: a plain Error carrying the 404 response.
    expect(offline.message).toBe('Not found');
    expect(offline.response?.statusCode).toBe(404);
    expect(offline.response?.headers['iothub-errorcode']).toBe('DeviceNotOnline');

    const device = await deviceClient(deviceId, key);
    await device.open();
    const notListening = await failure(service.invokeDeviceMethod(deviceId, { methodName: 'reboot' }));
    expect(notListening.response?.headers['iothub-errorcode']).toBe('DeviceNotOnline');
  });

  it('waits up to connectTimeoutInSeconds for an offline device to come online', async () => {
    const { deviceId, key } = await createDevice();
    const call = service.invokeDeviceMethod(deviceId, {
      methodName: 'hello',
      payload: 'hi',
      connectTimeoutInSeconds: 20,
      responseTimeoutInSeconds: 10,
    });
    await new Promise((r) => setTimeout(r, 300));
    const device = await deviceClient(deviceId, key);
    await device.open();
    device.onDeviceMethod('hello', (request, response) => void response.send(200, { echo: request.payload }));
    expect((await call).result).toEqual({ status: 200, payload: { echo: 'hi' } });
  });

  it('answers 504 GatewayTimeout when the device does not answer in time', async () => {
    const { deviceId, key } = await createDevice();
    const device = await deviceClient(deviceId, key);
    await device.open();
    device.onDeviceMethod('slow', () => undefined);
    await untilMethodsSubscribed(deviceId);
    const started = Date.now();
    const err = await failure(
      service.invokeDeviceMethod(deviceId, { methodName: 'slow', responseTimeoutInSeconds: 5 }),
    );
    expect(err.name).toBe('GatewayTimeoutError');
    expect(err.response?.headers['iothub-errorcode']).toBe('GatewayTimeout');
    expect(Date.now() - started).toBeGreaterThanOrEqual(4_900);
  });

  it('answers DeviceNotFound for an unknown device and ArgumentError for out-of-range timeouts', async () => {
    expect((await failure(service.invokeDeviceMethod(uniqueId('ghost'), { methodName: 'x' }))).name).toBe(
      'DeviceNotFoundError',
    );
    const { deviceId } = await createDevice();
    const err = await failure(service.invokeDeviceMethod(deviceId, { methodName: 'x', responseTimeoutInSeconds: 301 }));
    expect(err.name).toBe('ArgumentError');
  });

  it('refuses a policy without ServiceConnect with UnauthorizedError', async () => {
    const { deviceId, key } = await createDevice();
    const device = await deviceClient(deviceId, key);
    await device.open();
    device.onDeviceMethod('reboot', (_request, response) => void response.send(200, null));
    await untilMethodsSubscribed(deviceId);
    const hub = emulator.state.hubs.get('test')!;
    for (const policy of ['registryReadWrite', 'device']) {
      const client = ServiceClient.fromConnectionString(hubConnectionString(hub, policy));
      const err = await failure(client.invokeDeviceMethod(deviceId, { methodName: 'reboot' }));
      expect(err.name).toBe('UnauthorizedError');
    }
  });
});
