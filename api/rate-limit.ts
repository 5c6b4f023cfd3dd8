import type { RequestHandler } from 'express';
import { rateLimit } from 'express-rate-limit';
import { callerOf, isChange } from './auth/caller';
import { problem } from './problems';

const WINDOW_MS = 60_000;

/**
 * Per-client limits on changes: at most `perMinute` requests to operations that change something (see
 * `changes` in registerRoute) per authenticated caller (its method and
 * subject, so one key or user is one client wherever it connects from) in a fixed one-minute window; past it, 429
 * with Retry-After. Reads and the webhook (Event Grid, authenticated by its own secret or token) are not limited.
 * Counts are per API process (express-rate-limit's memory store): replicas each allow as much.
 */
export function changeRateLimit(perMinute: number): RequestHandler {
  return rateLimit({
    windowMs: WINDOW_MS,
    limit: perMinute,
    standardHeaders: 'draft-8',
    legacyHeaders: false,
    skip: (_req, res) => !isChange(res),
    keyGenerator: (_req, res) => {
      const caller = callerOf(res)!;
      return `${caller.authMethod}:${caller.subject}`;
    },
    handler: (req, _res, next) => {
      const resetTime = (req as { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime;
      const seconds = Math.max(1, Math.ceil(((resetTime?.getTime() ?? Date.now() + WINDOW_MS) - Date.now()) / 1000));
      next(
        problem('tooManyRequests', `more than ${perMinute} changes in a minute from this client`, {
          headers: { 'Retry-After': String(seconds) },
        }),
      );
    },
  });
}
