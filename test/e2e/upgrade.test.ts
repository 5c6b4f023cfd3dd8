/**
 * Shipping a workflow change while promotions wait: a promotion started on the first release's worker waits for its
 * device; the worker is replaced by the current build; the device comes back, and the waiting run finishes on the
 * new worker (on the code it started with, which the new build still carries behind `patched('promotion-v2')`).
 */
import { bundleWorkflowCode } from '@temporalio/worker';
import { promotionWorkflowId } from '../../common/messages';
import type { PromotionResult } from '../../common/promotion';
import type { SimulatedDevice } from '../../emulator/simulator/device';
import { connectedTo, enrollDevice, simulate, startStack, type Stack } from '../helpers/stack';
import { authed } from '../helpers/credentials';

jest.setTimeout(120_000);

let stack: Stack;
const devices: SimulatedDevice[] = [];

beforeAll(async () => {
  const firstRelease = await bundleWorkflowCode({
    workflowsPath: require.resolve('../fixtures/release-v1'),
    logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error: console.error },
  });
  stack = await startStack({ workflowBundle: firstRelease });
});
afterAll(async () => {
  await Promise.all(devices.map((d) => d.stop()));
  await stack?.stop();
});

it('finishes a promotion started on the previous release on the new worker, and starts new ones on the new code', async () => {
  const enrolled = await enrollDevice(stack, 'symmetricKey');
  const device = simulate(stack, enrolled);
  devices.push(device);
  await connectedTo(device, stack.hosts.test);
  await device.stop();
  const id = enrolled.registrationId;
  await authed(stack.app, 'operator')
    .post('/v1/promotions')
    .send({ registrationId: id, pollInterval: '1s', deadline: '5m' })
    .expect(202);
  const handle = stack.temporal.client.workflow.getHandle(promotionWorkflowId(id));
  for (let phase = ''; phase !== 'awaitingReconnection'; await new Promise((r) => setTimeout(r, 200))) {
    phase = ((await handle.query('status')) as { phase: string }).phase;
  }

  // Deploy: the old worker stops, the new build takes over the task queue while the promotion waits.
  await stack.stopWorker();
  await stack.startWorker({ identity: 'new-release-worker' });
  const again = simulate(stack, enrolled);
  devices.push(again);
  const result: PromotionResult = await handle.result();

  expect(result.outcome).toBe('promoted');
  await connectedTo(again, stack.hosts.production);
  const history = await handle.fetchHistory();
  const events = history.events ?? [];
  // It ran the code it started with: no v2 marker in its history.
  expect(events.some((e) => e.markerRecordedEventAttributes)).toBe(false);
  // Its last workflow task was completed by the new worker.
  const lastCompleted = events.filter((e) => e.workflowTaskCompletedEventAttributes).pop();
  expect(lastCompleted?.workflowTaskCompletedEventAttributes?.identity).toBe('new-release-worker');

  // A promotion started now runs the new code and says so in its history.
  const next = await enrollDevice(stack, 'symmetricKey');
  const nextDevice = simulate(stack, next);
  devices.push(nextDevice);
  await connectedTo(nextDevice, stack.hosts.test);
  await authed(stack.app, 'operator')
    .post('/v1/promotions')
    .send({ registrationId: next.registrationId, pollInterval: '1s' })
    .expect(202);
  const nextHandle = stack.temporal.client.workflow.getHandle(promotionWorkflowId(next.registrationId));
  expect(((await nextHandle.result()) as PromotionResult).outcome).toBe('promoted');
  const nextEvents = (await nextHandle.fetchHistory()).events ?? [];
  expect(nextEvents.some((e) => e.markerRecordedEventAttributes?.markerName === 'core_patch')).toBe(true);
});
