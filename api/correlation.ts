import { randomUUID } from 'node:crypto';
import type { RequestHandler, Response } from 'express';
import type { Logger } from '../common/logger';
import { CORRELATION_ID_HEADER } from './problems';

const KEY = 'correlationId';

/**
 * Gives every request a correlation id (a UUID, in the X-Correlation-Id response header, in problem bodies and in
 * the request's log line), and logs each answer once it is sent.
 */
export function correlation(log: Logger): RequestHandler {
  return (req, res, next) => {
    const correlationId = randomUUID();
    res.locals[KEY] = correlationId;
    res.set(CORRELATION_ID_HEADER, correlationId);
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      log.debug({ correlationId, method: req.method, path: req.path, status: res.statusCode, ms }, 'request');
    });
    next();
  };
}

export function correlationIdOf(res: Response): string {
  // Set by correlation() for every request; a fresh one only if the app was assembled without it.
  return (res.locals[KEY] as string | undefined) ?? randomUUID();
}
