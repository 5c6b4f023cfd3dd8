import {
  allHandlersFinished,
  ApplicationFailure,
  CancellationScope,
  condition,
  isCancellation,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  startChild,
  upsertMemo,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { Activities } from '../activities';
import type { EnrollmentRouting, EnrollmentView, RegistrationView, RepointResult } from '../activities/dps';
import type { DeviceSnapshot, TwinState } from '../activities/registry';
import {
  deviceConnectedSignal,
  deviceEventsWorkflowId,
  OPERATIONS,
  operatorActionSignal,
  promotionStatusQuery,
  retryCompensationUpdate,
  revocationRequestedSignal,
  type RevocationRequestedEvent,
} from '../common/messages';
import type { ChangeRequest, OperationContext, OperatorAction, RequestedBy } from '../common/requested-by';
import {
  durationMs,
  PROMOTION_REPORT_MEMO,
  PromotionErrors,
  PromotionRequest,
  type CompensationReport,
  type DeviceConnectedEvent,
  type PromotionEndReason,
  type PromotionOutcome,
  type PromotionPhase,
  type PromotionReport,
  type PromotionRequestInput,
  type PromotionResult,
  type PromotionStatus,
  type WaitStatus,
} from '../common/promotion';
import { REVOCATION_MARK } from '../common/revocation';
import { SA } from '../common/search-attributes';
import { promotionEventRelay } from './device-event-relay';
import { promoteDeviceV1 } from './promotion-v1';
import { PERMANENT_FAILURES } from './policies';
import { landingProblem } from './promotion-checks';
import { applicationFailureIn, failureOf, Saga } from './saga';
import { operationFinished, operationStarted } from './operation-metrics';

// ---- Versions ----

/**
 * Patch ids of released changes (see README, "Shipping a workflow change"). A run started before `v2` has no marker
 * in its history and finishes on the frozen v1 code.
 */
export const PROMOTION_PATCHES = { v2: 'promotion-v2' } as const;

// ---- Timeouts and retry policies, reviewed in one place ----

/** Permanent failures: retrying cannot help, the workflow decides what to do. */
const NON_RETRYABLE = [...PERMANENT_FAILURES, ...Object.values(PromotionErrors)];

/**
 * One Azure call: throttling (429), 5xx and timeouts are retried with back-off for up to ~10 minutes. Activities
 * heartbeat while they run, so a worker that dies mid-call is noticed after the heartbeat timeout.
 */
const azureCallProfile = {
  startToCloseTimeout: '30 seconds',
  heartbeatTimeout: '10 seconds',
  retry: {
    initialInterval: '1 second',
    backoffCoefficient: 2,
    maximumInterval: '1 minute',
    maximumAttempts: 15,
    nonRetryableErrorTypes: NON_RETRYABLE,
  },
} as const;

/** Paging through DPS (finding a device's group) may take minutes; it heartbeats like every activity. */
const searchProfile = {
  ...azureCallProfile,
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '30 seconds',
} as const;

/** An undo step must get through: transient faults are retried without an attempt limit, for up to 2 hours. */
const undoProfile = {
  startToCloseTimeout: '30 seconds',
  heartbeatTimeout: '10 seconds',
  scheduleToCloseTimeout: '2 hours',
  retry: {
    initialInterval: '1 second',
    backoffCoefficient: 2,
    maximumInterval: '2 minutes',
    nonRetryableErrorTypes: NON_RETRYABLE,
  },
} as const;

const azure = proxyActivities<Activities>(azureCallProfile);
const search = proxyActivities<Activities>(searchProfile);
const undo = proxyActivities<Activities>(undoProfile);

/**
 * The fallback poll starts at the request's interval and backs off to 5 minutes, or to 1/300 of the deadline for
 * long deadlines; Event Grid hints add at most MAX_CHECKS checks. A wait stays well below Temporal's history
 * limits without continue-as-new.
 */
const MAX_POLL_INTERVAL_MS = 5 * 60_000;
const MAX_POLLS_PER_DEADLINE = 300;
const MAX_HINTED_CHECKS = 300;
/** How long a run whose compensation failed waits for an operator's `retryCompensation` before it closes. */
const OPERATOR_RETRY_WINDOW = '7 days';

// ---- The workflow ----

/**
 * Promotes one device from the source environment's hub to the target's through DPS (late binding), and completes
 * only once the device has re-registered with DPS and connected to the target hub.
 */
export async function promoteDevice(
  input: PromotionRequestInput,
  context: OperationContext = {},
): Promise<PromotionResult> {
  if (!patched(PROMOTION_PATCHES.v2)) return promoteDeviceV1(input);
  return new Promotion(input, context).run();
}

/** Operator actions a run keeps (a retry loop must not grow the status without bound). */
const MAX_OPERATOR_ACTIONS = 50;

class Promotion {
  private readonly request: PromotionRequest;
  private readonly status: PromotionStatus;
  private readonly saga = new Saga();
  private enrollment!: EnrollmentView;
  private snapshotOfSource!: DeviceSnapshot;
  private targetHadDevice = false;
  private repointed?: RepointResult;
  private hinted = false;
  private readonly seen: string[] = [];
  private retryRequests = 0;
  /** Set by a revocation of the device: the promotion stops at once and puts nothing back. */
  private revocation?: RevocationRequestedEvent;
  private retriesServed = 0;
  private finalRegistration?: RegistrationView | null;

  constructor(input: PromotionRequestInput, context: OperationContext) {
    this.request = parseRequest(input);
    const now = new Date().toISOString();
    this.status = {
      workflowId: workflowInfo().workflowId,
      request: this.request,
      phase: 'validating',
      startedAt: now,
      phaseChangedAt: now,
      steps: [],
      ...(context.requestedBy ? { requestedBy: context.requestedBy } : {}),
    };
  }

  async run(): Promise<PromotionResult> {
    this.installHandlers();
    operationStarted(OPERATIONS.promote);
    let ending: { reason: PromotionEndReason; err: unknown };
    try {
      // 1. Validate: nothing changes before every check has passed.
      await this.validate();
      this.stopIfRevoked();
      // 2. Snapshot what will change (identity and twin; never keys).
      await this.snapshot();
      this.stopIfRevoked();
      // 3. Re-point the enrollment to the target hub.
      await this.repoint();
      this.stopIfRevoked();
      // 4. Make the source hub reject the device, so that it re-runs DPS registration.
      await this.removeFromSource();
      this.stopIfRevoked();
      // 5. Wait until the device has landed on the target (Event Grid hints, polling, a deadline).
      const via = await this.awaitLanding();
      this.stopIfRevoked();
      if (via) {
        this.status.connectedVia = via;
        this.done('connected', `on ${this.status.targetHub}: ${this.status.wait?.lastCheck ?? ''} (seen by ${via})`);
        // 6. Verify the end state: the twin as the reprovision policy says, the source identity gone.
        await this.verify();
        // 7. Report.
        return await this.finish();
      }
      this.done('deadline', `not on ${this.status.targetHub} within ${this.request.deadline}`);
      ending = {
        reason: 'deadline',
        err: failure(
          PromotionErrors.deadlineExceeded,
          `the device did not reach the target within ${this.request.deadline}`,
        ),
      };
    } catch (err) {
      const cancelled = isCancellation(err);
      const revoked = applicationFailureIn(err)?.type === PromotionErrors.stoppedForRevocation;
      this.done(
        cancelled ? 'cancelled' : revoked ? 'revoked' : 'failed',
        cancelled ? 'promotion cancelled' : failureOf(err).message,
      );
      ending = { reason: cancelled ? 'cancelled' : revoked ? 'revoked' : 'failure', err };
    }
    // Outside the try: whatever happens while stopping is not taken for a new failure to stop for.
    return this.stop(ending.reason, ending.err);
  }

  // ---- Steps ----

  private async validate(): Promise<void> {
    const { request, status } = this;
    this.phase('validating');
    const hubs = await azure.resolveEnvironments([request.sourceEnvironment, request.targetEnvironment]);
    status.sourceHub = hubs[request.sourceEnvironment];
    status.targetHub = hubs[request.targetEnvironment];
    this.enrollment = await search.dpsLookupEnrollment({
      registrationId: request.registrationId,
      enrollmentGroupId: request.enrollmentGroupId,
    });
    status.enrollmentKind = this.enrollment.kind;
    status.attestation = this.enrollment.attestation;
    const registration = await azure.dpsGetRegistrationState(request.registrationId);
    status.deviceId = registration?.deviceId ?? this.enrollment.deviceId ?? request.registrationId;
    // Kept current here too, so a promotion started without the API is just as searchable.
    upsertSearchAttributes([
      { key: SA.deviceId, value: status.deviceId },
      { key: SA.registrationId, value: request.registrationId },
      { key: SA.sourceHub, value: status.sourceHub },
      { key: SA.targetHub, value: status.targetHub },
    ]);
    checkEnrollment(request, this.enrollment, registration?.assignedHub, status.sourceHub);
    if (this.enrollment.kind === 'groupMember' && request.deviceCertificate) {
      const cert = await azure.dpsVerifyMemberCertificate({
        enrollmentGroupId: this.enrollment.enrollmentGroupId!,
        registrationId: request.registrationId,
        deviceCertificate: request.deviceCertificate,
      });
      this.done('certificateChecked', `${cert.subject.replace(/\n/g, ', ')}, issued by the group's CA`);
    }
    this.done(
      'validated',
      `${this.enrollment.kind} ${this.enrollment.attestation} enrollment, assigned to ${status.sourceHub}`,
    );
  }

  private async snapshot(): Promise<void> {
    const { request, status } = this;
    this.phase('snapshotting');
    const deviceId = status.deviceId!;
    const source = await azure.hubSnapshotDevice({ environment: request.sourceEnvironment, deviceId });
    if (!source) {
      throw failure(
        PromotionErrors.notAssignedToSource,
        `device ${deviceId} is not in the source hub ${status.sourceHub}`,
      );
    }
    checkDeviceKind(source);
    this.snapshotOfSource = source;
    this.targetHadDevice = !!(await azure.hubGetDevice({ environment: request.targetEnvironment, deviceId }));
    await this.startEventRelay(deviceId);
    this.done('snapshot', `device ${source.device.authType}/${source.device.status}; twin saved`);
  }

  private async repoint(): Promise<void> {
    const { request, status, enrollment } = this;
    this.phase('repointing');
    const notBefore = new Date().toISOString();
    const routing: EnrollmentRouting = {
      iotHubs: enrollment.iotHubs,
      iotHubHostName: enrollment.iotHubHostName,
      allocationPolicy: enrollment.allocationPolicy,
      reprovisionPolicy: enrollment.reprovisionPolicy,
    };
    // Undo order matters: the source identity is restored and the enrollment points back at the source before the
    // device is removed from the target, so that the device, rejected there, registers back to the source. The
    // saga runs undos newest first, hence these two are registered before the re-point (it may apply and fail).
    this.saga.add('targetDevice', async () => {
      if (this.targetHadDevice) return 'kept: the device was in the target hub before the promotion';
      const removed = await undo.hubRemoveDevice({
        environment: request.targetEnvironment,
        deviceId: status.deviceId!,
        mode: 'delete',
      });
      return `target device ${removed.result}`;
    });
    this.saga.add('enrollment', async () => {
      const restored = await undo.dpsUndoRepoint({
        enrollment,
        routing,
        targetHubHost: status.targetHub!,
        createdEtag: this.repointed?.createdIndividual ? this.repointed.etag : undefined,
        notBefore,
      });
      return `enrollment ${restored.restored}`;
    });
    this.repointed = await azure.dpsRepointEnrollment({
      workflowId: workflowInfo().workflowId,
      enrollment,
      deviceId: status.deviceId!,
      targetHubHost: status.targetHub!,
      reprovisionPolicy: request.reprovisionPolicy,
      deviceCertificate: request.deviceCertificate,
      notBefore,
    });
    status.repointedAt = this.repointed.repointedAt ?? notBefore;
    this.done(
      'repointed',
      this.repointed.createdIndividual
        ? `individual enrollment created for this group member, pointing at ${status.targetHub}`
        : `enrollment now points at ${status.targetHub}`,
    );
  }

  private async removeFromSource(): Promise<void> {
    const { request, status } = this;
    this.phase('removingFromSource');
    const deviceId = status.deviceId!;
    this.saga.add('sourceDevice', async () => {
      const restored = await undo.hubRestoreIdentity({
        environment: request.sourceEnvironment,
        snapshot: this.snapshotOfSource,
        enrollment: this.enrollment,
      });
      return `source device ${restored.identity}, twin ${restored.twin}`;
    });
    const etag = this.snapshotOfSource.device.etag;
    if (request.reprovisionPolicy === 'migrate' || request.sourceRemoval === 'disable') {
      // "Re-provision and migrate data": DPS copies the device's state from its identity on the old hub and then
      // removes that identity (Azure, "How to reprovision devices"). So the identity is disabled, not deleted: the
      // hub refuses the device, and DPS still finds the twin to migrate.
      const disabled = await azure.hubDisableDevice({ environment: request.sourceEnvironment, deviceId, etag });
      this.done('removedFromSource', `${disabled.result} in ${status.sourceHub}`);
    } else {
      const deleted = await azure.hubDeleteDevice({ environment: request.sourceEnvironment, deviceId, etag });
      this.done('removedFromSource', `${deleted.result} in ${status.sourceHub}`);
    }
  }

  /** Resolves how the landing was first seen, or undefined at the deadline. */
  private async awaitLanding(): Promise<'eventGrid' | 'polling' | undefined> {
    const { request, status } = this;
    this.phase('awaitingReconnection');
    const deadlineMs = durationMs(request.deadline);
    const deadlineAt = Date.now() + deadlineMs;
    const maxPollMs = Math.max(MAX_POLL_INTERVAL_MS, Math.ceil(deadlineMs / MAX_POLLS_PER_DEADLINE));
    const wait: WaitStatus = { deadlineAt: new Date(deadlineAt).toISOString(), checks: 0, ignoredEvents: 0 };
    status.wait = wait;
    let pollMs = durationMs(request.pollInterval);
    let hintedChecks = 0;
    for (;;) {
      const remaining = deadlineAt - Date.now();
      if (remaining <= 0) return undefined;
      const sleepMs = Math.min(pollMs, remaining);
      status.wait.nextCheckAt = new Date(Date.now() + sleepMs).toISOString();
      this.refreshDetails();
      const hinted = await condition(
        () => (this.hinted && hintedChecks < MAX_HINTED_CHECKS) || this.revocation !== undefined,
        sleepMs,
      );
      this.stopIfRevoked();
      this.hinted = false;
      if (hinted) hintedChecks += 1;
      const verdict = await this.checkLanding();
      wait.checks += 1;
      wait.lastCheck = verdict.detail;
      if (verdict.landed) return hinted ? 'eventGrid' : 'polling';
      // A hint that does not check out (a stale, duplicated or forged event) only moves the next poll earlier.
      if (!hinted) pollMs = Math.min(maxPollMs, Math.round(pollMs * 1.5));
    }
  }

  /** Has the device re-registered with DPS since the re-point and authenticated to the target hub? */
  private async checkLanding(): Promise<{ landed: boolean; detail: string }> {
    const { request, status } = this;
    const [connection, registration] = await Promise.all([
      azure.hubCheckConnection({ environment: request.targetEnvironment, deviceId: status.deviceId! }),
      azure.dpsGetRegistrationState(request.registrationId),
    ]);
    this.finalRegistration = registration;
    const problem = landingProblem({
      registration,
      connection,
      targetHub: status.targetHub!,
      since: status.repointedAt!,
      protocol: request.protocol,
      expectedAuth: this.enrollment.attestation === 'symmetricKey' ? 'sas' : 'selfSigned',
    });
    if (problem) return { landed: false, detail: problem };
    return {
      landed: true,
      detail:
        request.protocol === 'https'
          ? `registered ${registration?.lastUpdatedDateTimeUtc}, last activity ${connection.lastActivityTime}`
          : `registered ${registration?.lastUpdatedDateTimeUtc}, connected`,
    };
  }

  private async verify(): Promise<void> {
    const { request, status } = this;
    this.phase('verifying');
    // The twin as the reprovision policy says: the source's (migrate) or the enrollment's initial twin (reset).
    const expected: TwinState =
      request.reprovisionPolicy === 'migrate'
        ? this.snapshotOfSource.twin
        : (this.enrollment.initialTwin ?? { tags: {}, desired: {} });
    const twin = await azure.hubReconcileTwin({
      environment: request.targetEnvironment,
      deviceId: status.deviceId!,
      expected,
    });
    this.done(
      'twinVerified',
      twin.matched
        ? `tags and desired properties as the ${request.reprovisionPolicy} policy says`
        : `tags and desired properties differed from the ${request.reprovisionPolicy} policy's; applied`,
    );
    if (request.sourceRemoval === 'delete') {
      // DPS removes the identity from the old hub on a move; a disabled one it left behind goes now.
      const removed = await azure.hubDeleteDevice({
        environment: request.sourceEnvironment,
        deviceId: status.deviceId!,
        onlyIfDisabled: true,
      });
      this.done('sourceCleaned', `source device ${removed.result}`);
    }
  }

  private async finish(): Promise<PromotionResult> {
    const registration = this.finalRegistration;
    const result = this.close('completed', {
      outcome: 'promoted',
      registration: registration
        ? { assignedHub: registration.assignedHub, status: registration.status, substatus: registration.substatus }
        : undefined,
    });
    await condition(allHandlersFinished);
    return result;
  }

  // ---- Ending without a promotion: compensation, then a terminal phase on every path ----

  private async stop(reason: PromotionEndReason, err: unknown): Promise<never> {
    const { request, status } = this;
    const failed = applicationFailureIn(err);
    const failureType = reason === 'cancelled' ? 'Cancelled' : (failed?.type ?? failureOf(err).type);
    let outcome: PromotionOutcome;
    if (reason === 'revoked') {
      // Revocation wins: no rollback re-enables anything; the revocation disables the device everywhere.
      outcome = 'stoppedForRevocation';
    } else if (this.saga.isEmpty) {
      outcome = reason === 'cancelled' ? 'cancelled' : 'failed';
    } else if (request.onTimeout === 'park') {
      status.flagged = `parked after ${reason}: enrollment points at ${status.targetHub}; device disabled or removed in ${status.sourceHub}`;
      outcome = 'parked';
    } else {
      outcome = await this.compensate();
      if (this.revocation) {
        this.flagRevocation();
        outcome = 'stoppedForRevocation';
      }
    }
    const phase: PromotionPhase = outcome === 'promoted' ? 'completed' : outcome;
    const result = this.close(phase, { outcome, reason, failureType }, failureOf(err).message);
    await CancellationScope.nonCancellable(() => condition(allHandlersFinished));
    if (outcome === 'compensationFailed') {
      throw ApplicationFailure.create({
        type: PromotionErrors.compensationFailed,
        message: `compensation left: ${status.compensation!.leftovers.map((l) => `${l.step} (${l.error?.message})`).join('; ')}`,
        nonRetryable: true,
        details: [result],
      });
    }
    if (reason === 'cancelled' && outcome !== 'stoppedForRevocation') throw err;
    const named =
      outcome === 'stoppedForRevocation'
        ? failure(PromotionErrors.stoppedForRevocation, status.flagged ?? 'stopped by a revocation of the device')
        : (failed ?? failure(failureType, failureOf(err).message));
    throw ApplicationFailure.create({
      type: named.type ?? failureType,
      message: named.message,
      nonRetryable: true,
      details: [result],
    });
  }

  /** Runs the saga; while undo steps are left, waits for an operator's retry (the update), then runs them again. */
  private async compensate(): Promise<PromotionOutcome> {
    this.phase('compensating');
    const onStep = (s: { step: string; status: string; detail?: string; error?: { message: string } }) =>
      this.done(`undo:${s.step}`, s.status === 'undone' ? (s.detail ?? 'undone') : `failed: ${s.error?.message}`);
    const revoked = () => this.revocation !== undefined;
    let report: CompensationReport = await this.saga.compensate(onStep, revoked);
    this.status.compensation = report;
    while (report.leftovers.length > 0 && !revoked()) {
      this.phase('compensationFailed');
      const retried = await CancellationScope.nonCancellable(() =>
        condition(() => this.retryRequests > this.retriesServed || revoked(), OPERATOR_RETRY_WINDOW),
      );
      if (!retried || revoked()) break;
      this.phase('compensating');
      report = await this.saga.compensate(onStep, revoked);
      this.status.compensation = report;
      this.retriesServed = this.retryRequests;
    }
    return report.leftovers.length > 0 ? 'compensationFailed' : 'rolledBack';
  }

  // ---- Handlers, phases and what the UI shows ----

  /** Revocation wins over a promotion: after each step, and as soon as the wait wakes, the promotion stops. */
  private stopIfRevoked(): void {
    if (this.revocation) throw failure(PromotionErrors.stoppedForRevocation, this.flagRevocation());
  }

  /** Records why the promotion stopped: which revocation, who asked, the reason. */
  private flagRevocation(): string {
    const r = this.revocation!;
    this.status.flagged = `stopped by revocation ${r.revocationWorkflowId}${r.requestedBy ? ` (${r.requestedBy})` : ''}: ${r.reason}`;
    return this.status.flagged;
  }

  private installHandlers(): void {
    setHandler(promotionStatusQuery, () => this.status);
    setHandler(revocationRequestedSignal, (event) => void (this.revocation ??= event));
    setHandler(deviceConnectedSignal, (event) => this.onDeviceConnected(event));
    setHandler(operatorActionSignal, (action) => this.recordAction(action.action, action.requestedBy));
    setHandler(
      retryCompensationUpdate,
      async (change: ChangeRequest | undefined) => {
        if (change?.requestedBy) this.recordAction('retryCompensation', change.requestedBy);
        const ticket = (this.retryRequests += 1);
        await condition(() => this.retriesServed >= ticket);
        return this.status.compensation!;
      },
      {
        validator: (_change: ChangeRequest | undefined) => {
          if (this.status.phase !== 'compensationFailed') {
            throw failure(
              PromotionErrors.nothingToRetry,
              `the promotion is ${this.status.phase}, not compensationFailed`,
            );
          }
        },
      },
    );
  }

  /**
   * A DeviceConnected event is a hint, never proof: it wakes the wait for a check of DPS and the registry. Events
   * for another hub or device, and events older than the re-point (replayed, stale or forged), are ignored.
   */
  private onDeviceConnected(event: DeviceConnectedEvent): void {
    const { status } = this;
    // Event Grid delivers at least once: a (hub, sequenceNumber) seen before is a duplicate.
    const key = `${event?.hubHostName}|${event?.sequenceNumber}`;
    if (this.seen.includes(key)) return;
    this.seen.push(key);
    if (this.seen.length > 100) this.seen.shift();
    const eventTime = Date.parse(event?.eventTime);
    const relevant =
      status.repointedAt !== undefined &&
      event.hubHostName === status.targetHub &&
      event.deviceId === status.deviceId &&
      Number.isFinite(eventTime) &&
      eventTime >= Date.parse(status.repointedAt);
    if (!relevant) {
      if (status.wait) status.wait.ignoredEvents += 1;
      return;
    }
    status.lastEvent = { ...event, receivedAt: new Date().toISOString() };
    this.hinted = true;
  }

  /** Who asked for a change, kept in the status, result and report (no command: replays are unaffected). */
  private recordAction(action: string, requestedBy: RequestedBy | undefined): void {
    if (typeof action !== 'string' || !requestedBy) return;
    const actions = (this.status.operatorActions ??= []);
    const entry: OperatorAction = { action, requestedBy, at: new Date().toISOString() };
    actions.push(entry);
    if (actions.length > MAX_OPERATOR_ACTIONS) actions.shift();
    this.refreshDetails();
  }

  /** Starts the relay that forwards Event Grid signals addressed by device id, when that is not the registration id. */
  private async startEventRelay(deviceId: string): Promise<void> {
    if (deviceId === this.request.registrationId) return;
    try {
      // Not cancellable with the promotion: it lives exactly as long as this run (parent close policy TERMINATE).
      await CancellationScope.nonCancellable(() =>
        startChild(promotionEventRelay, {
          workflowId: deviceEventsWorkflowId(deviceId),
          args: [{ promotionWorkflowId: workflowInfo().workflowId, deviceId }],
          parentClosePolicy: 'TERMINATE',
        }),
      );
      this.done('eventRelay', `Event Grid events for device ${deviceId} reach this promotion`);
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
      this.done('eventRelay', `another promotion relays events of device ${deviceId}; this one relies on polling`);
    }
  }

  private phase(phase: PromotionPhase): void {
    this.status.phase = phase;
    this.status.phaseChangedAt = new Date().toISOString();
    upsertSearchAttributes([
      { key: SA.phase, value: phase },
      { key: SA.operation, value: OPERATIONS.promote },
    ]);
    this.refreshDetails();
  }

  private done(step: string, detail: string): void {
    this.status.steps.push({ step, at: new Date().toISOString(), detail });
    this.refreshDetails();
  }

  /** Terminal phase, search attribute, result and memo report: the same record on every path. */
  private close(
    phase: PromotionPhase,
    ending: Pick<PromotionResult, 'outcome' | 'reason' | 'failureType' | 'registration'>,
    message?: string,
  ): PromotionResult {
    this.phase(phase);
    const result: PromotionResult = { ...this.status, ...ending, completedAt: new Date().toISOString() };
    const report: PromotionReport = {
      outcome: result.outcome,
      ...(result.reason ? { reason: result.reason } : {}),
      phase,
      ...(result.failureType ? { failureType: result.failureType } : {}),
      ...(message && result.outcome !== 'promoted' ? { message } : {}),
      ...(result.compensation?.leftovers.length ? { leftovers: result.compensation.leftovers } : {}),
      completedAt: result.completedAt,
      ...(result.requestedBy ? { requestedBy: result.requestedBy } : {}),
      ...(result.operatorActions?.length ? { operatorActions: result.operatorActions } : {}),
    };
    upsertMemo({ [PROMOTION_REPORT_MEMO]: report });
    operationFinished(OPERATIONS.promote, result.outcome);
    return result;
  }

  private refreshDetails(): void {
    const { status, request } = this;
    const lines = [
      `**Promote ${request.registrationId}**: ${request.sourceEnvironment} → ${request.targetEnvironment}`,
      `Phase: **${status.phase}** since ${status.phaseChangedAt}`,
    ];
    if (status.requestedBy) lines.push(`Requested by: ${describeRequester(status.requestedBy)}`);
    for (const a of status.operatorActions ?? [])
      lines.push(`${a.action} by ${describeRequester(a.requestedBy)} at ${a.at}`);
    if (status.wait && status.phase === 'awaitingReconnection') {
      lines.push(
        `Deadline: ${status.wait.deadlineAt}; next check: ${status.wait.nextCheckAt ?? '-'}; checks so far: ${status.wait.checks}`,
        `Last check: ${status.wait.lastCheck ?? '-'}`,
        `Last event: ${status.lastEvent ? `${status.lastEvent.eventTime} from ${status.lastEvent.hubHostName}` : 'none'}; ignored events: ${status.wait.ignoredEvents}`,
      );
    }
    if (status.compensation?.leftovers.length) {
      lines.push(
        `Left to undo (retry with the retryCompensation update): ${status.compensation.leftovers.map((l) => `${l.step}: ${l.error?.message}`).join('; ')}`,
      );
    }
    lines.push(...status.steps.map((s) => `- ${s.at} ${s.step}: ${s.detail}`));
    if (status.flagged) lines.push(`⚠ ${status.flagged}`);
    setCurrentDetails(lines.join('\n'));
  }
}

function describeRequester(by: RequestedBy): string {
  return `${by.name ?? by.subject} (${by.authMethod}:${by.subject})`;
}

// ---- Checks (pure) ----

function parseRequest(input: PromotionRequestInput): PromotionRequest {
  const parsed = PromotionRequest.safeParse(input);
  if (!parsed.success) {
    throw ApplicationFailure.create({
      type: PromotionErrors.invalidRequest,
      message: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '),
      nonRetryable: true,
      details: [parsed.error.issues],
    });
  }
  return parsed.data;
}

function checkEnrollment(
  request: PromotionRequest,
  enrollment: EnrollmentView,
  assignedHub: string | undefined,
  sourceHub: string | undefined,
): void {
  if (enrollment.provisioningStatus !== 'enabled' && enrollment.initialTwin?.tags[REVOCATION_MARK.twinTag]) {
    throw failure(
      PromotionErrors.deviceRevoked,
      `${request.registrationId} is revoked (its ${enrollment.kind === 'individual' ? 'enrollment' : 'enrollment group'} was disabled by a revocation): reinstate it first`,
    );
  }
  if (enrollment.provisioningStatus !== 'enabled') {
    throw failure(
      PromotionErrors.enrollmentDisabled,
      `the ${enrollment.kind === 'individual' ? 'enrollment' : 'enrollment group'} is disabled`,
    );
  }
  if (assignedHub !== sourceHub) {
    throw failure(
      PromotionErrors.notAssignedToSource,
      `DPS assigns ${request.registrationId} to ${assignedHub ?? 'no hub'}, not to the source hub ${sourceHub}`,
    );
  }
  // IoT Hub does not accept X.509 CA authentication over the WebSocket variants of MQTT and AMQP.
  if (enrollment.attestation === 'x509CA' && (request.protocol === 'mqtt-ws' || request.protocol === 'amqp-ws')) {
    throw failure(
      PromotionErrors.unsupportedAttestationProtocol,
      `X.509 CA devices cannot connect with ${request.protocol}: use mqtt or amqp over TCP`,
    );
  }
  if (enrollment.attestation === 'tpm') {
    throw failure(PromotionErrors.unsupportedAttestation, 'TPM attestation is not supported by iot-lifecycle yet');
  }
  if (enrollment.kind === 'groupMember' && enrollment.attestation !== 'symmetricKey' && !request.deviceCertificate) {
    throw failure(
      PromotionErrors.deviceCertificateRequired,
      'moving one device of an X.509 enrollment group needs its device certificate (deviceCertificate)',
    );
  }
}

/**
 * Re-registration re-creates a plain device identity: an IoT Edge device would lose its modules, and a child device
 * its parent gateway, so both are refused before anything changes.
 */
function checkDeviceKind(source: DeviceSnapshot): void {
  const { device } = source;
  if (device.iotEdge) {
    throw failure(
      PromotionErrors.unsupportedDeviceKind,
      `${device.deviceId} is an IoT Edge device: its modules do not move through DPS re-registration`,
    );
  }
  if (device.deviceScope || device.parentScopes?.length) {
    throw failure(
      PromotionErrors.unsupportedDeviceKind,
      `${device.deviceId} is a child device of a gateway (device scope ${device.deviceScope ?? device.parentScopes?.[0]}): move its gateway instead`,
    );
  }
}

function failure(type: string, message: string): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true });
}
