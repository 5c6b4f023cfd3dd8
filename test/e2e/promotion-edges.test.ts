/**
 * Promotion edges found by trying it as an operator, a reviewer and a hostile client would: twin data under both
 * reprovision policies, HTTPS devices, stale and forged Event Grid events, compensation that fails and is retried,
 * named failures and statuses, devices that cannot move, X.509 group members' certificates and enrollment
 * ownership. Through the real stack: API → Temporal → worker → activities → emulator → simulated devices.
 */
import { randomUUID } from 'node:crypto';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { IndividualEnrollment } from 'azure-iot-provisioning-service/dist/interfaces';
import { deviceEventsWorkflowId, promotionWorkflowId } from '../../common/messages';
import type { PromotionResult, PromotionStatus } from '../../common/promotion';
import { mintCertificate } from '../../emulator/security/certs';
import { addFaultRule, resetLimits } from '../../emulator/limits/decide';
import { eventGridFor } from '../../emulator/eventgrid/event-grid';
import type { SimulatedDevice } from '../../emulator/simulator/device';
import { enrollSymmetricKeyDevice } from '../../emulator/simulator/enroll';
import { recordHistory } from '../helpers/histories';
import { activeOn, connectedTo, enrollDevice, simulate, startStack, uniqueId, type Stack } from '../helpers/stack';
import { authed } from '../helpers/credentials';

jest.setTimeout(120_000);

let stack: Stack;
const devices: SimulatedDevice[] = [];

beforeAll(async () => {
  stack = await startStack();
});
afterEach(async () => {
  resetLimits(stack.emulator.state.limits);
  await Promise.all(devices.splice(0).map((d) => d.stop()));
});
afterAll(async () => {
  await stack?.stop();
});

async function onlineInTest(kind: Parameters<typeof enrollDevice>[1]) {
  const enrolled = await enrollDevice(stack, kind);
  const device = simulate(stack, enrolled);
  devices.push(device);
  await connectedTo(device, stack.hosts.test);
  return { enrolled, device };
}

async function start(body: Record<string, unknown>): Promise<WorkflowHandle> {
  const res = await authed(stack.app, 'operator').post('/v1/promotions').send(body);
  expect(res.status).toBe(202);
  return stack.temporal.client.workflow.getHandle(promotionWorkflowId(String(body.registrationId)));
}

async function failureOf(handle: WorkflowHandle): Promise<{ type?: string; result?: PromotionResult }> {
  const err = await handle.result().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  const cause = (err as WorkflowFailedError).cause as ApplicationFailure;
  expect(cause).toBeInstanceOf(ApplicationFailure);
  return { type: cause.type ?? undefined, result: cause.details?.[0] as PromotionResult | undefined };
}

