/** The IoT hub registry's records: device identities and their twins (api-version 2021-04-12 shapes). */

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
  /** An edge device's own scope (generated), or a leaf device's parent edge scope. */
  deviceScope?: string;
  /** Scopes of the parent edge devices: set by the caller, or the leaf's deviceScope. */
  parentScopes: string[];
  twin: TwinRecord;
}

export type HubTier = 'F1' | 'B1' | 'B2' | 'B3' | 'S1' | 'S2' | 'S3';
