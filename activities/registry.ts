import type { Registry } from 'azure-iothub';
import type { AzureClients, HubClient } from './azure-clients';
import { AzureFailureTypes, azureCall, bulkErrorsOf, isNotFound, permanent } from './azure-errors';
import { deriveDeviceKey, type EnrollmentView } from './dps';

/**
 * A device identity as a workflow records it: every field of the identity except its keys (thumbprints are
 * public), so that a rollback can write it back as it was.
 */
export interface DeviceView {
  deviceId: string;
  status: 'enabled' | 'disabled';
  authType: string;
  x509Thumbprint?: { primaryThumbprint?: string; secondaryThumbprint?: string };
  connectionState?: string;
  iotEdge: boolean;
  statusReason?: string;
  /** Set on IoT Edge devices (their own scope) and on child devices of a gateway. */
  deviceScope?: string;
  parentScopes?: string[];
  etag?: string;
}

export interface TwinState {
  tags: Record<string, unknown>;
  desired: Record<string, unknown>;
}

export interface DeviceSnapshot {
  device: DeviceView;
  twin: TwinState;
}

export interface ConnectionCheck {
  present: boolean;
  status?: string;
  connectionState?: string;
  authType?: string;
  /** ISO time of the last connect, message or poll; absent when the hub has none (`0001-01-01…`). */
  lastActivityTime?: string;
  connectionStateUpdatedTime?: string;
}

type RawDevice = {
  deviceId: string;
  etag?: string;
  status?: string;
  statusReason?: string | null;
  connectionState?: string;
  connectionStateUpdatedTime?: string;
  lastActivityTime?: string;
  authentication?: {
    type?: string;
    symmetricKey?: { primaryKey?: string; secondaryKey?: string };
    x509Thumbprint?: { primaryThumbprint?: string; secondaryThumbprint?: string };
  };
  capabilities?: { iotEdge?: boolean };
  deviceScope?: string;
  parentScopes?: string[];
};

function deviceView(d: RawDevice): DeviceView {
  const authType = d.authentication?.type ?? 'sas';
  return {
    deviceId: d.deviceId,
    status: d.status === 'disabled' ? 'disabled' : 'enabled',
    authType,
    ...(authType === 'selfSigned' ? { x509Thumbprint: { ...d.authentication?.x509Thumbprint } } : {}),
    connectionState: d.connectionState,
    iotEdge: !!d.capabilities?.iotEdge,
    ...(d.statusReason ? { statusReason: d.statusReason } : {}),
    ...(d.deviceScope ? { deviceScope: d.deviceScope } : {}),
    ...(d.parentScopes?.length ? { parentScopes: [...d.parentScopes] } : {}),
    ...(d.etag ? { etag: d.etag } : {}),
  };
}

/** IoT Hub reports "no activity" as the zero date. */
function azureTime(value: string | undefined): string | undefined {
  if (!value || value.startsWith('0001-01-01')) return undefined;
  return value;
}

/** Strips the twin's metadata ($version, $metadata) so a snapshot can be written back as a patch. */
function plain(props: Record<string, unknown> | undefined): Record<string, unknown> {
  return Object.fromEntries(Object.entries(props ?? {}).filter(([k]) => !k.startsWith('$')));
}

