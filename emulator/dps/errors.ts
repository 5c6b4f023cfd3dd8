/** DPS errors: the six-digit DPS error codes and the error body the SDKs parse. */
import { randomUUID } from 'node:crypto';
import type { Response } from 'express';

/**
 * A DPS failure: HTTP status plus DPS's six-digit error code (first three digits = status). Azure does not
 * publish every sub-code; the ones used here follow the codes seen on the wire (401002, 404201) and keep the
 * status prefix for the rest.
 */
export class DpsError extends Error {
  constructor(
    readonly status: number,
    readonly errorCode: number,
    message: string,
  ) {
    super(message);
    this.name = 'DpsError';
  }
}

export const dpsErrors = {
  badRequest: (message: string) => new DpsError(400, 400004, message),
  unauthorized: (message = 'Unauthorized') => new DpsError(401, 401002, message),
  invalidCertificate: () => new DpsError(401, 401002, 'Invalid certificate.'),
  badCertificate: () =>
    new DpsError(400, 400004, 'The certificate is not a valid X.509 certificate (PEM or base64 DER).'),
  enrollmentNotFound: (id: string) =>
    new DpsError(404, 404201, `A registration with the specified registration id ${id} could not be found.`),
  groupNotFound: (id: string) => new DpsError(404, 404202, `Enrollment group ${id} could not be found.`),
  registrationNotFound: (id: string) => new DpsError(404, 404203, `Device registration ${id} could not be found.`),
  operationNotFound: (id: string) => new DpsError(404, 404204, `Operation ${id} could not be found.`),
  conflict: (what: string, id: string) =>
    new DpsError(409, 409201, `${what} ${id} already exists; use If-Match to update it.`),
  preconditionFailed: (id: string) =>
    new DpsError(412, 412201, `Precondition failed: the ETag does not match the current one of ${id}.`),
};

/**
 * DPS error body `{errorCode, trackingId, message, timestampUtc}`; errorCode is the six-digit DPS code whose
 * first three digits are the HTTP status (e.g. 404201), as DPS answers.
 */
export function sendDpsError(
  res: Response,
  status: number,
  errorCode: number,
  message: string,
  retryAfterSeconds?: number,
): void {
  if (retryAfterSeconds !== undefined) res.setHeader('Retry-After', String(retryAfterSeconds));
  res.status(status);
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.send(JSON.stringify({ errorCode, trackingId: randomUUID(), message, timestampUtc: new Date().toISOString() }));
}

/** A DPS error body `{errorCode, trackingId, message, timestampUtc}` (used by the MQTT transport). */
export function dpsErrorBody(err: DpsError): Record<string, unknown> {
  return {
    errorCode: err.errorCode,
    trackingId: randomUUID(),
    message: err.message,
    timestampUtc: new Date().toISOString(),
  };
}
