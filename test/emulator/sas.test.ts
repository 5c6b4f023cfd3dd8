import { createHmac } from 'node:crypto';
import { SharedAccessSignature, anHourFromNow } from 'azure-iot-common';
import {
  SasError,
  authorizeWithKeys,
  authorizeWithPolicy,
  createSasToken,
  deriveDeviceKey,
  generateKey,
  isValidSymmetricKey,
  parseSasToken,
  requestResource,
  resourceCovers,
  type SharedAccessPolicy,
} from '../../emulator/security/sas';

const HOST = 'test-hub.azure-devices.net';

const owner: SharedAccessPolicy = {
  keyName: 'iothubowner',
  primaryKey: generateKey(),
  secondaryKey: generateKey(),
  rights: ['RegistryRead', 'RegistryWrite', 'ServiceConnect', 'DeviceConnect'],
};
const reader: SharedAccessPolicy = {
  keyName: 'registryRead',
  primaryKey: generateKey(),
  secondaryKey: generateKey(),
  rights: ['RegistryRead'],
};
const policies = [owner, reader];

function reason(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof SasError) return err.reason;
    throw err;
  }
  return 'accepted';
}

describe('group key derivation', () => {
  it('matches the documented vector for sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6', () => {
    expect(
      deriveDeviceKey(
        '8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==',
        'sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6',
      ),
    ).toBe('Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=');
  });

  it('gives different keys to different registration ids', () => {
    const group = generateKey(64);
    expect(deriveDeviceKey(group, 'a')).not.toBe(deriveDeviceKey(group, 'b'));
  });
});

describe('service tokens (raw host name sr, with skn)', () => {
  it('accepts a token made by the SDK with the policy primary or secondary key', () => {
    for (const key of [owner.primaryKey, owner.secondaryKey]) {
      const token = SharedAccessSignature.create(HOST, 'iothubowner', key, anHourFromNow()).toString();
      expect(authorizeWithPolicy(token, policies, { resource: HOST }).keyName).toBe('iothubowner');
    }
  });

  it('matches the policy name case-insensitively and the host name case-insensitively', () => {
    const token = SharedAccessSignature.create(HOST.toUpperCase(), 'IoTHubOwner', owner.primaryKey, anHourFromNow());
    expect(authorizeWithPolicy(token.toString(), policies, { resource: HOST }).keyName).toBe('iothubowner');
  });

  it('rejects a token signed with a key that is not the policy key', () => {
    const token = SharedAccessSignature.create(HOST, 'iothubowner', generateKey(), anHourFromNow()).toString();
    expect(reason(() => authorizeWithPolicy(token, policies, { resource: HOST }))).toBe('badSignature');
  });

  it('rejects an expired token', () => {
    const expiry = Math.floor(Date.now() / 1000) - 1;
    const token = SharedAccessSignature.create(HOST, 'iothubowner', owner.primaryKey, expiry).toString();
    expect(reason(() => authorizeWithPolicy(token, policies, { resource: HOST }))).toBe('expired');
  });

  it('rejects a token for another hub', () => {
    const token = createSasToken({
      resource: 'production-hub.azure-devices.net',
      key: owner.primaryKey,
      keyName: 'iothubowner',
    });
    expect(reason(() => authorizeWithPolicy(token, policies, { resource: HOST }))).toBe('wrongResource');
  });

  it('rejects an unknown policy, a token without policy, and a policy without the needed right', () => {
    const unknown = createSasToken({ resource: HOST, key: owner.primaryKey, keyName: 'nobody' });
    expect(reason(() => authorizeWithPolicy(unknown, policies, { resource: HOST }))).toBe('unknownPolicy');
    const noPolicy = createSasToken({ resource: HOST, key: owner.primaryKey });
    expect(reason(() => authorizeWithPolicy(noPolicy, policies, { resource: HOST }))).toBe('policyRequired');
    const read = createSasToken({ resource: HOST, key: reader.primaryKey, keyName: 'registryRead' });
    expect(reason(() => authorizeWithPolicy(read, policies, { resource: HOST, anyOf: ['RegistryWrite'] }))).toBe(
      'insufficientRights',
    );
    expect(authorizeWithPolicy(read, policies, { resource: HOST, anyOf: ['RegistryRead'] }).keyName).toBe(
      'registryRead',
    );
  });

  it('rejects a signature computed over a different expiry than the one sent', () => {
    const token = createSasToken({ resource: HOST, key: owner.primaryKey, keyName: 'iothubowner' });
    const tampered = token.replace(/se=(\d+)/, (_m, se: string) => `se=${Number(se) + 60}`);
    expect(reason(() => authorizeWithPolicy(tampered, policies, { resource: HOST }))).toBe('badSignature');
  });

  it('rejects missing and malformed tokens', () => {
    expect(reason(() => authorizeWithPolicy(undefined, policies, { resource: HOST }))).toBe('missing');
    expect(reason(() => authorizeWithPolicy('Bearer abc', policies, { resource: HOST }))).toBe('malformed');
    expect(reason(() => authorizeWithPolicy('SharedAccessSignature sr=x&sig=y', policies, { resource: HOST }))).toBe(
      'malformed',
    );
    expect(
      reason(() => authorizeWithPolicy('SharedAccessSignature sr=x&sig=y&se=soon', policies, { resource: HOST })),
    ).toBe('malformed');
  });
});

