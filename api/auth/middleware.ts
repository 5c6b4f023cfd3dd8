import type { RequestHandler } from 'express';
import type { Logger } from '../../common/logger';
import { documentedRoutes, type RouteAuth } from '../openapi';
import { problem } from '../problems';
import { templatePattern } from '../routing';
import type { ApiKeyEntry } from '../../common/access';
import { API_KEY_HEADER, ApiKeys } from './api-keys';
import { markChange, setCaller, type Caller } from './caller';
import { TokenRejected } from './jwt';
import { oidcAuthenticator, type OidcOptions } from './oidc';
import { grants, ROLES, type Role } from './roles';

/** How the API authenticates callers: hashed API keys, OIDC bearer tokens, or both. Neither: every role route is 401. */
export interface AuthOptions {
  apiKeys?: readonly ApiKeyEntry[];
  oidc?: OidcOptions;
}

/** Paths outside the documented operations that are served without credentials: Swagger UI's page and assets. */
const UNDOCUMENTED_PUBLIC = /^\/docs(\/|$)/i;

/**
 * Authentication and authorization for every route, from the `auth` each one declares in `registerRoute`
 * (api/openapi.ts), which is also what its OpenAPI `security` says:
 * - a role: the caller must present an API key (`X-API-Key`) or an OIDC access token (`Authorization: Bearer`) that
 *   holds the role or a higher one; otherwise 401 (no or unknown credentials) or 403 (a lower role). The caller is
 *   then available to the route (api/auth/caller.ts);
 * - `public` and `webhook`: passed on (the webhook checks its own secret or token).
 * A path that no operation documents is answered 404 here, before any router sees it: a route added without
 * `registerRoute` is unreachable rather than open.
 */
export function authorization(options: AuthOptions = {}, log: Logger): RequestHandler {
  const routes = documentedRoutes().map((route) => ({ ...route, pattern: templatePattern(route.path) }));
  const apiKeys = new ApiKeys(options.apiKeys ?? []);
  const oidc = options.oidc ? oidcAuthenticator(options.oidc) : undefined;
  const challenge = [`ApiKey header="X-API-Key"`, ...(oidc ? ['Bearer realm="iot-lifecycle"'] : [])].join(', ');
  const unauthorized = (detail: string, bearerError?: string) =>
    problem('unauthorized', detail, {
      headers: {
        'WWW-Authenticate': bearerError
          ? `Bearer realm="iot-lifecycle", error="invalid_token", error_description="${bearerError}"`
          : challenge,
      },
    });

  async function authenticate(authorizationHeader: string | undefined, key: string | undefined): Promise<Caller> {
    if (key !== undefined) {
      const caller = apiKeys.verify(key);
      if (!caller) throw unauthorized('the API key is not one this API knows');
      return caller;
    }
    const bearer = /^Bearer +(\S+)$/i.exec(authorizationHeader ?? '')?.[1];
    if (bearer === undefined) {
      throw unauthorized(`credentials required: an API key in ${API_KEY_HEADER}${oidc ? ' or a bearer token' : ''}`);
    }
    if (!oidc) throw unauthorized('bearer tokens are not accepted here (no OIDC issuer is configured)');
    try {
      return await oidc(bearer);
    } catch (err) {
      if (err instanceof TokenRejected) throw unauthorized(`bearer token refused: ${err.message}`, err.message);
      throw err;
    }
  }

  return async (req, res, next) => {
    const matching = routes.filter((route) => route.pattern.test(req.path));
    if (matching.length === 0) {
      if (UNDOCUMENTED_PUBLIC.test(req.path)) return next();
      return next(problem('notFound', `no route ${req.method} ${req.path}`));
    }
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    const role = strictest(matching.map((route) => route.auth[method]));
    if (!role) return next(); // public, the webhook, or a method no route has (api/routing.ts answers it)
    const caller = await authenticate(req.get('authorization'), req.get(API_KEY_HEADER));
    if (!grants(caller.roles, role)) {
      log.info({ subject: caller.subject, roles: caller.roles, requiredRole: role }, 'role refused');
      throw problem('forbidden', `this operation needs the ${role} role`, { extensions: { requiredRole: role } });
    }
    setCaller(res, caller);
    if (matching.some((route) => route.changes.includes(method))) markChange(res);
    next();
  };
}

/** The highest role among the routes a path matches (two templates may match one path), or none if none needs one. */
function strictest(auths: Array<RouteAuth | undefined>): Role | undefined {
  const roles = auths.filter((a): a is Role => (ROLES as readonly string[]).includes(a ?? ''));
  return roles.sort((a, b) => ROLES.indexOf(b) - ROLES.indexOf(a))[0];
}
