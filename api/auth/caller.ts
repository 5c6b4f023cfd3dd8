import type { Response } from 'express';
import type { RequestedBy } from '../../common/requested-by';
import { problem } from '../problems';
import { grants, type Role } from './roles';

/** Who sent a request, as its credentials say; set by the authentication middleware (api/auth/middleware.ts). */
export interface Caller extends RequestedBy {
  roles: Role[];
}

const KEY = 'caller';

export function setCaller(res: Response, caller: Caller): void {
  res.locals[KEY] = caller;
}

/** The authenticated caller of a route that declares a role; undefined on public routes and the webhook. */
export function callerOf(res: Response): Caller | undefined {
  return res.locals[KEY] as Caller | undefined;
}

const CHANGE_KEY = 'changeRequest';

/** The authenticated request changes something (its route says so): what the rate limit counts. */
export function markChange(res: Response): void {
  res.locals[CHANGE_KEY] = true;
}

export function isChange(res: Response): boolean {
  return res.locals[CHANGE_KEY] === true;
}

/**
 * The identity a route records with the operation it starts or changes (memo, search attribute, workflow input,
 * logs): see common/requested-by.ts. Only on routes that declare a role, where the middleware has authenticated
 * the caller.
 */
export function requestedBy(res: Response): RequestedBy {
  const caller = callerOf(res);
  if (!caller) throw new Error('requestedBy() on a route without a role: declare auth in registerRoute');
  return { subject: caller.subject, ...(caller.name ? { name: caller.name } : {}), authMethod: caller.authMethod };
}

/**
 * A stricter role than the route's own, decided by the request (e.g. a fleet operation over the operator's size
 * limit needs `admin`): 403 unless the caller holds it.
 */
export function requireRole(res: Response, role: Role, reason: string): void {
  const caller = callerOf(res);
  if (caller && grants(caller.roles, role)) return;
  throw problem('forbidden', `${reason} needs the ${role} role`, { extensions: { requiredRole: role } });
}
