import { readFileSync } from 'node:fs';
import type { Config } from '../common/config';
import { StartupError } from '../common/startup';
import { ApiKeyEntries, type ApiKeyEntry } from '../common/access';
import { hashApiKey } from './auth/api-keys';
import type { AuthOptions } from './auth/middleware';
import { isLoopback, LOOPBACK_HOSTS } from './browser';

export const DEFAULT_RATE_LIMIT_PER_MINUTE = 60;

/** The API's security settings (AppDeps.security), from the configuration by `apiSecurity`. */
export interface ApiSecurity {
  auth?: AuthOptions;
  /** Host header values answered; undefined: any (see api/browser.ts). */
  allowedHosts?: string[];
  /** Browser origins allowed by CORS; none by default. */
  corsOrigins?: string[];
  /** Mutating requests per client and minute (api/rate-limit.ts); 60. */
  rateLimitPerMinute?: number;
}

/**
 * The API's security settings from the configuration: API keys from API_KEYS and API_KEYS_FILE (plus `extraKeys`,
 * e.g. the local operator key `npm start` makes), OIDC from API_OIDC_*, the Host allow-list (API_ALLOWED_HOSTS, or
 * the loopback names when API_HOST is a loopback address), CORS origins and the rate limit.
 */
export function apiSecurity(config: Config, extraKeys: ApiKeyEntry[] = []): ApiSecurity {
  const apiKeys = [...(config.API_KEYS ?? []), ...readKeysFile(config.API_KEYS_FILE), ...extraKeys];
  const oidc = config.API_OIDC_ISSUER
    ? {
        issuers: [config.API_OIDC_ISSUER],
        audiences: config.API_OIDC_AUDIENCE!,
        jwksUri: config.API_OIDC_JWKS_URI!,
        rolesClaim: config.API_OIDC_ROLES_CLAIM,
      }
    : undefined;
  return {
    auth: { apiKeys, oidc },
    allowedHosts: config.API_ALLOWED_HOSTS ?? (isLoopback(config.API_HOST) ? LOOPBACK_HOSTS : undefined),
    corsOrigins: config.API_CORS_ORIGINS ?? [],
    rateLimitPerMinute: config.API_RATE_LIMIT_PER_MINUTE,
  };
}

/** A local key's entry (npm start's operator and admin keys): its hash under its id. */
export function localKeyEntry(id: string, role: ApiKeyEntry['role'], key: string): ApiKeyEntry {
  return { id, role, sha256: hashApiKey(key), name: `npm start ${id} key` };
}

function readKeysFile(file: string | undefined): ApiKeyEntry[] {
  if (!file) return [];
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new StartupError(`API_KEYS_FILE ${file} cannot be read as JSON: ${(err as Error).message}`);
  }
  const parsed = ApiKeyEntries.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new StartupError(`API_KEYS_FILE ${file}: ${issues}`);
  }
  return parsed.data;
}
