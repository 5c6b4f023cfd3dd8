import request from 'supertest';
import type { App } from 'supertest/types';
import { generateApiKey, hashApiKey } from '../../api/auth/api-keys';
import { LOOPBACK_HOSTS } from '../../api/browser';
import type { ApiSecurity } from '../../api/security';
import type { Role } from '../../common/access';

/** One API key per role for a test file's apps: `security` for createApp, `as(role)` for the request's headers. */
export const TEST_KEYS: Record<Role, string> = {
  viewer: generateApiKey(),
  operator: generateApiKey(),
  admin: generateApiKey(),
};

export function testSecurity(overrides: ApiSecurity = {}): ApiSecurity {
  return {
    auth: {
      apiKeys: (Object.keys(TEST_KEYS) as Role[]).map((role) => ({
        id: `test-${role}`,
        role,
        sha256: hashApiKey(TEST_KEYS[role]),
        name: `test ${role}`,
      })),
    },
    // Tests send many changes a minute from one key.
    rateLimitPerMinute: 100_000,
    allowedHosts: LOOPBACK_HOSTS,
    ...overrides,
  };
}

/** The header that authenticates a request as the test key of `role`. */
export function as(role: Role): Record<string, string> {
  return { 'x-api-key': TEST_KEYS[role] };
}

/** supertest on `app`, every request authenticated as `role` (admin: allowed everything). */
export function authed(app: App, role: Role = 'admin') {
  return request.agent(app).set(as(role));
}
