import type { RequestHandler } from 'express';
import cors from 'cors';
import helmet from 'helmet';
import { API_KEY_HEADER } from './auth/api-keys';
import { callerOf } from './auth/caller';
import { IDEMPOTENCY_KEY_HEADER } from './idempotency';
import { CORRELATION_ID_HEADER, problem } from './problems';

/**
 * What keeps a browser from being used against the API: the API uses no cookies (credentials are headers a page on
 * another site cannot add without CORS), and on top of that
 * - a Host allow-list (DNS rebinding: a site whose name resolves to 127.0.0.1 still sends its own name as Host);
 * - no CORS unless origins are configured; a mutating request from another origin is 403;
 * - mutating requests carry JSON or nothing: form and text bodies, which a page can post cross-site without a
 *   preflight, are 415 whatever the route;
 * - helmet's security headers.
 */

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
/** application/json and the +json types. */
const isJson = (contentType: string) =>
  /^application\/(?:json|[a-z0-9.!#$&^_-]+\+json)$/.test(contentType.split(';')[0].trim().toLowerCase());
/** The names a loopback API answers to by default. */
export const LOOPBACK_HOSTS = ['127.0.0.1', 'localhost', '[::1]'];

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * Answers 421 unless the Host header is one of `allowed`: `name` (any port) or `name:port`, case-insensitive.
 * `undefined` allows every Host (an API behind a proxy that checks it, or reached by many names).
 */
export function hostAllowList(allowed: readonly string[] | undefined): RequestHandler {
  if (!allowed) return (_req, _res, next) => next();
  const names = new Set(allowed.map((h) => h.toLowerCase()));
  return (req, _res, next) => {
    const host = (req.get('host') ?? '').toLowerCase();
    const name = host.replace(/:\d+$/, '');
    if (names.has(host) || names.has(name)) return next();
    next(problem('hostNotAllowed', `this API does not answer to the host ${host || '(none)'}`));
  };
}

/** helmet's defaults for a JSON API that also serves Swagger UI (its own scripts and styles, no inline scripts). */
export function securityHeaders(): RequestHandler {
  return helmet({
    contentSecurityPolicy: {
      directives: {
        'default-src': ["'self'"],
        'img-src': ["'self'", 'data:'],
        'style-src': ["'self'", "'unsafe-inline'"],
        'script-src': ["'self'"],
        'frame-ancestors': ["'none'"],
      },
    },
    // HSTS belongs to whoever terminates TLS; the API itself speaks plain HTTP on loopback.
    strictTransportSecurity: false,
  });
}

/** CORS for the configured origins only (e.g. the Temporal UI for the codec endpoint); none by default. */
export function corsFor(origins: readonly string[]): RequestHandler {
  if (origins.length === 0) return (_req, _res, next) => next();
  return cors({
    origin: [...origins],
    allowedHeaders: ['Authorization', 'Content-Type', API_KEY_HEADER, IDEMPOTENCY_KEY_HEADER, 'X-Namespace'],
    exposedHeaders: ['Location', 'Retry-After', CORRELATION_ID_HEADER],
    maxAge: 600,
  });
}

/**
 * Refuses mutating requests from another origin (403) and with a body that is not JSON (415), on the routes that
 * authenticate callers with API credentials (after api/auth/middleware.ts); the webhook checks its own media types.
 */
export function browserGuard(corsOrigins: readonly string[]): RequestHandler {
  const allowedOrigins = new Set(corsOrigins.map((o) => o.toLowerCase()));
  return (req, res, next) => {
    if (!MUTATING.has(req.method) || !callerOf(res)) return next();
    const origin = req.get('origin');
    if (origin !== undefined && !allowedOrigins.has(origin.toLowerCase()) && !sameOrigin(origin, req.get('host'))) {
      return next(problem('forbidden', `requests from the origin ${origin} are not allowed`));
    }
    // A Content-Type of another kind is refused even with an empty body: that is what a cross-site form sends.
    const contentType = req.get('content-type');
    const length = req.get('content-length');
    const hasBody = req.get('transfer-encoding') !== undefined || (length !== undefined && Number(length) > 0);
    const refused = contentType !== undefined ? !isJson(contentType) : hasBody;
    if (refused) {
      const got = contentType ?? 'a body without Content-Type';
      return next(
        problem('unsupportedMediaType', `changes take JSON or no body, got ${got}`, {
          headers: { 'Accept-Post': 'application/json' },
        }),
      );
    }
    next();
  };
}

function sameOrigin(origin: string, host: string | undefined): boolean {
  try {
    return host !== undefined && new URL(origin).host.toLowerCase() === host.toLowerCase();
  } catch {
    return false;
  }
}
