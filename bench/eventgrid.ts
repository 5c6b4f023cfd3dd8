/**
 * 5. The Event Grid webhook under a reconnect storm: N promotions wait (stand-ins of the real workflow type, on the
 * real dev server), and one delivery brings N DeviceConnected events, one per device, as IoT hub batches them after
 * a fleet reconnects. Measured: the time from the POST to the webhook's 200 (the events durably recorded: past 32,
 * in one relay workflow's start), and the time until every waiting workflow has received its own event.
 *
 * Target: under 1 s for 1,000 events in one delivery (issue 7: the visibility query per event took 14.2 s).
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { bundleWorkflowCode, NativeConnection, Worker } from '@temporalio/worker';
import { deviceEventActivities } from '../activities/device-events';
import { createApp } from '../api/app';
import { createLogger } from '../common/logger';
import { promotionWorkflowId, WORKFLOW_TYPES } from '../common/messages';
import { startDevServer, type TemporalCli } from '../common/temporal-server';
import { forEachConcurrently, type Defer } from './harness';
import type { Measurement } from './report';

export interface EventGridBenchOptions {
  events: number;
  cli: TemporalCli;
}

const TARGET_MS_PER_1000 = 1_000;

export async function benchEventGrid(options: EventGridBenchOptions, defer: Defer): Promise<Measurement[]> {
  const n = options.events;
  const server = await startDevServer({ cli: options.cli });
  defer(() => server.stop());
  const connection = await Connection.connect({ address: server.address });
  defer(() => connection.close());
  const nativeConnection = await NativeConnection.connect({ address: server.address });
  defer(() => nativeConnection.close());
  const client = new Client({ connection, namespace: server.namespace });

  const taskQueue = `bench-eventgrid-${randomUUID()}`;
  const worker = await Worker.create({
    connection: nativeConnection,
    namespace: server.namespace,
    taskQueue,
    workflowBundle: await bundleWorkflowCode({
      workflowsPath: require.resolve('./fixtures/waiting-promotion'),
      logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error: console.error },
    }),
    activities: deviceEventActivities(client),
    shutdownGraceTime: '1 second',
  });
  const running = worker.run();
  defer(async () => {
    if (worker.getState() === 'RUNNING') worker.shutdown();
    await running;
  });

  const production = `bench-prod-${randomBytes(4).toString('hex')}.azure-devices.net`;
  const secret = randomBytes(16).toString('hex');
  const app = createApp({
    client,
    taskQueue,
    log: createLogger('silent'),
    environments: { test: 'bench-test.azure-devices.net', production },
    eventGridSecret: secret,
  });
  const api: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  defer(() => new Promise<void>((resolve) => api.close(() => resolve())));
  const url = `http://127.0.0.1:${(api.address() as AddressInfo).port}/v1/eventgrid?code=${secret}`;

  // N promotions waiting for their devices.
  const run = randomBytes(3).toString('hex');
  const deviceIds = Array.from({ length: n }, (_, i) => `storm-${run}-${i}`);
  await forEachConcurrently(deviceIds, 32, (id) =>
    client.workflow.start(WORKFLOW_TYPES.promoteDevice, { taskQueue, workflowId: promotionWorkflowId(id), args: [] }),
  );

  // A storm comes long after the promotions started: wait until the last one started has run its first workflow
  // task (the worker takes them in order), so that the measurement is not of the starts' backlog.
  const last = client.workflow.getHandle(promotionWorkflowId(deviceIds[n - 1]));
  while (((await last.describe()).historyLength ?? 0) < 4) await new Promise((r) => setTimeout(r, 100));

  // One delivery with N events, Event Grid schema, as IoT hub sends them.
  const hubName = production.split('.')[0];
  const now = new Date().toISOString();
  const body = JSON.stringify(
    deviceIds.map((deviceId, i) => ({
      id: randomUUID(),
      topic: `/SUBSCRIPTIONS/0/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/${hubName}`,
      subject: `devices/${deviceId}`,
      eventType: 'Microsoft.Devices.DeviceConnected',
      eventTime: now,
      data: { deviceConnectionStateEventInfo: { sequenceNumber: String(i + 1).padStart(48, '0') }, hubName, deviceId },
      dataVersion: '',
      metadataVersion: '1',
    })),
  );
  // A small delivery first, so that connection set-up and JIT are not part of the measurement.
  await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'aeg-event-type': 'Notification' },
    body: '[]',
  });

  const started = performance.now();
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'aeg-event-type': 'Notification' },
    body,
  });
  const answer = (await res.json()) as { results?: Array<{ outcome: string }> };
  const elapsedMs = performance.now() - started;
  if (res.status !== 200) throw new Error(`webhook answered ${res.status}: ${JSON.stringify(answer)}`);
  const passedOn = answer.results?.filter((r) => r.outcome === 'signalled' || r.outcome === 'relayed').length ?? 0;
  if (passedOn !== n) throw new Error(`${passedOn} of ${n} events were signalled or relayed`);
  const relayed = answer.results?.filter((r) => r.outcome === 'relayed').length ?? 0;
  // Every waiting promotion got its own event.
  await forEachConcurrently(deviceIds, 32, async (id) => {
    const event = (await client.workflow.getHandle(promotionWorkflowId(id)).result()) as { deviceId: string };
    if (event.deviceId !== id) throw new Error(`${id} received ${event.deviceId}'s event`);
  });
  const receivedMs = performance.now() - started;

  const target = (TARGET_MS_PER_1000 * n) / 1000;
  return [
    {
      name: `eventgrid.delivery (${n})`,
      value: elapsedMs / 1000,
      unit: 's',
      better: 'lower',
      target: target / 1000,
      targetSource: '1,000 events in < 1 s (issue 7)',
      details: { events: n, relayed, bodyBytes: body.length, allReceivedSeconds: receivedMs / 1000 },
      note:
        `${Math.round(n / (elapsedMs / 1000))} events/s answered (${relayed ? 'one relay workflow' : 'signalled'}); ` +
        `every workflow had its own event ${(receivedMs / 1000).toFixed(2)} s after the POST`,
    },
  ];
}
