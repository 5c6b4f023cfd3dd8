import {
  ApplicationFailure,
  CancellationScope,
  condition,
  isCancellation,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { EnrollmentRouting, EnrollmentView } from '../activities/dps';
import type { DeviceSnapshot } from '../activities/registry';
import { deviceConnectedSignal, promotionStatusQuery, OPERATIONS } from '../common/messages';
import {
  durationMs,
  PromotionErrors,
  PromotionRequest,
  type DeviceConnectedEvent,
  type PromotionPhase,
  type PromotionRequestInput,
  type PromotionResult,
  type PromotionStatus,
} from '../common/promotion';
import { SA } from '../common/search-attributes';

// ---- Timeouts and retry policies, reviewed in one place ----

/** Permanent failures: retrying cannot help, the workflow decides what to do. */
const NON_RETRYABLE = [
  'AzureBadRequest',
  'AzureUnauthorized',
  'AzureForbidden',
  'AzureNotFound',
  'AzureConflict',
  'AzurePreconditionFailed',
  'UnknownEnvironment',
  'DpsNotConfigured',
  ...Object.values(PromotionErrors),
];

/** One Azure call: throttling (429), 5xx and timeouts are retried with back-off for up to ~10 minutes. */
const azureCallProfile = {
  startToCloseTimeout: '30 seconds',
  retry: {
    initialInterval: '1 second',
    backoffCoefficient: 2,
    maximumInterval: '1 minute',
    maximumAttempts: 15,
    nonRetryableErrorTypes: NON_RETRYABLE,
  },
} as const;

/** Compensation must get through: transient faults are retried without an attempt limit, for up to 2 hours. */
const compensationProfile = {
  startToCloseTimeout: '30 seconds',
  scheduleToCloseTimeout: '2 hours',
  retry: {
    initialInterval: '1 second',
    backoffCoefficient: 2,
    maximumInterval: '2 minutes',
    nonRetryableErrorTypes: NON_RETRYABLE,
  },
} as const;

const azure = proxyActivities<Activities>(azureCallProfile);
const compensation = proxyActivities<Activities>(compensationProfile);

/**
 * The fallback poll starts at the request's interval and backs off to 5 minutes, or to 1/300 of the deadline for
 * long deadlines: a wait then costs at most a few hundred polls, far below Temporal's history limits, without
 * continue-as-new.
 */
const MAX_POLL_INTERVAL_MS = 5 * 60_000;
const MAX_POLLS_PER_DEADLINE = 300;

// ---- The workflow ----

/**
 * Promotes one device from the source environment's hub to the target's through DPS (late binding), and completes
 * only once the device has connected to the target hub.
 */
export async function promoteDeviceV1(input: PromotionRequestInput): Promise<PromotionResult> {
  const request = parseRequest(input);
  const status = newStatus(request);
  const events: DeviceConnectedEvent[] = [];
  setHandler(promotionStatusQuery, () => status);
  setHandler(deviceConnectedSignal, (event) => {
    // Event Grid delivers at least once: a (hub, sequenceNumber) seen before is a duplicate.
    if (events.some((e) => e.hubHostName === event.hubHostName && e.sequenceNumber === event.sequenceNumber)) return;
    status.lastEvent = { ...event, receivedAt: new Date().toISOString() };
    events.push(event);
    if (events.length > 100) events.shift();
  });
  const step = stepper(status);

  // 1. Validate: nothing changes before every check has passed.
  step.phase('validating');
  const hubs = await azure.resolveEnvironments([request.sourceEnvironment, request.targetEnvironment]);
  const sourceHub = hubs[request.sourceEnvironment];
  const targetHub = hubs[request.targetEnvironment];
  status.sourceHub = sourceHub;
  status.targetHub = targetHub;
  const enrollment = await azure.dpsLookupEnrollment({
    registrationId: request.registrationId,
    enrollmentGroupId: request.enrollmentGroupId,
  });
  status.enrollmentKind = enrollment.kind;
  status.attestation = enrollment.attestation;
  const registration = await azure.dpsGetRegistrationState(request.registrationId);
  const deviceId = registration?.deviceId ?? enrollment.deviceId ?? request.registrationId;
  status.deviceId = deviceId;
  // Kept current here too, so a promotion started without the API is just as searchable.
  upsertSearchAttributes([
    { key: SA.deviceId, value: deviceId },
    { key: SA.registrationId, value: request.registrationId },
    { key: SA.sourceHub, value: sourceHub },
    { key: SA.targetHub, value: targetHub },
  ]);
  validate(request, enrollment, registration?.assignedHub, sourceHub);
  step.done('validated', `${enrollment.kind} ${enrollment.attestation} enrollment, assigned to ${sourceHub}`);

  // 2. Snapshot what will change (routing, identity, twin; never keys).
  step.phase('snapshotting');
  const routing: EnrollmentRouting = {
    iotHubs: enrollment.iotHubs,
    iotHubHostName: enrollment.iotHubHostName,
    allocationPolicy: enrollment.allocationPolicy,
    reprovisionPolicy: enrollment.reprovisionPolicy,
  };
  const sourceDevice = await azure.hubSnapshotDevice({ environment: request.sourceEnvironment, deviceId });
  if (!sourceDevice) {
    throw failure(PromotionErrors.notAssignedToSource, `device ${deviceId} is not in the source hub ${sourceHub}`);
  }
  const targetHadDevice = !!(await azure.hubGetDevice({ environment: request.targetEnvironment, deviceId }));
  step.done('snapshot', `device ${sourceDevice.device.authType}/${sourceDevice.device.status}; twin saved`);

  const undo = { request, enrollment, routing, sourceDevice, targetHadDevice, deviceId };
  let changing = false;
  try {
    // 3. Re-point the enrollment to the target hub.
    step.phase('repointing');
    changing = true;
    const repointed = await azure.dpsRepointEnrollment({
      workflowId: workflowInfo().workflowId,
      enrollment,
      deviceId,
      targetHubHost: targetHub,
      reprovisionPolicy: request.reprovisionPolicy,
      deviceCertificate: request.deviceCertificate,
    });
    step.done(
      'repointed',
      repointed.createdIndividual
        ? `individual enrollment created for this group member, pointing at ${targetHub}`
        : `enrollment now points at ${targetHub}`,
    );

    // 4. Remove the device from the source hub: the hub rejects it, and the device re-runs DPS registration.
    step.phase('removingFromSource');
    const removed = await azure.hubRemoveDevice({
      environment: request.sourceEnvironment,
      deviceId,
      mode: request.sourceRemoval,
    });
    step.done('removedFromSource', `${removed.result} in ${sourceHub}`);

    // 5. Wait for the device to connect to the target hub (Event Grid signal, polling as fallback).
    step.phase('awaitingReconnection');
    const connectedVia = await awaitConnection(request, deviceId, targetHub, events);
    if (!connectedVia) {
      step.done('deadline', `no connection to ${targetHub} within ${request.deadline}`);
      return await compensate(status, step, undo, 'deadline');
    }
    status.connectedVia = connectedVia;
    step.done('connected', `connected to ${targetHub} (seen by ${connectedVia})`);

    // 6. Verify the end state.
    step.phase('verifying');
    const finalRegistration = await verify(request, deviceId, targetHub, enrollment);
    step.done('verified', `registration ${finalRegistration.substatus ?? ''} on ${targetHub}`);

    // 7. Report.
    step.phase('completed');
    return { ...status, outcome: 'promoted', registration: finalRegistration, completedAt: new Date().toISOString() };
  } catch (err) {
    if (isCancellation(err)) {
      step.done('cancelled', 'promotion cancelled');
      return await CancellationScope.nonCancellable(() => compensate(status, step, undo, 'cancelled'));
    }
    if (err instanceof ApplicationFailure && err.type === PromotionErrors.verificationFailed) {
      status.flagged = err.message;
      step.phase('parked');
      throw err;
    }
    step.done('failed', String((err as Error).message ?? err));
    if (!changing || refusedBeforeChange(err, status.phase)) {
      step.phase('failed');
      throw err;
    }
    // Changes were (maybe) made: put them back where the request says so, then report the failure.
    await CancellationScope.nonCancellable(() => compensate(status, step, undo, undefined));
    step.phase('failed');
    throw err;
  }
}

// ---- Steps ----

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

function validate(
  request: PromotionRequest,
  enrollment: EnrollmentView,
  assignedHub: string | undefined,
  sourceHub: string,
) {
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

async function awaitConnection(
  request: PromotionRequest,
  deviceId: string,
  targetHub: string,
  events: DeviceConnectedEvent[],
): Promise<'eventGrid' | 'polling' | undefined> {
  const deadlineMs = toMs(request.deadline);
  const deadlineAt = Date.now() + deadlineMs;
  const maxPollMs = Math.max(MAX_POLL_INTERVAL_MS, Math.ceil(deadlineMs / MAX_POLLS_PER_DEADLINE));
  const fromTarget = () => events.some((e) => e.hubHostName === targetHub && e.deviceId === deviceId);
  let pollMs = toMs(request.pollInterval);
  for (;;) {
    const remaining = deadlineAt - Date.now();
    if (remaining <= 0) return undefined;
    if (await condition(fromTarget, Math.min(pollMs, remaining))) return 'eventGrid';
    const [connection, registration] = await Promise.all([
      azure.hubCheckConnection({ environment: request.targetEnvironment, deviceId }),
      azure.dpsGetRegistrationState(request.registrationId),
    ]);
    if (connection.present && connection.connectionState === 'Connected' && registration?.assignedHub === targetHub) {
      return 'polling';
    }
    pollMs = Math.min(maxPollMs, Math.round(pollMs * 1.5));
  }
}

async function verify(request: PromotionRequest, deviceId: string, targetHub: string, enrollment: EnrollmentView) {
  const [registration, device] = await Promise.all([
    azure.dpsGetRegistrationState(request.registrationId),
    azure.hubGetDevice({ environment: request.targetEnvironment, deviceId }),
  ]);
  const expectedAuth = enrollment.attestation === 'symmetricKey' ? 'sas' : 'selfSigned';
  const problems = [
    registration?.assignedHub !== targetHub && `DPS assigns the device to ${registration?.assignedHub ?? 'no hub'}`,
    registration?.status !== 'assigned' && `registration status is ${registration?.status}`,
    !device && `device is missing from ${targetHub}`,
    device && device.status !== 'enabled' && `device is ${device.status} in ${targetHub}`,
    device &&
      device.authType !== expectedAuth &&
      `device authenticates with ${device.authType}, expected ${expectedAuth}`,
  ].filter(Boolean);
  if (problems.length) throw failure(PromotionErrors.verificationFailed, problems.join('; '));
  return { assignedHub: registration?.assignedHub, status: registration?.status, substatus: registration?.substatus };
}

interface Undo {
  request: PromotionRequest;
  enrollment: EnrollmentView;
  routing: EnrollmentRouting;
  sourceDevice: DeviceSnapshot;
  targetHadDevice: boolean;
  deviceId: string;
}

/** Deadline, cancel or failure after changes: roll back to the snapshot, or park (leave as is, flagged). */
async function compensate(
  status: PromotionStatus,
  step: ReturnType<typeof stepper>,
  undo: Undo,
  reason: 'deadline' | 'cancelled' | undefined,
): Promise<PromotionResult> {
  const { request } = undo;
  if (request.onTimeout === 'park') {
    status.flagged = `parked after ${reason ?? 'failure'}: enrollment points at ${status.targetHub}; device removed from ${status.sourceHub}`;
    step.phase('parked');
    return { ...status, outcome: 'parked', reason, completedAt: new Date().toISOString() };
  }
  step.phase('compensating');
  const enrollment = await compensation.dpsRestoreEnrollment({ enrollment: undo.enrollment, routing: undo.routing });
  step.done('enrollmentRestored', `enrollment: ${enrollment.restored}`);
  const device = await compensation.hubRestoreDevice({
    environment: request.sourceEnvironment,
    snapshot: undo.sourceDevice,
    enrollment: undo.enrollment,
  });
  step.done('sourceDeviceRestored', `source device: ${device.result}`);
  if (!undo.targetHadDevice) {
    const removed = await compensation.hubRemoveDevice({
      environment: request.targetEnvironment,
      deviceId: undo.deviceId,
      mode: 'delete',
    });
    step.done('targetCleaned', `target device: ${removed.result}`);
  }
  step.phase('rolledBack');
  return { ...status, outcome: 'rolledBack', reason, completedAt: new Date().toISOString() };
}

// ---- Helpers ----

function newStatus(request: PromotionRequest): PromotionStatus {
  const now = new Date().toISOString();
  return {
    workflowId: workflowInfo().workflowId,
    request,
    phase: 'validating',
    startedAt: now,
    phaseChangedAt: now,
    steps: [],
  };
}

/** Keeps the status query, the search attributes and the UI's current details in step with the phases. */
function stepper(status: PromotionStatus) {
  return {
    phase(phase: PromotionPhase) {
      status.phase = phase;
      status.phaseChangedAt = new Date().toISOString();
      upsertSearchAttributes([
        { key: SA.phase, value: phase },
        { key: SA.operation, value: OPERATIONS.promote },
      ]);
      setCurrentDetails(details(status));
    },
    done(name: string, detail: string) {
      status.steps.push({ step: name, at: new Date().toISOString(), detail });
      setCurrentDetails(details(status));
    },
  };
}

function details(status: PromotionStatus): string {
  const lines = [
    `**Promote ${status.request.registrationId}**: ${status.request.sourceEnvironment} → ${status.request.targetEnvironment}`,
    `Phase: **${status.phase}** since ${status.phaseChangedAt}`,
    ...status.steps.map((s) => `- ${s.at} ${s.step}: ${s.detail}`),
  ];
  if (status.flagged) lines.push(`⚠ ${status.flagged}`);
  return lines.join('\n');
}

/** A non-retryable refusal of the re-point call itself: DPS changed nothing, so there is nothing to undo. */
function refusedBeforeChange(err: unknown, phase: PromotionPhase): boolean {
  const cause = (err as { cause?: unknown }).cause;
  return phase === 'repointing' && cause instanceof ApplicationFailure && cause.nonRetryable === true;
}

function failure(type: string, message: string): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true });
}

function toMs(duration: string): number {
  const ms = durationMs(duration);
  if (!Number.isFinite(ms)) throw failure(PromotionErrors.invalidRequest, `bad duration ${duration}`);
  return ms;
}
