/**
 * Revocation through the real stack: API → Temporal → worker → activities → Azure SDKs → emulator, with simulated
 * devices on the real device SDKs that must be refused at their next MQTT connect and at DPS registration — and
 * come back after a reinstatement.
 */
import { randomBytes } from 'node:crypto';
import type { WorkflowHandle } from '@temporalio/client';
import type { EnrollmentGroup, IndividualEnrollment } from 'azure-iot-provisioning-service/dist/interfaces';
import { promotionWorkflowId, reinstatementWorkflowId, revocationWorkflowId } from '../../common/messages';
import type { PromotionResult } from '../../common/promotion';
import type { ReinstatementResult, RevocationResult } from '../../common/revocation';
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

jest.setTimeout(240_000);

let stack: Stack;
const devices: SimulatedDevice[] = [];

beforeAll(async () => {
  stack = await startStack();
});
afterEach(async () => {
  await Promise.all(devices.splice(0).map((d) => d.stop()));
});
afterAll(async () => {
  await stack?.stop();
});

async function online(kind: Parameters<typeof enrollDevice>[1]) {
  const enrolled = await enrollDevice(stack, kind);
  const device = simulate(stack, enrolled);
  devices.push(device);
  await connectedTo(device, stack.hosts.test);
  return { enrolled, device };
}

async function post(path: string, body: Record<string, unknown>): Promise<WorkflowHandle> {
  const res = await authed(stack.app, path === '/v1/reinstatements' ? 'admin' : 'operator')
    .post(path)
    .send(body);
  expect(res.status).toBe(202);
  return stack.temporal.client.workflow.getHandle(res.body.workflowId);
}

const revoke = (body: Record<string, unknown>) => post('/v1/revocations', body);
const reinstate = (body: Record<string, unknown>) => post('/v1/reinstatements', body);

/** The device, after `since`, was refused by its hub (CONNACK) and then by DPS: it is locked out. */
async function lockedOut(device: SimulatedDevice, since: number) {
  const after = (e: { time: string }) => Date.parse(e.time) >= since;
  await device.waitFor((e) => e.type === 'connectFailed' && e.refused && after(e), 30_000);
  await device.waitFor((e) => e.type === 'provisioningFailed' && after(e), 30_000);
}

async function deviceIn(env: 'test' | 'production', deviceId: string) {
  try {
    return (await stack.registries[env].get(deviceId)).responseBody;
  } catch (err) {
    if ((err as Error).name === 'DeviceNotFoundError') return undefined;
    throw err;
  }
}

function expectNoSecrets(text: string, enrolled: EnrolledDevice) {
  expect(text).not.toContain(enrolled.secret);
  expect(text).not.toMatch(/SharedAccessKey=|PRIVATE KEY|primaryKey|secondaryKey/);
}

