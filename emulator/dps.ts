/**
 * Device Provisioning Service logic, independent of transport: enrollments, enrollment groups, registration
 * states (service API 2021-10-01) and device registration (device API 2019-03-31). The REST routers
 * (dps-service.ts, dps-device.ts) and the MQTT hook (dps-mqtt.ts) only translate between the wire and these
 * functions.
 *
 * Every function that changes state is synchronous, so concurrent requests cannot interleave a read-modify-write.
 */
import { X509Certificate, createHash, randomBytes, randomUUID } from 'node:crypto';
import { certificateInfo, commonName, splitPemChain, thumbprints } from './certs';
import { AzureError } from './azure-errors';
import { createDevice, deleteDevice, findDevice, findHubByHost, replaceTwin, updateDevice } from './hub';
import type { DeviceInput } from './hub';
import { SasError, authorizeWithKeys, deriveDeviceKey, generateKey, isValidSymmetricKey, parseSasToken } from './sas';
import type {
  AllocationPolicy,
  AttestationMechanism,
  DeviceRecord,
  DeviceRegistrationState,
  DpsState,
  EmulatorState,
  EnrollmentGroup,
  HubState,
  IndividualEnrollment,
  InitialTwin,
  RegistrationSubstatus,
  X509Attestation,
  X509Certificates,
} from './state';

// ---------------------------------------------------------------------------------------------------------------
// Errors

/**
 * A DPS failure: HTTP status plus DPS's six-digit error code (first three digits = status). Azure does not
 * publish every sub-code; the ones used here follow the codes seen on the wire (401002, 404201) and keep the
 * status prefix for the rest.
 */
export class DpsError extends Error {
  constructor(
    readonly status: number,
    readonly errorCode: number,
    message: string,
  ) {
    super(message);
    this.name = 'DpsError';
  }
}

export const dpsErrors = {
  badRequest: (message: string) => new DpsError(400, 400004, message),
  unauthorized: (message = 'Unauthorized') => new DpsError(401, 401002, message),
  invalidCertificate: () => new DpsError(401, 401002, 'Invalid certificate.'),
  enrollmentNotFound: (id: string) =>
    new DpsError(404, 404201, `A registration with the specified registration id ${id} could not be found.`),
  groupNotFound: (id: string) => new DpsError(404, 404202, `Enrollment group ${id} could not be found.`),
  registrationNotFound: (id: string) => new DpsError(404, 404203, `Device registration ${id} could not be found.`),
  operationNotFound: (id: string) => new DpsError(404, 404204, `Operation ${id} could not be found.`),
  conflict: (what: string, id: string) =>
    new DpsError(409, 409201, `${what} ${id} already exists; use If-Match to update it.`),
  preconditionFailed: (id: string) =>
    new DpsError(412, 412201, `Precondition failed: the ETag does not match the current one of ${id}.`),
};

// ---------------------------------------------------------------------------------------------------------------
// Ids, etags, timestamps

