import {
  ApplicationFailure,
  continueAsNew,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertMemo,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { DpsRevocation, RegistrationRef } from '../activities/revocation';
import { OPERATIONS, revocationStatusQuery } from '../common/messages';
import {
  PROOF_LIMIT,
  RevocationErrors,
  RevocationRequest,
  type DeviceProof,
  type HubProof,
  type Requester,
  type RevocationPhase,
  type RevocationRequestInput,
  type RevocationResult,
  type RevocationStatus,
} from '../common/revocation';
import { SA } from '../common/search-attributes';
import { PERMANENT_FAILURES } from './policies';
import { applicationFailureIn, failureOf } from './saga';

// ---- Timeouts and retry policies ----

const NON_RETRYABLE = [...PERMANENT_FAILURES, ...Object.values(RevocationErrors), 'DeviceCertificateUnverifiable'];

/**
 * A revocation must get through: Azure's throttling, 5xx and timeouts are retried with back-off for up to 2 hours
 * (no attempt limit) before a step is reported as left undone. Every activity heartbeats.
 */
const revocationCall = {
  startToCloseTimeout: '1 minute',
  heartbeatTimeout: '10 seconds',
  scheduleToCloseTimeout: '2 hours',
  retry: {
    initialInterval: '1 second',
    backoffCoefficient: 2,
    maximumInterval: '2 minutes',
    nonRetryableErrorTypes: NON_RETRYABLE,
  },
} as const;

/** Batches of 100 identities per hub, waiting (bounded) for their connections to close. */
const hubBatch = { ...revocationCall, startToCloseTimeout: '15 minutes' } as const;

const azure = proxyActivities<Activities>(revocationCall);
const hubs = proxyActivities<Activities>(hubBatch);

/** Registration records per page of a group revocation, and pages per run before continue-as-new. */
const PAGE_SIZE = 100;
const PAGES_PER_RUN = 20;
/** How long a revocation waits for a stopped promotion to close before going on anyway. */
const PROMOTION_STOP_WAIT_MS = 120_000;

// ---- One device ----

/**
 * Revokes one device: stops its running promotion without restoring access, makes DPS refuse it (its individual
 * enrollment disabled, or a disabled individual enrollment blocking it within its group), disables or deletes its
 * identity in every configured hub, and proves all of it.
 */
export async function revokeDevice(input: RevocationRequestInput & Requester): Promise<RevocationResult> {
  const request = parse(input);
  const run = new Run(request, { kind: 'device', registrationId: request.registrationId });
  const registrationId = request.registrationId!;

  // 1. Validate: the hubs to look in.
  run.phase('validating');
  const environments = await azure.listEnvironments();
  run.status.hubs = Object.values(environments);
  upsertSearchAttributes([{ key: SA.registrationId, value: registrationId }]);

  // 2. Revocation wins: a promotion of the device in flight stops here, without restoring access.
  run.phase('stoppingPromotion');
  await run.stopPromotions([registrationId]);

  // 3. DPS refuses the device from now on (a refusal of the request itself fails here, before any change).
  run.phase('revokingInDps');
  let revoked: DpsRevocation | undefined;
  let dpsProblem: string | undefined;
  try {
    revoked = await azure.dpsRevokeDevice({
      registrationId,
      enrollmentGroupId: request.enrollmentGroupId,
      deviceCertificate: request.deviceCertificate,
      mark: run.mark(),
    });
    run.done('dps', `${revoked.enrollment}${revoked.changed ? '' : ' (already)'}`);
  } catch (err) {
    if (refusedRequest(err)) throw run.fail(err);
    // Azure kept failing: the hubs are revoked all the same, and the result says what is left.
    dpsProblem = `DPS: ${failureOf(err).message}`;
    run.done('dps', dpsProblem);
  }
  const deviceId = revoked?.deviceId ?? registrationId;
  upsertSearchAttributes([{ key: SA.deviceId, value: deviceId }]);

  // 4. Every configured hub: the identity disabled or deleted, its live connection closed.
  run.phase('revokingInHubs');
  const hubProofs = await run.revokeInHubs(environments, [deviceId]);

  // 5. Prove it: DPS would refuse a fresh registration; no hub accepts the identity.
  run.phase('proving');
  const groupId = revoked?.enrollmentGroupId ?? request.enrollmentGroupId;
  const refusal = await azure.dpsRegistrationRefused({ registrationId, enrollmentGroupId: groupId });
  const proof = deviceProof({
    registrationId,
    deviceId,
    enrollment: revoked?.enrollment ?? (refusal.individual === 'disabled' ? 'individualDisabled' : 'noEnrollment'),
    changed: revoked?.changed ?? false,
    refused: refusal.refused,
    hubs: hubProofs.get(deviceId) ?? [],
    extraProblems: dpsProblem ? [dpsProblem] : [],
  });
  run.record([proof]);
  return run.finish();
}

// ---- A whole group ----

interface GroupCursor {
  /** First the individual enrollments standing in for members (promoted ones), then the registration records. */
  stage: 'members' | 'registrations';
  continuation?: string;
}

interface GroupCarry {
  status: RevocationStatus;
  devices: DeviceProof[];
  leftovers: DeviceProof[];
  cursor: GroupCursor;
  /** Members whose own individual enrollment this revocation disabled (their proof says so). */
  membersDisabled: string[];
}

/**
 * Revokes every device of an enrollment group: the group disabled, the individual enrollments that stand in for
 * its members disabled too (a promoted member registers through its own), and every device's identity disabled or
 * deleted in every configured hub, page by page, continuing as new to keep each run's history short.
 */
export async function revokeEnrollmentGroup(
  input: RevocationRequestInput & Requester,
  carry?: GroupCarry,
): Promise<RevocationResult> {
  const request = parse(input);
  const groupId = request.enrollmentGroupId!;
  const run = new Run(request, { kind: 'group', enrollmentGroupId: groupId }, carry);
  const environments = await azure.listEnvironments();
  let cursor: GroupCursor = carry?.cursor ?? { stage: 'members' };
  const membersDisabled = new Set(carry?.membersDisabled ?? []);

  if (!carry) {
    // 1. Validate and disable the group: no device of it registers from now on.
    run.phase('validating');
    run.status.hubs = Object.values(environments);
    upsertSearchAttributes([{ key: SA.enrollmentGroupId, value: groupId }]);
    run.phase('revokingInDps');
    try {
      const group = await azure.dpsRevokeGroup({ enrollmentGroupId: groupId, mark: run.mark() });
      run.done('dps', group.changed ? 'enrollment group disabled' : 'enrollment group already disabled');
    } catch (err) {
      throw run.fail(err);
    }
  }

  // 2. Page by page: stop promotions, make DPS refuse each device, revoke each identity in every hub.
  for (let pages = 0; pages < PAGES_PER_RUN; pages += 1) {
    run.phase('revokingInHubs');
    const page =
      cursor.stage === 'members'
        ? await azure.dpsGroupMemberEnrollments({
            enrollmentGroupId: groupId,
            continuation: cursor.continuation,
            pageSize: PAGE_SIZE,
          })
        : await azure.dpsGroupRegistrations({
            enrollmentGroupId: groupId,
            continuation: cursor.continuation,
            pageSize: PAGE_SIZE,
          });
    const devices = page.registrations.filter(
      (r) => cursor.stage === 'members' || !membersDisabled.has(r.registrationId),
    );
    if (devices.length > 0) await revokePage(run, environments, devices, cursor.stage, membersDisabled);
    run.status.progress.pagesDone += 1;
    run.refresh();
    if (page.continuation) cursor = { stage: cursor.stage, continuation: page.continuation };
    else if (cursor.stage === 'members') cursor = { stage: 'registrations' };
    else return run.finish();
  }
  // Past this run's pages: the same workflow goes on in a new run, with what it has found so far.
  await continueAsNew<typeof revokeEnrollmentGroup>(input, {
    status: run.status,
    devices: run.devices,
    leftovers: run.leftovers,
    cursor,
    membersDisabled: [...membersDisabled],
  });
  throw new Error('unreachable: continueAsNew does not return');
}

async function revokePage(
  run: Run,
  environments: Record<string, string>,
  devices: RegistrationRef[],
  stage: GroupCursor['stage'],
  membersDisabled: Set<string>,
): Promise<void> {
  const ids = devices.map((d) => d.registrationId);
  await run.stopPromotions(ids);
  let disabled: string[] = [];
  if (stage === 'members') {
    const result = await azure.dpsDisableIndividuals({ registrationIds: ids, mark: run.mark() });
    disabled = [...result.disabled, ...result.alreadyDisabled];
    for (const id of disabled) membersDisabled.add(id);
  }
  const proofs = await run.revokeInHubs(
    environments,
    devices.map((d) => d.deviceId),
  );
  run.record(
    devices.map((d) =>
      deviceProof({
        registrationId: d.registrationId,
        deviceId: d.deviceId,
        enrollment: stage === 'members' ? 'individualDisabled' : 'groupDisabled',
        changed: stage === 'members' ? disabled.includes(d.registrationId) : true,
        refused: stage === 'registrations' || disabled.includes(d.registrationId),
        hubs: proofs.get(d.deviceId) ?? [],
        extraProblems: [],
      }),
    ),
  );
}

// ---- The run: status, phases, search attributes, proofs ----

class Run {
  readonly status: RevocationStatus;
  devices: DeviceProof[];
  leftovers: DeviceProof[];

  constructor(
    readonly request: RevocationRequest & Requester,
    target: RevocationStatus['target'],
    carry?: { status: RevocationStatus; devices: DeviceProof[]; leftovers: DeviceProof[] },
  ) {
    const now = new Date().toISOString();
    this.status = carry?.status ?? {
      workflowId: workflowInfo().workflowId,
      request,
      phase: 'validating',
      target,
      startedAt: now,
      phaseChangedAt: now,
      steps: [],
      progress: { devicesFound: 0, revoked: 0, failed: 0, pagesDone: 0 },
      promotionsStopped: [],
      hubs: [],
    };
    this.devices = carry?.devices ?? [];
    this.leftovers = carry?.leftovers ?? [];
    setHandler(revocationStatusQuery, () => this.status);
    upsertSearchAttributes([{ key: SA.operation, value: OPERATIONS.revoke }]);
    this.refresh();
  }

  /** What the revocation writes on what it disables, so that a reinstatement finds exactly its own changes. */
  mark() {
    return { workflowId: this.status.workflowId, at: new Date().toISOString() };
  }

  phase(phase: RevocationPhase): void {
    if (this.status.phase === phase) return;
    this.status.phase = phase;
    this.status.phaseChangedAt = new Date().toISOString();
    upsertSearchAttributes([{ key: SA.phase, value: phase }]);
    this.refresh();
  }

  done(step: string, detail: string): void {
    this.status.steps.push({ step, at: new Date().toISOString(), detail });
    if (this.status.steps.length > 50) this.status.steps.splice(0, this.status.steps.length - 50);
    this.refresh();
  }

  async stopPromotions(registrationIds: string[]): Promise<void> {
    const stopped = await azure.stopPromotions({
      registrationIds,
      revocationWorkflowId: this.status.workflowId,
      reason: this.request.reason,
      requestedBy: this.request.requestedBy,
      waitMs: PROMOTION_STOP_WAIT_MS,
    });
    this.status.promotionsStopped.push(...stopped.stopped);
    if (stopped.stopped.length) this.done('promotionsStopped', stopped.stopped.join(', '));
    if (stopped.stillRunning.length) {
      this.done('promotionsStillRunning', `${stopped.stillRunning.join(', ')} did not close in time; revoking anyway`);
    }
  }

  /** Every hub at once; a hub whose calls keep failing leaves its devices as problems, the others go on. */
  async revokeInHubs(environments: Record<string, string>, deviceIds: string[]): Promise<Map<string, HubProof[]>> {
    const byDevice = new Map<string, HubProof[]>(deviceIds.map((id) => [id, []]));
    await Promise.all(
      Object.entries(environments).map(async ([environment, hubHost]) => {
        try {
          const proofs = await hubs.hubRevokeIdentities({
            environment,
            deviceIds,
            action: this.request.hubAction,
            revocationWorkflowId: this.status.workflowId,
            disconnectTimeoutMs: this.request.disconnectTimeoutSeconds * 1000,
          });
          for (const p of proofs) byDevice.get(p.deviceId)?.push(p);
        } catch (err) {
          const message = failureOf(err).message;
          this.done('hubFailed', `${hubHost}: ${message}`);
          for (const id of deviceIds) {
            byDevice.get(id)?.push({
              deviceId: id,
              environment,
              hubHost,
              before: 'enabled',
              action: 'none',
              after: 'enabled',
              connectionState: `unknown: ${message}`,
            });
          }
        }
      }),
    );
    const touched = new Set(
      [...byDevice.values()]
        .flat()
        .filter((p) => p.before !== 'absent')
        .map((p) => p.hubHost),
    );
    const hubsSeen = [...new Set([...this.touchedHubs, ...touched])];
    this.touchedHubs = hubsSeen;
    if (hubsSeen.length) upsertSearchAttributes([{ key: SA.hubs, value: hubsSeen }]);
    return byDevice;
  }

  private touchedHubs: string[] = [];

  record(proofs: DeviceProof[]): void {
    const { progress } = this.status;
    for (const proof of proofs) {
      progress.devicesFound += 1;
      if (proof.revoked) progress.revoked += 1;
      else {
        progress.failed += 1;
        if (this.leftovers.length < PROOF_LIMIT) this.leftovers.push(proof);
      }
      if (this.devices.length < PROOF_LIMIT) this.devices.push(proof);
    }
    this.refresh();
  }

  finish(): RevocationResult {
    const outcome = this.status.progress.failed === 0 ? 'revoked' : 'partiallyRevoked';
    this.phase(outcome);
    const result: RevocationResult = {
      ...this.status,
      outcome,
      devices: this.status.progress.devicesFound <= PROOF_LIMIT ? this.devices : this.leftovers,
      leftovers: this.leftovers,
      completedAt: new Date().toISOString(),
    };
    upsertMemo({
      report: {
        outcome,
        phase: outcome,
        progress: this.status.progress,
        requestedBy: this.request.requestedBy,
        reason: this.request.reason,
        completedAt: result.completedAt,
      },
    });
    return result;
  }

  /** A refusal before any change: the failed phase, the memo, the named failure. */
  fail(err: unknown): ApplicationFailure {
    const { type, message } = failureOf(err);
    this.phase('failed');
    upsertMemo({
      report: { outcome: 'failed', phase: 'failed', failureType: type, message, completedAt: new Date().toISOString() },
    });
    return ApplicationFailure.create({ type, message, nonRetryable: true });
  }

  refresh(): void {
    const { status } = this;
    const target = status.target.registrationId ?? `group ${status.target.enrollmentGroupId}`;
    const { progress } = status;
    setCurrentDetails(
      [
        `**Revoke ${target}** (${this.request.hubAction} in every hub): ${this.request.reason}`,
        `Phase: **${status.phase}** since ${status.phaseChangedAt}`,
        `Devices: ${progress.revoked} revoked, ${progress.failed} not yet, of ${progress.devicesFound} found` +
          (status.target.kind === 'group' ? `; ${progress.pagesDone} page(s) done` : ''),
        status.promotionsStopped.length ? `Promotions stopped: ${status.promotionsStopped.join(', ')}` : '',
        ...status.steps.slice(-10).map((s) => `- ${s.at} ${s.step}: ${s.detail}`),
      ]
        .filter(Boolean)
        .join('\n'),
    );
  }
}

// ---- Helpers (pure) ----

function parse(input: RevocationRequestInput & Requester): RevocationRequest & Requester {
  const { requestedBy, ...rest } = input;
  const parsed = RevocationRequest.safeParse(rest);
  if (!parsed.success) {
    throw ApplicationFailure.create({
      type: RevocationErrors.invalidRequest,
      message: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '),
      nonRetryable: true,
    });
  }
  return { ...parsed.data, ...(requestedBy ? { requestedBy } : {}) };
}

/** A failure that refuses the request itself (bad certificate, unknown group): nothing was changed. */
function refusedRequest(err: unknown): boolean {
  const type = applicationFailureIn(err)?.type;
  return (
    type === RevocationErrors.deviceCertificateRequired ||
    type === RevocationErrors.deviceCertificateMismatch ||
    type === RevocationErrors.unsupportedAttestation ||
    type === 'DeviceCertificateUnverifiable'
  );
}

export function deviceProof(facts: {
  registrationId: string;
  deviceId: string;
  enrollment: DeviceProof['dps']['enrollment'];
  changed: boolean;
  refused: boolean;
  hubs: HubProof[];
  extraProblems: string[];
}): DeviceProof {
  const problems = [...facts.extraProblems];
  if (!facts.refused) problems.push('DPS would still accept a registration');
  for (const hub of facts.hubs) {
    if (hub.after === 'enabled') problems.push(`enabled in ${hub.hubHost}`);
    if (hub.connectionState === 'Connected') problems.push(`still connected to ${hub.hubHost}`);
    if (hub.connectionState?.startsWith('unknown')) problems.push(`${hub.hubHost} not checked: ${hub.connectionState}`);
  }
  return {
    registrationId: facts.registrationId,
    deviceId: facts.deviceId,
    dps: { enrollment: facts.enrollment, changed: facts.changed, registrationRefused: facts.refused },
    hubs: facts.hubs,
    revoked: problems.length === 0,
    problems,
  };
}
