import { requestedByKeyword, type OperationContext } from '../common/requested-by';
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
import { failureOf } from './saga';

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
export async function revokeDevice(
  input: RevocationRequestInput,
  context: OperationContext = {},
): Promise<RevocationResult> {
  const request = parse(input, context);
  const run = new Run(request, { kind: 'device', registrationId: request.registrationId });
  const registrationId = request.registrationId!;

  // 1. Validate: the hubs to look in.
  run.phase('validating');
  const environments = await azure.listEnvironments();
  run.status.hubs = Object.values(environments);
  upsertSearchAttributes([{ key: SA.registrationId, value: registrationId }]);

  // 2.–5. Stop its promotion, make DPS refuse it, revoke it in every hub, prove it: as for every device of a fleet.
  const batch = await revokeDevices({
    items: [
      { registrationId, enrollmentGroupId: request.enrollmentGroupId, deviceCertificate: request.deviceCertificate },
    ],
    hubAction: request.hubAction,
    reason: request.reason,
    requestedBy: request.requestedBy && requestedByKeyword(request.requestedBy),
    disconnectTimeoutSeconds: request.disconnectTimeoutSeconds,
    environments,
    revocationOf: () => run.status.workflowId,
    stoppedBy: run.status.workflowId,
    onPhase: (phase) => run.phase(phase),
    onStep: (step, detail) => run.done(step, detail),
  });
  const refused = batch.refusedRequests.get(registrationId);
  // A refusal of the request itself (no certificate for an X.509 member…) happened before any change.
  if (refused) throw run.fail(ApplicationFailure.create({ type: refused.type, message: refused.message }));
  run.status.promotionsStopped.push(...batch.promotionsStopped);
  const proof = batch.proofs[0];
  upsertSearchAttributes([{ key: SA.deviceId, value: proof.deviceId }]);
  run.noteHubs(proof.hubs);
  run.record([proof]);
  return run.finish();
}

export interface RevokeBatchInput {
  items: Array<{ registrationId: string; enrollmentGroupId?: string; deviceCertificate?: string }>;
  hubAction: 'disable' | 'delete';
  reason: string;
  requestedBy?: string;
  disconnectTimeoutSeconds: number;
  environments: Record<string, string>;
  /** The revocation each device's marks name (what its reinstatement looks for). */
  revocationOf: (registrationId: string) => string;
  /** The workflow stopping promotions (named in their results). */
  stoppedBy: string;
  onPhase?: (phase: RevocationPhase) => void;
  onStep?: (step: string, detail: string) => void;
}

/**
 * Revokes a batch of devices, the same way for one device and for a fleet: their running promotions stopped
 * without restoring access; DPS made to refuse each (bulk writes); every configured hub's identities disabled or
 * deleted (bulk writes), connections closed; then proof per device and per hub. A device whose request DPS refuses
 * (no certificate for an X.509 member…) is left unchanged and reported in `refusedRequests`.
 */
export async function revokeDevices(input: RevokeBatchInput): Promise<{
  proofs: DeviceProof[];
  refusedRequests: Map<string, { type: string; message: string }>;
  promotionsStopped: string[];
}> {
  const { onPhase = () => undefined, onStep = () => undefined } = input;
  const ids = input.items.map((i) => i.registrationId);

  // Revocation wins: a promotion of a device in flight stops here, without restoring access.
  onPhase('stoppingPromotion');
  const stopped = await azure.stopPromotions({
    registrationIds: ids,
    revocationWorkflowId: input.stoppedBy,
    reason: input.reason,
    requestedBy: input.requestedBy,
    waitMs: PROMOTION_STOP_WAIT_MS,
  });
  if (stopped.stopped.length) onStep('promotionsStopped', stopped.stopped.join(', '));
  if (stopped.stillRunning.length) {
    onStep('promotionsStillRunning', `${stopped.stillRunning.join(', ')} did not close in time; revoking anyway`);
  }

  // DPS refuses each device from now on.
  onPhase('revokingInDps');
  const at = new Date().toISOString();
  const dps = await azure.dpsRevokeDevices({
    items: input.items.map((item) => ({ ...item, mark: { workflowId: input.revocationOf(item.registrationId), at } })),
  });
  const refusedRequests = new Map<string, { type: string; message: string }>();
  const dpsProblems = new Map<string, string>();
  const deviceIdOf = new Map<string, string>();
  const revocationOf = new Map<string, DpsRevocation>();
  for (const r of dps) {
    if (r.revocation) {
      revocationOf.set(r.registrationId, r.revocation);
      deviceIdOf.set(r.registrationId, r.revocation.deviceId);
      onStep('dps', `${r.registrationId}: ${r.revocation.enrollment}${r.revocation.changed ? '' : ' (already)'}`);
    } else if (r.error && REFUSED_REQUESTS.has(r.error.type)) {
      refusedRequests.set(r.registrationId, r.error);
    } else if (r.error) {
      // Azure kept refusing: the hubs are revoked all the same, and the proof says what is left.
      dpsProblems.set(r.registrationId, `DPS: ${r.error.message}`);
      onStep('dps', `${r.registrationId}: ${r.error.message}`);
    }
  }
  const toRevoke = input.items.filter((i) => !refusedRequests.has(i.registrationId));
  if (toRevoke.length === 0) return { proofs: [], refusedRequests, promotionsStopped: stopped.stopped };

  // Every configured hub: the identities disabled or deleted, their live connections closed.
  onPhase('revokingInHubs');
  const deviceIds = toRevoke.map((i) => deviceIdOf.get(i.registrationId) ?? i.registrationId);
  const marks = Object.fromEntries(toRevoke.map((i, n) => [deviceIds[n], input.revocationOf(i.registrationId)]));
  const hubProofs = await revokeInHubs(input, deviceIds, marks, onStep);

  // Proof: DPS would refuse a fresh registration; no hub accepts the identity.
  onPhase('proving');
  const refusals = await azure.dpsRegistrationsRefused({
    items: toRevoke.map((i) => ({
      registrationId: i.registrationId,
      enrollmentGroupId: revocationOf.get(i.registrationId)?.enrollmentGroupId ?? i.enrollmentGroupId,
    })),
  });
  const proofs = toRevoke.map((item, n) => {
    const revoked = revocationOf.get(item.registrationId);
    const refusal = refusals[n];
    return deviceProof({
      registrationId: item.registrationId,
      deviceId: deviceIds[n],
      enrollment: revoked?.enrollment ?? (refusal.individual === 'disabled' ? 'individualDisabled' : 'noEnrollment'),
      changed: revoked?.changed ?? false,
      refused: refusal.refused,
      hubs: hubProofs.get(deviceIds[n]) ?? [],
      extraProblems: dpsProblems.has(item.registrationId) ? [dpsProblems.get(item.registrationId)!] : [],
    });
  });
  return { proofs, refusedRequests, promotionsStopped: stopped.stopped };
}

