/**
 * Azure's throttling quotas (token buckets per hub and per DPS) and fault injection, applied in front of the
 * REST surfaces. Both are off by default and configured through the control API.
 *
 * The buckets are hand-written rather than taken from a rate-limit library because they must follow Azure's
 * per-tier/per-unit formulas, scale by a factor for fast tests, and be inspectable and resettable at runtime —
 * a dozen lines that a generic limiter would not save.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { AzureError, hubErrors, sendDpsError, sendHubError } from './azure-errors';
import type { EmulatorState, HubState, HubTier } from './state';

export type Surface = 'hub' | 'dpsService' | 'dpsDevice' | 'mqtt';

export type QuotaClass =
  | 'registry'
  | 'query'
  | 'twinRead'
  | 'twinUpdate'
  | 'connection'
  | 'dpsOperation'
  | 'dpsRegistration'
  | 'dpsStatusPoll';

export interface QuotaConfig {
  enabled: boolean;
  /** Multiplies every rate (and burst): 0.01 makes quotas bite after a few calls in a test. */
  scale: number;
  /** Per-minute rates that replace the Azure formula for a class. */
  overrides: Partial<Record<QuotaClass, number>>;
}

export interface FaultRule {
  id: string;
  surface?: Surface;
  /** Hub name (emulator key) the rule is limited to. */
  hub?: string;
  /** Operation name as classified below, or '*'. */
  operation: string;
  status: number;
  /** Remaining failures; the rule is removed when it reaches 0. */
  times: number;
  code?: string;
  message?: string;
}

export interface FaultConfig {
  /** Probability (0–1) that any call fails with `errorStatus`. */
  errorRate: number;
  errorStatus: number;
  /** Added latency for every call, in milliseconds. */
  latencyMs: number;
  rules: FaultRule[];
}

interface Bucket {
  tokens: number;
  capacity: number;
  perMs: number;
  updatedAt: number;
}

export interface LimitsState {
  quotas: QuotaConfig;
  faults: FaultConfig;
  buckets: Map<string, Bucket>;
  nextRuleId: number;
}

export function createLimitsState(): LimitsState {
  return {
    quotas: { enabled: false, scale: 1, overrides: {} },
    faults: { errorRate: 0, errorStatus: 500, latencyMs: 0, rules: [] },
    buckets: new Map(),
    nextRuleId: 1,
  };
}

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

// ---------------------------------------------------------------------------------------------------------------
// Classification of REST calls into operation names and quota classes

export interface Classified {
  operation: string;
  quotaClass?: QuotaClass;
  key?: string;
}

/** IoT hub registry REST (paths without the query string). */
export function classifyHubRequest(method: string, path: string): Classified {
  const p = path.replace(/\/+$/, '').toLowerCase();
  if (p === '/devices/query') return { operation: 'queryDevices', quotaClass: 'query' };
  if (p === '/devices') {
    return method === 'POST'
      ? { operation: 'bulkDevices', quotaClass: 'registry' }
      : { operation: 'listDevices', quotaClass: 'registry' };
  }
  if (/^\/devices\/[^/]+$/.test(p)) {
    const op = { PUT: 'createOrUpdateDevice', GET: 'getDevice', DELETE: 'deleteDevice' }[method] ?? 'device';
    return { operation: op, quotaClass: 'registry' };
  }
  if (/^\/twins\/[^/]+\/methods$/.test(p)) return { operation: 'invokeDeviceMethod' };
  if (/^\/twins\/[^/]+$/.test(p)) {
    return method === 'GET'
      ? { operation: 'getTwin', quotaClass: 'twinRead' }
      : { operation: 'updateTwin', quotaClass: 'twinUpdate' };
  }
  if (p === '/statistics/devices') return { operation: 'getStatistics', quotaClass: 'registry' };
  if (p.startsWith('/jobs')) return { operation: 'jobs', quotaClass: 'registry' };
  return { operation: 'other' };
}

