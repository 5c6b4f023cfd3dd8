import { z } from 'zod';
import type { OperationContext, OperatorAction, RequestedBy } from './requested-by';
import { dpsId, PromotionFields } from './promotion';
import { ReinstatementFields, RevocationFields } from './revocation';

/**
 * Fleet operations: one promotion, revocation or reinstatement over many devices, rolled out the way the best
 * rollout systems do it (AWS IoT Jobs' rate, exponential ramp, abort criteria, per-device timeout and retries;
 * hawkBit's groups with thresholds and pauses), plus what none has: pause and resume at any time, a dry-run plan,
 * "retry the failed devices" as one call, and rates capped by the Azure quotas the operation will actually use.
 */

/** A list target in the request itself is bounded; larger fleets come from a group or a registry query. */
export const MAX_LISTED_DEVICES = 5_000;
/** Devices one operation may cover (its snapshot is taken at start). */
export const MAX_FLEET_DEVICES = 100_000;

const registrationId = z.string().regex(dpsId, 'a DPS registration id');

export const FleetTargets = z.union([
  z.strictObject({
    registrationIds: z
      .array(registrationId)
      .min(1)
      .max(MAX_LISTED_DEVICES)
      .refine((ids) => new Set(ids).size === ids.length, 'registration ids must be unique'),
  }),
  z.strictObject({ enrollmentGroupId: z.string().regex(dpsId, 'an enrollment group id') }),
  z.strictObject({
    query: z.strictObject({
      /** The configured environment (hub) whose registry is queried. */
      environment: z.string().regex(/^[A-Za-z0-9-]{1,63}$/),
      /** The condition of `SELECT * FROM devices WHERE …` (IoT Hub query language), e.g. `tags.line = 'L3'`. */
      where: z.string().min(1).max(2_000),
    }),
  }),
  z.strictObject({
    /** The failed and timed-out devices of an earlier fleet operation (what retry-failed starts). */
    retryOf: z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/),
  }),
]);
export type FleetTargets = z.infer<typeof FleetTargets>;

const percent = z.number().min(0).max(100);

export const Rollout = z
  .strictObject({
    /** Devices started per minute at most (AWS IoT Jobs maximumPerMinute). Capped by the Azure quotas. */
    maximumPerMinute: z.number().int().min(1).max(100_000).optional(),
    /** Start slow and speed up (AWS IoT Jobs exponential rollout). */
    exponentialRate: z
      .strictObject({
        baseRatePerMinute: z.number().int().min(1).max(100_000),
        incrementFactor: z.number().min(1.1).max(5),
        rateIncreaseCriteria: z.union([
          z.strictObject({ numberOfNotifiedThings: z.number().int().min(1) }),
          z.strictObject({ numberOfSucceededThings: z.number().int().min(1) }),
        ]),
      })
      .optional(),
    /** Devices in flight at once. */
    maximumInFlight: z.number().int().min(1).max(1_000).default(200),
  })
  .default({ maximumInFlight: 200 });

export const AbortCriteria = z.strictObject({
  failureType: z.enum(['FAILED', 'TIMED_OUT', 'ALL']),
  action: z.literal('CANCEL').default('CANCEL'),
  thresholdPercentage: percent,
  minNumberOfExecutedThings: z.number().int().min(1),
});

export const RetryCriteria = z.strictObject({
  failureType: z.enum(['FAILED', 'TIMED_OUT', 'ALL']),
  numberOfRetries: z.number().int().min(0).max(10),
});

/** hawkBit-style rollout groups, in order: each must meet its thresholds before the next starts. */
export const RolloutGroup = z.strictObject({
  /** The group's size: a count of devices, or a percentage of the fleet. */
  size: z.union([z.strictObject({ devices: z.number().int().min(1) }), z.strictObject({ percent: percent })]),
  /** The next group starts once this share of the group succeeded (when all of it has finished). */
  successThresholdPercent: percent.default(100),
  /** Past this share failed or timed out: pause (resume by hand) or abort. */
  errorThresholdPercent: percent.default(100),
  onError: z.enum(['pause', 'abort']).default('pause'),
  /** Pause after this group whatever its result, until resumed. */
  pauseAfter: z.boolean().default(false),
});

const promoteParameters = PromotionFields.omit({
  registrationId: true,
  enrollmentGroupId: true,
  deviceCertificate: true,
  deadline: true,
})
  .strict()
  .refine((r) => r.sourceEnvironment !== r.targetEnvironment, {
    message: 'source and target environments must differ',
    path: ['targetEnvironment'],
  });
const revokeParameters = RevocationFields.omit({
  registrationId: true,
  enrollmentGroupId: true,
  deviceCertificate: true,
}).strict();
const reinstateParameters = ReinstatementFields.omit({ registrationId: true, enrollmentGroupId: true }).strict();

