/**
 * Certificates: the emulator's own CA and TLS server certificate, and a helper that mints test CAs,
 * intermediates and device (leaf) certificates for X.509 and X.509-CA attestation.
 *
 * node-forge builds the certificates (Node's crypto can parse X.509 but not issue it); keys come from Node's
 * native RSA generator because forge's pure-JS one is slow.
 */
import { X509Certificate, generateKeyPairSync, randomBytes } from 'node:crypto';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import forge from 'node-forge';

/** The `info` DPS shows for an enrollment's X.509 certificate. */
export interface X509CertificateInfo {
  subjectName: string;
  sha1Thumbprint: string;
  sha256Thumbprint: string;
  issuerName: string;
  notBeforeUtc: string;
  notAfterUtc: string;
  serialNumber: string;
  version: number;
}

export interface MintedCert {
  certPem: string;
  keyPem: string;
  /** Leaf first, then issuers up to (not including) the root: what a device presents. */
  chainPem: string;
  /** Hex, uppercase, no separators, like Azure shows them. */
  thumbprintSha1: string;
  thumbprintSha256: string;
  subject: string;
}

export interface Issuer {
  certPem: string;
  keyPem: string;
  /** The issuer's own chain (itself first), used to build the leaf's chain. */
  chainPem?: string;
}

export interface MintOptions {
  commonName: string;
  /** Signs the certificate; omit for a self-signed certificate. */
  issuer?: Issuer;
  isCa?: boolean;
  /** Subject alternative names (DNS names or IP addresses) for server certificates. */
  altNames?: string[];
  validDays?: number;
  /** Explicit validity, e.g. to mint expired or not-yet-valid certificates for negative tests. */
  notBefore?: Date;
  notAfter?: Date;
  organization?: string;
  /** Client-auth (device) or server-auth extended key usage; default: client for leaves. */
  usage?: 'client' | 'server';
}

function newKeyPair(): { privateKey: forge.pki.rsa.PrivateKey; publicKey: forge.pki.rsa.PublicKey; keyPem: string } {
  const { privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const forgeKey = forge.pki.privateKeyFromPem(privateKey) as forge.pki.rsa.PrivateKey;
  const publicKey = forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e);
  return { privateKey: forgeKey, publicKey, keyPem: privateKey };
}

function serialNumber(): string {
  // Positive 16-byte serial (leading bit cleared so DER keeps it unsigned).
  const bytes = randomBytes(16);
  bytes[0] &= 0x7f;
  return bytes.toString('hex');
}

const IP_PATTERN = /^(\d{1,3}\.){3}\d{1,3}$|:/;

/** Issues a certificate (self-signed when no issuer is given). */
export function mintCertificate(options: MintOptions): MintedCert {
  const keys = newKeyPair();
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serialNumber();
  const now = Date.now();
  cert.validity.notBefore = options.notBefore ?? new Date(now - 60 * 60 * 1000);
  cert.validity.notAfter = options.notAfter ?? new Date(now + (options.validDays ?? 365) * 24 * 60 * 60 * 1000);
  const subject: forge.pki.CertificateField[] = [{ name: 'commonName', value: options.commonName }];
  if (options.organization) subject.push({ name: 'organizationName', value: options.organization });
  cert.setSubject(subject);

  let signingKey = keys.privateKey;
  if (options.issuer) {
    const issuerCert = forge.pki.certificateFromPem(options.issuer.certPem);
    cert.setIssuer(issuerCert.subject.attributes);
    signingKey = forge.pki.privateKeyFromPem(options.issuer.keyPem) as forge.pki.rsa.PrivateKey;
  } else {
    cert.setIssuer(subject);
  }

  const extensions: object[] = [
    { name: 'basicConstraints', cA: !!options.isCa, critical: true },
    options.isCa
      ? { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true }
      : { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ];
  if (!options.isCa) {
    extensions.push(
      options.usage === 'server'
        ? { name: 'extKeyUsage', serverAuth: true }
        : { name: 'extKeyUsage', clientAuth: true },
    );
  }
  if (options.altNames?.length) {
    extensions.push({
      name: 'subjectAltName',
      altNames: options.altNames.map((n) => (IP_PATTERN.test(n) ? { type: 7, ip: n } : { type: 2, value: n })),
    });
  }
  cert.setExtensions(extensions);
  cert.sign(signingKey, forge.md.sha256.create());

  const certPem = forge.pki.certificateToPem(cert);
  const { sha1, sha256 } = thumbprints(certPem);
  return {
    certPem,
    keyPem: keys.keyPem,
    chainPem: certPem + (options.issuer?.chainPem ?? (options.issuer ? options.issuer.certPem : '')),
    thumbprintSha1: sha1,
    thumbprintSha256: sha256,
    subject: options.commonName,
  };
}

/** SHA1 and SHA256 thumbprints of a PEM certificate, uppercase hex without separators (Azure's format). */
export function thumbprints(certPem: string): { sha1: string; sha256: string } {
  const x509 = new X509Certificate(certPem);
  return {
    sha1: x509.fingerprint.replace(/:/g, '').toUpperCase(),
    sha256: x509.fingerprint256.replace(/:/g, '').toUpperCase(),
  };
}

function distinguishedName(dn: string): string {
  // Node renders "CN=a\nO=b"; Azure shows "CN=a, O=b".
  return dn.split('\n').filter(Boolean).join(', ');
}

/** The `info` block DPS returns for an X.509 certificate in an enrollment. */
export function certificateInfo(certPem: string): X509CertificateInfo {
  const x509 = new X509Certificate(certPem);
  const { sha1, sha256 } = thumbprints(certPem);
  return {
    subjectName: distinguishedName(x509.subject),
    sha1Thumbprint: sha1,
    sha256Thumbprint: sha256,
    issuerName: distinguishedName(x509.issuer),
    notBeforeUtc: new Date(x509.validFrom).toISOString(),
    notAfterUtc: new Date(x509.validTo).toISOString(),
    serialNumber: x509.serialNumber.toUpperCase(),
    version: 3,
  };
}

/** The common name of a certificate's subject (DPS uses it as the X.509 registration id). */
export function commonName(certPem: string): string | undefined {
  const x509 = new X509Certificate(certPem);
  return /^CN=(.*)$/m.exec(x509.subject)?.[1];
}

/** Splits concatenated PEM certificates. */
export function splitPemChain(pem: string): string[] {
  return (
    pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\s*/g)?.map((c) => c.trim() + '\n') ?? []
  );
}

