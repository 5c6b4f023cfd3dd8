import type { DecidingEnrollment, Finding, FindingType, HubIdentity } from '../common/audit';

/**
 * The audit's rules, on what one bucket's scan knows of one device: its DPS side (if any) and its identities in the
 * configured hubs. Pure, so the rules are unit-tested apart from the scanning.
 */

export interface DpsFacts {
  registrationId: string;
  deviceId: string;
  enrollment: DecidingEnrollment;
  /** The hubs the deciding enrollment lists (DPS can assign the device to these only). */
  enrollmentHubs: string[];
  /** X.509 individual enrollments: the thumbprints (SHA-1 and SHA-256, upper-case hex) of its certificates. */
  thumbprints?: string[];
  /** The registration record's assigned hub, when the device has registered. */
  assignedHub?: string;
}

export interface DeviceFacts {
  deviceId: string;
  dps?: DpsFacts;
  identities: HubIdentity[];
}

export interface ClassifyOptions {
  asOf: Date;
  staleAfterDays: number;
}

const EXPECTED_AUTH: Record<DecidingEnrollment['attestation'], string[] | undefined> = {
  symmetricKey: ['sas'],
  tpm: ['sas'],
  x509: ['selfSigned'],
  // DPS provisions a CA group's devices as selfSigned with the leaf's thumbprint; a hand-made identity may trust the CA.
  x509CA: ['selfSigned', 'certificateAuthority'],
  unknown: undefined,
};

export function classify(device: DeviceFacts, options: ClassifyOptions): Finding[] {
  const { dps, identities } = device;
  const enabled = identities.filter((i) => i.status === 'enabled');
  const finding = (type: FindingType, detail: string): Finding => ({
    type,
    deviceId: device.deviceId,
    ...(dps
      ? {
          registrationId: dps.registrationId,
          enrollment: dps.enrollment,
          ...(assignedHubOf(dps) ? { assignedHub: assignedHubOf(dps) } : {}),
        }
      : {}),
    hubs: identities,
    detail,
  });
  const where = (list: HubIdentity[]) => list.map((i) => i.environment).join(', ');

  if (!dps) {
    if (identities.length === 0) return [];
    return [
      finding(
        'orphan',
        `identity in ${where(identities)} (${enabled.length ? 'enabled' : 'disabled'}); no enrollment or group registration names device ${device.deviceId}`,
      ),
    ];
  }
  if (dps.enrollment.status === 'disabled') {
    if (enabled.length === 0) return [];
    const refusedBy =
      dps.enrollment.kind === 'group'
        ? `enrollment group ${dps.enrollment.id} is disabled`
        : dps.enrollment.enrollmentGroupId
          ? `a disabled individual enrollment blocks it in group ${dps.enrollment.enrollmentGroupId}`
          : 'its individual enrollment is disabled';
    return [finding('revokedButActive', `DPS refuses it (${refusedBy}) but it is enabled in ${where(enabled)}`)];
  }
  if (enabled.length === 0) return [];

  const findings: Finding[] = [];
  const assigned = assignedHubOf(dps);
  if (enabled.length > 1) findings.push(finding('duplicate', `enabled in ${enabled.length} hubs: ${where(enabled)}`));
  if (assigned && !enabled.some((i) => i.hubHost === assigned)) {
    findings.push(finding('wrongHub', `enabled in ${where(enabled)}, but DPS assigns it to ${assigned}`));
  }
  const lastActive = enabled
    .map((i) => i.lastActivityTime)
    .filter((t): t is string => !!t)
    .sort()
    .pop();
  const staleBefore = options.asOf.getTime() - options.staleAfterDays * 86_400_000;
  if (!lastActive || Date.parse(lastActive) < staleBefore) {
    findings.push(
      finding(
        'stale',
        lastActive
          ? `last active ${lastActive}, more than ${options.staleAfterDays} days before ${options.asOf.toISOString()}`
          : 'never connected',
      ),
    );
  }
  const mismatches = enabled.flatMap((i) => authMismatch(i, dps));
  if (mismatches.length) findings.push(finding('authMismatch', mismatches.join('; ')));
  return findings;
}

/** Where DPS assigns the device: its registration record, else the enrollment's only hub (the only one possible). */
function assignedHubOf(dps: DpsFacts): string | undefined {
  return dps.assignedHub ?? (dps.enrollmentHubs.length === 1 ? dps.enrollmentHubs[0] : undefined);
}

function authMismatch(identity: HubIdentity, dps: DpsFacts): string[] {
  const expected = EXPECTED_AUTH[dps.enrollment.attestation];
  if (!expected) return [];
  if (!expected.includes(identity.authType)) {
    return [
      `${identity.environment}: ${identity.authType} authentication for a ${dps.enrollment.attestation} enrollment (expected ${expected.join(' or ')})`,
    ];
  }
  if (dps.enrollment.attestation === 'x509' && dps.thumbprints?.length && identity.authType === 'selfSigned') {
    const known = new Set(dps.thumbprints);
    if (!(identity.thumbprints ?? []).some((t) => known.has(t))) {
      return [`${identity.environment}: the identity's thumbprint is not the enrollment's certificate`];
    }
  }
  return [];
}

/** FNV-1a (32-bit) of the device id: which of `buckets` buckets the device falls in. Stable across processes. */
export function bucketOf(deviceId: string, buckets: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < deviceId.length; i += 1) {
    hash ^= deviceId.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % buckets;
}
