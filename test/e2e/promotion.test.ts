/**
 * Promotion through the real stack: REST API → Temporal dev server → worker → activities → Azure SDKs →
 * emulator (DPS + hubs) → simulated device (real device SDKs) reconnecting on its own.
 */
import { WorkflowFailedError, WorkflowNotFoundError, type WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { promotionWorkflowId } from '../../common/messages';
import { PROMOTION_REPORT_MEMO, type PromotionReport, type PromotionResult } from '../../common/promotion';
import { addFaultRule, resetLimits } from '../../emulator/limits/decide';
import { eventGridFor } from '../../emulator/eventgrid/event-grid';
import type { SimulatedDevice } from '../../emulator/simulator/device';
import { recordHistory } from '../helpers/histories';
import {
  connectedTo,
  enrollDevice,
  simulate,
  startStack,
  uniqueId,
  type EnrolledDevice,
  type Stack,
} from '../helpers/stack';
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

async function startPromotion(body: Record<string, unknown>) {
  const res = await authed(stack.app, 'operator').post('/v1/promotions').send(body);
  expect(res.status).toBe(202);
  expect(res.headers.location).toBe(`/v1/promotions/${body.registrationId}`);
  return stack.temporal.client.workflow.getHandle(promotionWorkflowId(String(body.registrationId)));
}

async function deviceIn(env: 'test' | 'production', deviceId: string) {
  try {
    return (await stack.registries[env].get(deviceId)).responseBody;
  } catch (err) {
    if ((err as Error).name === 'DeviceNotFoundError') return undefined;
    throw err;
  }
}

/**
 * How a promotion that did not promote ended: a Failed run carries its result in the failure's details, a cancelled
 * one in its memo's report.
 */
async function endedWithout(handle: WorkflowHandle) {
  const err = await handle.result().then(
    () => {
      throw new Error(`${handle.workflowId} completed, expected it to fail or be cancelled`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  const cause = (err as WorkflowFailedError).cause;
  const report = (await handle.describe()).memo?.[PROMOTION_REPORT_MEMO] as PromotionReport;
  if (cause instanceof CancelledFailure) return { status: 'cancelled' as const, report };
  expect(cause).toBeInstanceOf(ApplicationFailure);
  const failure = cause as ApplicationFailure;
  return {
    status: 'failed' as const,
    type: failure.type,
    result: failure.details?.[0] as PromotionResult | undefined,
    report,
  };
}

async function historyText(workflowId: string): Promise<string> {
  const history = await stack.temporal.client.workflow.getHandle(workflowId).fetchHistory();
  return JSON.stringify(history);
}

function expectNoSecrets(text: string, enrolled: EnrolledDevice) {
  expect(text).not.toContain(enrolled.secret);
  for (const cs of [stack.emulator.connectionStrings.dps, ...Object.values(stack.emulator.connectionStrings.hubs)]) {
    const key = /SharedAccessKey=([^;]+)/.exec(cs)![1];
    expect(text).not.toContain(key);
  }
  expect(text).not.toMatch(/SharedAccessKey=|PRIVATE KEY/);
}

describe('test-to-production promotion', () => {
  it('re-registers a symmetric-key device rejected by the test hub and completes on production (polling path)', async () => {
    const { enrolled, device } = await onlineInTest('symmetricKey');
    const id = enrolled.registrationId;
    const handle = await startPromotion({ registrationId: id, pollInterval: '1s' });
    const result: PromotionResult = await handle.result();

    expect(result.outcome).toBe('promoted');
    expect(result.connectedVia).toBe('polling');
    expect(result.registration).toEqual({
      assignedHub: stack.hosts.production,
      status: 'assigned',
      substatus: 'deviceDataMigrated',
    });
    // The device followed DPS to production by itself and is connected there.
    const connected = await connectedTo(device, stack.hosts.production);
    expect(device.state.assignedHub).toBe(stack.hosts.production);
    const prod = await deviceIn('production', id);
    expect(prod).toMatchObject({ status: 'enabled', connectionState: 'Connected', authentication: { type: 'sas' } });
    expect(await deviceIn('test', id)).toBeUndefined();
    const enrollment = (await stack.dps.getIndividualEnrollment(id)).responseBody;
    expect(enrollment.iotHubs).toEqual([stack.hosts.production]);
    // Migrated twin: the tag set in test came along.
    const twin = (await stack.registries.production.getTwin(id)).responseBody;
    expect(twin.tags).toMatchObject({ stage: 'test' });
    // It completed only after the device connected to production.
    const description = await handle.describe();
    expect(description.closeTime!.getTime()).toBeGreaterThanOrEqual(new Date(connected.time).getTime());
    expectNoSecrets(await historyText(handle.workflowId), enrolled);
    await recordHistory(handle, 'promotion-v2-polling');
  });

  it('completes an X.509 device promotion on the Event Grid signal alone, resetting its twin', async () => {
    const grid = eventGridFor(stack.emulator.state, { initialRetryDelayMs: 100, maxRetryDelayMs: 1_000 });
    const name = uniqueId('promotions').slice(0, 60);
    await grid.subscribe({
      hub: 'production',
      name,
      endpointUrl: `${stack.apiUrl}/v1/eventgrid?code=${stack.eventGridSecret}`,
      includedEventTypes: ['Microsoft.Devices.DeviceConnected'],
    });
    try {
      const { enrolled, device } = await onlineInTest('x509');
      const id = enrolled.registrationId;
      // Polling every hour: only the Event Grid signal can finish this within the test's time.
      const handle = await startPromotion({ registrationId: id, reprovisionPolicy: 'reset', pollInterval: '1h' });
      const result: PromotionResult = await handle.result();

      expect(result.outcome).toBe('promoted');
      expect(result.connectedVia).toBe('eventGrid');
      expect(result.lastEvent).toMatchObject({ hubHostName: stack.hosts.production, deviceId: id });
      expect(result.registration?.substatus).toBe('deviceDataReset');
      await connectedTo(device, stack.hosts.production);
      expect(await deviceIn('production', id)).toMatchObject({ authentication: { type: 'selfSigned' } });
      expect(await deviceIn('test', id)).toBeUndefined();
      expectNoSecrets(await historyText(handle.workflowId), enrolled);
      await recordHistory(handle, 'promotion-v2-event-grid');
    } finally {
      grid.unsubscribe('production', name);
    }
  });

  it('moves one X.509 CA group member on its own (disabled in test first) and leaves the group alone', async () => {
    const { enrolled, device } = await onlineInTest('x509CAGroup');
    const id = enrolled.registrationId;
    const handle = await startPromotion({
      registrationId: id,
      enrollmentGroupId: enrolled.enrollmentGroupId,
      sourceRemoval: 'disable',
      deviceCertificate: enrolled.chainPem,
      pollInterval: '1s',
    });
    const result: PromotionResult = await handle.result();

    expect(result).toMatchObject({ outcome: 'promoted', enrollmentKind: 'groupMember', attestation: 'x509CA' });
    await connectedTo(device, stack.hosts.production);
    // X.509 CA devices land in the hub as thumbprint (selfSigned) devices.
    expect(await deviceIn('production', id)).toMatchObject({
      status: 'enabled',
      authentication: { type: 'selfSigned' },
    });
    // Disabled first; then DPS removed the registration from the initial hub when it moved the device.
    expect(result.steps.find((s) => s.step === 'removedFromSource')?.detail).toMatch(/^disabled/);
    expect(await deviceIn('test', id)).toBeUndefined();
    const individual = (await stack.dps.getIndividualEnrollment(id)).responseBody;
    expect(individual.iotHubs).toEqual([stack.hosts.production]);
    const group = (await stack.dps.getEnrollmentGroup(enrolled.enrollmentGroupId!)).responseBody;
    expect(group.iotHubs).toEqual([stack.hosts.test]);
    await recordHistory(handle, 'promotion-v2-group-member');
  });

  it('moves one symmetric-key group member with its derived key, leaving the group where it was', async () => {
    const { enrolled, device } = await onlineInTest('symmetricKeyGroup');
    const id = enrolled.registrationId;
    // No enrollmentGroupId given: the workflow finds the device's group by its registration.
    const handle = await startPromotion({ registrationId: id, pollInterval: '1s' });
    const result: PromotionResult = await handle.result();

    expect(result).toMatchObject({ outcome: 'promoted', enrollmentKind: 'groupMember', attestation: 'symmetricKey' });
    // The device still authenticates with the key derived from the group key: it connects to production.
    await connectedTo(device, stack.hosts.production);
    expect(await deviceIn('production', id)).toMatchObject({ status: 'enabled', authentication: { type: 'sas' } });
    const group = (await stack.dps.getEnrollmentGroup(enrolled.enrollmentGroupId!)).responseBody;
    expect(group.iotHubs).toEqual([stack.hosts.test]);
    expect((await handle.describe()).searchAttributes).toMatchObject({
      IotDeviceId: [id],
      IotRegistrationId: [id],
      IotSourceHub: [stack.hosts.test],
      IotTargetHub: [stack.hosts.production],
      IotOperation: ['promote'],
      IotPhase: ['completed'],
    });
    expectNoSecrets(await historyText(handle.workflowId), enrolled);
  });

  it('rolls back a device that never comes back: test is restored and the device connects there again', async () => {
    const { enrolled, device } = await onlineInTest('symmetricKeyGroup');
    const id = enrolled.registrationId;
    await stack.registries.test.updateTwin(id, { tags: { owner: 'line-3' } }, '*');
    await device.stop(); // the device is offline for the whole promotion
    const handle = await startPromotion({
      registrationId: id,
      enrollmentGroupId: enrolled.enrollmentGroupId,
      deadline: '3s',
      pollInterval: '1s',
    });
    const ended = await endedWithout(handle);

    expect(ended).toMatchObject({ status: 'failed', type: 'ReconnectionDeadlineExceeded' });
    const result = ended.result!;
    expect(result).toMatchObject({ outcome: 'rolledBack', reason: 'deadline', phase: 'rolledBack' });
    expect(ended.report).toMatchObject({ outcome: 'rolledBack', reason: 'deadline', phase: 'rolledBack' });
    expect(result.steps.map((s) => s.step)).toEqual(
      expect.arrayContaining(['deadline', 'undo:sourceDevice', 'undo:enrollment', 'undo:targetDevice']),
    );
    await expect(stack.dps.getIndividualEnrollment(id)).rejects.toThrow();
    const restored = await deviceIn('test', id);
    expect(restored).toMatchObject({ status: 'enabled', authentication: { type: 'sas' } });
    expect((await stack.registries.test.getTwin(id)).responseBody.tags).toMatchObject({ owner: 'line-3' });
    expect(await deviceIn('production', id)).toBeUndefined();
    // The device comes back with its own (unchanged) credentials and lands in test again.
    const again = simulate(stack, enrolled);
    devices.push(again);
    await connectedTo(again, stack.hosts.test);
    expectNoSecrets(await historyText(handle.workflowId), enrolled);
    await recordHistory(handle, 'promotion-v2-rollback');
  });

  it('parks a device that never comes back when asked to, and flags it', async () => {
    const { enrolled, device } = await onlineInTest('symmetricKey');
    const id = enrolled.registrationId;
    await device.stop();
    const handle = await startPromotion({ registrationId: id, deadline: '2s', pollInterval: '1s', onTimeout: 'park' });
    const ended = await endedWithout(handle);

    expect(ended).toMatchObject({ status: 'failed', type: 'ReconnectionDeadlineExceeded' });
    expect(ended.result).toMatchObject({ outcome: 'parked', reason: 'deadline', phase: 'parked' });
    expect(ended.result!.flagged).toMatch(/parked/);
    expect((await stack.dps.getIndividualEnrollment(id)).responseBody.iotHubs).toEqual([stack.hosts.production]);
    // Left as it was when the promotion stopped: disabled in test (DPS migrates its twin when the device comes).
    expect(await deviceIn('test', id)).toMatchObject({ status: 'disabled' });
    const description = await handle.describe();
    expect(description.searchAttributes.IotPhase).toEqual(['parked']);
  });

  it('compensates when cancelled while waiting for the device', async () => {
    const { enrolled, device } = await onlineInTest('symmetricKey');
    const id = enrolled.registrationId;
    await device.stop();
    const handle = await startPromotion({ registrationId: id, deadline: '1h', pollInterval: '1s' });
    await waitForPhase(id, 'awaitingReconnection');
    await authed(stack.app, 'operator').post(`/v1/promotions/${id}/cancel`).expect(202);
    const ended = await endedWithout(handle);

    expect(ended).toMatchObject({ status: 'cancelled', report: { outcome: 'rolledBack', reason: 'cancelled' } });
    await recordHistory(handle, 'promotion-v2-cancelled');
    // The API lists it as cancelled and says what it left behind.
    const listed = await authed(stack.app, 'operator')
      .get(`/v1/promotions?status=cancelled&registrationId=${id}`)
      .expect(200);
    expect(listed.body.promotions.map((p: { workflowId: string }) => p.workflowId)).toEqual([handle.workflowId]);
    const detail = await authed(stack.app, 'operator').get(`/v1/promotions/${id}`).expect(200);
    expect(detail.body).toMatchObject({ status: 'cancelled', outcome: 'rolledBack', phase: 'rolledBack' });
    expect((await stack.dps.getIndividualEnrollment(id)).responseBody.iotHubs).toEqual([stack.hosts.test]);
    expect(await deviceIn('test', id)).toMatchObject({ status: 'enabled' });
    const again = simulate(stack, enrolled);
    devices.push(again);
    await connectedTo(again, stack.hosts.test);
  });

  it('answers 409 with the running promotion for a second request, and 400 for bad input without starting anything', async () => {
    const { enrolled, device } = await onlineInTest('symmetricKey');
    const id = enrolled.registrationId;
    await device.stop();
    const handle = await startPromotion({ registrationId: id, deadline: '1h', pollInterval: '1h' });
    const conflict = await authed(stack.app, 'operator').post('/v1/promotions').send({ registrationId: id });
    expect(conflict.status).toBe(409);
    expect(conflict.body.workflowId).toBe(handle.workflowId);
    await handle.cancel();
    await handle.result().catch(() => undefined); // cancelled before or after its first change: either is fine here

    const other = uniqueId('bad');
    const bad = await authed(stack.app, 'operator')
      .post('/v1/promotions')
      .send({ registrationId: other, reprovisionPolicy: 'teleport' });
    expect(bad.status).toBe(400);
    expect(bad.body.issues[0].path).toEqual(['body', 'reprovisionPolicy']);
    await expect(
      stack.temporal.client.workflow.getHandle(promotionWorkflowId(other)).describe(),
    ).rejects.toBeInstanceOf(WorkflowNotFoundError);
  });

  it('rejects a bad request started without the API with a named non-retryable failure', async () => {
    const handle = await stack.temporal.client.workflow.start('promoteDevice', {
      taskQueue: stack.taskQueue,
      workflowId: promotionWorkflowId(uniqueId('direct')),
      args: [{ registrationId: 'dev-1', deadline: '90d' }],
    });
    await expect(handle.result()).rejects.toMatchObject({
      cause: { type: 'InvalidPromotionRequest', nonRetryable: true },
    });
  });

  it('refuses X.509 CA over MQTT WebSockets with a named error before changing anything', async () => {
    const { enrolled } = await onlineInTest('x509CAGroup');
    const id = enrolled.registrationId;
    const handle = await startPromotion({
      registrationId: id,
      enrollmentGroupId: enrolled.enrollmentGroupId,
      protocol: 'mqtt-ws',
      deviceCertificate: enrolled.chainPem,
    });
    await expect(handle.result()).rejects.toMatchObject({ cause: { type: 'UnsupportedAttestationProtocol' } });
    await expect(stack.dps.getIndividualEnrollment(id)).rejects.toThrow();
    expect(await deviceIn('test', id)).toMatchObject({ status: 'enabled', connectionState: 'Connected' });
  });

  it('still promotes exactly once through bursts of 429 and 5xx from DPS and the hubs, and lost answers', async () => {
    const { enrolled, device } = await onlineInTest('symmetricKey');
    const id = enrolled.registrationId;
    const limits = stack.emulator.state.limits;
    const before = stack.emulator.counters.snapshot();
    addFaultRule(limits, { surface: 'dpsService', operation: 'enrollmentUpdate', status: 429, times: 2 });
    // Applied, then answered 500: the retry must see the change and not make it again.
    addFaultRule(limits, { surface: 'dpsService', operation: 'enrollmentUpdate', status: 500, phase: 'after' });
    addFaultRule(limits, { surface: 'dpsService', operation: 'getEnrollment', status: 503, times: 2 });
    addFaultRule(limits, { surface: 'hub', hub: 'test', operation: 'bulkDevices', status: 500, times: 2 });
    addFaultRule(limits, { surface: 'hub', hub: 'test', operation: 'deviceBulk', status: 0, phase: 'after' });
    addFaultRule(limits, { surface: 'hub', hub: 'production', operation: 'getDevice', status: 429, times: 3 });
    const handle = await startPromotion({ registrationId: id, pollInterval: '1s' });
    const result: PromotionResult = await handle.result();

    expect(result.outcome).toBe('promoted');
    await connectedTo(device, stack.hosts.production);
    expect(limits.faults.rules).toEqual([]); // every injected fault was hit
    // Counted by the emulator: DPS re-pointed the enrollment once, the test hub disabled the device once.
    const writes = stack.emulator.counters.diff(before, { id });
    const count = (surface: string, operation: string, hub?: string) =>
      writes
        .filter((w) => w.surface === surface && w.operation === operation && w.hub === hub)
        .reduce((n, w) => n + w.count, 0);
    expect(count('dps', 'enrollmentUpdate')).toBe(1);
    expect(count('hub', 'deviceUpdate', 'test')).toBe(1);
  });

  it('checks connectivity from the worker to DPS and both hubs through the emulator', async () => {
    const res = await authed(stack.app, 'operator').post('/v1/diagnostics/connectivity').expect(200);
    expect(res.body.allReachable).toBe(true);
    expect(
      res.body.endpoints.map((e: { kind: string; environment?: string }) => e.environment ?? e.kind).sort(),
    ).toEqual(['dps', 'production', 'test']);
    await recordHistory(stack.temporal.client.workflow.getHandle(res.body.workflowId), 'connectivity-v1');
  });

  it('survives a worker restart mid-promotion and completes without applying a step twice', async () => {
    const { enrolled, device } = await onlineInTest('symmetricKey');
    const id = enrolled.registrationId;
    await device.stop();
    const handle = await startPromotion({ registrationId: id, pollInterval: '1s', deadline: '5m' });
    await waitForPhase(id, 'awaitingReconnection');
    await stack.stopWorker();
    // While no worker runs, the device comes back and lands in production.
    const again = simulate(stack, enrolled);
    devices.push(again);
    await connectedTo(again, stack.hosts.production);
    await stack.startWorker();
    const result: PromotionResult = await handle.result();

    expect(result.outcome).toBe('promoted');
    const history = await handle.fetchHistory();
    const scheduled = history.events!.flatMap((e) => e.activityTaskScheduledEventAttributes?.activityType?.name ?? []);
    expect(scheduled.filter((n) => n === 'dpsRepointEnrollment')).toHaveLength(1);
    expect(scheduled.filter((n) => n === 'hubDisableDevice')).toHaveLength(1);
  });
});

async function waitForPhase(registrationId: string, phase: string, timeoutMs = 30_000) {
  const handle = stack.temporal.client.workflow.getHandle(promotionWorkflowId(registrationId));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const res = await authed(stack.app, 'operator').get(`/v1/promotions/${registrationId}`);
    if (res.body?.phase === phase) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(
    `${handle.workflowId} did not reach ${phase}; status ${JSON.stringify(await handle.query('status'))}`,
  );
}
