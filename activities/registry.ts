import type { Registry } from 'azure-iothub';
import type { AzureClients, HubClient } from './azure-clients';
import { azureCall, isNotFound, permanent } from './azure-errors';
import { deriveDeviceKey, type EnrollmentView } from './dps';

/** A device identity as the promotion records it: routing and status, thumbprints at most, never keys. */
export interface DeviceView {
  deviceId: string;
  status: 'enabled' | 'disabled';
  authType: string;
  x509Thumbprint?: { primaryThumbprint?: string; secondaryThumbprint?: string };
  connectionState?: string;
  iotEdge: boolean;
}

export interface DeviceSnapshot {
  device: DeviceView;
  twin: { tags: Record<string, unknown>; desired: Record<string, unknown> };
}

export interface ConnectionCheck {
  present: boolean;
  status?: string;
  connectionState?: string;
  authType?: string;
}

type RawDevice = {
  deviceId: string;
  status?: string;
  connectionState?: string;
  authentication?: {
    type?: string;
    x509Thumbprint?: { primaryThumbprint?: string; secondaryThumbprint?: string };
  };
  capabilities?: { iotEdge?: boolean };
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
  };
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
