/**
 * The promotion's timing and compensation logic in seconds of wall time: a time-skipping Temporal test server, the
 * real workflow code, and activities replaced by a small in-memory Azure (one test file, one environment).
 */
import { Context } from '@temporalio/activity';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import type { Activities } from '../../activities';
import type { EnrollmentView, RegistrationView } from '../../activities/dps';
import { promotionWorkflowId, retryCompensationUpdate } from '../../common/messages';
import type { PromotionRequestInput, PromotionResult, PromotionStatus } from '../../common/promotion';
import { createTimeSkippingEnv } from '../helpers/timeskip';
import { uniqueTaskQueue, workflowBundle } from '../helpers/temporal';

jest.setTimeout(120_000);

const TEST = 'test.azure-devices.net';
const PROD = 'prod.azure-devices.net';

let env: TestWorkflowEnvironment;
beforeAll(async () => {
  env = await createTimeSkippingEnv();
});
afterAll(async () => {
  await env?.teardown();
});

/** A fake Azure that never lets the device land unless told to, and records when the workflow checked. */
function fakeAzure(options: { landed?: () => boolean; undoEnrollment?: () => void } = {}) {
  const checks: number[] = [];
  const calls: string[] = [];
  const enrollment: EnrollmentView = {
    kind: 'individual',
    registrationId: 'dev-1',
    attestation: 'symmetricKey',
    provisioningStatus: 'enabled',
    iotHubs: [TEST],
    etag: 'e1',
    initialTwin: { tags: {}, desired: {} },
  };
  let repointedAt = '';
  const registration = (): RegistrationView =>
    options.landed?.()
      ? {
          registrationId: 'dev-1',
          assignedHub: PROD,
          status: 'assigned',
          lastUpdatedDateTimeUtc: new Date(Date.parse(repointedAt) + 1).toISOString(),
        }
      : {
          registrationId: 'dev-1',
          assignedHub: TEST,
          status: 'assigned',
          lastUpdatedDateTimeUtc: '2020-01-01T00:00:00.000Z',
        };
  const serverNow = () => new Date(Context.current().info.currentAttemptScheduledTimestampMs).toISOString();
  const activities: Partial<Activities> = {
    async resolveEnvironments() {
      return { test: TEST, production: PROD };
    },
    async dpsLookupEnrollment() {
      return enrollment;
    },
    async dpsGetRegistrationState() {
      return registration();
    },
    async hubSnapshotDevice() {
      return {
        device: { deviceId: 'dev-1', status: 'enabled', authType: 'sas', iotEdge: false, etag: 'd1' },
        twin: { tags: { owner: 'line-3' }, desired: {} },
      };
    },
    async hubGetDevice() {
      return null;
    },
    async dpsRepointEnrollment() {
      calls.push('repoint');
      repointedAt = serverNow();
      return { etag: 'e2', createdIndividual: false, repointedAt };
    },
    async hubDisableDevice() {
      calls.push('disable');
      return { result: 'disabled' as const };
    },
    async hubDeleteDevice() {
      return { result: 'alreadyGone' as const };
    },
    async hubCheckConnection() {
      checks.push(Context.current().info.currentAttemptScheduledTimestampMs);
      return options.landed?.()
        ? { present: true, status: 'enabled', connectionState: 'Connected', authType: 'sas' }
        : { present: false };
    },
    async hubReconcileTwin() {
      return { matched: true, applied: false };
    },
    async dpsUndoRepoint() {
      calls.push('undo:enrollment');
      options.undoEnrollment?.();
      return { restored: 'routing' as const };
    },
    async hubRestoreIdentity() {
      calls.push('undo:sourceDevice');
      return { identity: 'restored' as const, twin: 'unchanged' as const };
    },
    async hubRemoveDevice() {
      calls.push('undo:targetDevice');
      return { result: 'alreadyGone' as const };
    },
  };
  return { activities, checks, calls };
}

async function run<T>(
  activities: Partial<Activities>,
  request: PromotionRequestInput,
  body: (handle: WorkflowHandle) => Promise<T>,
): Promise<T> {
  const taskQueue = uniqueTaskQueue('timeskip');
  const worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue,
    workflowBundle: await workflowBundle(),
    activities,
  });
  return worker.runUntil(async () => {
    const handle = await env.client.workflow.start('promoteDevice', {
      taskQueue,
      workflowId: promotionWorkflowId(`dev-1-${taskQueue}`),
      args: [request],
    });
    return body(handle);
  });
}

async function failure(handle: WorkflowHandle): Promise<{ type: string; result: PromotionResult }> {
  const err = await handle.result().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  const cause = (err as WorkflowFailedError).cause as ApplicationFailure;
  return { type: cause.type ?? '', result: cause.details?.[0] as PromotionResult };
}

const status = (handle: WorkflowHandle) => handle.query<PromotionStatus>('status');

