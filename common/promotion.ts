import { z } from 'zod';
import type { OperatorAction, RequestedBy } from './requested-by';

/**
 * The promotion contract shared by the API (validation, OpenAPI) and the workflow (which validates again, so a
 * start that bypasses the API gets the same answer). Only names and public data: never keys or connection strings.
 */

const duration = z
  .string()
  .regex(/^\d+(ms|s|m|h|d)$/, 'a duration such as 90s, 15m, 24h')
  .describe('duration: <number><ms|s|m|h|d>');

const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Milliseconds of a duration such as 90s or 24h (validated by the schema's regex first). */
export function durationMs(duration: string): number {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(duration);
  return m ? Number(m[1]) * UNIT_MS[m[2]] : NaN;
}

// Patterns without flags: zod-to-openapi writes a regex's flags into the OpenAPI pattern, where they break it.
export const environmentName = z
  .string()
  .regex(/^[A-Za-z0-9-]{1,63}$/, 'an environment name such as test or production');

/** DPS registration and enrollment group ids: alphanumerics and . _ : -, but not `.` or `..` (path segments). */
export const dpsId = /^(?!\.\.?$)[A-Za-z0-9._:-]{1,128}$/;

export const protocols = ['mqtt', 'mqtt-ws', 'amqp', 'amqp-ws', 'https'] as const;

/** The request's fields (what a fleet operation's per-device parameters are made of); PromotionRequest adds checks. */
export const PromotionFields = z
  .object({
    /** DPS registration id of the device (its individual enrollment, or its registration within a group). */
    registrationId: z.string().regex(dpsId, 'a DPS registration id (alphanumerics, . _ : -; not . or ..)'),
    /** The enrollment group the device registers through, when it has no individual enrollment. */
    enrollmentGroupId: z.string().regex(dpsId, 'an enrollment group id').optional(),
    sourceEnvironment: environmentName.default('test'),
    targetEnvironment: environmentName.default('production'),
    /** What DPS does with the device's twin on re-provisioning: carry it over, or reset to the initial twin. */
    reprovisionPolicy: z.enum(['migrate', 'reset']).default('migrate'),
    /** How the device leaves the source hub: deleted, or kept but disabled. */
    sourceRemoval: z.enum(['delete', 'disable']).default('delete'),
    /** The protocol the device connects with: X.509 CA devices cannot use the WebSocket variants. */
    protocol: z.enum(protocols).default('mqtt'),
    /** How long to wait for the device to connect to the target hub (at most 30 days). */
    deadline: duration
      .default('24h')
      .refine((d) => durationMs(d) <= 30 * 86_400_000 && durationMs(d) >= 1_000, 'between 1s and 30d'),
    /** Fallback polling of DPS and the target registry while waiting for the Event Grid signal. */
    pollInterval: duration.default('30s').refine((d) => durationMs(d) >= 1_000, 'at least 1s'),
    /** What to do when the deadline passes or the promotion is cancelled. */
    onTimeout: z.enum(['rollback', 'park']).default('rollback'),
    /**
     * The device's (public) X.509 certificate, PEM. Needed only to move one device out of an X.509 enrollment
     * group: Azure's way is an individual enrollment for it, and that takes the device certificate.
     */
    deviceCertificate: z
      .string()
      .regex(/-----BEGIN CERTIFICATE-----/, 'a PEM certificate')
      .max(16_384)
      .optional(),
  })
  .strict();

export const PromotionRequest = PromotionFields.refine((r) => r.sourceEnvironment !== r.targetEnvironment, {
  message: 'source and target environments must differ',
  path: ['targetEnvironment'],
});

export type PromotionRequestInput = z.input<typeof PromotionRequest>;
export type PromotionRequest = z.output<typeof PromotionRequest>;

export const PROMOTION_PHASES = [
  'validating',
  'snapshotting',
  'repointing',
  'removingFromSource',
  'awaitingReconnection',
  'verifying',
  'compensating',
  /** Some undo steps failed: the run waits for an operator's `retryCompensation`, then closes with what is left. */
  'compensationFailed',
  // Terminal phases: every run ends in one of these (or in compensationFailed).
  'completed',
  'rolledBack',
  'parked',
  'cancelled',
  'failed',
  /** A revocation of the device stopped it; nothing was put back (the revocation takes over). */
  'stoppedForRevocation',
] as const;
export type PromotionPhase = (typeof PROMOTION_PHASES)[number];

/** What the Event Grid webhook (or a test) tells a waiting promotion. */
export interface DeviceConnectedEvent {
  hubHostName: string;
  deviceId: string;
  /** Event Grid's deviceConnectionStateEventInfo.sequenceNumber: a string that increases per device. */
  sequenceNumber: string;
  eventTime: string;
  eventId?: string;
}

export type AttestationKind = 'symmetricKey' | 'x509' | 'x509CA' | 'tpm';

export interface PromotionStep {
  step: string;
  at: string;
  detail: string;
}

/** One undo step of a compensation, as the saga reports it. */
export interface UndoReport {
  step: string;
  status: 'pending' | 'undone' | 'failed';
  detail?: string;
  /** The named failure type and message of the last attempt, when it failed. */
  error?: { type: string; message: string };
}

export interface CompensationReport {
  /** How many times compensation ran: 1, plus one per operator retry. */
  attempts: number;
  steps: UndoReport[];
  /** Undo steps that did not succeed: what is left for an operator. Empty when everything was put back. */
  leftovers: UndoReport[];
}

/** Where the wait for the device stands (also shown in the Temporal UI's current details). */
export interface WaitStatus {
  deadlineAt: string;
  nextCheckAt?: string;
  checks: number;
  /** Why the last check did not count the device as landed on the target. */
  lastCheck?: string;
  /** DeviceConnected events ignored: older than the re-point, or for another hub or device. */
  ignoredEvents: number;
}

export type PromotionOutcome =
  | 'promoted'
  /** Put back as it was before the promotion (rollback). */
  | 'rolledBack'
  /** Left where it was when the promotion stopped, flagged for an operator (onTimeout: park). */
  | 'parked'
  /** Some undo steps failed: `compensation.leftovers` names what is left. */
  | 'compensationFailed'
  /** Refused or failed before anything changed. */
  | 'failed'
  /** Cancelled before anything changed. */
  | 'cancelled'
  /** A revocation of the device stopped it: nothing was put back, the revocation takes over. */
  | 'stoppedForRevocation';

export type PromotionEndReason = 'deadline' | 'cancelled' | 'failure' | 'revoked';

export interface PromotionStatus {
  workflowId: string;
  request: PromotionRequest;
  phase: PromotionPhase;
  deviceId?: string;
  attestation?: AttestationKind;
  enrollmentKind?: 'individual' | 'groupMember';
  sourceHub?: string;
  targetHub?: string;
  startedAt: string;
  phaseChangedAt: string;
  steps: PromotionStep[];
  /** DPS's time of the re-point: DeviceConnected events and registrations older than this do not count. */
  repointedAt?: string;
  wait?: WaitStatus;
  lastEvent?: DeviceConnectedEvent & { receivedAt: string };
  connectedVia?: 'eventGrid' | 'polling';
  compensation?: CompensationReport;
  flagged?: string;
  /** Who started the promotion (from the API's credentials; common/requested-by.ts). */
  requestedBy?: RequestedBy;
  /** Changes operators asked for while it ran (cancel, compensation retries), and who asked, in order. */
  operatorActions?: OperatorAction[];
}

export interface PromotionResult extends PromotionStatus {
  outcome: PromotionOutcome;
  reason?: PromotionEndReason;
  registration?: { assignedHub?: string; status?: string; substatus?: string };
  /** The named failure type that ended a run that did not promote. */
  failureType?: string;
  completedAt: string;
}

/**
 * The short record of how a run ended, kept in the workflow's memo under `report`, so that the API can say what
 * happened for every closed run (a cancelled run has no result) without replaying it.
 */
export interface PromotionReport {
  outcome: PromotionOutcome;
  reason?: PromotionEndReason;
  phase: PromotionPhase;
  failureType?: string;
  message?: string;
  leftovers?: UndoReport[];
  completedAt: string;
  requestedBy?: RequestedBy;
  operatorActions?: OperatorAction[];
}

export const PROMOTION_REPORT_MEMO = 'report';

/** Non-retryable failure types the promotion workflow raises; callers branch on these, never on text. */
export const PromotionErrors = {
  invalidRequest: 'InvalidPromotionRequest',
  unknownEnvironment: 'UnknownEnvironment',
  enrollmentNotFound: 'EnrollmentNotFound',
  enrollmentDisabled: 'EnrollmentDisabled',
  notAssignedToSource: 'DeviceNotAssignedToSource',
  unsupportedAttestationProtocol: 'UnsupportedAttestationProtocol',
  deviceCertificateRequired: 'DeviceCertificateRequired',
  /** The device certificate's subject CN is not the registration id, it does not chain to the group's CA, or it expired. */
  deviceCertificateMismatch: 'DeviceCertificateMismatch',
  /** The group trusts a CA by reference (caReferences), whose certificate the DPS service API does not return. */
  deviceCertificateUnverifiable: 'DeviceCertificateUnverifiable',
  unsupportedAttestation: 'UnsupportedAttestation',
  /** IoT Edge devices (modules) and child devices of a gateway (device scope) cannot move through re-registration. */
  unsupportedDeviceKind: 'UnsupportedDeviceKind',
  enrollmentChanged: 'EnrollmentChangedConcurrently',
  verificationFailed: 'VerificationFailed',
  /** The device did not land on the target hub before the deadline. */
  deadlineExceeded: 'ReconnectionDeadlineExceeded',
  /** Some undo steps failed and no operator retry fixed them: details name what is left. */
  compensationFailed: 'CompensationFailed',
  /** `retryCompensation` outside the compensationFailed phase. */
  nothingToRetry: 'NothingToRetry',
  /** The device is revoked (its enrollment disabled by a revocation): it is not promoted. */
  deviceRevoked: 'DeviceRevoked',
  /** A revocation of the device stopped this promotion without restoring access. */
  stoppedForRevocation: 'StoppedForRevocation',
} as const;
