import { X509Certificate, createHash } from 'node:crypto';
import tls from 'node:tls';
import {
  SERVER_CERT_NAMES,
  certificateInfo,
  commonName,
  createEmulatorPki,
  isIssuedBy,
  mintCertificate,
  splitPemChain,
} from '../../emulator/security/certs';

describe('test certificate helper', () => {
  const root = mintCertificate({ commonName: 'Test Root CA', isCa: true });
  const intermediate = mintCertificate({ commonName: 'Test Intermediate CA', isCa: true, issuer: root });
  const leaf = mintCertificate({ commonName: 'device-007', issuer: intermediate });

  it('mints a CA → intermediate → device chain that verifies link by link', () => {
    expect(isIssuedBy(intermediate.certPem, root.certPem)).toBe(true);
    expect(isIssuedBy(leaf.certPem, intermediate.certPem)).toBe(true);
    expect(isIssuedBy(leaf.certPem, root.certPem)).toBe(false);
    expect(new X509Certificate(root.certPem).ca).toBe(true);
    expect(new X509Certificate(leaf.certPem).ca).toBe(false);
  });

  it('gives the device chain leaf first, then its issuers', () => {
    const chain = splitPemChain(leaf.chainPem).map((pem) => commonName(pem));
    expect(chain).toEqual(['device-007', 'Test Intermediate CA', 'Test Root CA']);
  });

  it("reports thumbprints as Azure shows them: uppercase hex of the DER's SHA1 / SHA256", () => {
    const der = new X509Certificate(leaf.certPem).raw;
    expect(leaf.thumbprintSha1).toBe(createHash('sha1').update(der).digest('hex').toUpperCase());
    expect(leaf.thumbprintSha256).toBe(createHash('sha256').update(der).digest('hex').toUpperCase());
  });

  it('describes a certificate with the info block DPS returns', () => {
    const info = certificateInfo(leaf.certPem);
    expect(info).toMatchObject({
      subjectName: 'CN=device-007',
      issuerName: 'CN=Test Intermediate CA',
      sha1Thumbprint: leaf.thumbprintSha1,
      sha256Thumbprint: leaf.thumbprintSha256,
      version: 3,
    });
    expect(Date.parse(info.notAfterUtc)).toBeGreaterThan(Date.now());
  });

  it('mints an expired certificate when asked', () => {
    const expired = mintCertificate({
      commonName: 'old',
      issuer: root,
      notBefore: new Date(Date.now() - 2 * 86_400_000),
      notAfter: new Date(Date.now() - 86_400_000),
    });
    expect(Date.parse(new X509Certificate(expired.certPem).validTo)).toBeLessThan(Date.now());
  });
});

describe('emulator TLS identity', () => {
  const pki = createEmulatorPki();

  it('issues the server certificate from the emulator CA for every Azure name it serves', () => {
    expect(isIssuedBy(pki.server.certPem, pki.ca.certPem)).toBe(true);
    const cert = new X509Certificate(pki.server.certPem);
    for (const name of ['test-hub.azure-devices.net', 'emulator-dps.azure-devices-provisioning.net', 'localhost']) {
      expect(tls.checkServerIdentity(name, { subjectaltname: cert.subjectAltName } as tls.PeerCertificate)).toBe(
        undefined,
      );
    }
    expect(
      tls.checkServerIdentity('example.com', { subjectaltname: cert.subjectAltName } as tls.PeerCertificate),
    ).toMatchObject({ code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    expect(SERVER_CERT_NAMES).toContain('global.azure-devices-provisioning.net');
  });

  it('reuses a given CA so a trusted ca.pem stays valid', () => {
    const again = createEmulatorPki({ certPem: pki.ca.certPem, keyPem: pki.ca.keyPem });
    expect(again.ca.certPem).toBe(pki.ca.certPem);
    expect(isIssuedBy(again.server.certPem, pki.ca.certPem)).toBe(true);
  });
});
