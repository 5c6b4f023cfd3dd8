/**
 * DPS service logic (api-version 2021-10-01), independent of transport: individual enrollments, enrollment groups,
 * bulk operations, registration states and queries. dps/service-rest.ts only translates between the wire and these
 * functions; device registration (dps/registration.ts) reads the records kept here.
 *
 * Every function that changes state is synchronous, so concurrent requests cannot interleave a read-modify-write.
 */
import { X509Certificate } from 'node:crypto';
import { certificateInfo, parseCertificate } from '../security/certs';
import { generateKey, isValidSymmetricKey } from '../security/sas';
import type { DpsState, EmulatorState } from '../state';
import { DpsError, dpsErrors } from './errors';
import type {
  AllocationPolicy,
  AttestationMechanism,
  DeviceRegistrationState,
  EnrollmentGroup,
  IndividualEnrollment,
  InitialTwin,
  X509Attestation,
  X509Certificates,
} from './model';

// ---------------------------------------------------------------------------------------------------------------
// Ids, etags, timestamps

export const ENROLLMENT_ID = /^[A-Za-z0-9](?:[A-Za-z0-9._:-]{0,126}[A-Za-z0-9-])?$/;
const GROUP_ID = /^[A-Za-z0-9](?:[A-Za-z0-9._:-]{0,126}[A-Za-z0-9])?$/;

/** DPS ids are case-insensitive: maps are keyed by the lower-cased id, records keep the caller's spelling. */
export const idKey = (id: string): string => id.toLowerCase();

/** 7 fractional digits, like DPS's .NET timestamps. */
export const dpsNow = (): string => new Date().toISOString().replace(/Z$/, '0000Z');

let etagSequence = 0;

/** DPS etags are base64 of a quoted Cosmos DB etag ("IjAwMDA…MDAwMCI="). */
export function newDpsEtag(): string {
  etagSequence += 1;
  const seconds = Math.floor(Date.now() / 1000)
    .toString(16)
    .padStart(8, '0');
  const cosmos = `"${(etagSequence >>> 0).toString(16).padStart(8, '0')}-0000-0800-0000-${seconds}0000"`;
  return Buffer.from(cosmos).toString('base64');
}

