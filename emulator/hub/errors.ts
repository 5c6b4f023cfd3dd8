/**
 * IoT hub error responses in the shape Azure uses, so the real SDKs raise their own error classes.
 */
import { randomUUID } from 'node:crypto';
import type { Response } from 'express';

/** A registry failure with Azure's HTTP status and error code (e.g. 404 DeviceNotFound). */
export class AzureError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'AzureError';
  }
}

export const hubErrors = {
  deviceNotFound: (id: string) => new AzureError(404, 'DeviceNotFound', `Device ${id} not found`),
  deviceAlreadyExists: (id: string) =>
    new AzureError(409, 'DeviceAlreadyExists', `A device with ID '${id}' is already registered.`),
  preconditionFailed: (id: string) =>
    new AzureError(412, 'PreconditionFailed', `Precondition failed: the ETag does not match for device ${id}`),
  argument: (message: string) => new AzureError(400, 'ArgumentInvalid', message),
  unauthorized: (message = 'Unauthorized') => new AzureError(401, 'IotHubUnauthorizedAccess', message),
  throttled: () =>
    new AzureError(429, 'ThrottlingException', 'Throttling: too many requests for the IoT hub tier and units'),
  notFound: (what: string) => new AzureError(404, 'NotFound', `${what} not found`),
};

function trackingId(): string {
  return randomUUID().replace(/-/g, '').toUpperCase();
}

/** IoT Hub's legacy error body: `{"Message":"ErrorCode:<Code>;<text>","ExceptionMessage":"Tracking ID:…"}`. */
export function sendHubError(res: Response, error: AzureError, retryAfterSeconds?: number): void {
  const timestamp = new Date().toISOString();
  res.status(error.status);
  res.setHeader('iothub-errorcode', error.code);
  if (retryAfterSeconds !== undefined) res.setHeader('Retry-After', String(retryAfterSeconds));
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.send(
    JSON.stringify({
      // The SDK splits Message on ';', so keep ';' out of the text.
      Message: `ErrorCode:${error.code};${error.message.replace(/;/g, ',')}`,
      ExceptionMessage: `Tracking ID:${trackingId()}-G:0-TimeStamp:${timestamp}`,
    }),
  );
}