/** DPS service REST. */
export function classifyDpsServiceRequest(method: string, path: string): Classified {
  const p = path.replace(/\/+$/, '').toLowerCase();
  const verb = { PUT: 'createOrUpdate', GET: 'get', DELETE: 'delete', POST: 'post' }[method] ?? method;
  const dps = (operation: string): Classified => ({ operation, quotaClass: 'dpsOperation' });
  if (p === '/enrollments') return dps('bulkEnrollments');
  if (p === '/enrollments/query') return dps('queryEnrollments');
  if (p === '/enrollmentgroups/query') return dps('queryEnrollmentGroups');
  if (/^\/enrollments\/[^/]+\/attestationmechanism$/.test(p)) return dps('getEnrollmentAttestation');
  if (/^\/enrollmentgroups\/[^/]+\/attestationmechanism$/.test(p)) return dps('getEnrollmentGroupAttestation');
  if (/^\/enrollments\/[^/]+$/.test(p)) return dps(`${verb}Enrollment`);
  if (/^\/enrollmentgroups\/[^/]+$/.test(p)) return dps(`${verb}EnrollmentGroup`);
  if (/^\/registrations\/[^/]+\/query$/.test(p)) return dps('queryRegistrations');
  if (/^\/registrations\/[^/]+$/.test(p)) return dps(`${verb}Registration`);
  return { operation: 'other' };
}

/** DPS device registration REST (`/{idScope}/registrations/{regId}/…`). */
export function classifyDpsDeviceRequest(method: string, path: string): Classified {
  const register = /^\/[^/]+\/registrations\/([^/]+)\/register$/i.exec(path);
  if (register) return { operation: 'register', quotaClass: 'dpsRegistration' };
  const poll = /^\/[^/]+\/registrations\/([^/]+)\/operations\/[^/]+$/i.exec(path);
  if (poll) return { operation: 'operationStatus', quotaClass: 'dpsStatusPoll', key: decodeURIComponent(poll[1]) };
  const get = /^\/[^/]+\/registrations\/([^/]+)$/i.exec(path);
  if (get) return { operation: 'deviceRegistrationStatus', quotaClass: 'dpsOperation' };
  return { operation: method === 'GET' ? 'other' : 'other' };
}

// ---------------------------------------------------------------------------------------------------------------
// Express middleware

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function faultCode(status: number): string {
  switch (status) {
    case 400:
      return 'ArgumentInvalid';
    case 401:
      return 'IotHubUnauthorizedAccess';
    case 403:
      return 'IotHubQuotaExceeded';
    case 404:
      return 'DeviceNotFound';
    case 409:
      return 'DeviceAlreadyExists';
    case 412:
      return 'PreconditionFailed';
    case 429:
      return 'ThrottlingException';
    case 503:
      return 'ServiceUnavailable';
    case 504:
      return 'GatewayTimeout';
    default:
      return 'ServerError';
  }
}

/**
 * Quotas and faults in front of one REST surface. `hubOf` names the hub a request is for (hub surface only).
 * Errors take the surface's shape: IoT Hub legacy body or DPS body.
 */
export function limitsMiddleware(
  state: EmulatorState,
  surface: Exclude<Surface, 'mqtt'>,
  hubOf?: (req: Request) => HubState | undefined,
): RequestHandler {
  const classify =
    surface === 'hub'
      ? classifyHubRequest
      : surface === 'dpsService'
        ? classifyDpsServiceRequest
        : classifyDpsDeviceRequest;
  return (req: Request, res: Response, next: NextFunction): void => {
    const classified = classify(req.method, req.path);
    const decision = evaluateLimits(state, { surface, ...classified, hub: hubOf?.(req) });
    const respond = (): void => {
      if (decision.kind === 'pass') {
        next();
        return;
      }
      const status = decision.kind === 'throttle' ? 429 : decision.status;
      const retryAfter = decision.kind === 'throttle' ? decision.retryAfterSeconds : undefined;
      const message =
        decision.kind === 'fault'
          ? (decision.message ?? `Injected fault for ${classified.operation}`)
          : 'Operations are being throttled: quota exceeded';
      if (surface === 'hub') {
        const error =
          decision.kind === 'throttle'
            ? hubErrors.throttled()
            : new AzureError(status, decision.code ?? faultCode(status), message);
        sendHubError(res, error, retryAfter);
      } else {
        sendDpsError(res, status, status * 1000 + 1, message, retryAfter);
      }
    };
    if (decision.delayMs > 0) {
      void sleep(decision.delayMs).then(respond);
    } else {
      respond();
    }
  };
}
