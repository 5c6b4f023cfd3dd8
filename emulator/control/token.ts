import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import path from 'node:path';
import type { RequestHandler } from 'express';

/**
 * The control API's own bearer token. The control API hands out owner connection strings, device keys and webhook
 * secrets and can wipe the emulator, so every route but `/health` needs `Authorization: Bearer <token>`; a page on
 * another site cannot add that header (no CORS), so a cross-site form post is refused too. Checked before any body
 * is read.
 */
export const CONTROL_TOKEN_HEADER = 'authorization';

/** Where `npm start` and `npm run emulator` keep the token, beside the emulator's state. */
export function controlTokenFile(emulatorDataDir: string): string {
  return path.join(emulatorDataDir, 'control-token');
}

export function generateControlToken(): string {
  return randomBytes(24).toString('base64url');
}

export function requireControlToken(token: string): RequestHandler {
  const expected = digest(token);
  return (req, res, next) => {
    if (req.path === '/health') return next();
    const offered = /^Bearer +(\S+)$/i.exec(req.get(CONTROL_TOKEN_HEADER) ?? '')?.[1];
    // Compared as digests: equal length, constant time.
    if (offered !== undefined && timingSafeEqual(digest(offered), expected)) return next();
    res
      .status(401)
      .set('WWW-Authenticate', 'Bearer realm="emulator control"')
      .json({ error: 'the control API needs its token: Authorization: Bearer <token> (printed at start)' });
  };
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}