async function statusOf(handle: WorkflowHandle): Promise<PromotionStatus> {
  return handle.query<PromotionStatus>('status');
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

const phaseIs = (handle: WorkflowHandle, phase: string) =>
  waitFor(`phase ${phase}`, async () => ((await statusOf(handle)).phase === phase ? true : undefined));

async function deviceIn(env: 'test' | 'production', deviceId: string) {
  try {
    return (await stack.registries[env].get(deviceId)).responseBody;
  } catch (err) {
    if ((err as Error).name === 'DeviceNotFoundError') return undefined;
    throw err;
  }
}

async function twinOf(env: 'test' | 'production', deviceId: string) {
  const twin = (await stack.registries[env].getTwin(deviceId)).responseBody;
  const plain = (o: Record<string, unknown> = {}) =>
    Object.fromEntries(Object.entries(o).filter(([k]) => !k.startsWith('$')));
  return { tags: plain(twin.tags), desired: plain(twin.properties?.desired) };
}

/** Values the enrollment's initial twin ({stage: test} / {firmware: 1.0}) does not hold. */
async function giveTestTwin(deviceId: string) {
  await stack.registries.test.updateTwin(
    deviceId,
    { tags: { stage: 'burn-in', owner: 'line-7' }, properties: { desired: { firmware: '2.1', interval: 30 } } },
    '*',
  );
  return twinOf('test', deviceId);
}

function deviceConnectedEvent(hubHost: string, deviceId: string, eventTime: string, sequenceNumber: string) {
  const hubName = hubHost.split('.')[0];
  return {
    id: randomUUID(),
    topic: `/SUBSCRIPTIONS/0/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/${hubName}`,
    subject: `devices/${deviceId}`,
    eventType: 'Microsoft.Devices.DeviceConnected',
    eventTime,
    data: { deviceConnectionStateEventInfo: { sequenceNumber }, hubName, deviceId },
    dataVersion: '',
    metadataVersion: '1',
  };
}

describe('twin data', () => {
  it('migrate: the production twin holds the tags and desired properties the device had in test', async () => {
    const { enrolled, device } = await onlineInTest('symmetricKey');
    const id = enrolled.registrationId;
    const before = await giveTestTwin(id);
    const handle = await start({ registrationId: id, pollInterval: '1s' });
    const result: PromotionResult = await handle.result();

    expect(result.outcome).toBe('promoted');
    expect(result.registration?.substatus).toBe('deviceDataMigrated');
    await connectedTo(device, stack.hosts.production);
    expect(await twinOf('production', id)).toEqual(before);
    expect(await deviceIn('test', id)).toBeUndefined();
  });

  it('reset: the production twin is the enrollment’s initial twin, whatever the device had in test', async () => {
    const { enrolled, device } = await onlineInTest('symmetricKeyGroup');
    const id = enrolled.registrationId;
    await giveTestTwin(id);
    const handle = await start({ registrationId: id, reprovisionPolicy: 'reset', pollInterval: '1s' });
    const result: PromotionResult = await handle.result();

    expect(result.outcome).toBe('promoted');
    expect(result.registration?.substatus).toBe('deviceDataReset');
    await connectedTo(device, stack.hosts.production);
    expect(await twinOf('production', id)).toEqual({ tags: { stage: 'test' }, desired: { firmware: '1.0' } });
  });
});

describe('protocols', () => {
  async function httpsDeviceInTest() {
    const enrolled = await enrollDevice(stack, 'symmetricKey');
    const device = simulate(stack, enrolled, { hubTransport: 'https', telemetryIntervalMs: 500 });
    devices.push(device);
    await activeOn(device, stack.hosts.test);
    return { enrolled, device };
  }

  it('completes for an HTTPS device, by its DPS re-registration and its activity on production', async () => {
    const { enrolled, device } = await httpsDeviceInTest();
    const handle = await start({ registrationId: enrolled.registrationId, protocol: 'https', pollInterval: '1s' });
    const result: PromotionResult = await handle.result();

    expect(result.outcome).toBe('promoted');
    expect(result.steps.find((s) => s.step === 'connected')?.detail).toMatch(/last activity/);
    await activeOn(device, stack.hosts.production);
    // IoT Hub keeps no connection state for HTTPS devices: "connected" could never have ended the wait.
    expect(await deviceIn('production', enrolled.registrationId)).toMatchObject({ connectionState: 'Disconnected' });
  });

  it('would wait for a connection an HTTPS device never makes if the request named the wrong protocol', async () => {
    const { enrolled, device } = await httpsDeviceInTest();
    const handle = await start({
      registrationId: enrolled.registrationId,
      protocol: 'mqtt',
      pollInterval: '1s',
      deadline: '6s',
      onTimeout: 'park',
    });
    const { type, result } = await failureOf(handle);
    expect(type).toBe('ReconnectionDeadlineExceeded');
    expect(result?.wait?.lastCheck).toMatch(/not connected/);
    await activeOn(device, stack.hosts.production);
  });
});

describe('Event Grid events are hints, not proof', () => {
  it('ignores an event older than the re-point, keeps waiting after one that does not check out, and rolls back as asked', async () => {
    const { enrolled, device } = await onlineInTest('symmetricKey');
    const id = enrolled.registrationId;
    await device.stop();
    const handle = await start({ registrationId: id, deadline: '8s', pollInterval: '1h', onTimeout: 'rollback' });
    await phaseIs(handle, 'awaitingReconnection');
    const post = (event: unknown) =>
      authed(stack.app, 'operator')
        .post('/v1/eventgrid')
        .query({ code: stack.eventGridSecret })
        .send([event])
        .expect(200);

    // Replayed from before the re-point (a stale or forged event): ignored.
    const stale = await post(deviceConnectedEvent(stack.hosts.production, id, '2020-01-01T00:00:00Z', '1'));
    expect(stale.body.results[0].outcome).toBe('signalled');
    await waitFor('the stale event to be counted', async () =>
      (await statusOf(handle)).wait?.ignoredEvents === 1 ? true : undefined,
    );
    // Fresh, but the device is not there: checked, not believed; the wait goes on.
    await post(deviceConnectedEvent(stack.hosts.production, id, new Date().toISOString(), '2'));
    const checked = await waitFor('the hint to be checked', async () => {
      const status = await statusOf(handle);
      return status.wait?.checks === 1 ? status : undefined;
    });
    expect(checked.phase).toBe('awaitingReconnection');
    expect(checked.wait?.lastCheck).toMatch(/re-registered|not in|assigns/);

    const { type, result } = await failureOf(handle);
    expect(type).toBe('ReconnectionDeadlineExceeded');
    expect(result).toMatchObject({ outcome: 'rolledBack', phase: 'rolledBack' });
    expect((await stack.dps.getIndividualEnrollment(id)).responseBody.iotHubs).toEqual([stack.hosts.test]);
    expect(await deviceIn('test', id)).toMatchObject({ status: 'enabled' });
  });
});

describe('Event Grid routing', () => {
  it('reaches a promotion whose device id is not its registration id through its relay, on the event alone', async () => {
    const grid = eventGridFor(stack.emulator.state, { initialRetryDelayMs: 100, maxRetryDelayMs: 1_000 });
    const name = uniqueId('relay').slice(0, 60);
    await grid.subscribe({
      hub: 'production',
      name,
      endpointUrl: `${stack.apiUrl}/v1/eventgrid?code=${stack.eventGridSecret}`,
      includedEventTypes: ['Microsoft.Devices.DeviceConnected'],
    });
    try {
      const registrationId = uniqueId('relayed');
      const deviceId = `${registrationId}-device`;
      const key = await enrollSymmetricKeyDevice(stack.dps, {
        registrationId,
        deviceId,
        hubHostName: stack.hosts.test,
        initialTwin: { tags: { stage: 'test' }, properties: { desired: {} } },
      });
      const device = simulate(stack, {
        registrationId,
        kind: 'symmetricKey',
        attestation: { type: 'symmetricKey', key },
        secret: key,
      });
      devices.push(device);
      await connectedTo(device, stack.hosts.test);
      // Polling every hour: only the relayed Event Grid signal can finish this within the test's time.
      const handle = await start({ registrationId, pollInterval: '1h' });
      const result: PromotionResult = await handle.result();

      expect(result).toMatchObject({ outcome: 'promoted', connectedVia: 'eventGrid', deviceId });
      const relay = stack.temporal.client.workflow.getHandle(deviceEventsWorkflowId(deviceId));
      expect((await relay.describe()).status.name).toBe('TERMINATED'); // ended with its promotion
      await recordHistory(handle, 'promotion-v2-relayed');
      await recordHistory(relay, 'promotion-event-relay-v1');
    } finally {
      grid.unsubscribe('production', name);
    }
  });
});

describe('compensation', () => {
  it('attempts every undo when one fails, waits in compensationFailed, and finishes on an operator retry', async () => {
    const { enrolled, device } = await onlineInTest('symmetricKey');
    const id = enrolled.registrationId;
    await device.stop();
    const handle = await start({ registrationId: id, deadline: '3s', pollInterval: '1s' });
    await phaseIs(handle, 'awaitingReconnection');
    // DPS refuses every enrollment write from now on: the enrollment's undo fails, the others must still run.
    addFaultRule(stack.emulator.state.limits, {
      surface: 'dpsService',
      operation: 'createOrUpdateEnrollment',
      status: 400,
      times: 1_000,
    });
    const waiting = await waitFor('compensationFailed', async () => {
      const status = await statusOf(handle);
      return status.phase === 'compensationFailed' ? status : undefined;
    });
    expect(waiting.compensation?.leftovers.map((l) => l.step)).toEqual(['enrollment']);
    expect(waiting.compensation?.steps.find((s) => s.step === 'sourceDevice')?.status).toBe('undone');
    expect(await deviceIn('test', id)).toMatchObject({ status: 'enabled' });
    const detail = await authed(stack.app, 'operator').get(`/v1/promotions/${id}`).expect(200);
    expect(detail.body).toMatchObject({ status: 'running', phase: 'compensationFailed' });

    // The operator fixes the cause and retries compensation: only what was left runs again.
    resetLimits(stack.emulator.state.limits);
    const retried = await authed(stack.app, 'operator').post(`/v1/promotions/${id}/retry-compensation`).expect(200);
    expect(retried.body.compensation).toMatchObject({ attempts: 2, leftovers: [] });
    const { type, result } = await failureOf(handle);
    expect(type).toBe('ReconnectionDeadlineExceeded');
    expect(result).toMatchObject({ outcome: 'rolledBack', phase: 'rolledBack' });
    expect((await stack.dps.getIndividualEnrollment(id)).responseBody.iotHubs).toEqual([stack.hosts.test]);
    await recordHistory(handle, 'promotion-v2-compensation-retried');
    // Nothing left to retry on a closed run.
    const closed = await authed(stack.app, 'operator').post(`/v1/promotions/${id}/retry-compensation`).expect(409);
    expect(closed.body).toMatchObject({ type: '/problems/not-running', executionStatus: 'failed' });
  });

  it('refuses a compensation retry while nothing failed', async () => {
    const { enrolled, device } = await onlineInTest('symmetricKey');
    const id = enrolled.registrationId;
    await device.stop();
    const handle = await start({ registrationId: id, deadline: '1h', pollInterval: '1h' });
    await phaseIs(handle, 'awaitingReconnection');
    const res = await authed(stack.app, 'operator').post(`/v1/promotions/${id}/retry-compensation`).expect(409);
    expect(res.body).toMatchObject({ type: '/problems/nothing-to-retry', status: 409 });
    await handle.cancel();
  });
});

describe('named failures and statuses', () => {
  it('reports a refusal before any change by its named type, with outcome failed and a terminal phase', async () => {
    const id = uniqueId('nobody');
    const handle = await start({ registrationId: id });
    const { type, result } = await failureOf(handle);
    expect(type).toBe('EnrollmentNotFound');
    expect(result).toMatchObject({ outcome: 'failed', phase: 'failed' });
    const detail = await authed(stack.app, 'operator').get(`/v1/promotions/${id}`).expect(200);
    expect(detail.body).toMatchObject({
      status: 'failed',
      phase: 'failed',
      outcome: 'failed',
      failure: { type: 'EnrollmentNotFound' },
    });
  });
});

describe('devices that cannot move through re-registration', () => {
  it.each([
    ['an IoT Edge device', { capabilities: { iotEdge: true } }],
    ['a child device of a gateway', { deviceScope: 'ms-azure-iot-edge://gateway-1-637000000000000000' }],
  ])('refuses %s up front with UnsupportedDeviceKind', async (_kind, fields) => {
    const { enrolled } = await onlineInTest('symmetricKey');
    const id = enrolled.registrationId;
    const current = (await stack.registries.test.get(id)).responseBody;
    await stack.registries.test.update({ ...current, ...fields } as never);
    const handle = await start({ registrationId: id });
    expect((await failureOf(handle)).type).toBe('UnsupportedDeviceKind');
    expect((await stack.dps.getIndividualEnrollment(id)).responseBody.iotHubs).toEqual([stack.hosts.test]);
    expect(await deviceIn('test', id)).toMatchObject({ status: 'enabled', ...fields });
  });

  it('rolls back a deleted identity with its status reason and keys, and the device connects with them', async () => {
    const { enrolled, device } = await onlineInTest('symmetricKey');
    const id = enrolled.registrationId;
    const current = (await stack.registries.test.get(id)).responseBody;
    await stack.registries.test.update({ ...current, statusReason: 'burn-in rack 3' } as never);
    await device.stop();
    const handle = await start({
      registrationId: id,
      reprovisionPolicy: 'reset',
      sourceRemoval: 'delete',
      deadline: '2s',
      pollInterval: '1s',
    });
    expect((await failureOf(handle)).result?.outcome).toBe('rolledBack');
    const restored = await deviceIn('test', id);
    expect(restored).toMatchObject({
      status: 'enabled',
      statusReason: 'burn-in rack 3',
      authentication: { type: 'sas' },
    });
    const again = simulate(stack, enrolled);
    devices.push(again);
    await connectedTo(again, stack.hosts.test);
  });
});

describe('X.509 group members', () => {
  it.each([
    [
      'signed by another CA',
      (id: string) =>
        mintCertificate({ commonName: id, issuer: mintCertificate({ commonName: 'other-ca', isCa: true }) }).chainPem,
    ],
    ['for another registration id', (_id: string, groupChain: string) => groupChain],
  ])('refuses a device certificate %s, before changing anything', async (_what, certificateFor) => {
    const { enrolled } = await onlineInTest('x509CAGroup');
    const other = await enrollDevice(stack, 'x509CAGroup');
    const id = enrolled.registrationId;
    const handle = await start({
      registrationId: id,
      enrollmentGroupId: enrolled.enrollmentGroupId,
      deviceCertificate: certificateFor(id, other.chainPem!),
    });
    expect((await failureOf(handle)).type).toBe('DeviceCertificateMismatch');
    await expect(stack.dps.getIndividualEnrollment(id)).rejects.toThrow();
  });

  it('on rollback leaves alone an individual enrollment someone changed after the promotion created it', async () => {
    const { enrolled, device } = await onlineInTest('symmetricKeyGroup');
    const id = enrolled.registrationId;
    await device.stop();
    const handle = await start({ registrationId: id, deadline: '4s', pollInterval: '1s' });
    await phaseIs(handle, 'awaitingReconnection');
    // An operator takes the enrollment the promotion created over (new initial twin, same routing).
    const created = (await stack.dps.getIndividualEnrollment(id)).responseBody;
    const attestation = (await stack.dps.getIndividualEnrollmentAttestationMechanism(id)).responseBody;
    await stack.dps.createOrUpdateIndividualEnrollment({
      ...created,
      attestation,
      initialTwin: { tags: { claimedBy: 'operator' }, properties: { desired: {} } },
    } as unknown as IndividualEnrollment);
    const waiting = await waitFor('compensationFailed', async () => {
      const status = await statusOf(handle);
      return status.phase === 'compensationFailed' ? status : undefined;
    });
    expect(waiting.compensation?.leftovers).toEqual([
      expect.objectContaining({
        step: 'enrollment',
        error: expect.objectContaining({ type: 'EnrollmentChangedConcurrently' }),
      }),
    ]);
    const kept = (await stack.dps.getIndividualEnrollment(id)).responseBody;
    expect(kept.initialTwin).toMatchObject({ tags: { claimedBy: 'operator' } });
    await handle.terminate('test done');
  });
});
