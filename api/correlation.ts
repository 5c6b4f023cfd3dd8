import { randomUUID } from 'node:crypto';
import type { RequestHandler, Response } from 'express';
import { CORRELATION_ID_HEADER } from './problems';

const KEY = 'correlationId';

/**
 * Gives every request a correlation id (a UUID, in the X-Correlation-Id response header, in problem bodies and, as
 * `requestId`, in the request's log line: api/request-log.ts).
 */
export function correlation(): RequestHandler {
  return (_req, res, next) => {
    const correlationId = randomUUID();
    res.locals[KEY] = correlationId;
    res.set(CORRELATION_ID_HEADER, correlationId);
    next();
  };
}

export function correlationIdOf(res: Response): string {
  // Set by correlation() for every request; a fresh one only if the app was assembled without it.
  return (res.locals[KEY] as string | undefined) ?? randomUUID();
}
