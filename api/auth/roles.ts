import { ROLES, type Role } from '../../common/access';

export { ROLES, type Role };

export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}

/** Whether a caller holding `held` may do what needs `needed` (viewer < operator < admin). */
export function grants(held: readonly Role[], needed: Role): boolean {
  return held.some((role) => ROLES.indexOf(role) >= ROLES.indexOf(needed));
}
