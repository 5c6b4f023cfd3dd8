import { z } from 'zod';
import { durationMs } from './promotion';
import type { RequestedBy } from './requested-by';

/**
 * The fleet drift audit contract, shared by the API and the workflows. An audit reads DPS (individual enrollments,
 * enrollment groups, registration states) and the registry of every configured hub, joins them by device id, and
 * reports what a fleet accumulates silently: hand edits in the portal, half-finished scripts, restored backups.
 * Only names and public data (thumbprints, never keys).
 */

/**
 * What an audit reports, per device. A device is reported under every type that applies, except that
 * `revokedButActive` and `orphan` stand alone: their remediation takes every identity of the device out, which
 * settles the others.
 */
export const FINDING_TYPES = ['revokedButActive', 'wrongHub', 'duplicate', 'orphan', 'stale', 'authMismatch'] as const;
export type FindingType = (typeof FINDING_TYPES)[number];
export const FindingType = z.enum(FINDING_TYPES);

export const FINDING_DEFINITIONS: Record<FindingType, string> = {
  revokedButActive:
    'DPS refuses the device (its individual enrollment disabled, a disabled individual enrollment blocking it within ' +
    'its group, or its group disabled) while an identity for it is enabled in some hub: the device keeps ' +
    'authenticating to that hub.',
  wrongHub:
    'Enabled in some hub, but not in the one DPS assigns it to (its registration record, else its enrollment’s only hub).',
  duplicate: 'Enabled in more than one hub.',
  orphan: 'A hub identity that no individual enrollment and no enrollment group’s registration record covers.',
  stale:
    'Enabled, but none of its enabled identities has been active (connected, sent or received) for staleAfterDays, or ever.',
  authMismatch:
    'An enabled identity whose authentication does not match the attestation: sas for symmetric keys and TPM, ' +
    'selfSigned with the enrollment’s thumbprint for X.509, selfSigned or certificateAuthority for an X.509 CA group.',
};

export const AuditRequest = z
  .object({
    /** A device none of whose enabled identities has been active for this many days is stale. */
    staleAfterDays: z.number().int().min(1).max(3650).default(30),
    /**
     * How many hub identities one bucket holds at most: the join runs one bucket at a time, in bounded worker memory.
     * The number of buckets is the largest hub's identity count divided by this (at least 1).
     */
    bucketDevices: z.number().int().min(100).max(1_000_000).default(20_000),
    /** Devices per registry query page (x-ms-max-item-count). */
    hubPageSize: z.number().int().min(10).max(1000).default(1000),
    /** Items per DPS query page. */
    dpsPageSize: z.number().int().min(10).max(1000).default(100),
    /** Pacing of registry queries per hub: IoT Hub S1 allows 20 queries/min per unit (S3: 1,000). */
    hubQueriesPerMinute: z.number().int().min(1).max(100_000).default(20),
    /** Pacing of DPS operations: DPS allows 1,000/min per service, shared with every other DPS caller. */
    dpsOperationsPerMinute: z.number().int().min(1).max(100_000).default(500),
  })
  .strict();
export type AuditRequestInput = z.input<typeof AuditRequest>;
export type AuditRequest = z.output<typeof AuditRequest>;

const interval = z
  .string()
  .regex(/^\d+(s|m|h|d)$/, 'a duration such as 30m, 6h, 1d')
  .refine((d) => durationMs(d) >= 1_000 && durationMs(d) <= 366 * 86_400_000, 'between 1s and 366d');

/** The audit schedule: a Temporal Schedule that starts an audit every `interval`, skipping one while one runs. */
export const AuditScheduleRequest = z
  .object({
    interval,
    /** Shifts the interval's start (e.g. interval 1d, offset 2h: every day at 02:00 UTC). */
    offset: interval.optional(),
    paused: z.boolean().default(false),
    audit: AuditRequest.default(AuditRequest.parse({})),
  })
  .strict()
  .refine((s) => s.offset === undefined || durationMs(s.offset) < durationMs(s.interval), {
    message: 'offset must be shorter than interval',
    path: ['offset'],
  });
