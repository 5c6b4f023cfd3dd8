import { ApplicationFailure, Context, type metricMeter } from '@temporalio/activity';

/**
 * Azure's permanent answers become non-retryable ApplicationFailures with a named type; throttling (429), 5xx,
 * 408 and network errors are rethrown as they are, so Temporal retries them.
 */
export const AzureFailureTypes = {
  badRequest: 'AzureBadRequest',
  unauthorized: 'AzureUnauthorized',
  forbidden: 'AzureForbidden',
  notFound: 'AzureNotFound',
  conflict: 'AzureConflict',
  preconditionFailed: 'AzurePreconditionFailed',
} as const;

const PERMANENT: Record<number, string> = {
  400: AzureFailureTypes.badRequest,
  401: AzureFailureTypes.unauthorized,
  403: AzureFailureTypes.forbidden,
  404: AzureFailureTypes.notFound,
  409: AzureFailureTypes.conflict,
  412: AzureFailureTypes.preconditionFailed,
};

export function statusOf(err: unknown): number | undefined {
  return (err as { response?: { statusCode?: number } })?.response?.statusCode;
}

export function isNotFound(err: unknown): boolean {
  return statusOf(err) === 404 || (err as Error)?.name === 'DeviceNotFoundError';
}

/** Runs one Azure call; permanent failures are named and non-retryable, `what` says which call failed. */
export async function azureCall<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    const result = await call();
    countCall(what, (result as { response?: { statusCode?: number } })?.response?.statusCode ?? 'ok');
    return result;
  } catch (err) {
    countCall(what, statusOf(err) ?? 'error');
    throw toFailure(what, err);
  }
}

/**
 * Azure calls by API and status (throttling shows as 429) on the SDK's activity metric meter, exported with the
 * worker's Temporal metrics. Outside an activity (a unit test calling a helper) nothing is counted.
 */
function countCall(api: string, status: number | string): void {
  let meter: typeof metricMeter;
  try {
    meter = Context.current().metricMeter;
  } catch {
    return;
  }
  meter.createCounter('iot_lifecycle_azure_calls', 'calls', 'Azure calls by API and status').add(1, {
    api,
    status: String(status),
  });
}

export function toFailure(what: string, err: unknown): unknown {
  if (err instanceof ApplicationFailure) return err;
  const status = statusOf(err);
  const type = status !== undefined ? PERMANENT[status] : undefined;
  if (!type) return err;
  const message = `${what}: ${status} ${(err as Error).message ?? ''}`.trim();
  return ApplicationFailure.create({ type, message, nonRetryable: true, details: [{ status }] });
}

export function permanent(type: string, message: string, details?: unknown): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true, details: details ? [details] : [] });
}

/** A bulk registry call's per-device errors, from its answer or from the 400 the SDK raised with the same body. */
export function bulkErrorsOf(
  err: unknown,
): Array<{ deviceId?: string; errorCode?: string; errorStatus?: string }> | undefined {
  let body = (err as { responseBody?: unknown }).responseBody;
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body) as unknown;
    } catch {
      return undefined;
    }
  }
  const errors = (body as { errors?: unknown } | undefined)?.errors;
  return Array.isArray(errors)
    ? (errors as Array<{ deviceId?: string; errorCode?: string; errorStatus?: string }>)
    : undefined;
}
