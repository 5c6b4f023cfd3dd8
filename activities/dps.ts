import { createHmac, X509Certificate } from 'node:crypto';
import type { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type {
  AttestationMechanism,
  EnrollmentGroup,
  IndividualEnrollment,
  DeviceRegistrationState,
} from 'azure-iot-provisioning-service/dist/interfaces';
import type { AzureClients } from './azure-clients';
import { azureCall, isNotFound, permanent } from './azure-errors';
import { PromotionErrors, type AttestationKind } from '../common/promotion';

/** What the promotion needs to know of an enrollment: routing and status, never key material. */
export interface EnrollmentView {
  kind: 'individual' | 'groupMember';
  registrationId: string;
  enrollmentGroupId?: string;
  attestation: AttestationKind;
  provisioningStatus: 'enabled' | 'disabled';
  deviceId?: string;
  iotHubs: string[];
  iotHubHostName?: string;
  allocationPolicy?: string;
  reprovisionPolicy?: { updateHubAssignment: boolean; migrateDeviceData: boolean };
  etag?: string;
  /** How an X.509 group trusts its devices: CA certificates in the group, or CAs verified in DPS by name. */
  groupTrust?: 'signingCertificates' | 'caReferences';
  /** The enrollment's initial twin (what a `reset` re-provisioning gives the device). */
  initialTwin?: { tags: Record<string, unknown>; desired: Record<string, unknown> };
}

export interface RegistrationView {
  registrationId: string;
  assignedHub?: string;
  deviceId?: string;
  status?: string;
  substatus?: string;
  lastUpdatedDateTimeUtc?: string;
}

export interface RepointInput {
  workflowId: string;
  enrollment: EnrollmentView;
  deviceId: string;
  targetHubHost: string;
  reprovisionPolicy: 'migrate' | 'reset';
  deviceCertificate?: string;
  /**
   * When an individual enrollment for a group member already exists, it counts as this workflow's own (an earlier
   * attempt whose answer was lost) only if DPS created it at or after this time.
   */
  notBefore?: string;
}

export interface RepointResult {
  etag: string;
  createdIndividual: boolean;
  /** DPS's time of the change (the enrollment's lastUpdatedDateTimeUtc). */
  repointedAt?: string;
}

/** The routing fields of an individual enrollment that a promotion changes and a rollback restores. */
export type EnrollmentRouting = Pick<
  EnrollmentView,
  'iotHubs' | 'iotHubHostName' | 'allocationPolicy' | 'reprovisionPolicy'
>;

export function deriveDeviceKey(groupKey: string, registrationId: string): string {
  return createHmac('sha256', Buffer.from(groupKey, 'base64')).update(registrationId, 'utf8').digest('base64');
}

function attestationKind(attestation: AttestationMechanism | undefined, group: boolean): AttestationKind {
  switch (attestation?.type) {
    case 'symmetricKey':
      return 'symmetricKey';
    case 'tpm':
      return 'tpm';
    case 'x509': {
      const x509 = attestation.x509 ?? {};
      if (x509.signingCertificates || x509.caReferences) return 'x509CA';
      return group ? 'x509CA' : 'x509';
    }
    default:
      throw permanent(PromotionErrors.unsupportedAttestation, `unknown attestation type ${String(attestation?.type)}`);
  }
}

function initialTwinOf(twin: { tags?: unknown; properties?: { desired?: unknown } } | undefined) {
  const plain = (value: unknown) =>
    Object.fromEntries(Object.entries((value as Record<string, unknown>) ?? {}).filter(([k]) => !k.startsWith('$')));
  return { tags: plain(twin?.tags), desired: plain(twin?.properties?.desired) };
}

function viewOfIndividual(e: IndividualEnrollment): EnrollmentView {
  return {
    kind: 'individual',
    registrationId: e.registrationId,
    attestation: attestationKind(e.attestation, false),
    provisioningStatus: e.provisioningStatus === 'disabled' ? 'disabled' : 'enabled',
    deviceId: e.deviceId || undefined,
    iotHubs: e.iotHubs ?? [],
    iotHubHostName: e.iotHubHostName || undefined,
    allocationPolicy: e.allocationPolicy,
    reprovisionPolicy: e.reprovisionPolicy && {
      updateHubAssignment: e.reprovisionPolicy.updateHubAssignment !== false,
      migrateDeviceData: e.reprovisionPolicy.migrateDeviceData !== false,
    },
    etag: e.etag,
    initialTwin: initialTwinOf(e.initialTwin as never),
  };
}

function viewOfGroupMember(registrationId: string, g: EnrollmentGroup): EnrollmentView {
  return {
    kind: 'groupMember',
    registrationId,
    enrollmentGroupId: g.enrollmentGroupId,
    attestation: attestationKind(g.attestation, true),
    provisioningStatus: g.provisioningStatus === 'disabled' ? 'disabled' : 'enabled',
    iotHubs: g.iotHubs ?? [],
    iotHubHostName: g.iotHubHostName || undefined,
    allocationPolicy: g.allocationPolicy,
    reprovisionPolicy: g.reprovisionPolicy && {
      updateHubAssignment: g.reprovisionPolicy.updateHubAssignment !== false,
      migrateDeviceData: g.reprovisionPolicy.migrateDeviceData !== false,
    },
    etag: g.etag,
    initialTwin: initialTwinOf(g.initialTwin as never),
    ...(g.attestation?.type === 'x509'
      ? { groupTrust: g.attestation.x509?.caReferences ? 'caReferences' : 'signingCertificates' }
      : {}),
  };
}

function registrationView(r: DeviceRegistrationState): RegistrationView {
  return {
    registrationId: r.registrationId,
    assignedHub: r.assignedHub || undefined,
    deviceId: r.deviceId || undefined,
    status: r.status,
    substatus: r.substatus,
    lastUpdatedDateTimeUtc: r.lastUpdatedDateTimeUtc ? String(r.lastUpdatedDateTimeUtc) : undefined,
  };
}

const sameHubs = (a: string[], b: string[]) => a.length === b.length && a.every((h) => b.includes(h));

/** The service client, or a named failure when DPS is not configured. */
export function dpsClient(clients: AzureClients): ProvisioningServiceClient {
  if (!clients.dps) throw permanent('DpsNotConfigured', 'no DPS connection string is configured');
  return clients.dps.client;
}

export async function findIndividualEnrollment(
  dps: ProvisioningServiceClient,
  registrationId: string,
): Promise<IndividualEnrollment | undefined> {
  try {
    return (await dps.getIndividualEnrollment(registrationId)).responseBody;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

export async function findEnrollmentGroup(
  dps: ProvisioningServiceClient,
  enrollmentGroupId: string,
): Promise<EnrollmentGroup | undefined> {
  try {
    return (await dps.getEnrollmentGroup(enrollmentGroupId)).responseBody;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** The group a registration id registered through: DPS's registration state does not name it (azure-wire.md). */
export async function findGroupOf(dps: ProvisioningServiceClient, registrationId: string): Promise<string | undefined> {
  const groups = dps.createEnrollmentGroupQuery({ query: '*' }, 100);
  for (let token: string | undefined; ;) {
    const page = token ? await groups.next(token) : await groups.next();
    for (const group of queryItems<EnrollmentGroup>(page.responseBody)) {
      const regs = dps.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, group.enrollmentGroupId, 100);
      for (let regToken: string | undefined; ;) {
        const regPage = regToken ? await regs.next(regToken) : await regs.next();
        const items = queryItems<DeviceRegistrationState>(regPage.responseBody);
        if (items.some((r) => r.registrationId === registrationId)) return group.enrollmentGroupId;
        regToken = continuationOf(regPage);
        if (!regToken) break;
      }
    }
    token = continuationOf(page);
    if (!token) return undefined;
  }
}

/** DPS activities. Every call is safe to repeat: Temporal may run an activity more than once. */
export function dpsActivities(clients: AzureClients) {
  const dps = (): ProvisioningServiceClient => dpsClient(clients);
  const findIndividual = (registrationId: string) => findIndividualEnrollment(dps(), registrationId);

  return {
    /** The enrollment that decides where the device goes: its individual enrollment first, as DPS does. */
    async dpsLookupEnrollment(input: { registrationId: string; enrollmentGroupId?: string }): Promise<EnrollmentView> {
      const individual = await azureCall('get individual enrollment', () => findIndividual(input.registrationId));
      if (individual) return viewOfIndividual(individual);
      const groupId =
        input.enrollmentGroupId ??
        (await azureCall('search enrollment groups', () => findGroupOf(dps(), input.registrationId)));
      if (!groupId) {
        throw permanent(
          PromotionErrors.enrollmentNotFound,
          `no individual enrollment ${input.registrationId} and no enrollment group with that registration`,
        );
      }
      try {
        const group = (await dps().getEnrollmentGroup(groupId)).responseBody;
        return viewOfGroupMember(input.registrationId, group);
      } catch (err) {
        if (isNotFound(err))
          throw permanent(PromotionErrors.enrollmentNotFound, `enrollment group ${groupId} not found`);
        throw err;
      }
    },

    async dpsGetRegistrationState(registrationId: string): Promise<RegistrationView | null> {
      try {
        return registrationView((await dps().getDeviceRegistrationState(registrationId)).responseBody);
      } catch (err) {
        if (isNotFound(err)) return null;
        return azureCall('get registration state', () => Promise.reject(err));
      }
    },

    /**
     * Points the device's enrollment at the target hub. An individual enrollment is updated under its etag; a
     * group member gets an individual enrollment of its own (DPS checks those before groups), so the rest of the
     * group stays where it is.
     */
    async dpsRepointEnrollment(input: RepointInput): Promise<RepointResult> {
      const reprovisionPolicy = { updateHubAssignment: true, migrateDeviceData: input.reprovisionPolicy === 'migrate' };
      const target = [input.targetHubHost];
      const current = await azureCall('get individual enrollment', () =>
        findIndividual(input.enrollment.registrationId),
      );
      const alreadyDone = (e: IndividualEnrollment) =>
        sameHubs(e.iotHubs ?? [], target) &&
        e.reprovisionPolicy?.updateHubAssignment !== false &&
        (e.reprovisionPolicy?.migrateDeviceData !== false) === reprovisionPolicy.migrateDeviceData;

      if (input.enrollment.kind === 'individual') {
        if (!current)
          throw permanent(PromotionErrors.enrollmentChanged, 'the individual enrollment was deleted meanwhile');
        if (alreadyDone(current)) {
          return { etag: current.etag, createdIndividual: false, repointedAt: timeOf(current.lastUpdatedDateTimeUtc) };
        }
        if (current.etag !== input.enrollment.etag) {
          throw permanent(PromotionErrors.enrollmentChanged, 'the enrollment changed since it was validated');
        }
        // GET redacts symmetric keys; without them a PUT would make DPS generate new ones.
        const attestation = (
          await azureCall('get attestation mechanism', () =>
            dps().getIndividualEnrollmentAttestationMechanism(input.enrollment.registrationId),
          )
        ).responseBody;
        const updated = await azureCall('update individual enrollment', () =>
          dps().createOrUpdateIndividualEnrollment({
            ...current,
            attestation,
            iotHubs: target,
            iotHubHostName: input.targetHubHost,
            allocationPolicy: 'static',
            reprovisionPolicy,
          }),
        );
        return {
          etag: updated.responseBody.etag,
          createdIndividual: false,
          repointedAt: timeOf(updated.responseBody.lastUpdatedDateTimeUtc),
        };
      }

      if (current) {
        const ours = !input.notBefore || (timeOf(current.createdDateTimeUtc) ?? '') >= input.notBefore;
        if (alreadyDone(current) && ours) {
          return { etag: current.etag, createdIndividual: true, repointedAt: timeOf(current.lastUpdatedDateTimeUtc) };
        }
        throw permanent(
          PromotionErrors.enrollmentChanged,
          'an individual enrollment for this device appeared meanwhile',
        );
      }
      const groupId = input.enrollment.enrollmentGroupId!;
      const group = (await azureCall('get enrollment group', () => dps().getEnrollmentGroup(groupId))).responseBody;
      const attestation = await memberAttestation(dps(), group, input);
      const created = await azureCall('create individual enrollment for group member', () =>
        dps().createOrUpdateIndividualEnrollment({
          registrationId: input.enrollment.registrationId,
          deviceId: input.deviceId,
          attestation,
          iotHubs: target,
          iotHubHostName: input.targetHubHost,
          allocationPolicy: 'static',
          reprovisionPolicy,
          initialTwin: group.initialTwin,
          capabilities: group.capabilities,
          provisioningStatus: 'enabled',
        } as IndividualEnrollment),
      );
      return {
        etag: created.responseBody.etag,
        createdIndividual: true,
        repointedAt: timeOf(created.responseBody.lastUpdatedDateTimeUtc),
      };
    },

    /**
     * Undoes a re-point, never touching what someone else changed meanwhile:
     * - an individual enrollment gets its routing back only while it still routes as the re-point left it, under
     *   its current etag;
     * - a group member's individual enrollment is deleted only if this workflow created it: its etag is the one the
     *   creation answered (or, when that answer was lost, DPS created it at or after `notBefore` and it routes to
     *   the target). An operator's own enrollment is left alone.
     */
    async dpsUndoRepoint(input: {
      enrollment: EnrollmentView;
      routing: EnrollmentRouting;
      targetHubHost: string;
      createdEtag?: string;
      notBefore: string;
    }): Promise<{ restored: 'routing' | 'individualRemoved' | 'nothingToDo' | 'notOurs' }> {
      const registrationId = input.enrollment.registrationId;
      const current = await azureCall('get individual enrollment', () => findIndividual(registrationId));
      const routesToTarget = (e: IndividualEnrollment) => sameHubs(e.iotHubs ?? [], [input.targetHubHost]);
      if (input.enrollment.kind === 'groupMember') {
        if (!current) return { restored: 'nothingToDo' };
        const ours = input.createdEtag
          ? current.etag === input.createdEtag
          : (timeOf(current.createdDateTimeUtc) ?? '') >= input.notBefore && routesToTarget(current);
        if (!ours) {
          if (input.createdEtag && (timeOf(current.createdDateTimeUtc) ?? '') >= input.notBefore) {
            throw permanent(
              PromotionErrors.enrollmentChanged,
              `the individual enrollment this promotion created for ${registrationId} was changed since; not deleted`,
            );
          }
          return { restored: 'notOurs' };
        }
        try {
          await dps().deleteIndividualEnrollment(registrationId, current.etag);
        } catch (err) {
          if (!isNotFound(err)) return azureCall('delete individual enrollment', () => Promise.reject(err));
        }
        return { restored: 'individualRemoved' };
      }
      if (!current) {
        throw permanent(PromotionErrors.enrollmentChanged, 'the individual enrollment was deleted meanwhile');
      }
      const { routing } = input;
      if (
        sameHubs(current.iotHubs ?? [], routing.iotHubs) &&
        (current.iotHubHostName || undefined) === routing.iotHubHostName &&
        current.allocationPolicy === routing.allocationPolicy
      ) {
        return { restored: 'nothingToDo' };
      }
      if (!routesToTarget(current)) {
        throw permanent(
          PromotionErrors.enrollmentChanged,
          `the enrollment of ${registrationId} was re-pointed by someone else meanwhile; its routing was left alone`,
        );
      }
      const attestation = (
        await azureCall('get attestation mechanism', () =>
          dps().getIndividualEnrollmentAttestationMechanism(registrationId),
        )
      ).responseBody;
      await azureCall('restore individual enrollment', () =>
        dps().createOrUpdateIndividualEnrollment({
          ...current,
          attestation,
          iotHubs: routing.iotHubs,
          iotHubHostName: routing.iotHubHostName as string,
          allocationPolicy: routing.allocationPolicy as IndividualEnrollment['allocationPolicy'],
          reprovisionPolicy: routing.reprovisionPolicy ?? { updateHubAssignment: true, migrateDeviceData: true },
        }),
      );
      return { restored: 'routing' };
    },

    /** See verifyMemberCertificate. */
    async dpsVerifyMemberCertificate(input: {
      enrollmentGroupId: string;
      registrationId: string;
      deviceCertificate: string;
    }): Promise<{ subject: string; issuer: string; validTo: string }> {
      return verifyMemberCertificate(dps(), input);
    },

    /** Undoes dpsRepointEnrollment: the individual enrollment's routing back, or the member's own one removed. */
    async dpsRestoreEnrollment(input: {
      enrollment: EnrollmentView;
      routing: EnrollmentRouting;
    }): Promise<{ restored: 'routing' | 'individualRemoved' | 'nothingToDo' }> {
      const registrationId = input.enrollment.registrationId;
      if (input.enrollment.kind === 'groupMember') {
        try {
          await dps().deleteIndividualEnrollment(registrationId);
          return { restored: 'individualRemoved' };
        } catch (err) {
          if (isNotFound(err)) return { restored: 'nothingToDo' };
          return azureCall('delete individual enrollment', () => Promise.reject(err));
        }
      }
      const current = await azureCall('get individual enrollment', () => findIndividual(registrationId));
      if (!current)
        throw permanent(PromotionErrors.enrollmentChanged, 'the individual enrollment was deleted meanwhile');
      const { routing } = input;
      if (
        sameHubs(current.iotHubs ?? [], routing.iotHubs) &&
        (current.iotHubHostName || undefined) === routing.iotHubHostName &&
        current.allocationPolicy === routing.allocationPolicy
      ) {
        return { restored: 'nothingToDo' };
      }
      const attestation = (
        await azureCall('get attestation mechanism', () =>
          dps().getIndividualEnrollmentAttestationMechanism(registrationId),
        )
      ).responseBody;
      await azureCall('restore individual enrollment', () =>
        dps().createOrUpdateIndividualEnrollment({
          ...current,
          attestation,
          iotHubs: routing.iotHubs,
          iotHubHostName: routing.iotHubHostName as string,
          allocationPolicy: routing.allocationPolicy as IndividualEnrollment['allocationPolicy'],
          reprovisionPolicy: routing.reprovisionPolicy ?? { updateHubAssignment: true, migrateDeviceData: true },
        }),
      );
      return { restored: 'routing' };
    },
  };
}

/**
 * Checks the certificate an operator gave for one member of an X.509 group: its subject CN is the registration id
 * (DPS's rule for group members), it is within its validity period, and its chain — leaf first, up to the group's CA
 * certificate, as the device presents it — verifies up to a certificate whose thumbprint is one of the group's.
 * (DPS returns a group's CA certificates as thumbprints and names only.)
 */
export async function verifyMemberCertificate(
  dps: ProvisioningServiceClient,
  input: {
    enrollmentGroupId: string;
    registrationId: string;
    deviceCertificate: string;
  },
): Promise<{ subject: string; issuer: string; validTo: string }> {
  const group = (await azureCall('get enrollment group', () => dps.getEnrollmentGroup(input.enrollmentGroupId)))
    .responseBody;
  const x509 = group.attestation?.x509;
  if (x509?.caReferences && !x509.signingCertificates) {
    throw permanent(
      PromotionErrors.deviceCertificateUnverifiable,
      `group ${input.enrollmentGroupId} trusts a CA by reference; DPS's service API does not say which certificate that is, so the device certificate cannot be checked`,
    );
  }
  const signing = x509?.signingCertificates as
    | Record<
        string,
        {
          certificate?: string;
          info?: { sha1Thumbprint?: string; sha256Thumbprint?: string; subjectName?: string };
        }
      >
    | undefined;
  const cas: GroupCa[] = Object.values(signing ?? {}).flatMap((entry) => {
    const info = entry?.info;
    const pem = typeof entry?.certificate === 'string' ? entry.certificate : undefined;
    const prints = [
      info?.sha1Thumbprint,
      info?.sha256Thumbprint,
      ...(pem ? thumbprintsOf(new X509Certificate(pem)) : []),
    ];
    const known = prints.filter((p): p is string => !!p).map(normalizeThumbprint);
    return known.length ? [{ thumbprints: known, subjectName: info?.subjectName }] : [];
  });
  return checkMemberCertificate(input.registrationId, input.deviceCertificate, cas);
}

/** The attestation of an individual enrollment that stands in for one member of a group. */
export async function memberAttestation(
  dps: ProvisioningServiceClient,
  group: EnrollmentGroup,
  input: { enrollment: { registrationId: string }; deviceCertificate?: string },
): Promise<AttestationMechanism> {
  if (group.attestation?.type === 'symmetricKey') {
    const keys = (
      await azureCall('get group attestation mechanism', () =>
        dps.getEnrollmentGroupAttestationMechanism(group.enrollmentGroupId),
      )
    ).responseBody.symmetricKey;
    if (!keys?.primaryKey) throw permanent(PromotionErrors.unsupportedAttestation, 'the group has no symmetric keys');
    return {
      type: 'symmetricKey',
      symmetricKey: {
        primaryKey: deriveDeviceKey(keys.primaryKey, input.enrollment.registrationId),
        secondaryKey: deriveDeviceKey(keys.secondaryKey || keys.primaryKey, input.enrollment.registrationId),
      },
    } as AttestationMechanism;
  }
  if (group.attestation?.type === 'x509') {
    if (!input.deviceCertificate) {
      throw permanent(
        PromotionErrors.deviceCertificateRequired,
        'acting on one device of an X.509 enrollment group needs its device certificate (deviceCertificate)',
      );
    }
    return {
      type: 'x509',
      x509: { clientCertificates: { primary: { certificate: leafPem(input.deviceCertificate) } } },
    } as AttestationMechanism;
  }
  throw permanent(PromotionErrors.unsupportedAttestation, `cannot act on a ${group.attestation?.type} group member`);
}

/** A query page: the service answers a JSON array, although the SDK's type says `{ items }`. */
export function queryItems<T>(body: unknown): T[] {
  if (Array.isArray(body)) return body as T[];
  return ((body as { items?: T[] } | undefined)?.items ?? []) as T[];
}

function timeOf(value: unknown): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  const date = new Date(value as string);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

function parseCertificates(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((block) => new X509Certificate(block));
}

/** The first certificate of a PEM chain: what an individual enrollment takes. */
export function leafPem(pem: string): string {
  return /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(pem)?.[0] ?? pem;
}

/** A CA certificate of an enrollment group, as DPS describes it. */
export interface GroupCa {
  thumbprints: string[];
  subjectName?: string;
}

const normalizeThumbprint = (print: string) => print.replace(/:/g, '').toUpperCase();
const thumbprintsOf = (cert: X509Certificate) => [cert.fingerprint, cert.fingerprint256].map(normalizeThumbprint);

/** The checks of dpsVerifyMemberCertificate, on the group's CA descriptions (exported for unit tests). */
export function checkMemberCertificate(
  registrationId: string,
  deviceCertificatePem: string,
  groupCas: GroupCa[],
  now = new Date(),
): { subject: string; issuer: string; validTo: string } {
  const mismatch = (message: string) => permanent(PromotionErrors.deviceCertificateMismatch, message);
  let chain: X509Certificate[];
  try {
    chain = parseCertificates(deviceCertificatePem);
  } catch {
    throw mismatch('deviceCertificate is not a readable PEM certificate chain');
  }
  const [leaf] = chain;
  if (!leaf) throw mismatch('deviceCertificate holds no certificate');
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(leaf.subject)?.[1];
  if (cn !== registrationId) {
    throw mismatch(`the certificate's subject CN is ${cn ?? '(none)'}, not the registration id ${registrationId}`);
  }
  if (new Date(leaf.validTo) < now || new Date(leaf.validFrom) > now) {
    throw mismatch(`the certificate is not valid now (valid ${leaf.validFrom} to ${leaf.validTo})`);
  }
  if (groupCas.length === 0) throw mismatch('the enrollment group names no CA certificate to check against');
  const isGroupCa = (cert: X509Certificate) =>
    thumbprintsOf(cert).some((print) => groupCas.some((ca) => ca.thumbprints.includes(print)));
  // Each certificate must be signed by the next one, until one of them is the group's CA.
  for (let i = 0; i + 1 < chain.length; i += 1) {
    const [child, issuer] = [chain[i], chain[i + 1]];
    if (!child.checkIssued(issuer) || !child.verify(issuer.publicKey)) {
      throw mismatch(`certificate ${i + 1} of the chain is not signed by certificate ${i + 2}`);
    }
    if (isGroupCa(issuer)) return { subject: leaf.subject, issuer: leaf.issuer, validTo: leaf.validTo };
  }
  throw mismatch(
    "the chain does not reach the enrollment group's CA certificate: give the device certificate followed by its issuers, up to and including the group's CA",
  );
}

export function continuationOf(page: { httpResponse?: { headers?: Record<string, unknown> } }): string | undefined {
  const token = page.httpResponse?.headers?.['x-ms-continuation'];
  return typeof token === 'string' && token ? token : undefined;
}
