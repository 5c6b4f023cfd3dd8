import { z } from 'zod';
import type { RequestedBy } from './requested-by';
import { dpsId } from './promotion';

/**
 * The revocation contract shared by the API and the workflows. Revoking in DPS does not stop a device that is
 * already provisioned: "After revoking a certificate in DPS, also remove the device from the IoT Hub" (Azure,
 * "Attestation, authentication and provisioning"). A revocation therefore disables in DPS *and* disables or deletes
 * the device's identity in every configured hub, and proves both. Only names and public data, never keys.
 */

const pem = z
  .string()
  .regex(/-----BEGIN CERTIFICATE-----/, 'a PEM certificate (chain)')
  .max(16_384);

/**
 * Why an operator asked, kept with the operation: up to 500 characters, not only white space, stored trimmed. Each
 * rule is one the OpenAPI document states (maxLength on what is sent, a pattern for a non-blank character).
 */
export const Reason = z.string().max(500).regex(/\S/, 'must hold more than white space').trim();

const selectorFields = {
  /** One device: its DPS registration id (an individual enrollment, or a member of an enrollment group). */
  registrationId: z.string().regex(dpsId, 'a DPS registration id (alphanumerics, . _ : -; not . or ..)').optional(),
  /** A whole enrollment group (a compromised CA, a batch of leaked keys); with registrationId, that member's group. */
  enrollmentGroupId: z.string().regex(dpsId, 'an enrollment group id').optional(),
};

export const RevocationFields = z
  .object({
    ...selectorFields,
    /** What happens to the identity in every hub: disabled (reversible, the default) or deleted. */
    hubAction: z.enum(['disable', 'delete']).default('disable'),
    /** Why: kept with the revocation (result, memo, logs). */
    reason: Reason.default('no reason given'),
    /**
     * One member of an X.509 group is blocked by a disabled individual enrollment of its own, which takes the
     * device's certificate: its chain, leaf first, up to the group's CA.
     */
    deviceCertificate: pem.optional(),
    /** Wait for live connections to close after the disable, at most this many seconds. */
    disconnectTimeoutSeconds: z.number().int().min(1).max(600).default(60),
  })
  .strict();

export const RevocationRequest = RevocationFields.refine(
  (r) => r.registrationId !== undefined || r.enrollmentGroupId !== undefined,
  {
    message: 'name a device (registrationId) or an enrollment group (enrollmentGroupId)',
    path: ['registrationId'],
  },
);

export const ReinstatementFields = z
  .object({
    ...selectorFields,
    reason: Reason.default('no reason given'),
  })
  .strict();

export const ReinstatementRequest = ReinstatementFields.refine(
  (r) => r.registrationId !== undefined || r.enrollmentGroupId !== undefined,
  {
    message: 'name a device (registrationId) or an enrollment group (enrollmentGroupId)',
    path: ['registrationId'],
  },
);

export type RevocationRequestInput = z.input<typeof RevocationRequest>;
export type RevocationRequest = z.output<typeof RevocationRequest>;
export type ReinstatementRequestInput = z.input<typeof ReinstatementRequest>;
export type ReinstatementRequest = z.output<typeof ReinstatementRequest>;

/** Who asked: from the workflow's second argument (common/requested-by.ts), never from the request body. */
export interface Requester {
  requestedBy?: RequestedBy;
}

/**
 * The marks a revocation leaves, so that a reinstatement undoes exactly what a revocation did: a hub identity it
 * disabled carries this status reason prefix; a DPS enrollment or group it disabled (or created, to block one group
 * member) carries this initial-twin tag. An identity or enrollment disabled for any other reason is left alone.
 */
export const REVOCATION_MARK = {
  statusReasonPrefix: 'revoked by iot-lifecycle',
  twinTag: 'iotLifecycleRevocation',
} as const;

export const REVOCATION_PHASES = [
  'validating',
  'stoppingPromotion',
  'revokingInDps',
  'revokingInHubs',
  'proving',
  'revoked',
  'partiallyRevoked',
  'failed',
] as const;
export type RevocationPhase = (typeof REVOCATION_PHASES)[number];