/** Accepts `etag`, `"etag"`, `W/"etag"` and `*`. */
export function ifMatchMatches(ifMatch: string | undefined, etag: string): boolean {
  if (ifMatch === undefined || ifMatch === '') return true;
  const wanted = ifMatch
    .trim()
    .replace(/^W\//, '')
    .replace(/^"(.*)"$/, '$1');
  return wanted === '*' || wanted === etag;
}

export const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

// ---------------------------------------------------------------------------------------------------------------
// Certificates

function toPem(cert: X509Certificate): string {
  return cert.toString();
}

/** Validates and stores `{certificate}` entries, computing their `info` as DPS does. */
function normalizeCertificates(input: unknown, field: string, required: boolean): X509Certificates | undefined {
  if (input === undefined || input === null) {
    if (required) throw dpsErrors.badRequest(`${field}.primary is required`);
    return undefined;
  }
  if (!isObject(input)) throw dpsErrors.badRequest(`${field} must be an object`);
  const out: X509Certificates = {};
  for (const slot of ['primary', 'secondary'] as const) {
    const entry = input[slot];
    if (entry === undefined || entry === null) continue;
    if (!isObject(entry) || typeof entry.certificate !== 'string' || !entry.certificate) {
      throw dpsErrors.badRequest(`${field}.${slot}.certificate is required`);
    }
    const parsed = parseCertificate(entry.certificate);
    if (!parsed) throw dpsErrors.badCertificate();
    const pem = toPem(parsed);
    out[slot] = { certificate: pem, info: certificateInfo(pem) };
  }
  if (!out.primary) throw dpsErrors.badRequest(`${field}.primary is required`);
  return out;
}

function certificatesToWire(certs: X509Certificates | undefined): Record<string, unknown> | undefined {
  if (!certs) return undefined;
  const out: Record<string, unknown> = {};
  // DPS returns only the certificate info, never the certificate.
  for (const slot of ['primary', 'secondary'] as const) {
    if (certs[slot]) out[slot] = { info: structuredClone(certs[slot]?.info) };
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Enrollment validation

const DEFAULT_REPROVISION = { updateHubAssignment: true, migrateDeviceData: true };
const ALLOCATION_POLICIES: AllocationPolicy[] = ['hashed', 'geoLatency', 'static', 'custom'];

/** `stored` is the attestation of the record an update replaces. */
function parseAttestation(input: unknown, forGroup: boolean, stored?: AttestationMechanism): AttestationMechanism {
  if (!isObject(input)) throw dpsErrors.badRequest('attestation is required');
  const type = input.type;
  if (type === 'symmetricKey') {
    const sk = isObject(input.symmetricKey) ? input.symmetricKey : {};
    const given = (k: unknown): string | undefined => (typeof k === 'string' && k !== '' ? k : undefined);
    // GET redacts the keys, so an update that sends back what GET returned has none: DPS keeps the stored keys
    // (Microsoft's reprovisioning e2e test, azure-iot-sdk-csharp e2e/test/provisioning/ReprovisioningE2ETests.cs,
    // does GET → change iotHubs → PUT and registers again with the original keys). Only keys that neither the
    // body nor the stored record has are generated, 64 bytes each.
    const kept = stored?.type === 'symmetricKey' ? stored.symmetricKey : undefined;
    const primaryKey = given(sk.primaryKey) ?? kept?.primaryKey ?? generateKey(64);
    const secondaryKey = given(sk.secondaryKey) ?? kept?.secondaryKey ?? generateKey(64);
    for (const key of [primaryKey, secondaryKey]) {
      if (!isValidSymmetricKey(key)) {
        throw dpsErrors.badRequest('Symmetric keys must be base64-encoded and between 16 and 64 bytes long.');
      }
    }
    return { type, symmetricKey: { primaryKey, secondaryKey } };
  }
  if (type === 'x509') {
    const x = isObject(input.x509) ? input.x509 : undefined;
    if (!x) throw dpsErrors.badRequest('attestation.x509 is required for x509 attestation');
    const x509: X509Attestation = {};
    const hasClient = x.clientCertificates !== undefined && x.clientCertificates !== null;
    const hasSigning = x.signingCertificates !== undefined && x.signingCertificates !== null;
    const hasCa = x.caReferences !== undefined && x.caReferences !== null;
    if (Number(hasClient) + Number(hasSigning) + Number(hasCa) !== 1) {
      throw dpsErrors.badRequest(
        'x509 attestation needs exactly one of clientCertificates, signingCertificates, caReferences',
      );
    }
    if (hasClient) {
      if (forGroup) throw dpsErrors.badRequest('Enrollment groups cannot use clientCertificates');
      x509.clientCertificates = normalizeCertificates(x.clientCertificates, 'x509.clientCertificates', true);
    }
    if (hasSigning) {
      x509.signingCertificates = normalizeCertificates(x.signingCertificates, 'x509.signingCertificates', true);
    }
    if (hasCa) {
      const refs = x.caReferences;
      if (!isObject(refs) || typeof refs.primary !== 'string' || !refs.primary) {
        throw dpsErrors.badRequest('x509.caReferences.primary is required');
      }
      x509.caReferences = {
        primary: refs.primary,
        ...(typeof refs.secondary === 'string' && refs.secondary ? { secondary: refs.secondary } : {}),
      };
    }
    return { type, x509 };
  }
  if (type === 'tpm') {
    if (forGroup) throw dpsErrors.badRequest('Enrollment groups do not support TPM attestation');
    const tpm = isObject(input.tpm) ? input.tpm : undefined;
    if (!tpm || typeof tpm.endorsementKey !== 'string' || !tpm.endorsementKey) {
      throw dpsErrors.badRequest('attestation.tpm.endorsementKey is required');
    }
    return {
      type,
      tpm: {
        endorsementKey: tpm.endorsementKey,
        ...(typeof tpm.storageRootKey === 'string' ? { storageRootKey: tpm.storageRootKey } : {}),
      },
    };
  }
  throw dpsErrors.badRequest(`Unsupported attestation type ${String(type)}`);
}

interface CommonFields {
  attestation: AttestationMechanism;
  iotHubHostName?: string;
  iotHubs?: string[];
  initialTwin?: InitialTwin;
  provisioningStatus: 'enabled' | 'disabled';
  reprovisionPolicy: { updateHubAssignment: boolean; migrateDeviceData: boolean };
  allocationPolicy?: AllocationPolicy;
  customAllocationDefinition?: { webhookUrl: string; apiVersion: string };
  capabilities?: { iotEdge: boolean };
}

function parseCommon(
  state: EmulatorState,
  body: Record<string, unknown>,
  forGroup: boolean,
  stored?: AttestationMechanism,
): CommonFields {
  const attestation = parseAttestation(body.attestation, forGroup, stored);

  const status = body.provisioningStatus ?? 'enabled';
  if (status !== 'enabled' && status !== 'disabled') {
    throw dpsErrors.badRequest(`Invalid provisioningStatus ${String(status)}`);
  }

  let reprovisionPolicy = { ...DEFAULT_REPROVISION };
  if (body.reprovisionPolicy !== undefined && body.reprovisionPolicy !== null) {
    const rp = body.reprovisionPolicy;
    if (!isObject(rp)) throw dpsErrors.badRequest('reprovisionPolicy must be an object');
    reprovisionPolicy = {
      updateHubAssignment: rp.updateHubAssignment === undefined ? true : rp.updateHubAssignment === true,
      migrateDeviceData: rp.migrateDeviceData === undefined ? true : rp.migrateDeviceData === true,
    };
  }

  const linked = new Set(state.dps.linkedHubs.map((h) => h.hostName.toLowerCase()));
  const checkLinked = (host: string): string => {
    if (!linked.has(host.toLowerCase())) {
      throw dpsErrors.badRequest(`IoT hub ${host} is not linked to this provisioning service.`);
    }
    return host.toLowerCase();
  };

  let iotHubs: string[] | undefined;
  if (body.iotHubs !== undefined && body.iotHubs !== null) {
    if (!Array.isArray(body.iotHubs) || body.iotHubs.some((h) => typeof h !== 'string')) {
      throw dpsErrors.badRequest('iotHubs must be an array of host names');
    }
    iotHubs = (body.iotHubs as string[]).map(checkLinked);
  }
  let iotHubHostName: string | undefined;
  if (typeof body.iotHubHostName === 'string' && body.iotHubHostName) {
    iotHubHostName = checkLinked(body.iotHubHostName);
  }

  let allocationPolicy: AllocationPolicy | undefined;
  if (body.allocationPolicy !== undefined && body.allocationPolicy !== null) {
    if (!ALLOCATION_POLICIES.includes(body.allocationPolicy as AllocationPolicy)) {
      throw dpsErrors.badRequest(`Invalid allocationPolicy ${String(body.allocationPolicy)}`);
    }
    allocationPolicy = body.allocationPolicy as AllocationPolicy;
  }
  if (allocationPolicy === 'static') {
    const hubs = iotHubs?.length ? iotHubs : iotHubHostName ? [iotHubHostName] : [];
    if (hubs.length !== 1) throw dpsErrors.badRequest('Static allocation requires exactly one IoT hub');
  }
  let customAllocationDefinition: CommonFields['customAllocationDefinition'];
  if (allocationPolicy === 'custom') {
    const def = body.customAllocationDefinition;
    if (!isObject(def) || typeof def.webhookUrl !== 'string' || typeof def.apiVersion !== 'string') {
      throw dpsErrors.badRequest('Custom allocation requires customAllocationDefinition {webhookUrl, apiVersion}');
    }
    customAllocationDefinition = { webhookUrl: def.webhookUrl, apiVersion: def.apiVersion };
  }

  let initialTwin: InitialTwin | undefined;
  if (body.initialTwin !== undefined && body.initialTwin !== null) {
    if (!isObject(body.initialTwin)) throw dpsErrors.badRequest('initialTwin must be an object');
    initialTwin = structuredClone(body.initialTwin) as InitialTwin;
  }

  const capabilities = isObject(body.capabilities)
    ? { iotEdge: body.capabilities.iotEdge === true }
    : { iotEdge: false };

  return {
    attestation,
    iotHubHostName,
    iotHubs,
    initialTwin,
    provisioningStatus: status,
    reprovisionPolicy,
    allocationPolicy,
    customAllocationDefinition,
    capabilities,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Wire shapes (service API)

function attestationToWire(att: AttestationMechanism, withKeys: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = { type: att.type };
  if (att.type === 'symmetricKey') {
    // GET and query answers omit the keys; the attestationmechanism call (and the PUT answer) carry them.
    out.symmetricKey = withKeys && att.symmetricKey ? { ...att.symmetricKey } : {};
  }
  if (att.type === 'tpm' && att.tpm) out.tpm = { ...att.tpm };
  if (att.type === 'x509' && att.x509) {
    const x: Record<string, unknown> = {};
    if (att.x509.clientCertificates) x.clientCertificates = certificatesToWire(att.x509.clientCertificates);
    if (att.x509.signingCertificates) x.signingCertificates = certificatesToWire(att.x509.signingCertificates);
    if (att.x509.caReferences) x.caReferences = { ...att.x509.caReferences };
    out.x509 = x;
  }
  return out;
}

function commonToWire(e: IndividualEnrollment | EnrollmentGroup, withKeys: boolean): Record<string, unknown> {
  return {
    attestation: attestationToWire(e.attestation, withKeys),
    capabilities: { iotEdge: !!e.capabilities?.iotEdge },
    ...(e.iotHubHostName ? { iotHubHostName: e.iotHubHostName } : {}),
    ...(e.initialTwin ? { initialTwin: structuredClone(e.initialTwin) } : {}),
    etag: e.etag,
    provisioningStatus: e.provisioningStatus,
    reprovisionPolicy: { ...e.reprovisionPolicy },
    createdDateTimeUtc: e.createdDateTimeUtc,
    lastUpdatedDateTimeUtc: e.lastUpdatedDateTimeUtc,
    ...(e.allocationPolicy ? { allocationPolicy: e.allocationPolicy } : {}),
    iotHubs: [...(e.iotHubs ?? [])],
    ...(e.customAllocationDefinition ? { customAllocationDefinition: { ...e.customAllocationDefinition } } : {}),
  };
}

export function registrationStateToWire(r: DeviceRegistrationState): Record<string, unknown> {
  return {
    registrationId: r.registrationId,
    createdDateTimeUtc: r.createdDateTimeUtc,
    ...(r.assignedHub ? { assignedHub: r.assignedHub } : {}),
    ...(r.deviceId ? { deviceId: r.deviceId } : {}),
    status: r.status,
    ...(r.substatus ? { substatus: r.substatus } : {}),
    ...(r.errorCode !== undefined ? { errorCode: r.errorCode } : {}),
    ...(r.errorMessage !== undefined ? { errorMessage: r.errorMessage } : {}),
    lastUpdatedDateTimeUtc: r.lastUpdatedDateTimeUtc,
    etag: r.etag,
  };
}

function enrollmentToWire(dps: DpsState, e: IndividualEnrollment, withKeys: boolean): Record<string, unknown> {
  const registration = dps.registrations.get(idKey(e.registrationId));
  const viaThisEnrollment = registration && !registration.enrollmentGroupId;
  return {
    registrationId: e.registrationId,
    ...(e.deviceId ? { deviceId: e.deviceId } : {}),
    ...(viaThisEnrollment ? { registrationState: registrationStateToWire(registration) } : {}),
    ...commonToWire(e, withKeys),
  };
}

function groupToWire(g: EnrollmentGroup, withKeys: boolean): Record<string, unknown> {
  return { enrollmentGroupId: g.enrollmentGroupId, ...commonToWire(g, withKeys) };
}

// ---------------------------------------------------------------------------------------------------------------
// Individual enrollments

export function bodyObject(body: unknown): Record<string, unknown> {
  if (!isObject(body)) throw dpsErrors.badRequest('The request body must be a JSON object');
  return body;
}

function checkEnrollmentId(id: string): void {
  if (!ENROLLMENT_ID.test(id)) {
    throw dpsErrors.badRequest(
      `Registration id ${id} is invalid: up to 128 alphanumeric characters plus . _ : -, no special character first.`,
    );
  }
}

/**
 * An update may send back what GET returned: X.509 certificates as `info` only (DPS never returns them). Entries
 * whose thumbprint matches the stored certificate keep it, as DPS does.
 */
function withStoredCertificates(body: Record<string, unknown>, stored: AttestationMechanism): Record<string, unknown> {
  const x509 = isObject(body.attestation) && isObject(body.attestation.x509) ? body.attestation.x509 : undefined;
  if (!x509 || !stored.x509) return body;
  const filled: Record<string, unknown> = { ...x509 };
  for (const field of ['clientCertificates', 'signingCertificates'] as const) {
    const given = x509[field];
    const kept = stored.x509[field];
    if (!isObject(given) || !kept) continue;
    const out: Record<string, unknown> = { ...given };
    for (const slot of ['primary', 'secondary'] as const) {
      const entry = given[slot];
      const info = isObject(entry) && isObject(entry.info) ? entry.info : undefined;
      const same = info && kept[slot] && info.sha1Thumbprint === kept[slot]?.info?.sha1Thumbprint;
      if (isObject(entry) && !entry.certificate && same) out[slot] = { certificate: kept[slot]!.certificate };
    }
    filled[field] = out;
  }
  return { ...body, attestation: { ...(body.attestation as Record<string, unknown>), x509: filled } };
}

/**
 * PUT /enrollments/{id}. Without If-Match an existing enrollment is a conflict (409), as on Azure; with If-Match
 * (`*` or the current etag) it is replaced, else 412.
 */
function upsertEnrollment(
  state: EmulatorState,
  id: string,
  body: Record<string, unknown>,
  ifMatch: string | undefined,
  mode: 'createOrUpdate' | 'create' | 'update',
): IndividualEnrollment {
  checkEnrollmentId(id);
  if (body.registrationId !== undefined && String(body.registrationId).toLowerCase() !== id.toLowerCase()) {
    throw dpsErrors.badRequest('The registrationId in the body does not match the one in the path');
  }
  const dps = state.dps;
  const existing = dps.enrollments.get(idKey(id));
  if (existing) {
    if (mode === 'create' || (mode === 'createOrUpdate' && !ifMatch)) {
      throw dpsErrors.conflict('Enrollment', existing.registrationId);
    }
    if (!ifMatchMatches(ifMatch, existing.etag)) throw dpsErrors.preconditionFailed(existing.registrationId);
  } else if (ifMatch && ifMatch !== '*' && mode !== 'update') {
    throw dpsErrors.preconditionFailed(id);
  }
  const common = existing
    ? parseCommon(state, withStoredCertificates(body, existing.attestation), false, existing.attestation)
    : parseCommon(state, body, false);
  let deviceId: string | undefined;
  if (body.deviceId !== undefined && body.deviceId !== null && body.deviceId !== '') {
    if (typeof body.deviceId !== 'string') throw dpsErrors.badRequest('deviceId must be a string');
    deviceId = body.deviceId;
  }
  const at = dpsNow();
  const enrollment: IndividualEnrollment = {
    registrationId: existing?.registrationId ?? id,
    ...(deviceId ? { deviceId } : {}),
    ...common,
    etag: newDpsEtag(),
    createdDateTimeUtc: existing?.createdDateTimeUtc ?? at,
    lastUpdatedDateTimeUtc: at,
  };
  dps.enrollments.set(idKey(id), enrollment);
  return enrollment;
}

export function putEnrollment(
  state: EmulatorState,
  id: string,
  body: unknown,
  ifMatch: string | undefined,
): Record<string, unknown> {
  const enrollment = upsertEnrollment(state, id, bodyObject(body), ifMatch, 'createOrUpdate');
  return enrollmentToWire(state.dps, enrollment, true);
}

function requireEnrollment(dps: DpsState, id: string): IndividualEnrollment {
  const enrollment = dps.enrollments.get(idKey(id));
  if (!enrollment) throw dpsErrors.enrollmentNotFound(id);
  return enrollment;
}

export function getEnrollment(state: EmulatorState, id: string): Record<string, unknown> {
  return enrollmentToWire(state.dps, requireEnrollment(state.dps, id), false);
}

export function getEnrollmentAttestation(state: EmulatorState, id: string): Record<string, unknown> {
  return attestationToWire(requireEnrollment(state.dps, id).attestation, true);
}

/** DELETE /enrollments/{id}; the device's registration record goes with it. */
export function deleteEnrollment(state: EmulatorState, id: string, ifMatch: string | undefined): void {
  const dps = state.dps;
  const enrollment = requireEnrollment(dps, id);
  if (!ifMatchMatches(ifMatch, enrollment.etag)) throw dpsErrors.preconditionFailed(enrollment.registrationId);
  dps.enrollments.delete(idKey(id));
  const registration = dps.registrations.get(idKey(id));
  if (registration && !registration.enrollmentGroupId) dps.registrations.delete(idKey(id));
}

export interface BulkEnrollmentResult {
  isSuccessful: boolean;
  errors: Array<{ registrationId: string; errorCode: number; errorStatus: string }>;
}

export const BULK_ENROLLMENT_MAX = 10;

/**
 * POST /enrollments: `{mode, enrollments}` with 1–10 enrollments. Each item is applied on its own; failures are
 * listed in `errors` and the others stay applied. `onApplied` hears of each enrollment written.
 */
export function bulkEnrollments(
  state: EmulatorState,
  body: unknown,
  onApplied: (write: 'create' | 'update' | 'delete', registrationId: string) => void = () => undefined,
): BulkEnrollmentResult {
  const op = bodyObject(body);
  const mode = typeof op.mode === 'string' ? op.mode.toLowerCase() : '';
  if (!['create', 'update', 'updateifmatchetag', 'delete'].includes(mode)) {
    throw dpsErrors.badRequest(`Invalid bulk operation mode ${String(op.mode)}`);
  }
  if (!Array.isArray(op.enrollments) || op.enrollments.length === 0 || op.enrollments.length > BULK_ENROLLMENT_MAX) {
    throw dpsErrors.badRequest(`A bulk operation takes between 1 and ${BULK_ENROLLMENT_MAX} enrollments`);
  }
  const result: BulkEnrollmentResult = { isSuccessful: true, errors: [] };
  for (const raw of op.enrollments as unknown[]) {
    const registrationId = isObject(raw) && typeof raw.registrationId === 'string' ? raw.registrationId : '';
    try {
      if (!isObject(raw) || !registrationId) throw dpsErrors.badRequest('Each enrollment needs a registrationId');
      const etag = typeof raw.etag === 'string' ? raw.etag : undefined;
      const existed = state.dps.enrollments.has(idKey(registrationId));
      switch (mode) {
        case 'create':
          upsertEnrollment(state, registrationId, raw, undefined, 'create');
          break;
        case 'update':
          upsertEnrollment(state, registrationId, raw, '*', 'update');
          break;
        case 'updateifmatchetag':
          if (state.dps.enrollments.has(idKey(registrationId))) {
            upsertEnrollment(state, registrationId, raw, etag ?? '""', 'update');
          } else {
            throw dpsErrors.enrollmentNotFound(registrationId);
          }
          break;
        case 'delete':
          deleteEnrollment(state, registrationId, etag);
          break;
      }
      onApplied(mode === 'delete' ? 'delete' : existed ? 'update' : 'create', registrationId);
    } catch (err) {
      if (!(err instanceof DpsError)) throw err;
      result.isSuccessful = false;
      result.errors.push({ registrationId, errorCode: err.errorCode, errorStatus: err.message });
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// Enrollment groups

function upsertGroup(
  state: EmulatorState,
  id: string,
  body: Record<string, unknown>,
  ifMatch: string | undefined,
): EnrollmentGroup {
  if (!GROUP_ID.test(id)) throw dpsErrors.badRequest(`Enrollment group id ${id} is invalid`);
  if (body.enrollmentGroupId !== undefined && String(body.enrollmentGroupId).toLowerCase() !== id.toLowerCase()) {
    throw dpsErrors.badRequest('The enrollmentGroupId in the body does not match the one in the path');
  }
  const dps = state.dps;
  const existing = dps.enrollmentGroups.get(idKey(id));
  if (existing) {
    if (!ifMatch) throw dpsErrors.conflict('Enrollment group', existing.enrollmentGroupId);
    if (!ifMatchMatches(ifMatch, existing.etag)) throw dpsErrors.preconditionFailed(existing.enrollmentGroupId);
  } else if (ifMatch && ifMatch !== '*') {
    throw dpsErrors.preconditionFailed(id);
  }
  const common = existing
    ? parseCommon(state, withStoredCertificates(body, existing.attestation), true, existing.attestation)
    : parseCommon(state, body, true);
  const at = dpsNow();
  const group: EnrollmentGroup = {
    enrollmentGroupId: existing?.enrollmentGroupId ?? id,
    ...common,
    etag: newDpsEtag(),
    createdDateTimeUtc: existing?.createdDateTimeUtc ?? at,
    lastUpdatedDateTimeUtc: at,
  };
  dps.enrollmentGroups.set(idKey(id), group);
  return group;
}

export function putEnrollmentGroup(
  state: EmulatorState,
  id: string,
  body: unknown,
  ifMatch: string | undefined,
): Record<string, unknown> {
  return groupToWire(upsertGroup(state, id, bodyObject(body), ifMatch), true);
}

function requireGroup(dps: DpsState, id: string): EnrollmentGroup {
  const group = dps.enrollmentGroups.get(idKey(id));
  if (!group) throw dpsErrors.groupNotFound(id);
  return group;
}

export function getEnrollmentGroup(state: EmulatorState, id: string): Record<string, unknown> {
  return groupToWire(requireGroup(state.dps, id), false);
}

export function getEnrollmentGroupAttestation(state: EmulatorState, id: string): Record<string, unknown> {
  return attestationToWire(requireGroup(state.dps, id).attestation, true);
}

/** DELETE /enrollmentGroups/{id}. The registration records of its devices stay (delete them separately). */
export function deleteEnrollmentGroup(state: EmulatorState, id: string, ifMatch: string | undefined): void {
  const group = requireGroup(state.dps, id);
  if (!ifMatchMatches(ifMatch, group.etag)) throw dpsErrors.preconditionFailed(group.enrollmentGroupId);
  state.dps.enrollmentGroups.delete(idKey(id));
}

// ---------------------------------------------------------------------------------------------------------------
// Registration states

export function requireRegistration(dps: DpsState, id: string): DeviceRegistrationState {
  const registration = dps.registrations.get(idKey(id));
  if (!registration) throw dpsErrors.registrationNotFound(id);
  return registration;
}

export function getRegistrationState(state: EmulatorState, id: string): Record<string, unknown> {
  return registrationStateToWire(requireRegistration(state.dps, id));
}

export function deleteRegistrationState(state: EmulatorState, id: string, ifMatch: string | undefined): void {
  const registration = requireRegistration(state.dps, id);
  if (!ifMatchMatches(ifMatch, registration.etag)) throw dpsErrors.preconditionFailed(registration.registrationId);
  state.dps.registrations.delete(idKey(id));
}

// ---------------------------------------------------------------------------------------------------------------
// Queries

export interface QueryPage {
  items: Record<string, unknown>[];
  /** Absent on the last page (the SDK loops while it is present). */
  continuationToken?: string;
}

export interface QueryOptions {
  pageSize?: number;
  continuationToken?: string;
}

/** Without x-ms-max-item-count, DPS answers pages of this size. */
export const DEFAULT_QUERY_PAGE_SIZE = 1000;

function checkQuerySpec(body: unknown): void {
  const spec = bodyObject(body);
  if (typeof spec.query !== 'string' || !spec.query.trim()) {
    throw dpsErrors.badRequest('The query specification must have a query string, e.g. {"query":"*"}');
  }
  const query = spec.query.trim();
  // DPS's query language selects everything of the resource type; filters are not supported.
  if (query !== '*' && !/^select\s+\*(\s+from\s+\w+)?$/i.test(query)) {
    throw dpsErrors.badRequest(`Unsupported query ${query}: only "*" (or SELECT *) is supported`);
  }
}

/** Keyset paging over ids in sorted order, so pages stay consistent while records are added or removed. */
function page<T>(
  entries: Array<[string, T]>,
  options: QueryOptions,
  toWire: (value: T) => Record<string, unknown>,
): QueryPage {
  const pageSize = options.pageSize && options.pageSize > 0 ? Math.floor(options.pageSize) : DEFAULT_QUERY_PAGE_SIZE;
  let after: string | undefined;
  if (options.continuationToken) {
    try {
      const decoded = JSON.parse(Buffer.from(options.continuationToken, 'base64').toString('utf8')) as {
        after?: unknown;
      };
      if (typeof decoded.after !== 'string') throw new Error('bad token');
      after = decoded.after;
    } catch {
      throw dpsErrors.badRequest('Invalid continuation token');
    }
  }
  const sorted = entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const start = after === undefined ? 0 : sorted.findIndex(([key]) => key > after);
  const slice = start < 0 ? [] : sorted.slice(start, start + pageSize);
  const more = start >= 0 && start + pageSize < sorted.length;
  const last = slice[slice.length - 1];
  return {
    items: slice.map(([, v]) => toWire(v)),
    ...(more && last ? { continuationToken: Buffer.from(JSON.stringify({ after: last[0] })).toString('base64') } : {}),
  };
}

export function queryEnrollments(state: EmulatorState, body: unknown, options: QueryOptions): QueryPage {
  checkQuerySpec(body);
  return page([...state.dps.enrollments.entries()], options, (e) => enrollmentToWire(state.dps, e, false));
}

export function queryEnrollmentGroups(state: EmulatorState, body: unknown, options: QueryOptions): QueryPage {
  checkQuerySpec(body);
  return page([...state.dps.enrollmentGroups.entries()], options, (g) => groupToWire(g, false));
}

/** POST /registrations/{groupId}/query: the registration records of one enrollment group's devices. */
export function queryGroupRegistrations(
  state: EmulatorState,
  groupId: string,
  body: unknown,
  options: QueryOptions,
): QueryPage {
  checkQuerySpec(body);
  const wanted = idKey(groupId);
  const entries = [...state.dps.registrations.entries()].filter(
    ([, r]) => r.enrollmentGroupId !== undefined && idKey(r.enrollmentGroupId) === wanted,
  );
  return page(entries, options, registrationStateToWire);
}
