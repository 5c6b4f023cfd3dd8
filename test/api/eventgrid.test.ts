import { randomUUID } from 'node:crypto';
import type { Express } from 'express';
import type { Client, WorkflowHandle } from '@temporalio/client';
import { createApp } from '../../api/app';
import { RELAY_THRESHOLD } from '../../api/routes/eventgrid';
import { createLogger } from '../../common/logger';
import { deviceEventsWorkflowId } from '../../common/messages';
import { connectToHarness, type TemporalTestContext } from '../helpers/temporal';
import {
  eventually,
  fixtureEventsQuery,
  fixtureFinishSignal,
  startFixtureWorker,
  startPromotionDirectly,
  terminateAll,
  uniqueEnvironments,
  uniqueRegistrationId,
  waitForVisibility,
  type FixtureWorker,
} from '../fixtures/promotion-fixture';
import { authed, testSecurity } from '../helpers/credentials';
import { recordHistory } from '../helpers/histories';

const SECRET = 'a-shared-secret-of-some-length';

/** A DeviceConnected event as IoT hub publishes it through Event Grid (Event Grid schema). */
function deviceConnected(hubHostName: string, deviceId: string, sequenceNumber: string) {
  const hubName = hubHostName.split('.')[0];
  return {
    id: randomUUID(),
    topic: `/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/${hubName.toUpperCase()}`,
    subject: `devices/${deviceId}`,
    eventType: 'Microsoft.Devices.DeviceConnected',
    eventTime: new Date().toISOString(),
    data: { deviceConnectionStateEventInfo: { sequenceNumber }, hubName, deviceId },
    dataVersion: '',
    metadataVersion: '1',
  };
}

/**
 * Waits until the workflow's history holds `count` deviceConnected signals: what the webhook actually sent.
 * (A signal that arrives during a workflow task is written to history when that task completes.)
 */
