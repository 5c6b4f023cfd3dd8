/**
 * DPS device registration (api-version 2019-03-31), independent of transport: attestation (SAS or X.509),
 * allocation over the linked hubs, the reprovision policy, and the operations a device polls.
 * dps/device-rest.ts and dps/device-mqtt.ts only translate between the wire and these functions.
 *
 * Every function that changes state is synchronous, so concurrent requests cannot interleave a read-modify-write.
 */
import { X509Certificate, createHash, randomBytes, randomUUID } from 'node:crypto';
import { AzureError } from '../hub/errors';
import type { DeviceRecord } from '../hub/model';
import {
  createDevice,
  deleteDevice,
  findDevice,
  findHubByHost,
  replaceTwin,
  updateDevice,
  type DeviceInput,
} from '../hub/registry';
import { certificateInfo, commonName, thumbprints } from '../security/certs';
import { SasError, authorizeWithKeys, deriveDeviceKey, parseSasToken } from '../security/sas';
import type { DpsState, EmulatorState, HubState } from '../state';
import {
  ENROLLMENT_ID,
  bodyObject,
  dpsNow,
  idKey,
  isObject,
  newDpsEtag,
  registrationStateToWire,
  requireRegistration,
} from './enrollments';
import { dpsErrors } from './errors';
import type {
  DeviceRegistrationState,
  EnrollmentGroup,
  IndividualEnrollment,
  InitialTwin,
  RegistrationSubstatus,
  X509Attestation,
} from './model';
import { dpsRuntime, type Operation, type OperationResult, type OperationStatus } from './runtime';

// ---------------------------------------------------------------------------------------------------------------

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
    const ca = ref ? dpsRuntime(dps).caCertificates.get(idKey(ref)) : undefined;
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

/**
 * The twin as it was on the previous hub: tags, desired and reported properties with their versions (Microsoft's
 * reprovisioning e2e test expects the migrated reported properties at the version the device left them).
 */
function migrateTwin(hub: HubState, deviceId: string, from: DeviceRecord): void {
  replaceTwin(hub, deviceId, { tags: from.twin.tags, desired: from.twin.desired });
  const device = findDevice(hub, deviceId);
  if (!device) return;
  device.twin.reported = structuredClone(from.twin.reported);
  device.twin.reportedVersion = from.twin.reportedVersion;
  device.twin.lastReportedUpdate = from.twin.lastReportedUpdate;
  device.twin.desiredVersion = from.twin.desiredVersion;
  device.twin.lastDesiredUpdate = from.twin.lastDesiredUpdate;
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
  let moveFrom: { hub: HubState; device: DeviceRecord } | undefined;
  if (!previousHost) {
    substatus = 'initialAssignment';
  } else if (previousHost === target) {
    substatus = 'reprovisionedToInitialAssignment';
  } else if (!enrollment.reprovisionPolicy.updateHubAssignment) {
    // "Never re-provision": the device keeps its hub.
    hubHost = previousHost;
    substatus = 'reprovisionedToInitialAssignment';
  } else {
    const oldHub = findHubByHost(state, previousHost);
    const oldDevice = oldHub ? findDevice(oldHub, previous?.deviceId ?? deviceId) : undefined;
    if (oldHub && oldDevice) moveFrom = { hub: oldHub, device: oldDevice };
    // Migration copies the device's data from its identity on the previously assigned hub, whatever that identity's
    // status (a disabled one too). When the identity is gone (an operator deleted it first) there is nothing to
    // migrate, and Azure's documents do not say what DPS reports then (concepts-device-reprovision, how-to-reprovision,
    // the DeviceRegistrationState substatus definitions of the DPS REST reference). The emulator then gives the
    // device the enrollment's initial twin and reports deviceDataReset, the substatus whose documented meaning is
    // what happened ("its device data was populated from the initial state stored in the enrollment"); reporting
    // deviceDataMigrated ("migrated from the previously assigned IoT hub") would claim data that does not exist.
    substatus = enrollment.reprovisionPolicy.migrateDeviceData && moveFrom ? 'deviceDataMigrated' : 'deviceDataReset';
  }

  const hub = findHubByHost(state, hubHost);
  if (!hub) throw new AssignmentFailure(404209, `IoT hub ${hubHost} does not exist.`);
  const migrateFrom = substatus === 'deviceDataMigrated' ? moveFrom?.device : undefined;
  // "Migrate the device's data (twin, device capabilities, and device ID)" (ReprovisionPolicy.migrateDeviceData).
  const capabilities = { iotEdge: !!(migrateFrom ?? enrollment).capabilities?.iotEdge };

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
        parentScopes: existing.parentScopes,
      });
    } else {
      createDevice(hub, { deviceId, capabilities, authentication: attested.auth });
    }
    if (migrateFrom) migrateTwin(hub, deviceId, migrateFrom);
    else if (substatus === 'deviceDataReset' || !existing) applyInitialTwin(hub, deviceId, enrollment.initialTwin);
  } catch (err) {
    if (err instanceof AzureError) throw new AssignmentFailure(err.status * 1000 + 9, err.message);
    throw err;
  }
  if (moveFrom) {
    // "Device data was removed from the previously assigned IoT hub": this also ends its live connections.
    deleteDevice(moveFrom.hub, moveFrom.device.deviceId);
  }
  return { hubHost: hub.hostName, deviceId, substatus };
}

// ---------------------------------------------------------------------------------------------------------------
// Device registration: operations

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
  // Counted here rather than in a transport: HTTP and MQTT registrations both come through this function.
  state.counters.record({ surface: 'dps', operation: 'register', id: registrationId });

  const rt = dpsRuntime(dps);
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
  const op = dpsRuntime(dps).operations.get(operationId);
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
