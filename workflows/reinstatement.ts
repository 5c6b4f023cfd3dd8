import type { OperationContext } from '../common/requested-by';
import {
  ApplicationFailure,
  continueAsNew,
  proxyActivities,
  setCurrentDetails,
  upsertMemo,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import { OPERATIONS, revocationWorkflowId } from '../common/messages';
import {
  ReinstatementRequest,
  RevocationErrors,
  type ReinstatementPhase,
  type ReinstatementRequestInput,
  type ReinstatementResult,
  type Requester,
} from '../common/revocation';
import { SA } from '../common/search-attributes';
import { PERMANENT_FAILURES } from './policies';
import { failureOf } from './saga';

/**
 * Reinstatement undoes exactly what one revocation did, found by the marks it left: the identities it disabled (its
 * status reason) are enabled again, then the enrollment it disabled is enabled again and the individual enrollment it
 * created to block a group member is deleted — in that order, the reverse of the revocation's, so that a device DPS
 * accepts again finds its identity enabled rather than re-registering against a disabled one. Identities and enrollments disabled for any other reason — by an
 * operator, or by another revocation — are left as they are. A deleted identity comes back through DPS when the
 * device registers again.
 */

const NON_RETRYABLE = [...PERMANENT_FAILURES, ...Object.values(RevocationErrors)];

const reinstatementCall = {
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

const azure = proxyActivities<Activities>({ ...reinstatementCall });
const hubs = proxyActivities<Activities>({ ...reinstatementCall, startToCloseTimeout: '15 minutes' });

const PAGE_SIZE = 100;
const PAGES_PER_RUN = 20;

type DeviceOutcome = ReinstatementResult['devices'][number];

export async function reinstateDevice(
  input: ReinstatementRequestInput,
  context: OperationContext = {},
): Promise<ReinstatementResult> {
  const request = parse(input, context);
  const registrationId = request.registrationId!;
  const run = new Run(request);
  upsertSearchAttributes([{ key: SA.registrationId, value: registrationId }]);
  const environments = await azure.listEnvironments();
  const [device] = await reinstateDevices({
    items: [{ registrationId, enrollmentGroupId: request.enrollmentGroupId }],
    environments,
    onPhase: (phase) => run.phase(phase),
  });
  upsertSearchAttributes([{ key: SA.deviceId, value: device.deviceId }]);
  run.record([device]);
  return run.finish();
}

/**
 * Reinstates a batch of devices, the same way for one device and for a fleet: in every hub the identities their own
 * revocations disabled are enabled again, then DPS accepts them again (their enrollment enabled, or the blocker
 * deleted); whatever still keeps a device out is said, not hidden.
 */
export async function reinstateDevices(input: {
  items: Array<{ registrationId: string; enrollmentGroupId?: string }>;
  environments: Record<string, string>;
  onPhase?: (phase: ReinstatementPhase) => void;
}): Promise<DeviceOutcome[]> {
  const { onPhase = () => undefined } = input;
  const ids = input.items.map((i) => i.registrationId);
  const revokedBy = (registrationId: string) => revocationWorkflowId({ registrationId });
  const deviceIds = await azure.dpsDevicesOf({ registrationIds: ids });
  const devices: DeviceOutcome[] = input.items.map((i) => ({
    registrationId: i.registrationId,
    deviceId: deviceIds[i.registrationId] ?? i.registrationId,
    dps: 'notRevokedHere',
    hubs: [],
    problems: [],
  }));

  // 1. Every hub: the identities those revocations disabled enabled again.
  onPhase('reinstatingInHubs');
  await reinstateInHubs(input.environments, devices, ids.map(revokedBy));

  // 2. DPS: the enrollments they disabled enabled again, or the blockers they created deleted.
  onPhase('reinstatingInDps');
  const dps = await azure.dpsReinstateDevices({
    items: input.items.map((i) => ({ ...i, revokedBy: revokedBy(i.registrationId) })),
  });
  dps.forEach((r, n) => {
    if (r.dps) devices[n].dps = r.dps as DeviceOutcome['dps'];
    if (r.error) devices[n].problems.push(`DPS: ${r.error.message}`);
  });

  // 3. Whatever still keeps a device out is said, not hidden.
  const refusals = await azure.dpsRegistrationsRefused({ items: input.items });
  refusals.forEach((refusal, n) => {
    if (!refusal.refused) return;
    devices[n].problems.push(
      refusal.individual === 'disabled'
        ? 'its individual enrollment is disabled, not by this revocation'
        : refusal.group === 'disabled'
          ? 'its enrollment group is disabled (reinstate the group)'
          : 'DPS has no enrollment for it',
    );
  });
  return devices;
}

interface GroupCarry {
  devices: DeviceOutcome[];
  stage: 'members' | 'registrations';
  continuation?: string;
  counts: { devices: number; problems: number };
}

export async function reinstateEnrollmentGroup(
  input: ReinstatementRequestInput,
  carry?: GroupCarry,
  context: OperationContext = {},
): Promise<ReinstatementResult> {
  const request = parse(input, context);
  const groupId = request.enrollmentGroupId!;
  const revokedBy = revocationWorkflowId({ enrollmentGroupId: groupId });
  const run = new Run(request, carry);
  upsertSearchAttributes([{ key: SA.enrollmentGroupId, value: groupId }]);
  const environments = await azure.listEnvironments();
  let stage = carry?.stage ?? 'members';
  let continuation = carry?.continuation;

  for (let pages = 0; pages < PAGES_PER_RUN; pages += 1) {
    run.phase('reinstatingInHubs');
    const page =
      stage === 'members'
        ? await azure.dpsGroupMemberEnrollments({
            enrollmentGroupId: groupId,
            continuation,
            pageSize: PAGE_SIZE,
            revokedBy,
          })
        : await azure.dpsGroupRegistrations({ enrollmentGroupId: groupId, continuation, pageSize: PAGE_SIZE });
    if (page.registrations.length) {
      let enabled: string[] = [];
      if (stage === 'members') {
        enabled = (
          await azure.dpsEnableIndividuals({
            registrationIds: page.registrations.map((r) => r.registrationId),
            revokedBy,
          })
        ).enabled;
      }
      const devices: DeviceOutcome[] = page.registrations.map((r) => ({
        registrationId: r.registrationId,
        deviceId: r.deviceId,
        dps: enabled.includes(r.registrationId) ? 'enabled' : 'groupEnabled',
        hubs: [],
        problems: [],
      }));
      await reinstateInHubs(environments, devices, [revokedBy]);
      run.record(devices);
    }
    if (page.continuation) continuation = page.continuation;
    else if (stage === 'members') {
      stage = 'registrations';
      continuation = undefined;
    } else {
      // Last, DPS accepts the group's devices again: their identities are enabled by now.
      run.phase('reinstatingInDps');
      try {
        await azure.dpsReinstateGroup({ enrollmentGroupId: groupId, revokedBy });
      } catch (err) {
        throw run.fail(err);
      }
      return run.finish();
    }
  }
  await continueAsNew<typeof reinstateEnrollmentGroup>(
    input,
    { devices: run.devices, stage, continuation, counts: run.counts },
    context,
  );
  throw new Error('unreachable: continueAsNew does not return');
}

async function reinstateInHubs(environments: Record<string, string>, devices: DeviceOutcome[], revokedBy: string[]) {
  const byId = new Map(devices.map((d) => [d.deviceId, d]));
  await Promise.all(
    Object.entries(environments).map(async ([environment, hubHost]) => {
      try {
        const results = await hubs.hubReinstateIdentities({ environment, deviceIds: [...byId.keys()], revokedBy });
        for (const r of results) {
          const device = byId.get(r.deviceId)!;
          device.hubs.push({ environment, identity: r.identity });
          if (r.identity === 'leftDisabled') device.problems.push(`disabled in ${hubHost} for another reason: left so`);
        }
      } catch (err) {
        for (const device of devices) device.problems.push(`${hubHost}: ${failureOf(err).message}`);
      }
    }),
  );
}

class Run {
  devices: DeviceOutcome[];
  counts: { devices: number; problems: number };
  private current: ReinstatementPhase = 'validating';

  constructor(
    readonly request: ReinstatementRequest & Requester,
    carry?: GroupCarry,
  ) {
    this.devices = carry?.devices ?? [];
    this.counts = carry?.counts ?? { devices: 0, problems: 0 };
    upsertSearchAttributes([{ key: SA.operation, value: OPERATIONS.reinstate }]);
  }

  phase(phase: ReinstatementPhase): void {
    if (this.current === phase) return;
    this.current = phase;
    upsertSearchAttributes([{ key: SA.phase, value: phase }]);
    this.refresh();
  }

  record(devices: DeviceOutcome[]): void {
    for (const d of devices) {
      this.counts.devices += 1;
      if (d.problems.length) this.counts.problems += 1;
      if (this.devices.length < 1_000 || d.problems.length) this.devices.push(d);
    }
    this.refresh();
  }

  finish(): ReinstatementResult {
    const outcome = this.counts.problems === 0 ? 'reinstated' : 'partiallyReinstated';
    this.phase(outcome);
    const completedAt = new Date().toISOString();
    upsertMemo({
      report: { outcome, phase: outcome, counts: this.counts, requestedBy: this.request.requestedBy, completedAt },
    });
    return {
      workflowId: workflowInfo().workflowId,
      request: this.request,
      phase: outcome,
      outcome,
      devices: this.devices,
      completedAt,
    };
  }

  fail(err: unknown): ApplicationFailure {
    const { type, message } = failureOf(err);
    this.phase('failed');
    upsertMemo({ report: { outcome: 'failed', phase: 'failed', failureType: type, message } });
    return ApplicationFailure.create({ type, message, nonRetryable: true });
  }

  private refresh(): void {
    const target = this.request.registrationId ?? `group ${this.request.enrollmentGroupId}`;
    setCurrentDetails(
      `**Reinstate ${target}**: ${this.request.reason}\nPhase: **${this.current}**\n` +
        `Devices: ${this.counts.devices} handled, ${this.counts.problems} with something left`,
    );
  }
}

function parse(input: ReinstatementRequestInput, context: OperationContext): ReinstatementRequest & Requester {
  const { requestedBy } = context;
  const parsed = ReinstatementRequest.safeParse(input);
  if (!parsed.success) {
    throw ApplicationFailure.create({
      type: RevocationErrors.invalidRequest,
      message: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '),
      nonRetryable: true,
    });
  }
  return { ...parsed.data, ...(requestedBy ? { requestedBy } : {}) };
}
