/**
 * A worker process killed (SIGKILL) in the middle of a promotion, while its re-point call to DPS is in flight:
 * another worker takes over, the activity is retried, and the promotion completes with the enrollment changed once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import request from 'supertest';
import { promotionStatusQuery, promotionWorkflowId } from '../../common/messages';
import type { PromotionResult } from '../../common/promotion';
import { entryArgs } from '../helpers/build';
import { harnessAddress } from '../helpers/temporal';
import { connectedTo, enrollDevice, simulate, startStack, type Stack } from '../helpers/stack';

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

async function startWorkerProcess(): Promise<ChildProcess> {
  const dir = await mkdtemp(path.join(tmpdir(), 'iot-lifecycle-'));
  const caFile = path.join(dir, 'ca.pem');
  await writeFile(caFile, stack.emulator.caPem);
  const proc = spawn(process.execPath, entryArgs('worker'), {
    env: {
      PATH: process.env.PATH,
      TEMPORAL_ADDRESS: harnessAddress(),
      TASK_QUEUE: stack.taskQueue,
      AZURE_DPS_CONNECTION_STRING: stack.emulator.connectionStrings.dps,
      AZURE_HUB_CONNECTION_STRINGS: JSON.stringify(stack.emulator.connectionStrings.hubs),
      AZURE_ENDPOINT_ADDRESS: stack.emulator.address,
      AZURE_CA_FILE: caFile,
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return proc;
}

it('completes a promotion after its worker process is killed during the enrollment update', async () => {
  const enrolled = await enrollDevice(stack, 'symmetricKey');
  const device = simulate(stack, enrolled);
  try {
    await connectedTo(device, stack.hosts.test);
    const id = enrolled.registrationId;
    // Slow DPS down so the re-point call is surely in flight when the worker dies.
    stack.emulator.state.limits.faults.latencyMs = 1_500;
    child = await startWorkerProcess();
    await request(stack.app).post('/v1/promotions').send({ registrationId: id, pollInterval: '1s' }).expect(202);
    const handle = stack.temporal.client.workflow.getHandle(promotionWorkflowId(id));
    await waitUntil(async () => (await handle.query(promotionStatusQuery)).phase === 'repointing', 60_000);
    child.kill('SIGKILL');
    await new Promise((resolve) => child!.once('exit', resolve));
    stack.emulator.state.limits.faults.latencyMs = 0;

    child = await startWorkerProcess();
    const result: PromotionResult = await handle.result();

    expect(result.outcome).toBe('promoted');
    await connectedTo(device, stack.hosts.production);
    const history = await handle.fetchHistory();
    const repoints = history.events!.filter(
      (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'dpsRepointEnrollment',
    );
    expect(repoints).toHaveLength(1);
    // The attempt on the killed worker timed out; a later attempt, on the new worker, completed.
    const repointStarted = history.events!.find(
      (e) => e.activityTaskStartedEventAttributes?.scheduledEventId?.toString() === repoints[0].eventId?.toString(),
    );
    expect(repointStarted?.activityTaskStartedEventAttributes?.attempt).toBeGreaterThan(1);
    // The retried attempt found the enrollment already pointing at production and changed nothing more.
    const enrollment = (await stack.dps.getIndividualEnrollment(id)).responseBody;
    expect(enrollment.iotHubs).toEqual([stack.hosts.production]);
  } finally {
    stack.emulator.state.limits.faults.latencyMs = 0;
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
