import { createRemoteJWKSet, errors, jwtVerify, type JWTPayload } from 'jose';

/**
 * JWT bearer tokens checked against an issuer's published keys (JWKS), audience and issuer, with `jose`. Shared by
 * the API's OIDC sign-in (Microsoft Entra ID access tokens) and Event Grid's Entra-secured webhook delivery.
 */

export interface JwtCheck {
  /** Accepted `iss` values, e.g. Entra v2 `https://login.microsoftonline.com/<tenant>/v2.0`. */
  issuers: string[];
  /** Accepted `aud` values: the API's application id URI (`api://…`) or its client id. */
  audiences: string[];
  /** Where the issuer publishes its signing keys, e.g. `https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys`. */
  jwksUri: string;
}

/** Asymmetric algorithms only: a JWKS holds public keys, and `none` or HMAC must never pass. */
const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512'];
/** Clock skew allowed between the issuer and this host. */
const CLOCK_TOLERANCE_SECONDS = 60;

export class TokenRejected extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenRejected';
  }
}

/** A verifier for one issuer: resolves the token's claims, or rejects with TokenRejected (say why, never the token). */
export function jwtVerifier(check: JwtCheck): (token: string) => Promise<JWTPayload> {
  // jose caches the keys, refetches on an unknown `kid` (key rotation) at most every 30 s.
  const keys = createRemoteJWKSet(new URL(check.jwksUri), { timeoutDuration: 5_000, cooldownDuration: 30_000 });
  return async (token) => {
    try {
      const { payload } = await jwtVerify(token, keys, {
        issuer: check.issuers,
        audience: check.audiences,
        algorithms: ALGORITHMS,
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
        requiredClaims: ['exp'],
      });
      return payload;
    } catch (err) {
      throw new TokenRejected(reason(err));
    }
  };
}

function reason(err: unknown): string {
  if (err instanceof errors.JWTExpired) return 'the token has expired';
  if (err instanceof errors.JWTClaimValidationFailed) return `the token's ${err.claim} claim is not accepted here`;
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'the token signature does not verify';
  if (err instanceof errors.JWKSNoMatchingKey) return "the token's signing key is not one of the issuer's keys";
  if (err instanceof errors.JOSEAlgNotAllowed) return "the token's algorithm is not accepted";
  if (err instanceof errors.JWKSTimeout || err instanceof errors.JOSEError) {
    // Also an unreachable JWKS: the caller cannot be authenticated now (logged by the middleware).
    return err instanceof errors.JWKSTimeout
      ? "the issuer's keys could not be fetched in time"
      : 'the token is invalid';
  }
  return 'the token is invalid';
}

/** The string values of a claim that is a string or an array of strings (Entra's `roles`). */
export function claimValues(payload: JWTPayload, claim: string): string[] {
  const value = payload[claim];
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string');
  return [];
}

export function stringClaim(payload: JWTPayload, claim: string): string | undefined {
  const value = payload[claim];
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}
