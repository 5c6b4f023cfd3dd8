/**
 * Event Grid webhooks for the emulated hubs: the validation handshake, DeviceCreated/Deleted/Connected/Disconnected
 * deliveries in Azure's schema, and retries. Device traffic comes from the real device SDK, registry changes from
 * the real azure-iothub Registry; the subscriber is a local HTTP server.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from 'azure-iot-device';
import { Mqtt } from 'azure-iot-device-mqtt';
import { Registry } from 'azure-iothub';
import { eventGridFor, type EventGridEvent } from '../../emulator/eventgrid/event-grid';
import { installAzureEndpointRouting } from '../../common/azure-routing';
import { startEmulator, type RunningEmulator } from '../../emulator/server';
import { controlFetch } from '../helpers/control';

interface Received {
  headers: http.IncomingHttpHeaders;
  url: string;
  events: EventGridEvent[];
}

/** A webhook endpoint: records every request; `respond` decides the answer (default: echo the handshake, 200). */
class Subscriber {
  readonly received: Received[] = [];
  respond: (r: Received) => { status: number; body?: unknown } = (r) => {
    const validation = r.events[0]?.eventType === 'Microsoft.EventGrid.SubscriptionValidationEvent';
    return validation
      ? { status: 200, body: { validationResponse: (r.events[0].data as { validationCode: string }).validationCode } }
      : { status: 200 };
  };
  private readonly waiters: Array<() => void> = [];
  private server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      const received: Received = {
        headers: req.headers,
        url: req.url ?? '',
        events: JSON.parse(body) as EventGridEvent[],
      };
      this.received.push(received);
      const answer = this.respond(received);
      res.writeHead(answer.status, { 'content-type': 'application/json' });
      res.end(answer.body === undefined ? '' : JSON.stringify(answer.body));
      for (const wake of this.waiters.splice(0)) wake();
    });
  });

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hooks/iot`;
  }

  notifications(): Received[] {
    return this.received.filter((r) => r.headers['aeg-event-type'] === 'Notification');
  }

  /** Waits until `predicate` holds over what was received. */
  async until(predicate: (s: this) => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate(this)) {
      if (Date.now() > deadline) throw new Error('subscriber did not receive what was expected in time');
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

let emulator: RunningEmulator;
let uninstallRouting: () => void;
let registry: Registry;
let hubHost: string;
const subscribers: Subscriber[] = [];
let counter = 0;
const uniqueName = (prefix: string): string => `${prefix}-${Date.now().toString(36)}-${++counter}`;

beforeAll(async () => {
  emulator = await startEmulator();
  uninstallRouting = installAzureEndpointRouting({ address: emulator.address, caPem: emulator.caPem });
  registry = Registry.fromConnectionString(emulator.connectionStrings.hubs.test);
  hubHost = emulator.state.hubs.get('test')!.hostName;
  eventGridFor(emulator.state).configure({ initialRetryDelayMs: 20, maxRetryDelayMs: 100, maxDeliveryAttempts: 4 });
});

afterEach(async () => {
  for (const sub of eventGridFor(emulator.state).list()) eventGridFor(emulator.state).unsubscribe(sub.hub, sub.name);
  await Promise.all(subscribers.splice(0).map((s) => s.stop()));
});

afterAll(async () => {
  uninstallRouting();
  await emulator.stop();
});

async function newSubscriber(): Promise<{ subscriber: Subscriber; url: string }> {
  const subscriber = new Subscriber();
  subscribers.push(subscriber);
  return { subscriber, url: await subscriber.start() };
}

async function connectAndDisconnect(deviceId: string): Promise<void> {
  const { responseBody } = await registry.create({ deviceId });
  const key = responseBody.authentication!.symmetricKey!.primaryKey!;
  const client = Client.fromConnectionString(
    `HostName=${hubHost};DeviceId=${deviceId};SharedAccessKey=${key};GatewayHostName=127.0.0.1:${emulator.mqttPort}`,
    Mqtt,
  );
  await client.setOptions({ ca: emulator.caPem });
  await client.open();
  await client.close();
}

describe('Event Grid subscriptions', () => {
  it('activates a subscription only after the endpoint echoes the validation code', async () => {
    const { subscriber, url } = await newSubscriber();
    const grid = eventGridFor(emulator.state);

    subscriber.respond = () => ({ status: 200, body: { validationResponse: 'not-the-code' } });
    await expect(grid.subscribe({ hub: 'test', name: 'wrong-echo', endpointUrl: url })).rejects.toMatchObject({
      status: 400,
      code: 'WebhookValidationFailed',
    });
    expect(grid.list('test')).toEqual([]);

    subscriber.respond = new Subscriber().respond;
    const view = await grid.subscribe({ hub: 'test', name: 'lifecycle', endpointUrl: url });
    expect(view).toMatchObject({ hub: 'test', name: 'lifecycle', provisioningState: 'Succeeded' });

    const handshake = subscriber.received[1];
    expect(handshake.headers['aeg-event-type']).toBe('SubscriptionValidation');
    expect(handshake.headers['aeg-subscription-name']).toBe('LIFECYCLE');
    expect(handshake.events).toHaveLength(1);
    expect(handshake.events[0]).toMatchObject({
      eventType: 'Microsoft.EventGrid.SubscriptionValidationEvent',
      topic: expect.stringMatching(/\/PROVIDERS\/MICROSOFT\.DEVICES\/IOTHUBS\/TEST-HUB$/),
      data: { validationCode: expect.any(String) },
    });
    expect(grid.list('test').map((s) => s.name)).toEqual(['lifecycle']);
    await expect(grid.subscribe({ hub: 'test', name: 'LIFECYCLE', endpointUrl: url })).rejects.toMatchObject({
      status: 409,
    });
    await expect(grid.subscribe({ hub: 'nope', name: 'x-hub', endpointUrl: url })).rejects.toMatchObject({
      status: 404,
    });
  });

  it('delivers connect and disconnect events with increasing sequence numbers', async () => {
    const { subscriber, url } = await newSubscriber();
    await eventGridFor(emulator.state).subscribe({
      hub: 'test',
      name: 'connections',
      endpointUrl: url,
      includedEventTypes: ['Microsoft.Devices.DeviceConnected', 'Microsoft.Devices.DeviceDisconnected'],
    });
    const deviceId = uniqueName('eg');
    await connectAndDisconnect(deviceId);
    await connectAndDisconnect(`${deviceId}-b`);
    await subscriber.until((s) => s.notifications().length >= 4);

    const deliveries = subscriber.notifications();
    expect(deliveries.map((d) => [d.events[0].eventType, d.events[0].subject])).toEqual([
      ['Microsoft.Devices.DeviceConnected', `devices/${deviceId}`],
      ['Microsoft.Devices.DeviceDisconnected', `devices/${deviceId}`],
      ['Microsoft.Devices.DeviceConnected', `devices/${deviceId}-b`],
      ['Microsoft.Devices.DeviceDisconnected', `devices/${deviceId}-b`],
    ]);
    for (const d of deliveries) {
      expect(d.headers['aeg-delivery-count']).toBe('0');
      expect(d.headers['content-type']).toMatch(/^application\/json/);
      expect(d.events[0]).toMatchObject({
        id: expect.any(String),
        topic: expect.stringMatching(/^\/SUBSCRIPTIONS\/.+\/RESOURCEGROUPS\/.+\/IOTHUBS\/TEST-HUB$/),
        eventTime: expect.any(String),
        dataVersion: expect.any(String),
        metadataVersion: '1',
        data: { hubName: 'test-hub', deviceId: expect.any(String) },
      });
    }
    const sequence = deliveries.map(
      (d) =>
        (d.events[0].data as { deviceConnectionStateEventInfo: { sequenceNumber: string } })
          .deviceConnectionStateEventInfo.sequenceNumber,
    );
    expect(sequence.every((n) => /^[0-9A-F]{64}$/.test(n))).toBe(true);
    expect([...sequence].sort()).toEqual(sequence);
    expect(new Set(sequence).size).toBe(sequence.length);
  });

  it('delivers device created and deleted events carrying the twin, with the secret in query and header', async () => {
    const { subscriber, url } = await newSubscriber();
    await eventGridFor(emulator.state).subscribe({
      hub: 'test',
      name: 'lifecycle-events',
      endpointUrl: url,
      secret: 's3cr3t',
      includedEventTypes: ['Microsoft.Devices.DeviceCreated', 'Microsoft.Devices.DeviceDeleted'],
    });
    const deviceId = uniqueName('life');
    await registry.create({ deviceId });
    await registry.delete(deviceId);
    await subscriber.until((s) => s.notifications().length >= 2);

    const [created, deleted] = subscriber.notifications();
    expect(created.events[0]).toMatchObject({
      eventType: 'Microsoft.Devices.DeviceCreated',
      subject: `devices/${deviceId}`,
      data: { hubName: 'test-hub', deviceId, twin: { deviceId, status: 'enabled', authenticationType: 'sas' } },
    });
    expect(deleted.events[0].eventType).toBe('Microsoft.Devices.DeviceDeleted');
    for (const r of subscriber.received) {
      expect(new URL(r.url, 'http://x').searchParams.get('code')).toBe('s3cr3t');
      expect(r.headers['x-eventgrid-secret']).toBe('s3cr3t');
    }
  });

  it('retries a failing subscriber with back-off and gives up on 400', async () => {
    const { subscriber, url } = await newSubscriber();
    const grid = eventGridFor(emulator.state);
    await grid.subscribe({
      hub: 'test',
      name: 'flaky',
      endpointUrl: url,
      includedEventTypes: ['Microsoft.Devices.DeviceCreated'],
    });

    let failuresLeft = 2;
    subscriber.respond = () => (failuresLeft-- > 0 ? { status: 503 } : { status: 200 });
    const deviceId = uniqueName('retry');
    await registry.create({ deviceId });
    await subscriber.until((s) => s.notifications().length >= 3);
    await grid.whenIdle();
    const attempts = subscriber.notifications();
    expect(attempts.map((a) => a.headers['aeg-delivery-count'])).toEqual(['0', '1', '2']);
    expect(new Set(attempts.map((a) => a.events[0].id)).size).toBe(1);
    expect(grid.get('test', 'flaky')).toMatchObject({ delivered: 1, pending: 0, deadLettered: 0 });

    subscriber.respond = () => ({ status: 400 });
    const rejected = uniqueName('dead');
    await registry.create({ deviceId: rejected });
    await subscriber.until((s) => s.notifications().length >= 4);
    await grid.whenIdle();
    expect(subscriber.notifications()).toHaveLength(4);
    expect(grid.deadLetters('test').at(-1)).toMatchObject({
      subscription: 'flaky',
      attempts: 1,
      lastError: 'HTTP 400',
    });
  });

  it('stops after the configured number of attempts when the subscriber keeps failing', async () => {
    const { subscriber, url } = await newSubscriber();
    const grid = eventGridFor(emulator.state);
    await grid.subscribe({
      hub: 'test',
      name: 'down',
      endpointUrl: url,
      includedEventTypes: ['Microsoft.Devices.DeviceCreated'],
    });
    subscriber.respond = () => ({ status: 500 });
    await registry.create({ deviceId: uniqueName('down') });
    await subscriber.until((s) => s.notifications().length >= 4);
    await grid.whenIdle();
    expect(subscriber.notifications()).toHaveLength(grid.options.maxDeliveryAttempts);
    expect(grid.deadLetters('test').at(-1)).toMatchObject({ subscription: 'down', attempts: 4, lastError: 'HTTP 500' });
  });

  it('manages subscriptions through the control API', async () => {
    const { subscriber, url } = await newSubscriber();
    const base = `${emulator.controlUrl}/eventgrid`;
    const created = await controlFetch(emulator, `${base}/hubs/production/subscriptions/ops`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ endpointUrl: url }),
    });
    expect(created.status).toBe(201);
    expect(subscriber.received).toHaveLength(1);
    const listed = (await (await controlFetch(emulator, `${base}/subscriptions?hub=production`)).json()) as Array<{
      name: string;
    }>;
    expect(listed.map((s) => s.name)).toEqual(['ops']);

    const bad = await controlFetch(emulator, `${base}/hubs/production/subscriptions/ops2`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ endpointUrl: url, includedEventTypes: ['Microsoft.Devices.DeviceTelemetry'] }),
    });
    expect(bad.status).toBe(400);

    expect(
      (await controlFetch(emulator, `${base}/hubs/production/subscriptions/ops`, { method: 'DELETE' })).status,
    ).toBe(204);
    expect(
      (await controlFetch(emulator, `${base}/hubs/production/subscriptions/ops`, { method: 'DELETE' })).status,
    ).toBe(404);
  });
});
