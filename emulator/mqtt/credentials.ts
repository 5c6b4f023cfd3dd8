/**
 * Whether what a device presented at CONNECT (a SAS token or an X.509 chain) is accepted for its registry record:
 * checked at CONNECT and again whenever the device changes.
 */
import type { X509Certificate } from 'node:crypto';
import type { DeviceRecord } from '../hub/model';
import { SasError, authorizeWithKeys, authorizeWithPolicy, parseSasToken, resourceCovers } from '../security/sas';
import type { HubState } from '../state';

export type Credential =
  | { kind: 'deviceKey'; token: string }
  | { kind: 'policy'; token: string; policy: string }
  | { kind: 'x509'; sha1: string; sha256: string; chain: X509Certificate[] };

export function normalizeThumbprint(value: string | null | undefined): string | undefined {
  return value ? value.replace(/[^0-9a-f]/gi, '').toUpperCase() : undefined;
}

function withinValidity(cert: X509Certificate, now = Date.now()): boolean {
  return Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo);
}

/**
 * Whether a credential (as presented at CONNECT) is accepted for `device` as the registry holds it now. Used at
 * CONNECT and again whenever the device changes.
 */
export function credentialHolds(
  hub: HubState,
  device: DeviceRecord,
  credential: Credential,
  resource: string,
  verifiedCas: X509Certificate[] = [],
): boolean {
  const auth = device.authentication;
  try {
    switch (credential.kind) {
      case 'deviceKey': {
        if (auth.type !== 'sas') return false;
        const parsed = authorizeWithKeys(
          credential.token,
          [auth.symmetricKey.primaryKey, auth.symmetricKey.secondaryKey],
          {
            resource,
          },
        );
        // A device key signs for exactly that device: a hub-wide `sr` is not accepted.
        return !parsed.skn && resourceCovers(resource, parsed.resource);
      }
      case 'policy': {
        if (!parseSasToken(credential.token).skn) return false;
        authorizeWithPolicy(credential.token, hub.policies, { resource, anyOf: ['DeviceConnect'] });
        return true;
      }
      case 'x509': {
        if (!withinValidity(credential.chain[0])) return false;
        if (auth.type === 'selfSigned') {
          const allowed = [auth.x509Thumbprint.primaryThumbprint, auth.x509Thumbprint.secondaryThumbprint]
            .map(normalizeThumbprint)
            .filter((t): t is string => !!t);
          return allowed.includes(credential.sha1) || allowed.includes(credential.sha256);
        }
        if (auth.type === 'certificateAuthority')
          return chainsToVerifiedCa(device.deviceId, credential.chain, verifiedCas);
        return false;
      }
    }
  } catch (err) {
    if (err instanceof SasError) return false;
    throw err;
  }
}

/** X.509 CA authentication: leaf CN is the device id and the presented chain ends at a verified CA. */
function chainsToVerifiedCa(deviceId: string, chain: X509Certificate[], verifiedCas: X509Certificate[]): boolean {
  const leaf = chain[0];
  if (!/^CN=(.*)$/m.test(leaf.subject) || /^CN=(.*)$/m.exec(leaf.subject)?.[1] !== deviceId) return false;
  for (let i = 0; i < chain.length; i++) {
    const cert = chain[i];
    if (!withinValidity(cert)) return false;
    const anchor = verifiedCas.find((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey));
    if (anchor) return true;
    const next = chain[i + 1];
    if (!next || !cert.checkIssued(next) || !cert.verify(next.publicKey) || !next.ca) return false;
  }
  return false;
}
