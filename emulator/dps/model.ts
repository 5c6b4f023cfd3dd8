/** DPS records in the wire shapes of the service API 2021-10-01 (the dps/ modules own their behaviour). */
import type { X509CertificateInfo } from '../security/certs';

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