describe('revoking one device', () => {
  it.each([
    ['a symmetric-key device (individual enrollment)', 'symmetricKey' as const, {}],
    ['an X.509 device (individual enrollment)', 'x509' as const, {}],
    ['one member of a symmetric-key group', 'symmetricKeyGroup' as const, {}],
    ['one member of an X.509 CA group', 'x509CAGroup' as const, { certificate: true }],
  ])('locks out %s in DPS and the hub, proves it, and a reinstatement brings it back', async (_what, kind, opts) => {
    const { enrolled, device } = await online(kind);
    const id = enrolled.registrationId;
    // A sibling in the same group (of symmetric keys: any registration id has its derived key) is left alone.
    const sibling =
      kind === 'symmetricKeyGroup' ? simulate(stack, { ...enrolled, registrationId: uniqueId('sibling') }) : undefined;
    if (sibling) {
      devices.push(sibling);
      await connectedTo(sibling, stack.hosts.test);
    }
    const since = Date.now();
    const handle = await revoke({
      registrationId: id,
      ...(enrolled.enrollmentGroupId ? { enrollmentGroupId: enrolled.enrollmentGroupId } : {}),
      ...('certificate' in opts ? { deviceCertificate: enrolled.chainPem } : {}),
      reason: 'leaked on a test bench',
    });
    const result: RevocationResult = await handle.result();

    expect(result.outcome).toBe('revoked');
    const [proof] = result.devices;
    expect(proof).toMatchObject({ registrationId: id, revoked: true, problems: [] });
    expect(proof.dps).toMatchObject({
      enrollment: enrolled.enrollmentGroupId ? 'blockedByDisabledIndividual' : 'individualDisabled',
      changed: true,
      registrationRefused: true,
    });
    expect(proof.hubs.map((h) => [h.environment, h.before, h.action, h.after]).sort()).toEqual([
      ['production', 'absent', 'none', 'absent'],
      ['test', 'enabled', 'disabled', 'disabled'],
    ]);
    expect(proof.hubs.find((h) => h.environment === 'test')?.connectionState).toBe('Disconnected');
    // The real device: its connection was closed, its reconnect refused, its DPS registration refused.
    await lockedOut(device, since);
    expect(await deviceIn('test', id)).toMatchObject({ status: 'disabled' });
    if (sibling) expect(sibling.state.connected).toBe(true);
    expectNoSecrets(JSON.stringify(await handle.fetchHistory()), enrolled);
    if (kind === 'symmetricKeyGroup') await recordHistory(handle, 'revocation-v1-group-member');
    if (kind === 'symmetricKey') await recordHistory(handle, 'revocation-v1-device');

    // Reinstated: DPS assigns it again, the identity is enabled, and the device connects by itself.
    const back = await reinstate({
      registrationId: id,
      ...(enrolled.enrollmentGroupId ? { enrollmentGroupId: enrolled.enrollmentGroupId } : {}),
    });
    const reinstated: ReinstatementResult = await back.result();
    expect(reinstated).toMatchObject({ outcome: 'reinstated' });
    expect(reinstated.devices[0]).toMatchObject({
      dps: enrolled.enrollmentGroupId ? 'blockerRemoved' : 'enabled',
      problems: [],
    });
    expect(reinstated.devices[0].hubs).toEqual(
      expect.arrayContaining([{ environment: 'test', identity: 'reenabled' }]),
    );
    await device.waitFor((e) => e.type === 'connected' && Date.parse(e.time) > since, 30_000);
    if (kind === 'symmetricKey') await recordHistory(back, 'reinstatement-v1-device');
  });

  it('deletes the identity everywhere with hubAction delete, and DPS refuses the device', async () => {
    const { enrolled, device } = await online('symmetricKey');
    const since = Date.now();
    const result: RevocationResult = await (
      await revoke({ registrationId: enrolled.registrationId, hubAction: 'delete' })
    ).result();
    expect(result.outcome).toBe('revoked');
    expect(result.devices[0].hubs.find((h) => h.environment === 'test')).toMatchObject({
      action: 'deleted',
      after: 'absent',
    });
    expect(await deviceIn('test', enrolled.registrationId)).toBeUndefined();
    await lockedOut(device, since);
  });

  it('refuses an X.509 group member without its certificate, changing nothing', async () => {
    const { enrolled, device } = await online('x509CAGroup');
    const handle = await revoke({
      registrationId: enrolled.registrationId,
      enrollmentGroupId: enrolled.enrollmentGroupId,
    });
    await expect(handle.result()).rejects.toMatchObject({ cause: { type: 'DeviceCertificateRequired' } });
    await expect(stack.dps.getIndividualEnrollment(enrolled.registrationId)).rejects.toThrow();
    expect(device.state.connected).toBe(true);
  });

  it('answers the same request again while it runs, and reinstates only what it disabled', async () => {
    const { enrolled, device } = await online('symmetricKey');
    const id = enrolled.registrationId;
    await device.stop();
    // An operator had disabled the device in production for another reason: a reinstatement must leave it so.
    await stack.registries.production.create({ deviceId: id, status: 'disabled', statusReason: 'RMA 4711' } as never);
    const body = { registrationId: id, reason: 'idempotency check' };
    const [a, b] = await Promise.all([
      authed(stack.app, 'operator').post('/v1/revocations').send(body),
      authed(stack.app, 'operator').post('/v1/revocations').send(body),
    ]);
    expect([a.status, b.status]).toEqual([202, 202]);
    expect(a.body.workflowId).toBe(b.body.workflowId);
    const handle = stack.temporal.client.workflow.getHandle(revocationWorkflowId({ registrationId: id }));
    const result: RevocationResult = await handle.result();
    expect(result.devices[0].hubs.find((h) => h.environment === 'production')).toMatchObject({
      before: 'disabled',
      action: 'none',
    });
    const reinstated: ReinstatementResult = await (await reinstate({ registrationId: id })).result();
    expect(reinstated.outcome).toBe('partiallyReinstated');
    expect(reinstated.devices[0].problems).toEqual([expect.stringMatching(/for another reason/)]);
    expect(await deviceIn('production', id)).toMatchObject({ status: 'disabled', statusReason: 'RMA 4711' });
    expect(await deviceIn('test', id)).toMatchObject({ status: 'enabled' });
    const detail = await authed(stack.app, 'viewer').get(`/v1/revocations/devices/${id}`).expect(200);
    expect(detail.body).toMatchObject({ status: 'completed', outcome: 'revoked', registrationId: id });
  });
});