it('waits the whole 30-day deadline with a bounded number of checks, then rolls back', async () => {
  const azure = fakeAzure();
  await run(azure.activities, { registrationId: 'dev-1', deadline: '30d', pollInterval: '1s' }, async (handle) => {
    const { type, result } = await failure(handle);
    expect(type).toBe('ReconnectionDeadlineExceeded');
    expect(result).toMatchObject({ outcome: 'rolledBack', phase: 'rolledBack', reason: 'deadline' });
    const waited = azure.checks[azure.checks.length - 1] - azure.checks[0];
    expect(waited).toBeGreaterThan(29 * 86_400_000);
    // Back-off to deadline/300 (2.4 h): a few hundred checks for 30 days, far from Temporal's history limits.
    expect(azure.checks.length).toBeGreaterThan(250);
    expect(azure.checks.length).toBeLessThan(350);
    const history = await handle.fetchHistory();
    expect(history.events!.length).toBeLessThan(10_240);
  });
});

it('backs off its polls by 1.5× from the request’s interval up to 5 minutes', async () => {
  const azure = fakeAzure();
  await run(azure.activities, { registrationId: 'dev-1', deadline: '1h', pollInterval: '10s' }, async (handle) => {
    await failure(handle);
    const gaps = azure.checks.slice(1).map((t, i) => Math.round((t - azure.checks[i]) / 1000));
    expect(gaps.slice(0, 4)).toEqual([15, 23, 34, 51]);
    expect(Math.max(...gaps)).toBe(300);
  });
});

it('lands on a poll once the device is there, and completes', async () => {
  let landed = false;
  const azure = fakeAzure({ landed: () => landed });
  await run(azure.activities, { registrationId: 'dev-1', deadline: '2h', pollInterval: '1m' }, async (handle) => {
    await env.sleep('20 minutes');
    landed = true;
    const result = (await handle.result()) as PromotionResult;
    expect(result).toMatchObject({ outcome: 'promoted', connectedVia: 'polling', phase: 'completed' });
  });
});

it('retries a transiently failing undo with back-off for up to 2 hours, and gets it done', async () => {
  let failures = 0;
  const azure = fakeAzure({
    undoEnrollment: () => {
      // DPS answers 503 for an hour and a half of attempts.
      if (failures++ < 40) throw new Error('503 Service Unavailable');
    },
  });
  await run(azure.activities, { registrationId: 'dev-1', deadline: '1m', pollInterval: '1m' }, async (handle) => {
    const { result } = await failure(handle);
    expect(result).toMatchObject({ outcome: 'rolledBack', phase: 'rolledBack' });
    expect(failures).toBe(41);
  });
});

it('attempts every undo when one fails for good, waits for an operator, and completes the rollback on retry', async () => {
  let broken = true;
  const azure = fakeAzure({
    undoEnrollment: () => {
      if (broken) throw ApplicationFailure.create({ type: 'AzureBadRequest', message: 'refused', nonRetryable: true });
    },
  });
  await run(azure.activities, { registrationId: 'dev-1', deadline: '1m', pollInterval: '1m' }, async (handle) => {
    await env.sleep('5 minutes');
    const waiting = await status(handle);
    expect(waiting.phase).toBe('compensationFailed');
    expect(azure.calls).toEqual(['repoint', 'disable', 'undo:sourceDevice', 'undo:enrollment', 'undo:targetDevice']);
    expect(waiting.compensation?.leftovers).toEqual([
      { step: 'enrollment', status: 'failed', error: { type: 'AzureBadRequest', message: 'refused' } },
    ]);

    // Three days later the operator has fixed the cause and retries: only the failed undo runs again.
    await env.sleep('3 days');
    broken = false;
    const report = await handle.executeUpdate(retryCompensationUpdate, { args: [{}] });
    expect(report).toMatchObject({ attempts: 2, leftovers: [] });
    const { type, result } = await failure(handle);
    expect(type).toBe('ReconnectionDeadlineExceeded');
    expect(result).toMatchObject({ outcome: 'rolledBack', phase: 'rolledBack' });
    expect(azure.calls.filter((c) => c === 'undo:sourceDevice')).toHaveLength(1);
    expect(azure.calls.filter((c) => c === 'undo:enrollment')).toHaveLength(2);
  });
});

it('closes as CompensationFailed, naming what is left, when no operator retries within 7 days', async () => {
  const azure = fakeAzure({
    undoEnrollment: () => {
      throw ApplicationFailure.create({ type: 'AzureBadRequest', message: 'refused', nonRetryable: true });
    },
  });
  await run(azure.activities, { registrationId: 'dev-1', deadline: '1m', pollInterval: '1m' }, async (handle) => {
    const { type, result } = await failure(handle);
    expect(type).toBe('CompensationFailed');
    expect(result).toMatchObject({ outcome: 'compensationFailed', phase: 'compensationFailed', reason: 'deadline' });
    expect(result.compensation?.leftovers.map((l) => l.step)).toEqual(['enrollment']);
    const description = await handle.describe();
    expect(description.searchAttributes.IotPhase).toEqual(['compensationFailed']);
  });
});
