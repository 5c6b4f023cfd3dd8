import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type { Logger } from '../common/logger';
import { REVOCATION_MARK } from '../common/revocation';
import type { RunningEmulator } from '../emulator';
import { eventGridFor } from '../emulator/eventgrid/event-grid';
import { SimulatedDevice } from '../emulator/simulator/device';
import { enrollSymmetricKeyDevice } from '../emulator/simulator/enroll';

/**
 * The embedded default's rehearsal set: simulated devices enrolled in DPS for the test hub, provisioned and
 * connected there through the real device SDKs, and the production hub's Event Grid subscribed to the API's
 * webhook, so that one curl promotes a device end to end.
 */
export interface DevicePlacement {
  registrationId: string;
  /** The emulator hub DPS assigns the device to now: test, production, or undefined before its first registration. */
  environment?: string;
  /** Its enrollment was disabled by a revocation. */
  revoked?: boolean;
}

export interface Rehearsal {
  devices: SimulatedDevice[];
  /** Where DPS assigns each device now (after an earlier run's promotions, not where the set started). */
  whereAreThey(): Promise<DevicePlacement[]>;
  stop(): Promise<void>;
}

/** How long start-up waits for the simulated devices' first connection before printing where they are. */
const FIRST_CONNECTION_TIMEOUT_MS = 15_000;

export async function startRehearsal(options: {
  emulator: RunningEmulator;
  apiUrl: string;
  eventGridSecret: string;
  deviceIds: string[];
  log: Logger;
  signal?: AbortSignal;
}): Promise<Rehearsal> {
  const { emulator, log } = options;
  const dps = ProvisioningServiceClient.fromConnectionString(emulator.connectionStrings.dps);
  const testHub = emulator.state.hubs.get('test')!.hostName;
  const grid = eventGridFor(emulator.state);
  for (const hub of ['test', 'production']) {
    // One kept in the emulator's state file carries the previous run's webhook URL and secret: replace it.
    grid.unsubscribe(hub, 'iot-lifecycle');
    await grid
      .subscribe({
        hub,
        name: 'iot-lifecycle',
        endpointUrl: `${options.apiUrl}/v1/eventgrid?code=${options.eventGridSecret}`,
        includedEventTypes: ['Microsoft.Devices.DeviceConnected', 'Microsoft.Devices.DeviceDisconnected'],
      })
      .catch((err: Error) => log.warn({ err: err.message, hub }, 'Event Grid subscription failed'));
  }
  const devices: SimulatedDevice[] = [];
  for (const registrationId of options.deviceIds) {
    // An enrollment kept in the emulator's state file stays as it is (a promotion may have re-pointed it): the
    // device keeps using its key.
    const existingKey = await dps.getIndividualEnrollmentAttestationMechanism(registrationId).then(
      (answer) => answer.responseBody.symmetricKey?.primaryKey,
      (err: { response?: { statusCode?: number } }) => {
        if (err.response?.statusCode === 404) return undefined;
        throw err;
      },
    );
    const key =
      existingKey ??
      (await enrollSymmetricKeyDevice(dps, {
        registrationId,
        hubHostName: testHub,
        initialTwin: { tags: { stage: 'test' }, properties: { desired: {} } },
      }));
    const device = new SimulatedDevice({
      registrationId,
      idScope: emulator.idScope,
      attestation: { type: 'symmetricKey', key },
      hubMqttAddress: `127.0.0.1:${emulator.mqttPort}`,
      dpsMqttAddress: `127.0.0.1:${emulator.mqttPort}`,
      ca: emulator.caPem,
      backoff: { initialMs: 500, maxMs: 10_000 },
    });
    device.on('event', (event) => log.info({ device: registrationId, ...event }, 'simulated device'));
    devices.push(device.start());
  }
  const stop = async () => void (await Promise.all(devices.map((d) => d.stop())));
  options.signal?.addEventListener('abort', () => void stop(), { once: true });
  return {
    devices,
    stop,
    async whereAreThey() {
      await Promise.all(
        devices.map((d) =>
          d.waitFor((e) => e.type === 'connected', FIRST_CONNECTION_TIMEOUT_MS).catch(() => undefined),
        ),
      );
      const hubs = [...emulator.state.hubs.entries()];
      return Promise.all(
        options.deviceIds.map(async (registrationId) => {
          const state = await dps.getDeviceRegistrationState(registrationId).then(
            (answer) => answer.responseBody,
            () => undefined,
          );
          const assigned = state?.assignedHub?.toLowerCase();
          const environment = hubs.find(([, hub]) => hub.hostName.toLowerCase() === assigned)?.[0];
          const enrollment = await dps.getIndividualEnrollment(registrationId).then(
            (answer) => answer.responseBody,
            () => undefined,
          );
          const tags = (enrollment?.initialTwin as { tags?: Record<string, unknown> } | undefined)?.tags ?? {};
          const revoked = enrollment?.provisioningStatus === 'disabled' && REVOCATION_MARK.twinTag in tags;
          return { registrationId, environment, ...(revoked ? { revoked } : {}) };
        }),
      );
    },
  };
}
