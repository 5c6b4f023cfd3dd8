/** Quotas and faults in front of the REST surfaces, answering in each surface's own error shape. */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { AzureError, hubErrors, sendHubError } from '../hub/errors';
import { sendDpsError } from '../dps/errors';
import type { EmulatorState, HubState, Surface } from '../state';
import { classifyDpsDeviceRequest, classifyDpsServiceRequest, classifyHubRequest } from './classify';
import { evaluateLimits, type LimitDecision } from './decide';

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
 * Replaces the answer of a call that was applied, once the route has produced it: the route's `res.end` is held
 * back, the rule is settled, and the held answer goes out as it is, later, as the fault, or not at all.
 */
function interceptAnswer(
  res: Response,
  after: NonNullable<Extract<LimitDecision, { kind: 'pass' }>['after']>,
  sendFault: (status: number, code: string | undefined, message: string | undefined) => void,
): void {
  const original = res.end.bind(res) as (...args: unknown[]) => Response;
  res.end = ((...args: unknown[]): Response => {
    res.end = original as Response['end'];
    const fault = after.settle(res.statusCode < 300);
    if (!fault) return original(...args);
    const deliver = (): void => {
      if (fault.status === undefined) {
        original(...args);
      } else if (fault.status === 0 || res.headersSent) {
        // The write happened; the client never hears of it.
        res.socket?.destroy();
      } else {
        for (const name of res.getHeaderNames()) res.removeHeader(name);
        sendFault(fault.status, fault.code, fault.message);
      }
    };
    if (fault.latencyMs > 0) setTimeout(deliver, fault.latencyMs);
    else deliver();
    return res;
  }) as Response['end'];
}

/**
 * Quotas and faults in front of one REST surface. `hubOf` names the hub a request is for (hub surface only).
 * Errors take the surface's shape: IoT Hub legacy body or DPS body; a fault with status 0 drops the connection.
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
    const ifMatch = req.get('If-Match') || undefined;
    const classified = classify(req.method, req.path, ifMatch, req.query);
    const decision = evaluateLimits(state, { surface, ...classified, hub: hubOf?.(req) });
    const sendFault = (status: number, code: string | undefined, message: string | undefined): void => {
      const text = message ?? `Injected fault for ${classified.operation}`;
      if (surface === 'hub') sendHubError(res, new AzureError(status, code ?? faultCode(status), text));
      else sendDpsError(res, status, status * 1000 + 1, text);
    };
    const respond = (): void => {
      if (decision.kind === 'pass') {
        if (decision.after) interceptAnswer(res, decision.after, sendFault);
        next();
      } else if (decision.kind === 'fault') {
        if (decision.status === 0) req.socket.destroy();
        else sendFault(decision.status, decision.code, decision.message);
      } else if (surface === 'hub') {
        sendHubError(res, hubErrors.throttled(), decision.retryAfterSeconds);
      } else {
        const message = 'Operations are being throttled: quota exceeded';
        sendDpsError(res, 429, 429001, message, decision.retryAfterSeconds);
      }
    };
    if (decision.delayMs > 0) {
      void sleep(decision.delayMs).then(respond);
    } else {
      respond();
    }
  };
}