describe('revocation wins over promotion', () => {
  it('stops a waiting promotion without rolling the device back into test, then revokes it', async () => {
    const { enrolled, device } = await online('symmetricKey');
    const id = enrolled.registrationId;
    await device.stop();
    await authed(stack.app, 'operator')
      .post('/v1/promotions')
      .send({ registrationId: id, deadline: '1h', pollInterval: '1h' })
      .expect(202);
    const promotion = stack.temporal.client.workflow.getHandle(promotionWorkflowId(id));
    for (let phase = ''; phase !== 'awaitingReconnection'; await new Promise((r) => setTimeout(r, 150))) {
      phase = ((await promotion.query('status')) as { phase: string }).phase;
    }
    const result: RevocationResult = await (await revoke({ registrationId: id, reason: 'stolen in transit' })).result();

    expect(result.outcome).toBe('revoked');
    expect(result.promotionsStopped).toEqual([id]);
    const ended = await promotion.result().catch((e: { cause?: { type?: string; details?: unknown[] } }) => e);
    expect(ended).toMatchObject({ cause: { type: 'StoppedForRevocation' } });
    const promotionResult = (ended as { cause: { details: PromotionResult[] } }).cause.details[0];
    expect(promotionResult).toMatchObject({ outcome: 'stoppedForRevocation', phase: 'stoppedForRevocation' });
    expect(promotionResult.flagged).toMatch(/stolen in transit/);
    await recordHistory(promotion, 'promotion-v2-stopped-for-revocation');
    // Nothing was put back: the test identity is disabled (by the promotion, then kept so by the revocation).
    expect(await deviceIn('test', id)).toMatchObject({ status: 'disabled' });
    expect((await stack.dps.getIndividualEnrollment(id)).responseBody.provisioningStatus).toBe('disabled');
    // And a new promotion of the revoked device is refused by name.
    await authed(stack.app, 'operator').post('/v1/promotions').send({ registrationId: id }).expect(202);
    await expect(stack.temporal.client.workflow.getHandle(promotionWorkflowId(id)).result()).rejects.toMatchObject({
      cause: { type: 'DeviceRevoked' },
    });
  });
});

