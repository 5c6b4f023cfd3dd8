/** The audit's rules on one device's facts (activities/audit-classify.ts), apart from the scanning. */
import { bucketOf, classify, type DeviceFacts, type DpsFacts } from '../../activities/audit-classify';
import type { HubIdentity } from '../../common/audit';

const asOf = new Date('2025-06-01T00:00:00Z');
const options = { asOf, staleAfterDays: 30 };
const TEST = 'hub-test.azure-devices.net';
const PROD = 'hub-prod.azure-devices.net';
const RECENT = '2025-05-30T12:00:00.000Z';

const identity = (over: Partial<HubIdentity> = {}): HubIdentity => ({
  environment: over.hubHost === PROD ? 'production' : 'test',
  hubHost: TEST,
  status: 'enabled',
  authType: 'sas',
  lastActivityTime: RECENT,
  ...over,
});

const dps = (over: Partial<DpsFacts> = {}, enrollment: Partial<DpsFacts['enrollment']> = {}): DpsFacts => ({
  registrationId: 'dev-1',
  deviceId: 'dev-1',
  enrollment: { kind: 'individual', id: 'dev-1', status: 'enabled', attestation: 'symmetricKey', ...enrollment },
  enrollmentHubs: [TEST],
  assignedHub: TEST,
  ...over,
});

const types = (device: Omit<DeviceFacts, 'deviceId'>) =>
  classify({ deviceId: 'dev-1', ...device }, options).map((f) => f.type);

describe('classify', () => {
  it('reports nothing for a device enabled, active and authenticated as enrolled in the hub DPS assigns', () => {
    expect(types({ dps: dps(), identities: [identity()] })).toEqual([]);
    expect(types({ dps: dps(), identities: [] })).toEqual([]);
  });

  it('reports a disabled enrollment, a disabled group, or a blocker, while an identity is enabled: revoked but active', () => {
    expect(types({ dps: dps({}, { status: 'disabled' }), identities: [identity()] })).toEqual(['revokedButActive']);
    const group = dps({}, { kind: 'group', id: 'line-3', status: 'disabled' });
    expect(classify({ deviceId: 'dev-1', dps: group, identities: [identity()] }, options)[0].detail).toMatch(
      /enrollment group line-3 is disabled/,
    );
    const blocker = dps({}, { status: 'disabled', enrollmentGroupId: 'line-3' });
    expect(classify({ deviceId: 'dev-1', dps: blocker, identities: [identity()] }, options)[0].detail).toMatch(
      /disabled individual enrollment blocks it in group line-3/,
    );
    // Revoked and disabled everywhere: in order.
    expect(types({ dps: dps({}, { status: 'disabled' }), identities: [identity({ status: 'disabled' })] })).toEqual([]);
  });

  it('reports revoked but active alone, even when the device is also duplicated, stale and mismatched', () => {
    const identities = [identity({ lastActivityTime: undefined, authType: 'selfSigned' }), identity({ hubHost: PROD })];
    expect(types({ dps: dps({}, { status: 'disabled' }), identities })).toEqual(['revokedButActive']);
  });

  it('reports an identity no enrollment or group registration covers as an orphan, alone, enabled or not', () => {
    expect(types({ identities: [identity({ lastActivityTime: undefined })] })).toEqual(['orphan']);
    expect(types({ identities: [identity({ status: 'disabled' })] })).toEqual(['orphan']);
    expect(types({ identities: [] })).toEqual([]);
  });

  it('reports a device enabled in two hubs as a duplicate, and as in the wrong hub only when not in the assigned one', () => {
    expect(types({ dps: dps(), identities: [identity(), identity({ hubHost: PROD })] })).toEqual(['duplicate']);
    expect(types({ dps: dps(), identities: [identity({ status: 'disabled' }), identity({ hubHost: PROD })] })).toEqual([
      'wrongHub',
    ]);
    expect(
      types({
        dps: dps({ assignedHub: 'elsewhere.azure-devices.net' }),
        identities: [identity(), identity({ hubHost: PROD })],
      }),
    ).toEqual(['duplicate', 'wrongHub']);
  });

  it('takes the assigned hub from the registration record, else from an enrollment that lists exactly one hub', () => {
    const unregistered = { assignedHub: undefined };
    expect(
      types({ dps: dps({ ...unregistered, enrollmentHubs: [TEST] }), identities: [identity({ hubHost: PROD })] }),
    ).toEqual(['wrongHub']);
    // Hashed over two hubs and never registered: DPS has not said, so no hub is wrong.
    expect(
      types({ dps: dps({ ...unregistered, enrollmentHubs: [TEST, PROD] }), identities: [identity({ hubHost: PROD })] }),
    ).toEqual([]);
  });

  it('reports a device never active, or not for staleAfterDays, as stale, by its most recent enabled identity', () => {
    expect(types({ dps: dps(), identities: [identity({ lastActivityTime: undefined })] })).toEqual(['stale']);
    expect(types({ dps: dps(), identities: [identity({ lastActivityTime: '2025-05-01T23:59:59.000Z' })] })).toEqual([
      'stale',
    ]);
    expect(types({ dps: dps(), identities: [identity({ lastActivityTime: '2025-05-02T00:00:00.000Z' })] })).toEqual([]);
    // A disabled identity's old activity does not count either way.
    expect(
      types({
        dps: dps(),
        identities: [identity({ lastActivityTime: undefined }), identity({ hubHost: PROD, status: 'disabled' })],
      }),
    ).toEqual(['stale']);
  });

  it('reports authentication that does not match the attestation, and an X.509 identity with another certificate', () => {
    expect(types({ dps: dps(), identities: [identity({ authType: 'selfSigned' })] })).toEqual(['authMismatch']);
    const x509 = dps({ thumbprints: ['AA'.repeat(20)] }, { attestation: 'x509' });
    expect(types({ dps: x509, identities: [identity()] })).toEqual(['authMismatch']);
    expect(
      types({ dps: x509, identities: [identity({ authType: 'selfSigned', thumbprints: ['AA'.repeat(20)] })] }),
    ).toEqual([]);
    expect(
      types({ dps: x509, identities: [identity({ authType: 'selfSigned', thumbprints: ['BB'.repeat(20)] })] }),
    ).toEqual(['authMismatch']);
    const caGroup = dps({}, { kind: 'group', id: 'ca', attestation: 'x509CA' });
    expect(types({ dps: caGroup, identities: [identity({ authType: 'certificateAuthority' })] })).toEqual([]);
    expect(
      types({ dps: caGroup, identities: [identity({ authType: 'selfSigned', thumbprints: ['CC'.repeat(20)] })] }),
    ).toEqual([]);
    expect(types({ dps: dps({}, { attestation: 'tpm' }), identities: [identity()] })).toEqual([]);
  });
});

describe('bucketOf', () => {
  it('puts a device in the same bucket every time, and spreads a fleet about evenly', () => {
    expect(bucketOf('dev-42', 7)).toBe(bucketOf('dev-42', 7));
    expect(bucketOf('anything', 1)).toBe(0);
    const counts = new Array(8).fill(0) as number[];
    for (let i = 0; i < 8_000; i += 1) counts[bucketOf(`device-${i}`, 8)] += 1;
    for (const n of counts) expect(n).toBeGreaterThan(800);
  });
});
