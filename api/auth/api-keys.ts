import { createHash, randomBytes } from 'node:crypto';
import type { ApiKeyEntry } from '../../common/access';
import type { Caller } from './caller';

/**
 * API keys for automation: random 256-bit secrets the server knows only by their SHA-256. A slow password hash
 * (scrypt, argon2) protects guessable secrets; these are never guessable, so one SHA-256 is enough and keeps a
 * lookup per request cheap. Keys travel in the `X-API-Key` header; `npm run api-key` makes one.
 */

export const API_KEY_HEADER = 'x-api-key';
const PREFIX = 'iotl_';

export function generateApiKey(): string {
  return `${PREFIX}${randomBytes(32).toString('base64url')}`;
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

export class ApiKeys {
  private readonly byHash: Map<string, ApiKeyEntry>;

  constructor(entries: readonly ApiKeyEntry[]) {
    this.byHash = new Map(entries.map((entry) => [entry.sha256, entry]));
  }

  get size(): number {
    return this.byHash.size;
  }

  /** The caller a key stands for, or undefined for a key the server does not know. */
  verify(key: string): Caller | undefined {
    // A lookup by the key's hash: its timing says nothing usable about the key itself.
    const entry = this.byHash.get(hashApiKey(key));
    if (!entry) return undefined;
    return {
      subject: entry.id,
      ...(entry.name ? { name: entry.name } : {}),
      authMethod: 'apiKey',
      roles: [entry.role],
    };
  }
}