/** IoT hub registry activities, per configured environment. Every call is safe to repeat. */
export function registryActivities(clients: AzureClients) {
  const hub = (environment: string): HubClient => {
    const found = clients.hubs.get(environment);
    if (!found) throw permanent('UnknownEnvironment', `no IoT hub is configured for environment "${environment}"`);
    return found;
  };

  async function getRaw(registry: Registry, deviceId: string): Promise<RawDevice | undefined> {
    try {
      return (await registry.get(deviceId)).responseBody as unknown as RawDevice;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      return azureCall(`get device ${deviceId}`, () => Promise.reject(err));
    }
  }

  return {
    /** Environment names → hub host names (public), for the workflow to compare with DPS assignments. */
    async resolveEnvironments(environments: string[]): Promise<Record<string, string>> {
      return Object.fromEntries(environments.map((env) => [env, hub(env).hostName]));
    },

    async hubGetDevice(input: { environment: string; deviceId: string }): Promise<DeviceView | null> {
      const raw = await getRaw(hub(input.environment).registry, input.deviceId);
      return raw ? deviceView(raw) : null;
    },

    async hubSnapshotDevice(input: { environment: string; deviceId: string }): Promise<DeviceSnapshot | null> {
      const { registry } = hub(input.environment);
      const raw = await getRaw(registry, input.deviceId);
      if (!raw) return null;
      const twin = (await azureCall('get twin', () => registry.getTwin(input.deviceId))).responseBody;
      return {
        device: deviceView(raw),
        twin: { tags: plain(twin.tags), desired: plain(twin.properties?.desired) },
      };
    },

    /**
     * Disables the device under the snapshot's etag: a device changed since the snapshot is not overwritten (412,
     * AzurePreconditionFailed), so that a rollback never writes back a stale identity. Already disabled counts as
     * done, which also makes a retry after a lost answer safe.
     */
    async hubDisableDevice(input: {
      environment: string;
      deviceId: string;
      etag?: string;
    }): Promise<{ result: 'disabled' | 'alreadyDisabled' | 'alreadyGone' }> {
      const { registry } = hub(input.environment);
      const raw = await getRaw(registry, input.deviceId);
      if (!raw) return { result: 'alreadyGone' };
      if (raw.status === 'disabled') return { result: 'alreadyDisabled' };
      if (input.etag && raw.etag !== input.etag) {
        throw permanent(AzureFailureTypes.preconditionFailed, `device ${input.deviceId} changed since it was read`);
      }
      // The bulk call is the SDK's only write that sends the etag (importMode UpdateIfMatchETag).
      await bulkOne(registry, 'update', { ...raw, status: 'disabled', etag: raw.etag });
      return { result: 'disabled' };
    },

    /**
     * Deletes the device under its etag (the snapshot's, or, when `onlyIfDisabled`, the current one of an identity
     * this workflow disabled). Already gone counts as done.
     */
    async hubDeleteDevice(input: {
      environment: string;
      deviceId: string;
      etag?: string;
      onlyIfDisabled?: boolean;
    }): Promise<{ result: 'deleted' | 'alreadyGone' | 'keptEnabled' }> {
      const { registry } = hub(input.environment);
      const raw = await getRaw(registry, input.deviceId);
      if (!raw) return { result: 'alreadyGone' };
      if (input.onlyIfDisabled && raw.status !== 'disabled') return { result: 'keptEnabled' };
      const etag = input.onlyIfDisabled ? raw.etag : (input.etag ?? raw.etag);
      if (raw.etag !== etag) {
        throw permanent(AzureFailureTypes.preconditionFailed, `device ${input.deviceId} changed since it was read`);
      }
      const gone = await bulkOne(registry, 'delete', { deviceId: input.deviceId, etag });
      return { result: gone === 'notFound' ? 'alreadyGone' : 'deleted' };
    },

    /**
     * Puts a device identity back as the snapshot had it, losslessly apart from keys (which are read from DPS here
     * and never returned): re-created with every recorded field, or its status and status reason written back
     * under its current etag; then its tags and desired properties replaced by the snapshot's.
     */
    async hubRestoreIdentity(input: {
      environment: string;
      snapshot: DeviceSnapshot;
      enrollment: EnrollmentView;
    }): Promise<{ identity: 'recreated' | 'restored' | 'unchanged'; twin: 'restored' | 'unchanged' }> {
      const { registry } = hub(input.environment);
      const { device } = input.snapshot;
      const raw = await getRaw(registry, device.deviceId);
      let identity: 'recreated' | 'restored' | 'unchanged' = 'unchanged';
      if (!raw) {
        const authentication = await authenticationFor(clients, device, input.enrollment);
        try {
          await registry.create({
            deviceId: device.deviceId,
            status: device.status,
            ...(device.statusReason ? { statusReason: device.statusReason } : {}),
            capabilities: { iotEdge: device.iotEdge },
            ...(device.deviceScope ? { deviceScope: device.deviceScope } : {}),
            ...(device.parentScopes ? { parentScopes: device.parentScopes } : {}),
            authentication,
          } as never);
        } catch (err) {
          // A retry after a create that succeeded but whose answer was lost.
          if ((err as Error).name !== 'DeviceAlreadyExistsError') {
            return azureCall('re-create device', () => Promise.reject(err));
          }
        }
        identity = 'recreated';
      } else if (raw.status !== device.status || (raw.statusReason || undefined) !== device.statusReason) {
        await bulkOne(registry, 'update', {
          ...raw,
          status: device.status,
          statusReason: device.statusReason ?? null,
          etag: raw.etag,
        });
        identity = 'restored';
      }
      const twin = await reconcileTwin(registry, device.deviceId, input.snapshot.twin);
      return { identity, twin: twin.applied ? 'restored' : 'unchanged' };
    },

    /**
     * Makes the device's tags and desired properties equal `expected` (keys it lacks are removed), under the twin's
     * etag; `matched` says whether they already were.
     */
    async hubReconcileTwin(input: {
      environment: string;
      deviceId: string;
      expected: TwinState;
    }): Promise<{ matched: boolean; applied: boolean }> {
      return reconcileTwin(hub(input.environment).registry, input.deviceId, input.expected);
    },

    /** Deletes or disables the device; a device already gone (or already disabled) counts as done. */
    async hubRemoveDevice(input: {
      environment: string;
      deviceId: string;
      mode: 'delete' | 'disable';
    }): Promise<{ result: 'deleted' | 'disabled' | 'alreadyGone' }> {
      const { registry } = hub(input.environment);
      if (input.mode === 'delete') {
        try {
          await registry.delete(input.deviceId);
          return { result: 'deleted' };
        } catch (err) {
          if (isNotFound(err)) return { result: 'alreadyGone' };
          return azureCall('delete device', () => Promise.reject(err));
        }
      }
      const raw = await getRaw(registry, input.deviceId);
      if (!raw) return { result: 'alreadyGone' };
      if (raw.status !== 'disabled') {
        await azureCall('disable device', () =>
          registry.update({
            deviceId: input.deviceId,
            status: 'disabled',
            authentication: raw.authentication,
          } as never),
        );
      }
      return { result: 'disabled' };
    },

    async hubCheckConnection(input: { environment: string; deviceId: string }): Promise<ConnectionCheck> {
      const raw = await getRaw(hub(input.environment).registry, input.deviceId);
      if (!raw) return { present: false };
      return {
        present: true,
        status: raw.status,
        connectionState: raw.connectionState,
        authType: raw.authentication?.type,
        ...(azureTime(raw.lastActivityTime) ? { lastActivityTime: azureTime(raw.lastActivityTime) } : {}),
        ...(azureTime(raw.connectionStateUpdatedTime)
          ? { connectionStateUpdatedTime: azureTime(raw.connectionStateUpdatedTime) }
          : {}),
      };
    },

    /**
     * Puts the source device back as the snapshot had it: re-enabled, or re-created with its credentials (keys
     * are read from DPS here, inside the activity, and never returned), then its tags and desired properties.
     */
    async hubRestoreDevice(input: {
      environment: string;
      snapshot: DeviceSnapshot;
      enrollment: EnrollmentView;
    }): Promise<{ result: 'recreated' | 'reenabled' | 'unchanged' }> {
      const { registry } = hub(input.environment);
      const { device, twin } = input.snapshot;
      const raw = await getRaw(registry, device.deviceId);
      let result: 'recreated' | 'reenabled' | 'unchanged' = 'unchanged';
      if (!raw) {
        const authentication = await authenticationFor(clients, device, input.enrollment);
        try {
          await registry.create({ deviceId: device.deviceId, status: device.status, authentication } as never);
        } catch (err) {
          // A retry after a create that succeeded but whose answer was lost.
          if ((err as Error).name !== 'DeviceAlreadyExistsError') {
            return azureCall('re-create device', () => Promise.reject(err));
          }
        }
        result = 'recreated';
      } else if (raw.status !== device.status) {
        await azureCall('re-enable device', () =>
          registry.update({
            deviceId: device.deviceId,
            status: device.status,
            authentication: raw.authentication,
          } as never),
        );
        result = 'reenabled';
      }
      if (Object.keys(twin.tags).length || Object.keys(twin.desired).length) {
        await azureCall('restore twin', () =>
          registry.updateTwin(device.deviceId, { tags: twin.tags, properties: { desired: twin.desired } }, '*'),
        );
      }
      return { result };
    },
  };
}

