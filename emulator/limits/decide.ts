/**
 * Azure's throttling quotas (token buckets per hub and per DPS) and fault injection: the decision for one call.
 * Both are off by default and configured through the control API; limits/middleware.ts applies them in front of
 * the REST surfaces, the MQTT broker and DPS over MQTT call evaluateLimits themselves.
 *
 * The buckets are hand-written rather than taken from a rate-limit library because they must follow Azure's
 * per-tier/per-unit formulas, scale by a factor for fast tests, and be inspectable and resettable at runtime —
 * a dozen lines that a generic limiter would not save.
 */
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
  quotaClass?: QuotaClass;
  hub?: HubState;
  /** Narrows the bucket, e.g. the registration id for DPS status polls. */
  key?: string;
}

export type LimitDecision =
  | { kind: 'pass'; delayMs: number }
  | { kind: 'fault'; delayMs: number; status: number; code?: string; message?: string }
  | { kind: 'throttle'; delayMs: number; retryAfterSeconds: number };

/**
 * Decides whether one call passes, fails by injection, or is throttled. Synchronous, so rule counters and
 * buckets stay exact under concurrency. Usable by non-HTTP surfaces (MQTT connect, DPS over MQTT) too.
 */
export function evaluateLimits(state: EmulatorState, ctx: OperationContext, now = Date.now()): LimitDecision {
  const { faults, quotas } = state.limits;
  const delayMs = faults.latencyMs;

  const ruleIndex = faults.rules.findIndex(
    (r) =>
      (r.surface === undefined || r.surface === ctx.surface) &&
      (r.hub === undefined || r.hub === ctx.hub?.name) &&
      (r.operation === '*' || r.operation.toLowerCase() === ctx.operation.toLowerCase()),
  );
  if (ruleIndex >= 0) {
    const rule = faults.rules[ruleIndex];
    rule.times -= 1;
    if (rule.times <= 0) faults.rules.splice(ruleIndex, 1);
    return { kind: 'fault', delayMs, status: rule.status, code: rule.code, message: rule.message };
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
    if (retryAfterSeconds !== undefined) return { kind: 'throttle', delayMs, retryAfterSeconds };
  }
  return { kind: 'pass', delayMs };
}

export function addFaultRule(limits: LimitsState, rule: Omit<FaultRule, 'id'>): FaultRule {
  const created = { ...rule, id: String(limits.nextRuleId++) };
  limits.faults.rules.push(created);
  return created;
}
