/**
 * A fleet operation whose worker process is killed (SIGKILL) twice while devices are being revoked: each time a
 * new worker process takes over, and in the end every device is revoked once — none lost, none repeated — as the
 * operation's counts, its device list and the emulator's write counters all say.
 */
import type { ChildProcess } from 'node:child_process';
import type { FleetResult } from '../../common/fleet';
import { fleetKit, until } from '../helpers/fleet';
import { startStack, type Stack } from '../helpers/stack';
import { kill, startWorkerProcess } from '../helpers/worker-process';

jest.setTimeout(240_000);

let stack: Stack;
let child: ChildProcess | undefined;
const kit = fleetKit(() => stack);
const { fleetOf, startFleet, devicesOf, statusOf } = kit;

beforeAll(async () => {
  stack = await startStack();
  await stack.stopWorker(); // this file's workers are separate processes
});
afterAll(async () => {
  if (child) await kill(child);
  await kit.stopDevices();
  await stack?.stop();
});

it('revokes every device exactly once though its worker process is killed twice mid-operation', async () => {
  // 1 a second; a restart's outage is made up by a burst of up to 10 s' worth, so the second kill still finds
  // devices not started.
  const n = 40;
  const { ids } = await fleetOf(n);
  const before = stack.emulator.counters.snapshot();
  child = await startWorkerProcess(stack);
  const { id, handle } = await startFleet({
    operation: 'revoke',
    targets: { registrationIds: ids },
    rollout: { maximumPerMinute: 60 },
  });

  for (const atLeast of [5, 20]) {
    const seen = await until(
      `${atLeast} devices revoked`,
      async () => {
        const s = await statusOf(id);
        return s.counts.succeeded >= atLeast ? s : undefined;
      },
      120_000,
    );
    expect(seen.counts.pending).toBeGreaterThan(0); // killed mid-operation, not after it
    await kill(child);
    child = await startWorkerProcess(stack);
  }

  const result: FleetResult = await handle.result();
  expect(result).toMatchObject({
    outcome: 'completed',
    started: n,
    counts: { succeeded: n, failed: 0, timedOut: 0, cancelled: 0, pending: 0, inProgress: 0 },
  });
  const listed = await devicesOf(id);
  expect(listed.map((d) => d.registrationId).sort()).toEqual([...ids].sort());
  for (const d of listed) expect(d).toMatchObject({ state: 'succeeded', attempts: 1 });

  // Exactly once, counted by the emulator: each device got the same writes as every other, each of them once.
  const writes = ids.map((deviceId) =>
    stack.emulator.counters.diff(before, { id: deviceId }).map(({ id: _id, ...w }) => w),
  );
  // A revocation's writes: DPS made to refuse the device, the test hub's identity disabled.
  expect(writes[0]).toEqual(
    expect.arrayContaining([
      expect.objectContaining({ surface: 'dps', operation: expect.stringMatching(/^enrollment(Create|Update)$/) }),
      expect.objectContaining({ surface: 'hub', hub: 'test', operation: 'deviceUpdate' }),
    ]),
  );
  for (const [i, w] of writes.entries()) {
    expect({ device: ids[i], writes: w }).toEqual({ device: ids[i], writes: writes[0] });
  }
  for (const w of writes[0]) expect(w.count).toBe(1);
  for (const deviceId of ids) {
    expect((await stack.registries.test.get(deviceId)).responseBody).toMatchObject({ status: 'disabled' });
  }
});
