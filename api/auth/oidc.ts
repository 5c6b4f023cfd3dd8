import type { Caller } from './caller';
import { claimValues, jwtVerifier, stringClaim, TokenRejected, type JwtCheck } from './jwt';
import { isRole } from './roles';

/**
 * OIDC sign-in with access tokens, as Microsoft Entra ID issues them: the caller is the token's `oid` (the user's
 * or service principal's object id, the same in every app of the tenant) or else its `sub`; its name is
 * `preferred_username`, `name`, or for an application (client credentials) its client id `azp`/`appid`. Roles are
 * the values of the roles claim (Entra app roles `viewer`, `operator`, `admin`); other values are ignored.
 */
export interface OidcOptions extends JwtCheck {
  /** The claim holding roles; `roles` (Entra app roles). */
  rolesClaim?: string;
}

export function oidcAuthenticator(options: OidcOptions): (token: string) => Promise<Caller> {
  const verify = jwtVerifier(options);
  const rolesClaim = options.rolesClaim ?? 'roles';
  return async (token) => {
    const claims = await verify(token);
    const subject = stringClaim(claims, 'oid') ?? stringClaim(claims, 'sub');
    if (!subject) throw new TokenRejected('the token names no subject (oid or sub)');
    const name =
      stringClaim(claims, 'preferred_username') ??
      stringClaim(claims, 'name') ??
      stringClaim(claims, 'azp') ??
      stringClaim(claims, 'appid');
    return {
      subject,
      ...(name ? { name } : {}),
      authMethod: 'oidc',
      roles: claimValues(claims, rolesClaim).filter(isRole),
    };
  };
}