describe('device tokens (url-encoded host/devices/id sr, no skn)', () => {
  const deviceKey = generateKey();

  it('accepts the token the device SDK makes for its own resource', (done) => {
    SharedAccessSignature.createWithSigningFunction(
      { host: HOST, deviceId: 'dev-1' },
      anHourFromNow(),
      (toSign, cb) => cb(undefined, createHmac('sha256', Buffer.from(deviceKey, 'base64')).update(toSign).digest()),
      (err, sas) => {
        expect(err).toBeFalsy();
        const token = sas!.toString();
        expect(token).toContain(`sr=${encodeURIComponent(`${HOST}/devices/dev-1`)}`);
        expect(authorizeWithKeys(token, [deviceKey], { resource: `${HOST}/devices/dev-1` }).resource).toBe(
          `${HOST}/devices/dev-1`,
        );
        done();
      },
    );
  });

  it('does not cover another device, even one whose id extends it', () => {
    const token = createSasToken({ resource: `${HOST}/devices/dev-1`, key: deviceKey });
    expect(reason(() => authorizeWithKeys(token, [deviceKey], { resource: `${HOST}/devices/dev-2` }))).toBe(
      'wrongResource',
    );
    expect(reason(() => authorizeWithKeys(token, [deviceKey], { resource: `${HOST}/devices/dev-10` }))).toBe(
      'wrongResource',
    );
  });

  it('rejects another device key', () => {
    const token = createSasToken({ resource: `${HOST}/devices/dev-1`, key: generateKey() });
    expect(reason(() => authorizeWithKeys(token, [deviceKey], { resource: `${HOST}/devices/dev-1` }))).toBe(
      'badSignature',
    );
  });
});

describe('DPS device tokens (unencoded scope/registrations/id sr, skn=registration)', () => {
  it('accepts the token shape the symmetric-key security client sends', () => {
    const key = deriveDeviceKey(generateKey(64), 'reg-1');
    const token = SharedAccessSignature.create('0ne00000001/registrations/reg-1', 'registration', key, anHourFromNow());
    const parsed = parseSasToken(token.toString());
    expect(parsed.sr).toBe('0ne00000001/registrations/reg-1');
    expect(parsed.skn).toBe('registration');
    expect(authorizeWithKeys(token.toString(), [key], { resource: '0ne00000001/registrations/reg-1' }).se).toBe(
      parsed.se,
    );
    expect(
      reason(() => authorizeWithKeys(token.toString(), [key], { resource: '0ne00000001/registrations/reg-2' })),
    ).toBe('wrongResource');
  });
});

describe('resource coverage', () => {
  it('covers by path segment, with a case-insensitive host', () => {
    expect(resourceCovers(HOST, `${HOST}/devices/x`)).toBe(true);
    expect(resourceCovers(HOST.toUpperCase(), HOST)).toBe(true);
    expect(resourceCovers(`${HOST}/devices/x`, HOST)).toBe(false);
    expect(resourceCovers(`${HOST}/devices/x`, `${HOST}/devices/X`)).toBe(false);
    expect(resourceCovers(`https://${HOST}/`, HOST)).toBe(true);
  });
});

describe('the resource a REST call touches', () => {
  it('is the host followed by the url-decoded path, without query string or trailing slash', () => {
    expect(requestResource(HOST, '/devices/')).toBe(`${HOST}/devices`);
    expect(requestResource(HOST, '/devices/dev%231?api-version=2021-04-12')).toBe(`${HOST}/devices/dev#1`);
    expect(requestResource(HOST, '/')).toBe(HOST);
  });

  it('is covered by sr=<host>/devices and sr=<host>/devices/<id>, not by another device', () => {
    const call = requestResource(HOST, '/devices/dev-1');
    expect(resourceCovers(`${HOST}/devices`, call)).toBe(true);
    expect(resourceCovers(`${HOST}/devices/dev-1`, call)).toBe(true);
    expect(resourceCovers(`${HOST}/devices/dev-10`, call)).toBe(false);
    expect(resourceCovers(`${HOST}/twins`, call)).toBe(false);
  });
});

describe('symmetric key validation', () => {
  it('accepts base64 of 16 to 64 bytes only', () => {
    expect(isValidSymmetricKey(generateKey(16))).toBe(true);
    expect(isValidSymmetricKey(generateKey(64))).toBe(true);
    expect(isValidSymmetricKey(generateKey(15))).toBe(false);
    expect(isValidSymmetricKey(generateKey(65))).toBe(false);
    expect(isValidSymmetricKey('not base64!')).toBe(false);
  });
});
