/**
 * In-memory state of the emulator: IoT hubs, one DPS instance, and the event bus that ties them together.
 *
 * Node is single-threaded: every read-modify-write of this state must stay synchronous (no `await` between the
 * read and the write), so concurrent requests cannot lose updates.
 */
import { EventEmitter } from 'node:events';
import { generateKey } from './sas';
import { createLimitsState, type LimitsState } from './limits';

// ---------------------------------------------------------------------------------------------------------------
// Shared access policies

/** Azure's shared-access rights (IoT Hub and DPS use different subsets). */
export type AccessRight =
  | 'RegistryRead'
  | 'RegistryWrite'
  | 'ServiceConnect'
  | 'DeviceConnect'
  | 'ServiceConfig'
  | 'EnrollmentRead'
  | 'EnrollmentWrite'
  | 'RegistrationStatusRead'
  | 'RegistrationStatusWrite';

export interface SharedAccessPolicy {
  keyName: string;
  primaryKey: string;
  secondaryKey: string;
  rights: AccessRight[];
}

// ---------------------------------------------------------------------------------------------------------------
// IoT hub

export type DeviceStatus = 'enabled' | 'disabled';
export type ConnectionState = 'Connected' | 'Disconnected';
export type AuthenticationType = 'sas' | 'selfSigned' | 'certificateAuthority' | 'none';

export interface DeviceAuthentication {
  type: AuthenticationType;
  symmetricKey: { primaryKey: string | null; secondaryKey: string | null };
  x509Thumbprint: { primaryThumbprint: string | null; secondaryThumbprint: string | null };
}

/** Twin properties without the `$metadata`/`$version` decorations (they are rendered on the way out). */
export type TwinProperties = Record<string, unknown>;

export interface TwinRecord {
  tags: Record<string, unknown>;
  desired: TwinProperties;
  desiredVersion: number;
  reported: TwinProperties;
  reportedVersion: number;
  /** Increments on every twin change (tags, desired, reported). */
  version: number;
  etag: string;
  lastDesiredUpdate: string;
  lastReportedUpdate: string;
}

export interface DeviceRecord {
  deviceId: string;
  generationId: string;
  etag: string;
  status: DeviceStatus;
  statusReason: string | null;
  statusUpdatedTime: string;
  connectionState: ConnectionState;
  connectionStateUpdatedTime: string;
  lastActivityTime: string;
  cloudToDeviceMessageCount: number;
  capabilities: { iotEdge: boolean };
  authentication: DeviceAuthentication;
  deviceScope?: string;
  twin: TwinRecord;
}

export type HubTier = 'F1' | 'B1' | 'B2' | 'B3' | 'S1' | 'S2' | 'S3';

export interface HubState {
  /** Emulator-side key (e.g. `test`); the Azure hub name is the first label of `hostName`. */
  name: string;
  hostName: string;
  tier: HubTier;
  units: number;
  policies: SharedAccessPolicy[];
  devices: Map<string, DeviceRecord>;
  /** The emulator-wide bus, so hub operations can announce changes without another parameter. */
  events: EmulatorEvents;
}

// ---------------------------------------------------------------------------------------------------------------
// DPS (wire shapes of api-version 2021-10-01; the DPS module owns their behaviour)

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

export interface X509CertificateWithInfo {
  certificate?: string;
  info?: X509CertificateInfo;
}

export interface X509Certificates {
  primary?: X509CertificateWithInfo;
  secondary?: X509CertificateWithInfo;
}

export interface X509Attestation {
  clientCertificates?: X509Certificates;
  signingCertificates?: X509Certificates;
  caReferences?: { primary?: string; secondary?: string };
}

export interface AttestationMechanism {
  type: 'tpm' | 'x509' | 'symmetricKey';
  tpm?: { endorsementKey: string; storageRootKey?: string };
  x509?: X509Attestation;
  symmetricKey?: { primaryKey: string; secondaryKey: string };
}

export interface ReprovisionPolicy {
  updateHubAssignment: boolean;
  migrateDeviceData: boolean;
}

export interface InitialTwin {
  tags?: Record<string, unknown>;
  properties?: { desired?: Record<string, unknown> };
}

export type AllocationPolicy = 'hashed' | 'geoLatency' | 'static' | 'custom';
export type ProvisioningStatus = 'enabled' | 'disabled';

interface EnrollmentCommon {
  attestation: AttestationMechanism;
  iotHubHostName?: string;
  iotHubs?: string[];
  initialTwin?: InitialTwin;
  etag: string;
  provisioningStatus: ProvisioningStatus;
  reprovisionPolicy: ReprovisionPolicy;
  allocationPolicy?: AllocationPolicy;
  customAllocationDefinition?: { webhookUrl: string; apiVersion: string };
  capabilities?: { iotEdge: boolean };
  createdDateTimeUtc: string;
  lastUpdatedDateTimeUtc: string;
}

export interface IndividualEnrollment extends EnrollmentCommon {
  registrationId: string;
  deviceId?: string;
}

export interface EnrollmentGroup extends EnrollmentCommon {
  enrollmentGroupId: string;
}