const ENROLLMENT_ID = /^[A-Za-z0-9](?:[A-Za-z0-9._:-]{0,126}[A-Za-z0-9-])?$/;
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
function ifMatchMatches(ifMatch: string | undefined, etag: string): boolean {
  if (ifMatch === undefined || ifMatch === '') return true;
  const wanted = ifMatch
    .trim()
    .replace(/^W\//, '')
    .replace(/^"(.*)"$/, '$1');
  return wanted === '*' || wanted === etag;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

// ---------------------------------------------------------------------------------------------------------------
// Runtime state kept beside DpsState (operations and CA certificates are not part of the wire model)

export interface DpsCaCertificate {
  name: string;
  certificatePem: string;
  isVerified: boolean;
}

interface Operation {
  operationId: string;
  registrationKey: string;
  /** Re-checked on every status poll: the credential that registered. */
  credential: { kind: 'sas'; keys: string[] } | { kind: 'x509'; sha1: string };
  result: OperationResult;
  createdAt: number;
}

interface DpsRuntime {
  operations: Map<string, Operation>;
  caCertificates: Map<string, DpsCaCertificate>;
  retryAfterSeconds: number;
}

const runtimes = new WeakMap<DpsState, DpsRuntime>();

function runtime(dps: DpsState): DpsRuntime {
  let rt = runtimes.get(dps);
  if (!rt) {
    rt = { operations: new Map(), caCertificates: new Map(), retryAfterSeconds: 3 };
    runtimes.set(dps, rt);
  }
  return rt;
}

export interface DpsSettings {
  /**
   * `retry-after` (seconds) DPS sends with `assigning` answers; the SDKs wait that long before polling. Azure
   * sends 3; tests may lower it (0 polls immediately).
   */
  retryAfterSeconds?: number;
}

export function configureDps(dps: DpsState, settings: DpsSettings): void {
  if (settings.retryAfterSeconds !== undefined) runtime(dps).retryAfterSeconds = settings.retryAfterSeconds;
}

export function dpsSettings(dps: DpsState): Required<DpsSettings> {
  return { retryAfterSeconds: runtime(dps).retryAfterSeconds };
}

/**
 * Registers a CA certificate with the DPS (Azure: "Certificates" blade), for `caReferences` attestation. Only
 * verified certificates (proof of possession done) authenticate devices, as on Azure.
 */
export function addDpsCaCertificate(dps: DpsState, cert: DpsCaCertificate): void {
  parseCertificate(cert.certificatePem);
  runtime(dps).caCertificates.set(idKey(cert.name), { ...cert });
}

export function listDpsCaCertificates(dps: DpsState): DpsCaCertificate[] {
  return [...runtime(dps).caCertificates.values()].map((c) => ({ ...c }));
}

/** Drops operations and CA certificates, and settings go back to their defaults (state reset). */
export function resetDpsRuntime(dps: DpsState): void {
  runtimes.delete(dps);
}

// ---------------------------------------------------------------------------------------------------------------
// Certificates

function parseCertificate(pemOrBase64: string): X509Certificate {
  try {
    const text = pemOrBase64.trim();
    if (text.includes('-----BEGIN CERTIFICATE-----')) return new X509Certificate(splitPemChain(text)[0] ?? text);
    return new X509Certificate(Buffer.from(text, 'base64'));
  } catch {
    throw dpsErrors.badRequest('The certificate is not a valid X.509 certificate (PEM or base64 DER).');
  }
}

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
    const pem = toPem(parseCertificate(entry.certificate));
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

function parseAttestation(input: unknown, forGroup: boolean): AttestationMechanism {
  if (!isObject(input)) throw dpsErrors.badRequest('attestation is required');
  const type = input.type;
  if (type === 'symmetricKey') {
    const sk = isObject(input.symmetricKey) ? input.symmetricKey : {};
    const given = (k: unknown): string | undefined => (typeof k === 'string' && k !== '' ? k : undefined);
    // DPS generates 64-byte keys for whichever key is left empty.
    const primaryKey = given(sk.primaryKey) ?? generateKey(64);
    const secondaryKey = given(sk.secondaryKey) ?? generateKey(64);
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

function parseCommon(state: EmulatorState, body: Record<string, unknown>, forGroup: boolean): CommonFields {
  const attestation = parseAttestation(body.attestation, forGroup);

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

function bodyObject(body: unknown): Record<string, unknown> {
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
 * PUT /enrollments/{id}. Without If-Match an existing enrollment is a conflict (409), as on Azure; with If-Match
 * (`*` or the current etag) it is replaced, else 412.
 */
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
  const common = parseCommon(state, existing ? withStoredCertificates(body, existing.attestation) : body, false);
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
 * listed in `errors` and the others stay applied.
 */
export function bulkEnrollments(state: EmulatorState, body: unknown): BulkEnrollmentResult {
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
  const common = parseCommon(state, body, true);
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

function requireRegistration(dps: DpsState, id: string): DeviceRegistrationState {
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

// ---------------------------------------------------------------------------------------------------------------
// Device registration: authentication

/** What the device presented: a SAS token (symmetric key) or a TLS client certificate chain (X.509). */
export type DeviceCredential =
  { kind: 'sas'; token: string | undefined } | { kind: 'x509'; chainPem: string[] } | { kind: 'none' };

interface Attested {
  enrollment: IndividualEnrollment | EnrollmentGroup;
  group?: EnrollmentGroup;
  /** Hub device authentication DPS sets up. */
  auth: NonNullable<DeviceInput['authentication']>;
  operationCredential: Operation['credential'];
  x509?: {
    certificateInfo: ReturnType<typeof certificateInfo>;
    signingCertificateInfo?: ReturnType<typeof certificateInfo>;
  };
}

function checkRegistrationSas(
  token: string | undefined,
  idScope: string,
  registrationId: string,
  keys: string[],
): boolean {
  try {
    const parsed = parseSasToken(token);
    // Devices sign with skn=registration (or no policy at all).
    if (parsed.skn !== undefined && parsed.skn.toLowerCase() !== 'registration') return false;
    authorizeWithKeys(token, keys, { resource: `${idScope}/registrations/${registrationId}` });
    return true;
  } catch (err) {
    if (err instanceof SasError) return false;
    throw err;
  }
}

function attestSas(dps: DpsState, idScope: string, registrationId: string, token: string | undefined): Attested {
  const individual = dps.enrollments.get(idKey(registrationId));
  if (individual) {
    // The individual enrollment decides alone: DPS does not fall back to a group.
    const sk = individual.attestation.symmetricKey;
    if (individual.attestation.type !== 'symmetricKey' || !sk) throw dpsErrors.unauthorized();
    const keys = [sk.primaryKey, sk.secondaryKey];
    if (!checkRegistrationSas(token, idScope, registrationId, keys)) throw dpsErrors.unauthorized();
    return {
      enrollment: individual,
      auth: { type: 'sas', symmetricKey: { primaryKey: sk.primaryKey, secondaryKey: sk.secondaryKey } },
      operationCredential: { kind: 'sas', keys },
    };
  }
  for (const group of dps.enrollmentGroups.values()) {
    const sk = group.attestation.symmetricKey;
    if (group.attestation.type !== 'symmetricKey' || !sk) continue;
    const keys = [deriveDeviceKey(sk.primaryKey, registrationId), deriveDeviceKey(sk.secondaryKey, registrationId)];
    if (checkRegistrationSas(token, idScope, registrationId, keys)) {
      return {
        enrollment: group,
        group,
        auth: { type: 'sas', symmetricKey: { primaryKey: keys[0], secondaryKey: keys[1] } },
        operationCredential: { kind: 'sas', keys },
      };
    }
  }
  throw dpsErrors.unauthorized();
}

function isIssuer(cert: X509Certificate, issuer: X509Certificate): boolean {
  return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
}

function validNow(cert: X509Certificate, now = Date.now()): boolean {
  return Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo);
}

/**
 * Whether the presented chain (leaf first, then intermediates) leads to `anchor` through valid CA signatures. The
 * anchor may be a root or an intermediate the device's chain passes through.
 */
function chainReaches(chain: X509Certificate[], anchor: X509Certificate): boolean {
  if (!anchor.ca || !validNow(anchor)) return false;
  let current = chain[0];
  const pool = chain.slice(1);
  for (let depth = 0; depth < 10; depth += 1) {
    if (isIssuer(current, anchor)) return true;
    const next = pool.find((c) => c !== current && c.ca && validNow(c) && isIssuer(current, c));
    if (!next) return false;
    current = next;
  }
  return false;
}

function caAnchors(dps: DpsState, x509: X509Attestation | undefined): X509Certificate[] {
  const anchors: X509Certificate[] = [];
  for (const slot of ['primary', 'secondary'] as const) {
    const pem = x509?.signingCertificates?.[slot]?.certificate;
    if (pem) anchors.push(new X509Certificate(pem));
    const ref = x509?.caReferences?.[slot];
    const ca = ref ? runtime(dps).caCertificates.get(idKey(ref)) : undefined;
    if (ca?.isVerified) anchors.push(new X509Certificate(ca.certificatePem));
  }
  return anchors;
}

function attestX509(dps: DpsState, registrationId: string, chainPem: string[]): Attested {
  let chain: X509Certificate[];
  try {
    chain = chainPem.map((pem) => new X509Certificate(pem));
  } catch {
    throw dpsErrors.invalidCertificate();
  }
  const leaf = chain[0];
  if (!leaf || !validNow(leaf)) throw dpsErrors.invalidCertificate();
  // The registration id of an X.509 device is its certificate's common name.
  if ((commonName(leaf.toString()) ?? '').toLowerCase() !== registrationId.toLowerCase()) {
    throw dpsErrors.invalidCertificate();
  }
  const leafPrints = thumbprints(leaf.toString());
  const auth: Attested['auth'] = {
    type: 'selfSigned',
    x509Thumbprint: { primaryThumbprint: leafPrints.sha1, secondaryThumbprint: leafPrints.sha1 },
  };
  const operationCredential: Operation['credential'] = { kind: 'x509', sha1: leafPrints.sha1 };
  const leafInfo = certificateInfo(leaf.toString());

  const individual = dps.enrollments.get(idKey(registrationId));
  if (individual) {
    const x509 = individual.attestation.x509;
    if (individual.attestation.type !== 'x509' || !x509) throw dpsErrors.invalidCertificate();
    const client = x509.clientCertificates;
    const matchesClient =
      !!client &&
      (['primary', 'secondary'] as const).some((slot) => {
        const info = client[slot]?.info;
        return !!info && (info.sha1Thumbprint === leafPrints.sha1 || info.sha256Thumbprint === leafPrints.sha256);
      });
    const matchesCa = !client && caAnchors(dps, x509).some((anchor) => chainReaches(chain, anchor));
    if (!matchesClient && !matchesCa) throw dpsErrors.invalidCertificate();
    return { enrollment: individual, auth, operationCredential, x509: { certificateInfo: leafInfo } };
  }
  for (const group of dps.enrollmentGroups.values()) {
    if (group.attestation.type !== 'x509') continue;
    const anchor = caAnchors(dps, group.attestation.x509).find((a) => chainReaches(chain, a));
    if (anchor) {
      return {
        enrollment: group,
        group,
        auth,
        operationCredential,
        x509: { certificateInfo: leafInfo, signingCertificateInfo: certificateInfo(anchor.toString()) },
      };
    }
  }
  throw dpsErrors.invalidCertificate();
}

function attest(dps: DpsState, idScope: string, registrationId: string, credential: DeviceCredential): Attested {
  switch (credential.kind) {
    case 'sas':
      return attestSas(dps, idScope, registrationId, credential.token);
    case 'x509':
      return attestX509(dps, registrationId, credential.chainPem);
    default:
      throw dpsErrors.unauthorized();
  }
}

function sameCredential(
  expected: Operation['credential'],
  idScope: string,
  registrationId: string,
  credential: DeviceCredential,
): boolean {
  if (expected.kind === 'sas') {
    return credential.kind === 'sas' && checkRegistrationSas(credential.token, idScope, registrationId, expected.keys);
  }
  if (credential.kind !== 'x509' || !credential.chainPem[0]) return false;
  try {
    return thumbprints(credential.chainPem[0]).sha1 === expected.sha1;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Device registration: allocation and hub assignment

/** Candidate hubs of an enrollment: its `iotHubs`, else its legacy `iotHubHostName`, else every linked hub. */
function candidateHubs(dps: DpsState, enrollment: IndividualEnrollment | EnrollmentGroup): string[] {
  const linked = dps.linkedHubs;
  const isLinked = (host: string): boolean => linked.some((h) => h.hostName.toLowerCase() === host.toLowerCase());
  if (enrollment.iotHubs?.length) return enrollment.iotHubs.filter(isLinked);
  if (enrollment.iotHubHostName) return isLinked(enrollment.iotHubHostName) ? [enrollment.iotHubHostName] : [];
  return linked.filter((h) => h.applyAllocationPolicy).map((h) => h.hostName.toLowerCase());
}

/** Evenly weighted, deterministic: the same registration id always hashes to the same hub of a given set. */
function hashedChoice(dps: DpsState, hubs: string[], registrationId: string): string {
  const sorted = [...hubs].sort();
  const weights = sorted.map(
    (host) => dps.linkedHubs.find((h) => h.hostName.toLowerCase() === host)?.allocationWeight || 1,
  );
  const total = weights.reduce((a, b) => a + b, 0);
  const digest = createHash('sha256').update(idKey(registrationId)).digest();
  let point = digest.readUInt32BE(0) % total;
  for (let i = 0; i < sorted.length; i += 1) {
    if (point < weights[i]) return sorted[i];
    point -= weights[i];
  }
  return sorted[sorted.length - 1];
}

class AssignmentFailure extends Error {
  constructor(
    readonly errorCode: number,
    message: string,
  ) {
    super(message);
  }
}

function allocate(dps: DpsState, enrollment: IndividualEnrollment | EnrollmentGroup, registrationId: string): string {
  const hubs = candidateHubs(dps, enrollment);
  if (hubs.length === 0) {
    throw new AssignmentFailure(400209, 'No linked IoT hub is available for this enrollment.');
  }
  switch (enrollment.allocationPolicy ?? 'hashed') {
    case 'static':
      return hubs[0];
    case 'custom':
      throw new AssignmentFailure(400211, 'Custom allocation (Azure Functions webhook) is not emulated.');
    default:
      // geoLatency: every emulated hub is in the same region, so it behaves like hashed.
      return hashedChoice(dps, hubs, registrationId);
  }
}

function initialTwinParts(initialTwin: InitialTwin | undefined): {
  tags: Record<string, unknown>;
  desired: Record<string, unknown>;
} {
  const strip = (o: unknown): Record<string, unknown> => {
    if (!isObject(o)) return {};
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(o)) if (!k.startsWith('$')) out[k] = structuredClone(v);
    return out;
  };
  return { tags: strip(initialTwin?.tags), desired: strip(initialTwin?.properties?.desired) };
}

function applyInitialTwin(hub: HubState, deviceId: string, initialTwin: InitialTwin | undefined): void {
  replaceTwin(hub, deviceId, initialTwinParts(initialTwin));
  const device = findDevice(hub, deviceId);
  if (device) device.twin.reported = {};
}

function migrateTwin(hub: HubState, deviceId: string, from: DeviceRecord): void {
  replaceTwin(hub, deviceId, { tags: from.twin.tags, desired: from.twin.desired });
  const device = findDevice(hub, deviceId);
  if (device) device.twin.reported = structuredClone(from.twin.reported);
}

interface Assignment {
  hubHost: string;
  deviceId: string;
  substatus: RegistrationSubstatus;
}

/**
 * Decides the hub and substatus (reprovision policy) and makes the hub match: the device is created or updated
 * with the attested credentials; on a move it leaves the previous hub, with its twin migrated or reset.
 */
function assign(state: EmulatorState, attested: Attested, registrationId: string): Assignment {
  const dps = state.dps;
  const enrollment = attested.enrollment;
  const individual = attested.group ? undefined : (enrollment as IndividualEnrollment);
  const deviceId = individual?.deviceId || registrationId;
  const target = allocate(dps, enrollment, registrationId);

  const previous = dps.registrations.get(idKey(registrationId));
  // A disabled or failed attempt keeps the last assignment, so the device returns to (or moves from) that hub.
  const previousHost = previous?.assignedHub?.toLowerCase();
  let hubHost = target;
  let substatus: RegistrationSubstatus;
  let moveFrom: { hub: HubState; deviceId: string } | undefined;
  if (!previousHost) {
    substatus = 'initialAssignment';
  } else if (previousHost === target) {
    substatus = 'reprovisionedToInitialAssignment';
  } else if (!enrollment.reprovisionPolicy.updateHubAssignment) {
    // "Never re-provision": the device keeps its hub.
    hubHost = previousHost;
    substatus = 'reprovisionedToInitialAssignment';
  } else {
    substatus = enrollment.reprovisionPolicy.migrateDeviceData ? 'deviceDataMigrated' : 'deviceDataReset';
    const oldHub = findHubByHost(state, previousHost);
    if (oldHub) moveFrom = { hub: oldHub, deviceId: previous?.deviceId ?? deviceId };
  }

  const hub = findHubByHost(state, hubHost);
  if (!hub) throw new AssignmentFailure(404209, `IoT hub ${hubHost} does not exist.`);
  const oldDevice = moveFrom ? findDevice(moveFrom.hub, moveFrom.deviceId) : undefined;
  const capabilities = { iotEdge: !!enrollment.capabilities?.iotEdge };

  try {
    const existing = findDevice(hub, deviceId);
    if (existing) {
      // DPS refreshes the credentials; an operator's disable in the hub stays in force.
      updateDevice(hub, {
        deviceId,
        status: existing.status,
        statusReason: existing.statusReason,
        capabilities,
        authentication: attested.auth,
        deviceScope: existing.deviceScope,
      });
    } else {
      createDevice(hub, { deviceId, capabilities, authentication: attested.auth });
    }
    if (substatus === 'deviceDataMigrated' && oldDevice) migrateTwin(hub, deviceId, oldDevice);
    else if (substatus === 'deviceDataReset' || !existing) applyInitialTwin(hub, deviceId, enrollment.initialTwin);
  } catch (err) {
    if (err instanceof AzureError) throw new AssignmentFailure(err.status * 1000 + 9, err.message);
    throw err;
  }
  if (moveFrom && oldDevice) {
    // "Device data was removed from the previously assigned IoT hub": this also ends its live connections.
    deleteDevice(moveFrom.hub, oldDevice.deviceId);
  }
  return { hubHost: hub.hostName, deviceId, substatus };
}

// ---------------------------------------------------------------------------------------------------------------
// Device registration: operations

export type OperationStatus = 'assigning' | 'assigned' | 'failed' | 'disabled';

export interface OperationResult {
  operationId: string;
  status: OperationStatus;
  registrationState?: Record<string, unknown>;
}

export interface RegistrationAnswer {
  /** HTTP status (or the MQTT `res/<status>` topic segment). */
  status: number;
  body: OperationResult | Record<string, unknown>;
  retryAfterSeconds?: number;
}

const OPERATION_TTL_MS = 30 * 60 * 1000;

function newOperationId(): string {
  return `4.${randomBytes(8).toString('hex')}.${randomUUID()}`;
}

function checkScope(dps: DpsState, idScope: string): void {
  if (idScope.toLowerCase() !== dps.idScope.toLowerCase()) throw dpsErrors.unauthorized();
}

function checkRegistrationId(registrationId: string): void {
  if (!ENROLLMENT_ID.test(registrationId)) throw dpsErrors.badRequest(`Registration id ${registrationId} is invalid`);
}

function deviceRegistrationStateToWire(r: DeviceRegistrationState, attested: Attested): Record<string, unknown> {
  const base = registrationStateToWire(r);
  const groupRef = attested.group ? { enrollmentGroupId: attested.group.enrollmentGroupId } : {};
  if (attested.enrollment.attestation.type === 'x509') {
    base.x509 = {
      ...groupRef,
      ...(attested.x509?.certificateInfo ? { certificateInfo: attested.x509.certificateInfo } : {}),
      ...(attested.x509?.signingCertificateInfo
        ? { signingCertificateInfo: attested.x509.signingCertificateInfo }
        : {}),
    };
  } else if (attested.enrollment.attestation.type === 'symmetricKey') {
    base.symmetricKey = groupRef;
  }
  return base;
}

/**
 * `PUT /{idScope}/registrations/{regId}/register` (and its MQTT twin): authenticates the device, runs the
 * assignment at once and answers 202 `assigning` with an operation id; the final state comes from
 * {@link getOperationStatus}. Authentication failures throw DpsError 401.
 */
export function registerDevice(
  state: EmulatorState,
  idScope: string,
  registrationId: string,
  body: unknown,
  credential: DeviceCredential,
): RegistrationAnswer {
  const dps = state.dps;
  checkScope(dps, idScope);
  checkRegistrationId(registrationId);
  if (body !== undefined && body !== null && body !== '') {
    const b = bodyObject(body);
    if (b.registrationId !== undefined && String(b.registrationId).toLowerCase() !== registrationId.toLowerCase()) {
      throw dpsErrors.badRequest('The registrationId in the body does not match the one in the path');
    }
  }
  const attested = attest(dps, idScope, registrationId, credential);
  const key = idKey(registrationId);
  const previous = dps.registrations.get(key);
  const at = dpsNow();
  const record: DeviceRegistrationState = {
    registrationId: previous?.registrationId ?? registrationId,
    status: 'assigned',
    etag: newDpsEtag(),
    createdDateTimeUtc: previous?.createdDateTimeUtc ?? at,
    lastUpdatedDateTimeUtc: at,
    ...(previous?.assignedHub ? { assignedHub: previous.assignedHub } : {}),
    ...(previous?.deviceId ? { deviceId: previous.deviceId } : {}),
    ...(attested.group ? { enrollmentGroupId: attested.group.enrollmentGroupId } : {}),
  };
  let status: OperationStatus;
  if (attested.enrollment.provisioningStatus === 'disabled') {
    record.status = 'disabled';
    status = 'disabled';
  } else {
    try {
      const assignment = assign(state, attested, registrationId);
      record.assignedHub = assignment.hubHost;
      record.deviceId = assignment.deviceId;
      record.substatus = assignment.substatus;
      status = 'assigned';
    } catch (err) {
      if (!(err instanceof AssignmentFailure)) throw err;
      record.status = 'failed';
      record.errorCode = err.errorCode;
      record.errorMessage = err.message;
      status = 'failed';
    }
  }
  dps.registrations.set(key, record);

  const rt = runtime(dps);
  const now = Date.now();
  for (const [id, op] of rt.operations) if (now - op.createdAt > OPERATION_TTL_MS) rt.operations.delete(id);
  const operationId = newOperationId();
  rt.operations.set(operationId, {
    operationId,
    registrationKey: key,
    credential: attested.operationCredential,
    result: { operationId, status, registrationState: deviceRegistrationStateToWire(record, attested) },
    createdAt: now,
  });
  return {
    status: 202,
    body: { operationId, status: 'assigning' },
    retryAfterSeconds: rt.retryAfterSeconds,
  };
}

/** `GET /{idScope}/registrations/{regId}/operations/{operationId}`: the operation's final state (200). */
export function getOperationStatus(
  state: EmulatorState,
  idScope: string,
  registrationId: string,
  operationId: string,
  credential: DeviceCredential,
): RegistrationAnswer {
  const dps = state.dps;
  checkScope(dps, idScope);
  const op = runtime(dps).operations.get(operationId);
  if (!op || op.registrationKey !== idKey(registrationId)) {
    // Without a known operation the credential cannot be checked against it; answer like an unknown resource.
    if (credential.kind === 'none') throw dpsErrors.unauthorized();
    throw dpsErrors.operationNotFound(operationId);
  }
  if (!sameCredential(op.credential, idScope, registrationId, credential)) throw dpsErrors.unauthorized();
  return { status: 200, body: structuredClone(op.result) };
}

/**
 * `POST /{idScope}/registrations/{regId}` (device-side status lookup): the device's current registration
 * record, after authenticating it like a registration.
 */
export function getDeviceRegistrationStatus(
  state: EmulatorState,
  idScope: string,
  registrationId: string,
  credential: DeviceCredential,
): RegistrationAnswer {
  const dps = state.dps;
  checkScope(dps, idScope);
  const attested = attest(dps, idScope, registrationId, credential);
  const record = requireRegistration(dps, registrationId);
  return { status: 200, body: deviceRegistrationStateToWire(record, attested) };
}

/** A DPS error body `{errorCode, trackingId, message, timestampUtc}` (used by the MQTT transport). */
export function dpsErrorBody(err: DpsError): Record<string, unknown> {
  return { errorCode: err.errorCode, trackingId: randomUUID(), message: err.message, timestampUtc: dpsNow() };
}

/** Splits a PEM bundle into certificates (exported for the transports). */
export { splitPemChain };
