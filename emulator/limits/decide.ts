/**
 * Azure's throttling quotas (token buckets per hub and per DPS) and fault injection: the decision for one call.
 * Both are off by default and configured through the control API; limits/middleware.ts applies them in front of
 * the REST surfaces, the MQTT broker and DPS over MQTT call evaluateLimits themselves.
 *
 * The buckets are hand-written rather than taken from a rate-limit library because they must follow Azure's
 * per-tier/per-unit formulas, scale by a factor for fast tests, and be inspectable and resettable at runtime —
 * a dozen lines that a generic limiter would not save.
 */
import { z } from 'zod';
import type { HubTier } from '../hub/model';
import {
  createLimitsState,
  type EmulatorState,
  type FaultRule,
  type HubState,
  type LimitsState,
  type QuotaClass,
  type Surface,
} from '../state';

export function resetLimits(limits: LimitsState): void {
  Object.assign(limits, createLimitsState());
}

// ---------------------------------------------------------------------------------------------------------------
// Quotas

interface Rate {
  perMinute: number;
  /** Bucket size; defaults to one minute's worth. */
  burst?: number;
}

/** Azure's documented quotas (per minute), from the IoT Hub and DPS quota pages. */
function azureRate(quotaClass: QuotaClass, hub?: Pick<HubState, 'tier' | 'units'>): Rate {
  const tier: HubTier = hub?.tier ?? 'S1';
  const units = hub?.units ?? 1;
  const s3 = tier === 'S3';
  const perSecond = (n: number): number => n * 60;
  switch (quotaClass) {
    case 'registry':
      return { perMinute: (s3 ? 5000 : 100) * units };
    case 'query':
      return { perMinute: (s3 ? 1000 : 20) * units };
    case 'twinRead':
      if (tier === 'F1') return { perMinute: perSecond(100) };
      return { perMinute: s3 ? perSecond(50 * units) : perSecond(Math.max(100, 10 * units)) };
    case 'twinUpdate':
      if (tier === 'F1') return { perMinute: perSecond(50) };
      return { perMinute: s3 ? perSecond(250 * units) : perSecond(Math.max(50, 5 * units)) };
    case 'connection':
      if (tier === 'S2') return { perMinute: perSecond(120 * units) };
      if (s3) return { perMinute: perSecond(6000 * units) };
      return { perMinute: perSecond(Math.max(100, 12 * units)) };
    case 'deviceToCloud':
      // "Device-to-cloud sends": one token per send call (an HTTPS batch is one call).
      if (tier === 'B2' || tier === 'S2') return { perMinute: perSecond(120 * units) };
      if (tier === 'B3' || s3) return { perMinute: perSecond(6000 * units) };
      return { perMinute: perSecond(Math.max(100, 12 * units)) };
    case 'cloudToDeviceReceive':
      // "Cloud-to-device receives (only when device uses HTTPS)".
      return { perMinute: (s3 ? 50_000 : 1000) * units };
    case 'dpsOperation':
    case 'dpsRegistration':
      return { perMinute: 1000 };
    case 'dpsStatusPoll':
      // 5 polls per 10 seconds per device.
      return { perMinute: 30, burst: 5 };
  }
}

function takeToken(limits: LimitsState, key: string, rate: Rate, now: number): number | undefined {
  const scale = limits.quotas.scale;
  const capacity = Math.max(1, Math.floor((rate.burst ?? rate.perMinute) * scale));
  const perMs = (rate.perMinute * scale) / 60_000;
  let bucket = limits.buckets.get(key);
  if (!bucket || bucket.capacity !== capacity || bucket.perMs !== perMs) {
    bucket = { tokens: capacity, capacity, perMs, updatedAt: now };
    limits.buckets.set(key, bucket);
  }
  bucket.tokens = Math.min(bucket.capacity, bucket.tokens + (now - bucket.updatedAt) * bucket.perMs);
  bucket.updatedAt = now;
  if (bucket.tokens >= 1) {
    bucket.tokens -= 1;
    return undefined;
  }
  // Seconds until one token is back.
  return Math.max(1, Math.ceil((1 - bucket.tokens) / bucket.perMs / 1000));
}

export interface OperationContext {
  surface: Surface;
  operation: string;
  /** The write counter's name for the call, which rules may use instead of `operation`. */
  write?: string;
  quotaClass?: QuotaClass;
  hub?: HubState;
  /** Narrows the bucket, e.g. the registration id for DPS status polls. */
  key?: string;
  /** False where a call has no answer to replace after it is applied (MQTT connect): `after` rules do not apply. */
  answered?: boolean;
}

/** What replaces, drops or delays the answer of a call that was applied (a rule with phase `after`). */
export interface AfterFault {
  /** Undefined: the answer is only delayed. 0: the connection is dropped. */
  status?: number;
  latencyMs: number;
  code?: string;
  message?: string;
}

