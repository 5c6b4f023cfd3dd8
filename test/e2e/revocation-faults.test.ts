/**
 * A group revocation through Azure's bad moments: bursts of 429 and 5xx from DPS and both hubs, answers lost after
 * writes were applied, and its worker process killed (SIGKILL) twice while identities are being disabled. Every
 * device ends revoked, and the emulator counts each identity disabled exactly once and the group disabled once.
 */
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import type { EnrollmentGroup } from 'azure-iot-provisioning-service/dist/interfaces';
import type { RevocationResult } from '../../common/revocation';
import { connectedTo, simulate, startStack, uniqueId, type Stack } from '../helpers/stack';
import { kill, startWorkerProcess } from '../helpers/worker-process';
import { authed } from '../helpers/credentials';

jest.setTimeout(300_000);

let stack: Stack;
let worker: ChildProcess | undefined;

beforeAll(async () => {
  stack = await startStack();
  await stack.stopWorker(); // this file's workers are separate processes
});
afterAll(async () => {
  if (worker) await kill(worker);
  await stack?.stop();
});

async function until(what: string, check: () => boolean, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

it('revokes every device of a group exactly once through throttling, 5xx, lost answers and two worker crashes', async () => {
  const enrollmentGroupId = uniqueId('faulty');
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
  // 150 devices register through the group (two pages of registration records), then go offline.
  const ids = Array.from({ length: 150 }, (_, i) => `${enrollmentGroupId}-d${i}`);
  const fleet = ids.map((registrationId) =>
    simulate(stack, {
      registrationId,
      kind: 'symmetricKeyGroup',
      attestation: { type: 'symmetricKeyGroup', groupKey },
      enrollmentGroupId,
      secret: groupKey,
    }),
  );
  await Promise.all(fleet.map((d) => d.waitFor((e) => e.type === 'connected', 60_000)));
  await Promise.all(fleet.map((d) => d.stop()));
  const hubOf = new Map(fleet.map((d) => [d.state.registrationId, d.state.assignedHub]));
  const before = stack.emulator.counters.snapshot();

  const faults = stack.emulator.faults;
  faults.addRule({ surface: 'dpsService', operation: 'queryRegistrations', status: 503, times: 2 });
  faults.addRule({ surface: 'dpsService', operation: 'enrollmentGroupUpdate', status: 429, times: 2 });
  faults.addRule({ surface: 'hub', hub: 'test', operation: 'getDevice', status: 429, times: 5 });
  faults.addRule({ surface: 'hub', hub: 'production', operation: 'deviceBulk', status: 500, times: 2 });
  // Applied, then the answer is lost: the retry must see the identities disabled and not write them again.
  faults.addRule({ surface: 'hub', hub: 'test', operation: 'deviceBulk', status: 0, phase: 'after' });
  // Held for a moment after being applied, so that a worker can die with a batch in flight.
  faults.addRule({
    surface: 'hub',
    hub: 'production',
    operation: 'deviceBulk',
    latencyMs: 3_000,
    phase: 'after',
    times: 2,
  });

  worker = await startWorkerProcess(stack);
  const res = await authed(stack.app, 'operator')
    .post('/v1/revocations')
    .send({ enrollmentGroupId, reason: 'fault drill' });
  expect(res.status).toBe(202);
  const handle = stack.temporal.client.workflow.getHandle(res.body.workflowId);
  const disabledSoFar = () =>
    stack.emulator.counters
      .diff(before)
      .filter((w) => w.operation === 'deviceUpdate')
      .reduce((n, w) => n + w.count, 0);

  // Killed while the first identities are being disabled, and again in the middle of the second page.
  await until('the first identities to be disabled', () => disabledSoFar() > 0);
  await kill(worker);
  worker = await startWorkerProcess(stack);
  await until('the second page to start', () => disabledSoFar() > 100, 120_000);
  await kill(worker);
  worker = await startWorkerProcess(stack);

  const result: RevocationResult = await handle.result();
  expect(result).toMatchObject({ outcome: 'revoked', progress: { devicesFound: 150, revoked: 150, failed: 0 } });
  expect(faults.rules()).toEqual([]); // every injected fault was hit

  // Exactly once, counted by the emulator: each identity disabled once, in its own hub; the group disabled once.
  const writes = stack.emulator.counters.diff(before);
  for (const id of ids) {
    const hub = hubOf.get(id) === stack.hosts.test ? 'test' : 'production';
    const updates = writes.filter((w) => w.id === id && w.operation === 'deviceUpdate');
    expect({ id, updates: updates.map((w) => [w.hub, w.count]) }).toEqual({ id, updates: [[hub, 1]] });
  }
  expect(writes.filter((w) => w.operation === 'enrollmentGroupUpdate')).toEqual([
    expect.objectContaining({ id: enrollmentGroupId, count: 1 }),
  ]);
  for (const id of ids) {
    const env = hubOf.get(id) === stack.hosts.test ? 'test' : 'production';
    expect((await stack.registries[env].get(id)).responseBody).toMatchObject({ status: 'disabled' });
  }
  // A device of the group tries to register again: DPS refuses it, and it never connects.
  const again = simulate(stack, {
    registrationId: ids[0],
    kind: 'symmetricKeyGroup',
    attestation: { type: 'symmetricKeyGroup', groupKey },
    enrollmentGroupId,
    secret: groupKey,
  });
  try {
    await again.waitFor((e) => e.type === 'provisioningFailed', 30_000);
    await expect(connectedTo(again, hubOf.get(ids[0])!, 2_000)).rejects.toThrow();
  } finally {
    await again.stop();
  }
});