/** A certificate given as PEM (the first of a bundle) or base64 DER; undefined when it does not parse. */
export function parseCertificate(pemOrBase64: string): X509Certificate | undefined {
  try {
    const text = pemOrBase64.trim();
    if (text.includes('-----BEGIN CERTIFICATE-----')) return new X509Certificate(splitPemChain(text)[0] ?? text);
    return new X509Certificate(Buffer.from(text, 'base64'));
  } catch {
    return undefined;
  }
}

/** Whether `certPem` was signed by `issuerPem` (signature and subject/issuer names). */
export function isIssuedBy(certPem: string, issuerPem: string): boolean {
  const cert = new X509Certificate(certPem);
  const issuer = new X509Certificate(issuerPem);
  return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
}

/**
 * The certificates a TLS client presented, leaf first (Node links them through `issuerCertificate`): DPS X.509
 * attestation and hub X.509 authentication judge them themselves rather than letting TLS reject unknown issuers.
 */
export function peerCertificateChain(socket: TLSSocket | undefined): X509Certificate[] {
  if (!socket || typeof socket.getPeerCertificate !== 'function') return [];
  const chain: X509Certificate[] = [];
  const seen = new Set<string>();
  let cert: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  while (cert && cert.raw && !seen.has(cert.fingerprint256)) {
    seen.add(cert.fingerprint256);
    chain.push(new X509Certificate(cert.raw));
    cert = cert.issuerCertificate;
  }
  return chain;
}

export const SERVER_CERT_NAMES = [
  'localhost',
  '127.0.0.1',
  '::1',
  '*.azure-devices.net',
  '*.azure-devices-provisioning.net',
  'global.azure-devices-provisioning.net',
];

export interface EmulatorPki {
  ca: MintedCert;
  server: MintedCert;
}

/** The emulator's root CA (reused when given, so trust survives restarts) and a fresh TLS server certificate. */
export function createEmulatorPki(existingCa?: { certPem: string; keyPem: string }): EmulatorPki {
  const ca: MintedCert = existingCa
    ? {
        ...existingCa,
        chainPem: existingCa.certPem,
        thumbprintSha1: thumbprints(existingCa.certPem).sha1,
        thumbprintSha256: thumbprints(existingCa.certPem).sha256,
        subject: commonName(existingCa.certPem) ?? '',
      }
    : mintCertificate({ commonName: 'Azure IoT Emulator Root CA', isCa: true, validDays: 3650 });
  const server = mintCertificate({
    commonName: 'azure-iot-emulator',
    issuer: { certPem: ca.certPem, keyPem: ca.keyPem, chainPem: '' },
    altNames: SERVER_CERT_NAMES,
    usage: 'server',
    validDays: 825,
  });
  return { ca, server };
}