async function expectDeviceConnectedSignals(handle: WorkflowHandle, count: number): Promise<void> {
  await eventually(async () => {
    const history = await handle.fetchHistory();
    const signals = (history.events ?? []).filter(
      (e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'deviceConnected',
    );
    expect(signals).toHaveLength(count);
  });
}

describe('Event Grid webhook', () => {
  let ctx: TemporalTestContext;
  let fixture: FixtureWorker;
  let app: Express;
  const environments = uniqueEnvironments();
  const started = new Set<string>();
  const post = (body: unknown) =>
    authed(app)
      .post('/v1/eventgrid')
      .query({ code: SECRET })
      .set('aeg-event-type', 'Notification')
      .send(body as object);

  beforeAll(async () => {
    ctx = await connectToHarness();
    fixture = await startFixtureWorker(ctx);
    app = createApp({
      security: testSecurity(),
      client: ctx.client,
      taskQueue: fixture.taskQueue,
      log: createLogger('silent'),
      environments,
      eventGridSecret: SECRET,
    });
  });
  afterAll(async () => {
    await terminateAll(ctx.client, started);
    await fixture.stop();
    await ctx.close();
  });

  /**
   * A running stand-in promotion. No wait for visibility: the webhook reaches it by id from the moment it starts.
   * One whose device id is not its registration id starts the real event relay, as a promotion does; this waits
   * for that relay to run.
   */
  async function runningPromotion(client: Client, options: { registrationId: string; deviceId?: string }) {
    const handle = await startPromotionDirectly(client, fixture.taskQueue, {
      ...options,
      sourceHub: environments.test,
      targetHub: environments.production,
    });
    started.add(handle.workflowId);
    if (options.deviceId && options.deviceId !== options.registrationId) {
      await eventually(async () => {
        const relay = await client.workflow.getHandle(deviceEventsWorkflowId(options.deviceId!)).describe();
        expect(relay.status.name).toBe('RUNNING');
      });
    }
    return handle;
  }

  describe('handshakes', () => {
    it('answers the Event Grid subscription validation with the validation code', async () => {
      const res = await authed(app)
        .post('/v1/eventgrid')
        .query({ code: SECRET })
        .set('aeg-event-type', 'SubscriptionValidation')
        .send([
          {
            id: randomUUID(),
            topic: '/subscriptions/x/resourceGroups/rg/providers/Microsoft.Devices/IotHubs/hub',
            subject: '',
            eventType: 'Microsoft.EventGrid.SubscriptionValidationEvent',
            eventTime: new Date().toISOString(),
            data: { validationCode: 'C0DE-1234', validationUrl: 'https://rp-eastus2.eventgrid.azure.net/validate' },
            dataVersion: '2',
            metadataVersion: '1',
          },
        ])
        .expect(200);
      expect(res.body).toEqual({ validationResponse: 'C0DE-1234' });
    });

    it('answers 400 when the validation header comes without a validation event', async () => {
      await authed(app)
        .post('/v1/eventgrid')
        .query({ code: SECRET })
        .set('aeg-event-type', 'SubscriptionValidation')
        .send([])
        .expect(400);
    });

    it('allows the requesting origin in the CloudEvents OPTIONS handshake', async () => {
      const res = await authed(app)
        .options('/v1/eventgrid')
        .query({ code: SECRET })
        .set('WebHook-Request-Origin', 'eventgrid.azure.net')
        .expect(200);
      expect(res.headers['webhook-allowed-origin']).toBe('eventgrid.azure.net');
    });
  });

  describe('secret', () => {
    const event = () => deviceConnected(environments.production, `nobody-${randomUUID()}`, '1');

    it('refuses a delivery without the secret or with a wrong one (401)', async () => {
      await authed(app).post('/v1/eventgrid').send([event()]).expect(401);
      await authed(app).post('/v1/eventgrid').query({ code: 'wrong' }).send([event()]).expect(401);
      await authed(app).post('/v1/eventgrid').set('x-iot-lifecycle-secret', 'wrong').send([event()]).expect(401);
      await authed(app).options('/v1/eventgrid').set('WebHook-Request-Origin', 'eventgrid.azure.net').expect(401);
    });

    it('accepts the secret as ?code= or as the x-iot-lifecycle-secret header', async () => {
      await authed(app).post('/v1/eventgrid').query({ code: SECRET }).send([event()]).expect(200);
      await authed(app).post('/v1/eventgrid').set('x-iot-lifecycle-secret', SECRET).send([event()]).expect(200);
    });

    it('accepts every delivery when no secret is configured', async () => {
      const open = createApp({
        security: testSecurity(),
        client: ctx.client,
        taskQueue: 'unused',
        log: createLogger('silent'),
        environments,
      });
      await authed(open).post('/v1/eventgrid').send([event()]).expect(200);
    });
  });

  describe('validation', () => {
    it.each([
      ['a JSON string', 'hello'],
      ['an object that is no event', { hello: 'world' }],
      ['an array of numbers', [1, 2]],
      [
        'a DeviceConnected event without its sequence number',
        [{ ...deviceConnected('h.azure-devices.net', 'd', '1'), data: { hubName: 'h', deviceId: 'd' } }],
      ],
    ])('answers 400 with issues for %s', async (_name, body) => {
      const res = await authed(app)
        .post('/v1/eventgrid')
        .query({ code: SECRET })
        .set('content-type', 'application/json')
        .send(JSON.stringify(body));
      expect(res.status).toBe(400);
      // A bare JSON string is refused by the JSON parser itself, before any schema could name an issue.
      if (typeof body === 'string') {
        expect(res.body.type).toBe('/problems/malformed-request');
      } else {
        expect(res.body.type).toBe('/problems/validation-error');
        expect(res.body.issues.length).toBeGreaterThan(0);
      }
    });
  });

  describe('DeviceConnected', () => {
    it('acknowledges and ignores events of devices no promotion is waiting for', async () => {
      const res = await post([deviceConnected(environments.production, `unknown-${randomUUID()}`, '00000001')]).expect(
        200,
      );
      expect(res.body.results).toEqual([expect.objectContaining({ outcome: 'noRunningPromotion' })]);
    });

    it('acknowledges and ignores other event types and module connections', async () => {
      const registrationId = uniqueRegistrationId('eg');
      const handle = await runningPromotion(ctx.client, { registrationId });
      const disconnected = {
        ...deviceConnected(environments.production, registrationId, '2'),
        eventType: 'Microsoft.Devices.DeviceDisconnected',
      };
      const telemetry = {
        ...deviceConnected(environments.production, registrationId, '3'),
        eventType: 'Microsoft.Devices.DeviceTelemetry',
        data: { body: 'eyJ0IjoxfQ==' },
      };
      const moduleConnected = deviceConnected(environments.production, registrationId, '4');
      moduleConnected.data = { ...moduleConnected.data, moduleId: 'edgeAgent' } as typeof moduleConnected.data;
      const res = await post([disconnected, telemetry, moduleConnected]).expect(200);
      expect(res.body.results.map((r: { outcome: string }) => r.outcome)).toEqual(['ignored', 'ignored', 'ignored']);
      await expectDeviceConnectedSignals(handle, 0);
    });

    it('reaches a promotion whose device id is not its registration id through its relay, with hub host and sequence number', async () => {
      const registrationId = uniqueRegistrationId('eg');
      const deviceId = `device-${registrationId}`;
      const handle = await runningPromotion(ctx.client, { registrationId, deviceId });
      const event = deviceConnected(
        environments.production,
        deviceId,
        '000000000000000000000000000000000000000000000001',
      );
      const res = await post([event]).expect(200);
      expect(res.body.results).toEqual([
        {
          eventId: event.id,
          eventType: event.eventType,
          outcome: 'signalled',
          workflowIds: [deviceEventsWorkflowId(deviceId)],
        },
      ]);
      const received = await eventually(async () => {
        const events = await handle.query(fixtureEventsQuery);
        expect(events).toHaveLength(1);
        return events;
      });
      expect(received[0]).toEqual({
        hubHostName: environments.production,
        deviceId,
        sequenceNumber: event.data.deviceConnectionStateEventInfo.sequenceNumber,
        eventTime: event.eventTime,
        eventId: event.id,
      });
    });

    it('signals a promotion by its deterministic id the moment it has started, without a visibility search', async () => {
      const registrationId = uniqueRegistrationId('eg');
      const handle = await runningPromotion(ctx.client, { registrationId });
      const res = await post([deviceConnected(environments.production, registrationId, '10')]).expect(200);
      expect(res.body.results[0]).toMatchObject({ outcome: 'signalled', workflowIds: [handle.workflowId] });
      await expectDeviceConnectedSignals(handle, 1);
    });

    it('signals a sequence number once, whether redelivered later or twice in one batch', async () => {
      const registrationId = uniqueRegistrationId('eg');
      const handle = await runningPromotion(ctx.client, { registrationId });
      const first = deviceConnected(environments.production, registrationId, '0000000A');
      // Event Grid redelivers the same event; IoT hub may also publish it under a new event id.
      const redelivered = { ...first, id: randomUUID() };

      const one = await post([first]).expect(200);
      expect(one.body.results[0].outcome).toBe('signalled');
      const again = await post([first, redelivered]).expect(200);
      expect(again.body.results.map((r: { outcome: string }) => r.outcome)).toEqual(['duplicate', 'duplicate']);
      await expectDeviceConnectedSignals(handle, 1);

      // A later connection (higher sequence number) and the same number from another hub are new events.
      const next = await post([
        deviceConnected(environments.production, registrationId, '0000000B'),
        deviceConnected(environments.test, registrationId, '0000000A'),
      ]).expect(200);
      expect(next.body.results.map((r: { outcome: string }) => r.outcome)).toEqual(['signalled', 'signalled']);
      await expectDeviceConnectedSignals(handle, 3);
    });

    it('remembers only the most recent events (bounded), so an old one is signalled again', async () => {
      const small = createApp({
        security: testSecurity(),
        client: ctx.client,
        taskQueue: fixture.taskQueue,
        log: createLogger('silent'),
        environments,
        eventGridDedupCapacity: 2,
      });
      const registrationId = uniqueRegistrationId('eg');
      const handle = await runningPromotion(ctx.client, { registrationId });
      const send = (sequenceNumber: string) =>
        authed(small)
          .post('/v1/eventgrid')
          .send([deviceConnected(environments.production, registrationId, sequenceNumber)])
          .expect(200)
          .then((res) => res.body.results[0].outcome as string);
      expect(await send('1')).toBe('signalled');
      expect(await send('2')).toBe('signalled');
      expect(await send('1')).toBe('duplicate'); // refreshes 1: 2 is now the oldest
      expect(await send('3')).toBe('signalled'); // evicts 2
      expect(await send('1')).toBe('duplicate');
      expect(await send('2')).toBe('signalled');
      await expectDeviceConnectedSignals(handle, 4);
    });

    it('does not signal a promotion that has closed', async () => {
      const registrationId = uniqueRegistrationId('eg');
      const handle = await runningPromotion(ctx.client, { registrationId });
      await handle.signal(fixtureFinishSignal, { outcome: 'complete' });
      await handle.result();
      await waitForVisibility(ctx.client, `WorkflowId = '${handle.workflowId}' AND ExecutionStatus = 'Completed'`);
      const res = await post([deviceConnected(environments.production, registrationId, '1')]).expect(200);
      expect(res.body.results[0].outcome).toBe('noRunningPromotion');
    });

    it("finds devices whose ids contain quotes (Azure allows ')", async () => {
      const registrationId = uniqueRegistrationId('eg');
      const deviceId = `o'brien-${registrationId}`;
      const handle = await runningPromotion(ctx.client, { registrationId, deviceId });
      const res = await post([deviceConnected(environments.production, deviceId, '1')]).expect(200);
      expect(res.body.results[0]).toMatchObject({
        outcome: 'signalled',
        workflowIds: [deviceEventsWorkflowId(deviceId)],
      });
      await eventually(async () => expect(await handle.query(fixtureEventsQuery)).toHaveLength(1));
    });

    it('maps hub names through the configured environments, whatever their domain, and ignores other hubs', async () => {
      const sovereign = {
        test: 'line-test.azure-devices.cn',
        production: `prod-${randomUUID().slice(0, 8)}.azure-devices.cn`,
      };
      const china = createApp({
        security: testSecurity(),
        client: ctx.client,
        taskQueue: fixture.taskQueue,
        log: createLogger('silent'),
        environments: sovereign,
      });
      const registrationId = uniqueRegistrationId('eg');
      const handle = await startPromotionDirectly(ctx.client, fixture.taskQueue, {
        registrationId,
        sourceHub: sovereign.test,
        targetHub: sovereign.production,
      });
      started.add(handle.workflowId);
      const res = await authed(china)
        .post('/v1/eventgrid')
        .send([
          deviceConnected(sovereign.production, registrationId, '1'),
          deviceConnected('unconfigured-hub.azure-devices.net', registrationId, '1'),
        ])
        .expect(200);
      expect(res.body.results.map((r: { outcome: string }) => r.outcome)).toEqual(['signalled', 'unknownHub']);
      const [received] = await eventually(async () => {
        const events = await handle.query(fixtureEventsQuery);
        expect(events).toHaveLength(1);
        return events;
      });
      expect(received.hubHostName).toBe(sovereign.production);
    });

    it(`hands a delivery of more than ${RELAY_THRESHOLD} events to a relay workflow in one write, which signals every waiting promotion`, async () => {
      const ids = Array.from({ length: RELAY_THRESHOLD + 4 }, () => uniqueRegistrationId('storm'));
      const handles = await Promise.all(ids.map((registrationId) => runningPromotion(ctx.client, { registrationId })));
      // One promotion whose device id is not its registration id (reached through its device-events relay), and
      // three devices nothing waits for.
      const registrationId = uniqueRegistrationId('eg');
      const deviceId = `device-${registrationId}`;
      const other = await runningPromotion(ctx.client, { registrationId, deviceId });
      const strangers = [1, 2, 3].map(() => `unknown-${randomUUID()}`);
      const events = [...ids, deviceId, ...strangers].map((id) => deviceConnected(environments.production, id, '1'));
      const telemetry = { ...events[0], id: randomUUID(), eventType: 'Microsoft.Devices.DeviceTelemetry' };

      const res = await post([...events, telemetry]).expect(200);
      const relayWorkflowId = res.body.results[0].relayWorkflowId as string;
      expect(relayWorkflowId).toMatch(/^eventgrid\/[0-9a-f]{32}$/);
      expect(res.body.results).toEqual([
        ...events.map((e) => ({ eventId: e.id, eventType: e.eventType, outcome: 'relayed', relayWorkflowId })),
        { eventId: telemetry.id, eventType: telemetry.eventType, outcome: 'ignored' },
      ]);

      // The relay's result says what came of each event; every waiting promotion got exactly its own.
      const relay = ctx.client.workflow.getHandle(relayWorkflowId);
      const result = await relay.result();
      await recordHistory(relay, 'eventgrid-relay-v1');
      expect(result).toEqual({
        events: events.length,
        signalled: ids.length + 1,
        noRunningPromotion: 3,
        devicesWithoutPromotion: expect.arrayContaining(strangers),
      });
      for (const handle of handles) await expectDeviceConnectedSignals(handle, 1);
      await eventually(async () => expect(await other.query(fixtureEventsQuery)).toHaveLength(1));
      const [received] = await handles[0].query(fixtureEventsQuery);
      expect(received).toEqual({
        hubHostName: environments.production,
        deviceId: ids[0],
        sequenceNumber: '1',
        eventTime: events[0].eventTime,
        eventId: events[0].id,
      });

      // The same delivery again: duplicates here; to another API instance (no memory of it), the same relay.
      const again = await post(events).expect(200);
      expect(new Set(again.body.results.map((r: { outcome: string }) => r.outcome))).toEqual(new Set(['duplicate']));
      const fresh = createApp({
        security: testSecurity(),
        client: ctx.client,
        taskQueue: fixture.taskQueue,
        log: createLogger('silent'),
        environments,
      });
      const elsewhere = await authed(fresh).post('/v1/eventgrid').send(events).expect(200);
      expect(elsewhere.body.results[0]).toMatchObject({ outcome: 'relayed', relayWorkflowId });
    });

    it('refuses a delivery with a malformed DeviceConnected event whole: nothing is signalled', async () => {
      const registrationId = uniqueRegistrationId('eg');
      const handle = await runningPromotion(ctx.client, { registrationId });
      const good = deviceConnected(environments.production, registrationId, '1');
      const bad = { ...deviceConnected(environments.production, registrationId, '2'), data: { hubName: 'x' } };
      const res = await post([good, bad]).expect(400);
      expect(res.body.type).toBe('/problems/validation-error');
      // The good event was not claimed either: sent again on its own, it is signalled.
      const retried = await post([good]).expect(200);
      expect(retried.body.results[0].outcome).toBe('signalled');
      await expectDeviceConnectedSignals(handle, 1);
    });

    it('accepts CloudEvents 1.0 deliveries', async () => {
      const registrationId = uniqueRegistrationId('eg');
      const handle = await runningPromotion(ctx.client, { registrationId });
      const { id, data, eventTime } = deviceConnected(environments.production, registrationId, '7');
      const res = await authed(app)
        .post('/v1/eventgrid')
        .query({ code: SECRET })
        .set('content-type', 'application/cloudevents+json; charset=utf-8')
        .send(
          JSON.stringify({
            specversion: '1.0',
            id,
            source: `/subscriptions/x/resourceGroups/rg/providers/Microsoft.Devices/IotHubs/${data.hubName}`,
            subject: `devices/${registrationId}`,
            type: 'Microsoft.Devices.DeviceConnected',
            time: eventTime,
            data,
          }),
        )
        .expect(200);
      expect(res.body.results[0]).toMatchObject({ outcome: 'signalled', workflowIds: [handle.workflowId] });
    });
  });
});
