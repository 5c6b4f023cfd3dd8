import type { RequestHandler } from 'express';
import { documentedRoutes } from './openapi';
import { problem } from './problems';

/**
 * Answers for methods and paths the API does not have, from the OpenAPI registrations, so that they are JSON like
 * every other answer instead of express's HTML page or its text/plain OPTIONS reply:
 * - a documented path with an undocumented method: 405 problem with `Allow`;
 * - OPTIONS on a documented path that does not document OPTIONS itself: 204 with `Allow`.
 * Run before the routers; `notFound` runs after them.
 */
export function methodGuard(): RequestHandler {
  const routes = documentedRoutes().map(({ path, methods }) => {
    const allowed = new Set(methods);
    if (allowed.has('GET')) allowed.add('HEAD');
    allowed.add('OPTIONS');
    return { pattern: templatePattern(path), methods: new Set(methods), allow: [...allowed].sort().join(', ') };
  });
  return (req, res, next) => {
    const route = routes.find((r) => r.pattern.test(req.path));
    if (!route || route.methods.has(req.method) || (req.method === 'HEAD' && route.methods.has('GET'))) {
      next();
      return;
    }
    if (req.method === 'OPTIONS') {
      res.set('Allow', route.allow).status(204).end();
      return;
    }
    const detail = `${req.method} is not allowed here; allowed: ${route.allow}`;
    next(problem('methodNotAllowed', detail, { headers: { Allow: route.allow } }));
  };
}

export const notFound: RequestHandler = (req, _res, next) => {
  next(problem('notFound', `no route ${req.method} ${req.path}`));
};

/** `/v1/promotions/{registrationId}` → a RegExp matching one path segment per parameter. */
export function templatePattern(template: string): RegExp {
  const source = template
    .split(/(\{[^}]+\})/)
    .map((part) => (part.startsWith('{') ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('');
  // Case-insensitive and with an optional trailing slash, as express routes match.
  return new RegExp(`^${source}/?$`, 'i');
}

/**
 * The documented route template a path falls under (`/v1/promotions/dev-1` → `/v1/promotions/{registrationId}`), or
 * `other`: what metrics, request logs and span names use, never the raw path (ids would explode them).
 */
export function routeTemplates(): (path: string) => string {
  const routes = documentedRoutes().map((route) => ({ path: route.path, pattern: templatePattern(route.path) }));
  return (path) => routes.find((r) => r.pattern.test(path))?.path ?? 'other';
}