const common = {
  targets: FleetTargets,
  rollout: Rollout,
  abort: z.array(AbortCriteria).max(4).default([]),
  /** Per device: past it the device is TIMED_OUT (terminal, counts toward abort) — for a promotion, its deadline. */
  deviceTimeout: z
    .string()
    .regex(/^\d+(s|m|h|d)$/, 'a duration such as 30m')
    .default('30m'),
  retries: z.array(RetryCriteria).max(3).default([]),
  groups: z.array(RolloutGroup).max(20).default([]),
  /** Plan only: devices, hubs and a quota-bound duration; nothing changes. */
  dryRun: z.boolean().default(false),
  description: z.string().max(500).optional(),
};

export const FleetOperationRequest = z.discriminatedUnion('operation', [
  z.strictObject({ operation: z.literal('promote'), parameters: promoteParameters.prefault({}), ...common }),
  z.strictObject({ operation: z.literal('revoke'), parameters: revokeParameters.prefault({}), ...common }),
  z.strictObject({ operation: z.literal('reinstate'), parameters: reinstateParameters.prefault({}), ...common }),
]);
export type FleetOperationRequestInput = z.input<typeof FleetOperationRequest>;
export type FleetOperationRequest = z.output<typeof FleetOperationRequest>;

export type DeviceState = 'pending' | 'inProgress' | 'succeeded' | 'failed' | 'timedOut' | 'cancelled';
export const DEVICE_STATES: DeviceState[] = ['pending', 'inProgress', 'succeeded', 'failed', 'timedOut', 'cancelled'];

export interface FleetDevice {
  registrationId: string;
  deviceId?: string;
}

export interface DeviceRecord extends FleetDevice {
  state: DeviceState;
  attempts: number;
  /** The named failure type and message of the last attempt that did not succeed. */
  error?: { type: string; message: string };
  /** The per-device workflow (promotions), or the batch that handled it. */
  workflowId?: string;
  finishedAt?: string;
  /** What an operator should know of a success: e.g. a revoked id that nothing in DPS or any hub knew (a typo?). */
  note?: string;
}

export type DeviceCounts = Record<DeviceState, number>;
export const noCounts = (): DeviceCounts => ({
  pending: 0,
  inProgress: 0,
  succeeded: 0,
  failed: 0,
  timedOut: 0,
  cancelled: 0,
});

/** The plan: what would be done, where, and how long Azure's quotas make it take. */
export interface FleetPlan {
  devices: number;
  /** The first devices, for a look (the full list is paged from the operation). */
  sample: string[];
  /** Devices by the hub DPS assigns them to, where that is known from the target. */
  byHub: Record<string, number>;
  /** Devices per minute the quotas allow for this operation, the quota that binds, and the resulting duration. */
  quota: { devicesPerMinute: number; binding: string; callsPerDevice: Record<string, number> };
  ratePerMinute: number;
  estimatedSeconds: number;
  chunks: number;
}

export type FleetPhase =
  'planning' | 'running' | 'paused' | 'cancelling' | 'completed' | 'aborted' | 'cancelled' | 'planned';

export interface FleetStatus {
  workflowId: string;
  operation: FleetOperationRequest['operation'];
  phase: FleetPhase;
  pausedBecause?: string;
  abortedBecause?: string;
  requestedBy?: RequestedBy;
  /** Pauses, resumes and cancels, with who asked (the last 50). */
  operatorActions?: OperatorAction[];
  plan?: FleetPlan;
  counts: DeviceCounts;
  /** Devices started so far (AWS "notified"). */
  started: number;
  /** The rate in force now (devices/minute), and the measured rate over the last minute. */
  ratePerMinute: number;
  measuredPerMinute: number;
  etaSeconds?: number;
  /** The rollout group in progress (hawkBit). */
  group?: { index: number; of: number };
  startedAt: string;
  updatedAt: string;
}

export interface FleetResult extends FleetStatus {
  outcome: 'completed' | 'completedWithFailures' | 'aborted' | 'cancelled' | 'planned';
  completedAt: string;
}

export const FleetErrors = {
  invalidRequest: 'InvalidFleetOperationRequest',
  tooManyDevices: 'TooManyDevices',
  invalidTargetQuery: 'InvalidTargetQuery',
  unknownOperation: 'UnknownFleetOperation',
  notPaused: 'NotPaused',
  alreadyFinished: 'FleetOperationFinished',
  /** More devices than the caller's role may change in one operation (FLEET_OPERATOR_MAX_DEVICES). */
  needsAdmin: 'FleetOperationNeedsAdmin',
} as const;

/**
 * The fleet operation's second argument: who asked, and how many devices their role may change at once (the API
 * sets it for callers below admin; a group or query target is only counted at planning, so the workflow checks).
 */
/** FLEET_OPERATOR_MAX_DEVICES' default: the most devices one fleet operation of an operator may change. */
export const DEFAULT_FLEET_OPERATOR_MAX_DEVICES = 1000;

export interface FleetContext extends OperationContext {
  maxDevices?: number;
}