/**
 * One device through the registry's bulk API, whose IfMatchETag import modes are the only writes in the SDK that
 * send an etag. Answers 'notFound' for a device that is gone; a stale etag is a named non-retryable failure.
 */
async function bulkOne(
  registry: Registry,
  mode: 'update' | 'delete',
  device: RawDevice & { statusReason?: string | null },
): Promise<'done' | 'notFound'> {
  const call =
    mode === 'update'
      ? () => registry.updateDevices([device as never], false)
      : () => registry.removeDevices([device as never], false);
  let errors: Array<{ errorCode?: string; errorStatus?: string }> = [];
  try {
    const { responseBody } = await call();
    errors = (responseBody.errors ?? []) as unknown as typeof errors;
  } catch (err) {
    // A per-device failure answers 400 with the same result body (azure-wire.md).
    const parsed = bulkErrorsOf(err);
    if (!parsed) return azureCall(`bulk ${mode} ${device.deviceId}`, () => Promise.reject(err));
    errors = parsed;
  }
  const [first] = errors;
  if (!first) return 'done';
  if (first.errorCode === 'DeviceNotFound') return 'notFound';
  if (first.errorCode === 'PreconditionFailed' || first.errorCode === 'InvalidEtag') {
    throw permanent(AzureFailureTypes.preconditionFailed, `device ${device.deviceId} changed: ${first.errorStatus}`);
  }
  throw permanent(
    AzureFailureTypes.badRequest,
    `bulk ${mode} ${device.deviceId}: ${first.errorCode} ${first.errorStatus}`,
  );
}

