/**
 * A worker process killed (SIGKILL) in the middle of a promotion, while its re-point write is in flight (DPS has
 * applied it; its answer is held back and never read): another worker takes over after the
 * heartbeat timeout, the activity is retried, and the promotion completes with the enrollment written exactly once
 * (counted by the emulator).
 */
import type { ChildProcess } from 'node:child_process';
import { temporal } from '@temporalio/proto';
import { promotionWorkflowId } from '../../common/messages';
import type { PromotionResult } from '../../common/promotion';
import { startWorkerProcess } from '../helpers/worker-process';
import { connectedTo, enrollDevice, simulate, startStack, type Stack } from '../helpers/stack';
import { authed } from '../helpers/credentials';

jest.setTimeout(180_000);

let stack: Stack;
let child: ChildProcess | undefined;

beforeAll(async () => {
  stack = await startStack();
  await stack.stopWorker(); // this file's workers are separate processes
});
afterAll(async () => {
  child?.kill('SIGKILL');
  await stack?.stop();
});

it('completes a promotion after its worker process is killed during the enrollment write, writing it once', async () => {
  const enrolled = await enrollDevice(stack, 'symmetricKey');
  const device = simulate(stack, enrolled);
  try {
    await connectedTo(device, stack.hosts.test);
    const id = enrolled.registrationId;
    const before = stack.emulator.counters.snapshot();
    // DPS applies this device's enrollment update and holds its answer back for 5 s: the worker dies meanwhile.
    const held = stack.emulator.faults.addRule({
      surface: 'dpsService',
      operation: 'enrollmentUpdate',
      phase: 'after',
      latencyMs: 5_000,
    });
    child = await startWorkerProcess(stack);
    await authed(stack.app, 'operator')
      .post('/v1/promotions')
      .send({ registrationId: id, pollInterval: '1s' })
      .expect(202);
    const handle = stack.temporal.client.workflow.getHandle(promotionWorkflowId(id));
    await waitUntil(async () => !stack.emulator.faults.rules().some((r) => r.id === held.id), 60_000);
    expect(stack.emulator.counters.get({ surface: 'dps', operation: 'enrollmentUpdate', id })).toBe(1);
    child.kill('SIGKILL');
    await new Promise((resolve) => child!.once('exit', resolve));

    child = await startWorkerProcess(stack);
    const result: PromotionResult = await handle.result();

    expect(result.outcome).toBe('promoted');
    await connectedTo(device, stack.hosts.production);
    // Exactly once, counted where it matters: DPS saw one update of the enrollment, the test hub one disable.
    const writes = stack.emulator.counters.diff(before, { id });
    expect(writes.filter((w) => w.operation === 'enrollmentUpdate')).toEqual([expect.objectContaining({ count: 1 })]);
    expect(writes.filter((w) => w.hub === 'test' && w.operation === 'deviceUpdate')).toEqual([
      expect.objectContaining({ count: 1 }),
    ]);
    // The attempt on the killed worker timed out on its heartbeat (seconds), not on start-to-close (30 s).
    const history = await handle.fetchHistory();
    const repoint = history.events!.find(
      (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'dpsRepointEnrollment',
    );
    const started = history.events!.find(
      (e) => e.activityTaskStartedEventAttributes?.scheduledEventId?.toString() === repoint?.eventId?.toString(),
    )?.activityTaskStartedEventAttributes;
    expect(started?.attempt).toBeGreaterThan(1);
    expect(started?.lastFailure?.timeoutFailureInfo?.timeoutType).toBe(
      temporal.api.enums.v1.TimeoutType.TIMEOUT_TYPE_HEARTBEAT,
    );
    expect((await stack.dps.getIndividualEnrollment(id)).responseBody.iotHubs).toEqual([stack.hosts.production]);
  } finally {
    await device.stop();
  }
});

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('condition not met in time');
}