/** Every hub at once; a hub whose calls keep failing leaves its devices with that problem, the others go on. */
async function revokeInHubs(
  input: Pick<RevokeBatchInput, 'environments' | 'hubAction' | 'disconnectTimeoutSeconds' | 'stoppedBy'>,
  deviceIds: string[],
  revocationWorkflowIds: Record<string, string>,
  onStep: (step: string, detail: string) => void,
): Promise<Map<string, HubProof[]>> {
  const byDevice = new Map<string, HubProof[]>(deviceIds.map((id) => [id, []]));
  await Promise.all(
    Object.entries(input.environments).map(async ([environment, hubHost]) => {
      try {
        const proofs = await hubs.hubRevokeIdentities({
          environment,
          deviceIds,
          action: input.hubAction,
          revocationWorkflowId: input.stoppedBy,
          revocationWorkflowIds,
          disconnectTimeoutMs: input.disconnectTimeoutSeconds * 1000,
        });
        for (const p of proofs) byDevice.get(p.deviceId)?.push(p);
      } catch (err) {
        const message = failureOf(err).message;
        onStep('hubFailed', `${hubHost}: ${message}`);
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
  return byDevice;
}

/** Failures that refuse the request itself (bad certificate, unknown attestation): nothing was changed. */
const REFUSED_REQUESTS = new Set<string>([
  RevocationErrors.deviceCertificateRequired,
  RevocationErrors.deviceCertificateMismatch,
  RevocationErrors.unsupportedAttestation,
  'DeviceCertificateUnverifiable',
]);

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
  input: RevocationRequestInput,
  carry?: GroupCarry,
  context: OperationContext = {},
): Promise<RevocationResult> {
  const request = parse(input, context);
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
  await continueAsNew<typeof revokeEnrollmentGroup>(
    input,
    {
      status: run.status,
      devices: run.devices,
      leftovers: run.leftovers,
      cursor,
      membersDisabled: [...membersDisabled],
    },
    context,
  );
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
  const deviceIds = devices.map((d) => d.deviceId);
  const proofs = await revokeInHubs(
    {
      environments,
      hubAction: run.request.hubAction,
      disconnectTimeoutSeconds: run.request.disconnectTimeoutSeconds,
      stoppedBy: run.status.workflowId,
    },
    deviceIds,
    Object.fromEntries(deviceIds.map((id) => [id, run.status.workflowId])),
    (step, detail) => run.done(step, detail),
  );
  run.noteHubs([...proofs.values()].flat());
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
      requestedBy: this.request.requestedBy && requestedByKeyword(this.request.requestedBy),
      waitMs: PROMOTION_STOP_WAIT_MS,
    });
    this.status.promotionsStopped.push(...stopped.stopped);
    if (stopped.stopped.length) this.done('promotionsStopped', stopped.stopped.join(', '));
    if (stopped.stillRunning.length) {
      this.done('promotionsStillRunning', `${stopped.stillRunning.join(', ')} did not close in time; revoking anyway`);
    }
  }

  /** The hubs devices were found in, as the IotHubs search attribute ("every revocation of hub X"). */
  noteHubs(proofs: HubProof[]): void {
    const found = proofs.filter((p) => p.before !== 'absent').map((p) => p.hubHost);
    const hubsSeen = [...new Set([...this.touchedHubs, ...found])];
    if (hubsSeen.length === this.touchedHubs.length) return;
    this.touchedHubs = hubsSeen;
    upsertSearchAttributes([{ key: SA.hubs, value: hubsSeen }]);
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

function parse(input: RevocationRequestInput, context: OperationContext): RevocationRequest & Requester {
  const { requestedBy } = context;
  const parsed = RevocationRequest.safeParse(input);
  if (!parsed.success) {
    throw ApplicationFailure.create({
      type: RevocationErrors.invalidRequest,
      message: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '),
      nonRetryable: true,
    });
  }
  return { ...parsed.data, ...(requestedBy ? { requestedBy } : {}) };
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
