/** Quotas and faults in front of the REST surfaces, answering in each surface's own error shape. */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { AzureError, hubErrors, sendHubError } from '../hub/errors';
import { sendDpsError } from '../dps/errors';
import type { EmulatorState, HubState, Surface } from '../state';
import { classifyDpsDeviceRequest, classifyDpsServiceRequest, classifyHubRequest } from './classify';
import { evaluateLimits } from './decide';

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
