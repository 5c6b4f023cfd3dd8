import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

const MAC_BYTES = 32;

/**
 * Page tokens handed to clients: Temporal's own next-page token, authenticated with HMAC-SHA256 under a server key
 * over the visibility query it belongs to. A token that was forged, mangled or issued for another listing (other
 * filters) fails `open` and is answered 400, instead of reaching Temporal, which answers such tokens with a generic
 * error. Replicas of the API must share the key (API_PAGE_TOKEN_SECRET) to accept each other's tokens.
 */
export class PageTokens {
  private readonly key: Buffer;

  /** `secret` undefined: a random key, so tokens are valid only for this process. */
  constructor(secret?: string) {
    this.key = secret ? Buffer.from(secret, 'utf8') : randomBytes(32);
  }

  seal(serverToken: Uint8Array, query: string): string {
    const payload = Buffer.from(serverToken);
    return Buffer.concat([this.mac(payload, query), payload]).toString('base64url');
  }

  /** Temporal's token, or undefined when `token` is not one this server issued for `query`. */
  open(token: string, query: string): Buffer | undefined {
    const raw = Buffer.from(token, 'base64url');
    if (raw.length <= MAC_BYTES) return undefined;
    const mac = raw.subarray(0, MAC_BYTES);
    const payload = raw.subarray(MAC_BYTES);
    return timingSafeEqual(mac, this.mac(payload, query)) ? payload : undefined;
  }

  private mac(payload: Buffer, query: string): Buffer {
    // Length-prefixed, so no (query, payload) pair can be re-split into another.
    const length = Buffer.alloc(4);
    length.writeUInt32BE(Buffer.byteLength(query));
    return createHmac('sha256', this.key).update(length).update(query).update(payload).digest();
  }
}