export type RegistrationStatus = 'unassigned' | 'assigning' | 'assigned' | 'failed' | 'disabled';
export type RegistrationSubstatus =
  'initialAssignment' | 'deviceDataMigrated' | 'deviceDataReset' | 'reprovisionedToInitialAssignment';

export interface DeviceRegistrationState {
  registrationId: string;
  deviceId?: string;
  assignedHub?: string;
  status: RegistrationStatus;
  substatus?: RegistrationSubstatus;
  errorCode?: number;
  errorMessage?: string;
  etag: string;
  createdDateTimeUtc: string;
  lastUpdatedDateTimeUtc: string;
  payload?: unknown;
  /** Emulator bookkeeping (not on the wire): which enrollment group matched, for per-group queries. */
  enrollmentGroupId?: string;
}

export interface LinkedHub {
  hostName: string;
  connectionString: string;
  allocationWeight: number;
  applyAllocationPolicy: boolean;
  location: string;
}

export interface DpsState {
  name: string;
  hostName: string;
  idScope: string;
  policies: SharedAccessPolicy[];
  linkedHubs: LinkedHub[];
  enrollments: Map<string, IndividualEnrollment>;
  enrollmentGroups: Map<string, EnrollmentGroup>;
  registrations: Map<string, DeviceRegistrationState>;
}

// ---------------------------------------------------------------------------------------------------------------
// Event bus

export interface DeviceEvent {
  hubName: string;
  hubHostName: string;
  deviceId: string;
  /** Snapshot after the change (before it, for deviceDeleted). */
  device: DeviceRecord;
}

export interface DeviceUpdatedEvent extends DeviceEvent {
  previous: DeviceRecord;
}

export interface TwinDesiredUpdatedEvent {
  hubName: string;
  hubHostName: string;
  deviceId: string;
  /** The desired patch as applied (with `$version`), for pushing to connected devices. */
  patch: Record<string, unknown>;
  version: number;
}

export interface EmulatorEventMap {
  deviceCreated: [DeviceEvent];
  deviceUpdated: [DeviceUpdatedEvent];
  deviceDeleted: [DeviceEvent];
  deviceConnected: [DeviceEvent];
  deviceDisconnected: [DeviceEvent];
  twinDesiredUpdated: [TwinDesiredUpdatedEvent];
}

export type EmulatorEvents = EventEmitter<EmulatorEventMap>;

// ---------------------------------------------------------------------------------------------------------------

export interface EmulatorState {
  hubs: Map<string, HubState>;
  dps: DpsState;
  events: EmulatorEvents;
  limits: LimitsState;
}

export const DEFAULT_DPS_HOST = 'emulator-dps.azure-devices-provisioning.net';
export const GLOBAL_DPS_HOST = 'global.azure-devices-provisioning.net';
export const DEFAULT_ID_SCOPE = '0ne00000001';

export function defaultHubPolicies(): SharedAccessPolicy[] {
  const policy = (keyName: string, rights: AccessRight[]): SharedAccessPolicy => ({
    keyName,
    primaryKey: generateKey(),
    secondaryKey: generateKey(),
    rights,
  });
  return [
    policy('iothubowner', ['RegistryRead', 'RegistryWrite', 'ServiceConnect', 'DeviceConnect']),
    policy('service', ['ServiceConnect']),
    policy('device', ['DeviceConnect']),
    policy('registryRead', ['RegistryRead']),
    policy('registryReadWrite', ['RegistryRead', 'RegistryWrite']),
  ];
}

export function defaultDpsPolicies(): SharedAccessPolicy[] {
  return [
    {
      keyName: 'provisioningserviceowner',
      primaryKey: generateKey(),
      secondaryKey: generateKey(),
      rights: [
        'ServiceConfig',
        'EnrollmentRead',
        'EnrollmentWrite',
        'RegistrationStatusRead',
        'RegistrationStatusWrite',
      ],
    },
    {
      keyName: 'enrollmentread',
      primaryKey: generateKey(),
      secondaryKey: generateKey(),
      rights: ['EnrollmentRead', 'RegistrationStatusRead'],
    },
  ];
}

export interface DpsOptions {
  name?: string;
  hostName?: string;
  idScope?: string;
}

export function createEmulatorState(dpsOptions: DpsOptions = {}): EmulatorState {
  const events: EmulatorEvents = new EventEmitter<EmulatorEventMap>();
  // Many independent listeners (MQTT sessions, Event Grid subscriptions) are normal here.
  events.setMaxListeners(0);
  const hostName = dpsOptions.hostName ?? DEFAULT_DPS_HOST;
  return {
    hubs: new Map(),
    events,
    limits: createLimitsState(),
    dps: {
      name: dpsOptions.name ?? hostName.split('.')[0],
      hostName,
      idScope: dpsOptions.idScope ?? DEFAULT_ID_SCOPE,
      policies: defaultDpsPolicies(),
      linkedHubs: [],
      enrollments: new Map(),
      enrollmentGroups: new Map(),
      registrations: new Map(),
    },
  };
}

/** `HostName=…;SharedAccessKeyName=…;SharedAccessKey=…` for a policy. */
export function policyConnectionString(hostName: string, policy: SharedAccessPolicy): string {
  return `HostName=${hostName};SharedAccessKeyName=${policy.keyName};SharedAccessKey=${policy.primaryKey}`;
}