export type LimitDecision =
  | {
      kind: 'pass';
      delayMs: number;
      /**
       * A rule with phase `after` matched: once the call has run, `settle(succeeded)` uses the rule up (when the call
       * succeeded and the rule is still there) and tells what to do with the answer.
       */
      after?: { settle(succeeded: boolean): AfterFault | undefined };
    }
  | { kind: 'fault'; delayMs: number; status: number; code?: string; message?: string }
  | { kind: 'throttle'; delayMs: number; retryAfterSeconds: number };

function useRule(faults: LimitsState['faults'], rule: FaultRule): void {
  rule.times -= 1;
  if (rule.times <= 0) {
    const index = faults.rules.indexOf(rule);
    if (index >= 0) faults.rules.splice(index, 1);
  }
}

/**
 * Decides whether one call passes, fails by injection, or is throttled. Synchronous, so rule counters and
 * buckets stay exact under concurrency. Usable by non-HTTP surfaces (MQTT connect, DPS over MQTT) too.
 */
export function evaluateLimits(state: EmulatorState, ctx: OperationContext, now = Date.now()): LimitDecision {
  const { faults, quotas } = state.limits;
  let delayMs = faults.latencyMs;
  const named = (operation: string): boolean =>
    operation === '*' ||
    operation.toLowerCase() === ctx.operation.toLowerCase() ||
    (ctx.write !== undefined && operation.toLowerCase() === ctx.write.toLowerCase());

  const rule = faults.rules.find(
    (r) =>
      (r.surface === undefined || r.surface === ctx.surface) &&
      (r.hub === undefined || r.hub === ctx.hub?.name) &&
      named(r.operation) &&
      (r.phase === 'before' || ctx.answered !== false),
  );
  let after: { settle(succeeded: boolean): AfterFault | undefined } | undefined;
  if (rule?.phase === 'before') {
    useRule(faults, rule);
    delayMs += rule.latencyMs ?? 0;
    if (rule.status !== undefined) {
      return { kind: 'fault', delayMs, status: rule.status, code: rule.code, message: rule.message };
    }
  } else if (rule) {
    after = {
      settle(succeeded) {
        // Another call may have used the rule up meanwhile.
        if (!succeeded || !faults.rules.includes(rule)) return undefined;
        useRule(faults, rule);
        return { status: rule.status, latencyMs: rule.latencyMs ?? 0, code: rule.code, message: rule.message };
      },
    };
  }
  if (faults.errorRate > 0 && Math.random() < faults.errorRate) {
    return { kind: 'fault', delayMs, status: faults.errorStatus };
  }

  if (quotas.enabled && ctx.quotaClass) {
    const override = quotas.overrides[ctx.quotaClass];
    const rate = override !== undefined ? { perMinute: override } : azureRate(ctx.quotaClass, ctx.hub);
    const scope = ctx.hub ? `hub:${ctx.hub.name}` : 'dps';
    const key = `${scope}:${ctx.quotaClass}${ctx.key ? `:${ctx.key}` : ''}`;
    const retryAfterSeconds = takeToken(state.limits, key, rate, now);
    if (retryAfterSeconds !== undefined) {
      state.limits.throttled.set(key, (state.limits.throttled.get(key) ?? 0) + 1);
      return { kind: 'throttle', delayMs, retryAfterSeconds };
    }
  }
  return { kind: 'pass', delayMs, ...(after ? { after } : {}) };
}

/**
 * A fault rule as callers give it (control API body or in-process): `phase` defaults to `before`, `times` to 1.
 * Bad input throws a ZodError (the control API answers 400 with its issues).
 */
export const faultRuleSchema = z
  .strictObject({
    operation: z.string().min(1),
    /** 400–599, or 0 to drop the connection without answering; omitted for a latency-only rule. */
    status: z.union([z.literal(0), z.number().int().min(400).max(599)]).optional(),
    latencyMs: z.number().int().min(0).max(600_000).optional(),
    phase: z.enum(['before', 'after']).default('before'),
    times: z.number().int().min(1).default(1),
    surface: z.enum(['hub', 'dpsService', 'dpsDevice', 'mqtt']).optional(),
    hub: z.string().min(1).optional(),
    code: z.string().optional(),
    message: z.string().optional(),
  })
  .refine((rule) => rule.status !== undefined || rule.latencyMs !== undefined, {
    message: 'a fault rule needs a status, a latencyMs, or both',
    path: ['status'],
  })
  .refine(
    (rule) => !(rule.phase === 'after' && rule.surface === 'mqtt' && rule.operation.toLowerCase() === 'connect'),
    { message: 'phase "after" does not apply to MQTT connect: a refused CONNECT applies nothing', path: ['phase'] },
  );

export type FaultRuleInput = z.input<typeof faultRuleSchema>;

export function addFaultRule(limits: LimitsState, rule: FaultRuleInput): FaultRule {
  const created: FaultRule = { ...faultRuleSchema.parse(rule), id: String(limits.nextRuleId++) };
  limits.faults.rules.push(created);
  return created;
}

export function removeFaultRule(limits: LimitsState, id: string): boolean {
  const index = limits.faults.rules.findIndex((r) => r.id === id);
  if (index < 0) return false;
  limits.faults.rules.splice(index, 1);
  return true;
}