export type AuditScheduleRequest = z.output<typeof AuditScheduleRequest>;

/** One identity of a device in one configured hub, as the registry query returns it (no keys). */
export interface HubIdentity {
  environment: string;
  hubHost: string;
  status: 'enabled' | 'disabled';
  statusReason?: string;
  authType: string;
  /** The identity's X.509 thumbprints (upper-case hex), for selfSigned identities. */
  thumbprints?: string[];
  connectionState?: string;
  /** Absent when the hub has none (never connected). */
  lastActivityTime?: string;
}

/** The enrollment that decides whether DPS admits the device: its individual enrollment first, else its group. */
export interface DecidingEnrollment {
  kind: 'individual' | 'group';
  id: string;
  status: 'enabled' | 'disabled';
  attestation: 'symmetricKey' | 'x509' | 'x509CA' | 'tpm' | 'unknown';
  /** The group the device registered through, when an individual enrollment of its own stands in front of it. */
  enrollmentGroupId?: string;
}

export interface Finding {
  type: FindingType;
  deviceId: string;
  /** Absent for orphans (nothing in DPS names the device). */
  registrationId?: string;
  enrollment?: DecidingEnrollment;
  /** Where DPS assigns the device (host name), when it says. */
  assignedHub?: string;
  /** Every identity of the device in the configured hubs. */
  hubs: HubIdentity[];
  detail: string;
}

export type FindingCounts = Record<FindingType, number>;
export const noFindings = (): FindingCounts => Object.fromEntries(FINDING_TYPES.map((t) => [t, 0])) as FindingCounts;

/** One bucket's outcome: how many findings of each type, kept in how many chunks (see auditFindingsChunkId). */
export interface AuditBucketResult {
  index: number;
  /** The attempt of the bucket's activity whose findings count (earlier attempts' chunks are ignored). */
  attempt: number;
  counts: FindingCounts;
  chunks: FindingCounts;
  /** DPS devices and hub identities that fell in this bucket. */
  dpsDevices: number;
  identities: number;
  dpsOperations: number;
  hubQueries: number;
}

export const AUDIT_PHASES = ['planning', 'scanning', 'completed', 'failed'] as const;
export type AuditPhase = (typeof AUDIT_PHASES)[number];

export interface AuditStatus {
  workflowId: string;
  request: AuditRequest;
  /** Who started it (the API's caller, or who set up the schedule that started it). */
  requestedBy?: RequestedBy;
  phase: AuditPhase;
  startedAt: string;
  phaseChangedAt: string;
  /** "Now" for staleness: the audit's start, the same for every bucket. */
  asOf: string;
  /** Environment → hub host name, as the worker is configured. */
  environments: Record<string, string>;
  hubIdentities: Record<string, number>;
  buckets: { total: number; done: number };
  counts: FindingCounts;
  /** DPS records (individual enrollments and group registration records), as the first bucket's scan counted them. */
  dpsRecords: number;
  dpsOperations: number;
  hubQueries: number;
  runs: number;
  bucketResults: AuditBucketResult[];
}

export interface AuditResult extends AuditStatus {
  outcome: 'clean' | 'findings';
  completedAt: string;
}

/** Findings are kept in chunks of at most this many (each chunk one small workflow's result, see README). */
export const FINDINGS_PER_CHUNK = 200;

/** A chunk of one bucket's findings of one type, written by the bucket's activity attempt `attempt`. */
export const auditFindingsChunkId = (auditId: string, bucket: number, attempt: number, type: FindingType, n: number) =>
  `${auditId}/findings/b${bucket}.a${attempt}/${type}/${n}`;

/** Audit workflow ids: `audit-…` (API starts, with a generated or key-derived suffix; schedules add a time). */
export const auditIdPattern = /^audit-[A-Za-z0-9._:-]{1,120}$/;

export const AuditErrors = {
  invalidRequest: 'InvalidAuditRequest',
} as const;