describe('revoking a whole group', () => {
  it('locks out all 200 devices of a group spread over both hubs, and reinstating the group brings them back', async () => {
    const enrollmentGroupId = uniqueId('fleet');
    const groupKey = randomBytes(64).toString('base64');
    await stack.dps.createOrUpdateEnrollmentGroup({
      enrollmentGroupId,
      attestation: {
        type: 'symmetricKey',
        symmetricKey: { primaryKey: groupKey, secondaryKey: randomBytes(64).toString('base64') },
      },
      iotHubs: [stack.hosts.test, stack.hosts.production],
      allocationPolicy: 'hashed',
      provisioningStatus: 'enabled',
    } as unknown as EnrollmentGroup);
    // An unrelated device, to be left alone.
    const bystander = await online('symmetricKey');
    const fleet = Array.from({ length: 200 }, (_, i) =>
      simulate(stack, {
        registrationId: `${enrollmentGroupId}-d${i}`,
        kind: 'symmetricKeyGroup',
        attestation: { type: 'symmetricKeyGroup', groupKey },
        enrollmentGroupId,
        secret: groupKey,
      }),
    );
    devices.push(...fleet);
    await Promise.all(fleet.map((d) => d.waitFor((e) => e.type === 'connected', 60_000)));
    const hubsUsed = new Set(fleet.map((d) => d.state.assignedHub));
    expect(hubsUsed).toEqual(new Set([stack.hosts.test, stack.hosts.production]));

    const since = Date.now();
    const handle = await revoke({ enrollmentGroupId, reason: 'group key leaked' });
    const result: RevocationResult = await handle.result();

    expect(result).toMatchObject({ outcome: 'revoked', progress: { devicesFound: 200, revoked: 200, failed: 0 } });
    expect(result.devices).toHaveLength(200);
    expect(result.devices.every((d) => d.revoked && d.dps.registrationRefused)).toBe(true);
    expect((await stack.dps.getEnrollmentGroup(enrollmentGroupId)).responseBody.provisioningStatus).toBe('disabled');
    await Promise.all(fleet.map((d) => lockedOut(d, since)));
    expect(bystander.device.state.connected).toBe(true);
    const description = await handle.describe();
    expect([...(description.searchAttributes.IotHubs as string[])].sort()).toEqual(
      [stack.hosts.test, stack.hosts.production].sort(),
    );
    expectNoSecrets(JSON.stringify(await handle.fetchHistory()), bystander.enrolled);
    expect(JSON.stringify(await handle.fetchHistory())).not.toContain(groupKey);
    await recordHistory(handle, 'revocation-v1-group');

    const back: ReinstatementResult = await (await reinstate({ enrollmentGroupId })).result();
    expect(back.devices.filter((d) => d.problems.length)).toEqual([]);
    expect(back.outcome).toBe('reinstated');
    await Promise.all(fleet.map((d) => d.waitFor((e) => e.type === 'connected' && Date.parse(e.time) > since, 60_000)));
    await recordHistory(
      stack.temporal.client.workflow.getHandle(reinstatementWorkflowId({ enrollmentGroupId })),
      'reinstatement-v1-group',
    );
  });

  it('also blocks a member that a promotion moved out of the group onto its own individual enrollment', async () => {
    const { enrolled, device } = await online('symmetricKeyGroup');
    const id = enrolled.registrationId;
    await authed(stack.app, 'operator')
      .post('/v1/promotions')
      .send({ registrationId: id, pollInterval: '1s' })
      .expect(202);
    const promoted: PromotionResult = await stack.temporal.client.workflow.getHandle(promotionWorkflowId(id)).result();
    expect(promoted.outcome).toBe('promoted');
    await connectedTo(device, stack.hosts.production);
    const individual = (await stack.dps.getIndividualEnrollment(id)).responseBody as IndividualEnrollment;
    expect(individual.provisioningStatus).toBe('enabled');

    const since = Date.now();
    const result: RevocationResult = await (await revoke({ enrollmentGroupId: enrolled.enrollmentGroupId })).result();
    expect(result.outcome).toBe('revoked');
    expect(result.devices.find((d) => d.registrationId === id)).toMatchObject({
      dps: { enrollment: 'individualDisabled', registrationRefused: true },
      revoked: true,
    });
    expect((await stack.dps.getIndividualEnrollment(id)).responseBody.provisioningStatus).toBe('disabled');
    await lockedOut(device, since);
  });
});
