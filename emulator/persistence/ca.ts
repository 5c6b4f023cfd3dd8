import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { EmulatorPki } from '../security/certs';

/**
 * The emulator's CA kept in a folder (ca.pem, ca-key.pem), so that a ca.pem that clients trust stays valid across
 * restarts of `npm run emulator` and `npm start`.
 */
export function readPersistedCa(dir: string): { certPem: string; keyPem: string } | undefined {
  const certFile = path.join(dir, 'ca.pem');
  const keyFile = path.join(dir, 'ca-key.pem');
  if (!existsSync(certFile) || !existsSync(keyFile)) return undefined;
  return { certPem: readFileSync(certFile, 'utf8'), keyPem: readFileSync(keyFile, 'utf8') };
}

/** Writes the CA and returns the path of ca.pem. */
export function persistCa(dir: string, pki: EmulatorPki): string {
  mkdirSync(dir, { recursive: true });
  const certFile = path.join(dir, 'ca.pem');
  const keyFile = path.join(dir, 'ca-key.pem');
  writeFileSync(certFile, pki.ca.certPem);
  writeFileSync(keyFile, pki.ca.keyPem);
  chmodSync(keyFile, 0o600);
  return certFile;
}