async function reconcileTwin(
  registry: Registry,
  deviceId: string,
  expected: TwinState,
): Promise<{ matched: boolean; applied: boolean }> {
  const twin = (await azureCall('get twin', () => registry.getTwin(deviceId))).responseBody;
  const tags = plain(twin.tags);
  const desired = plain(twin.properties?.desired);
  if (sameJson(tags, expected.tags) && sameJson(desired, expected.desired)) return { matched: true, applied: false };
  // A twin PATCH merges: keys that should not be there are removed with null.
  const removals = (current: Record<string, unknown>, wanted: Record<string, unknown>) =>
    Object.fromEntries(
      Object.keys(current)
        .filter((k) => !(k in wanted))
        .map((k) => [k, null]),
    );
  const patch = {
    tags: { ...removals(tags, expected.tags), ...expected.tags },
    properties: { desired: { ...removals(desired, expected.desired), ...expected.desired } },
  };
  await azureCall('update twin', () => registry.updateTwin(deviceId, patch, twin.etag ?? '*'));
  return { matched: false, applied: true };
}

/** Deep equality of JSON values, ignoring key order. */
export function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.hasOwn(b, k) && sameJson((a as never)[k], (b as never)[k]));
}

async function authenticationFor(clients: AzureClients, device: DeviceView, enrollment: EnrollmentView) {
  if (device.authType === 'selfSigned') return { type: 'selfSigned', x509Thumbprint: device.x509Thumbprint };
  if (device.authType !== 'sas') {
    throw permanent('UnsupportedAttestation', `cannot re-create a device with ${device.authType} authentication`);
  }
  const dps = clients.dps?.client;
  if (!dps) throw permanent('DpsNotConfigured', 'no DPS connection string is configured');
  if (enrollment.kind === 'individual') {
    const keys = (
      await azureCall('get attestation mechanism', () =>
        dps.getIndividualEnrollmentAttestationMechanism(enrollment.registrationId),
      )
    ).responseBody.symmetricKey;
    return { type: 'sas', symmetricKey: { primaryKey: keys?.primaryKey, secondaryKey: keys?.secondaryKey } };
  }
  const groupKeys = (
    await azureCall('get group attestation mechanism', () =>
      dps.getEnrollmentGroupAttestationMechanism(enrollment.enrollmentGroupId!),
    )
  ).responseBody.symmetricKey;
  if (!groupKeys?.primaryKey) throw permanent('UnsupportedAttestation', 'the group has no symmetric keys');
  return {
    type: 'sas',
    symmetricKey: {
      primaryKey: deriveDeviceKey(groupKeys.primaryKey, enrollment.registrationId),
      secondaryKey: deriveDeviceKey(groupKeys.secondaryKey || groupKeys.primaryKey, enrollment.registrationId),
    },
  };
}