export const REINSTATEMENT_PHASES = [
  'validating',
  'reinstatingInDps',
  'reinstatingInHubs',
  'reinstated',
  'partiallyReinstated',
  'failed',
] as const;
export type ReinstatementPhase = (typeof REINSTATEMENT_PHASES)[number];

/** What the revocation found and left in one hub for one device. */
export interface HubProof {
  deviceId: string;
  environment: string;
  hubHost: string;
  /** The identity before: absent, enabled, or already disabled (by someone else, or an earlier revocation). */
  before: 'absent' | 'enabled' | 'disabled';
  action: 'disabled' | 'deleted' | 'none';
  /** Re-read after the change. */
  after: 'absent' | 'disabled' | 'enabled';
  /** The hub's connection state after the change (waited for, with a bound, to leave Connected). */
  connectionState?: string;
}

/** Per device: DPS refuses a fresh registration, and no hub accepts the identity. */
export interface DeviceProof {
  registrationId: string;
  deviceId: string;
  dps: {
    /** How DPS now refuses the device. */
    enrollment: 'individualDisabled' | 'blockedByDisabledIndividual' | 'groupDisabled' | 'noEnrollment';
    /** This revocation made that so, or it already was. */
    changed: boolean;
    registrationRefused: boolean;
  };
  hubs: HubProof[];
  revoked: boolean;
  /** What still stands in the way, when not revoked. */
  problems: string[];
}

export interface RevocationProgress {
  devicesFound: number;
  revoked: number;
  failed: number;
  /** Group revocations: registration pages left to look at (unknown until the last page: -1). */
  pagesDone: number;
}

export interface RevocationStatus {
  workflowId: string;
  request: RevocationRequest & Requester;
  phase: RevocationPhase;
  target: { kind: 'device' | 'group'; registrationId?: string; enrollmentGroupId?: string };
  startedAt: string;
  phaseChangedAt: string;
  steps: Array<{ step: string; at: string; detail: string }>;
  progress: RevocationProgress;
  /** Promotions of the device(s) stopped without restoring access. */
  promotionsStopped: string[];
  hubs: string[];
}

export interface RevocationResult extends RevocationStatus {
  outcome: 'revoked' | 'partiallyRevoked';
  /** Per device (all of them up to PROOF_LIMIT devices; beyond, only those not revoked). */
  devices: DeviceProof[];
  /** Devices not revoked, with what is left. */
  leftovers: DeviceProof[];
  completedAt: string;
}

/** A result lists every device's proof up to this many devices; past it, only the ones not revoked. */
export const PROOF_LIMIT = 1_000;

export interface ReinstatementResult {
  workflowId: string;
  request: ReinstatementRequest & Requester;
  phase: ReinstatementPhase;
  outcome: 'reinstated' | 'partiallyReinstated';
  devices: Array<{
    registrationId: string;
    deviceId: string;
    dps: 'enabled' | 'blockerRemoved' | 'groupEnabled' | 'notRevokedHere' | 'noEnrollment';
    hubs: Array<{ environment: string; identity: 'reenabled' | 'absent' | 'leftDisabled' | 'enabled' }>;
    problems: string[];
  }>;
  completedAt: string;
}

/** Non-retryable failure types of revocation and reinstatement. */
export const RevocationErrors = {
  invalidRequest: 'InvalidRevocationRequest',
  enrollmentNotFound: 'EnrollmentNotFound',
  deviceCertificateRequired: 'DeviceCertificateRequired',
  deviceCertificateMismatch: 'DeviceCertificateMismatch',
  unsupportedAttestation: 'UnsupportedAttestation',
  /** A promotion refused because its device is revoked. */
  deviceRevoked: 'DeviceRevoked',
  /** A promotion stopped because its device is being revoked. */
  stoppedForRevocation: 'StoppedForRevocation',
} as const;
