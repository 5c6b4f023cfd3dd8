import { randomBytes } from 'node:crypto';
import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type { EnrollmentGroup } from 'azure-iot-provisioning-service/dist/interfaces';
import { numberedRegistrationIds } from '../../emulator/simulator/fleet';
import { configureAzureEndpoints } from '../../worker/azure-endpoints';
import { waitFor, type LocalCluster } from './cluster';

const GROUP_ID = 'cluster-demo';

/**
 * `npm run cluster`'s devices: a symmetric-key enrollment group on the emulator's test hub and one simulator
 * process (`emulator/simulator/main`) running `count` members of it, like a fleet on Azure. A kept emulator state
 * keeps the group and its key, so devices promoted in an earlier run come back on production.
 */
export async function enrollDemoDevices(cluster: LocalCluster, count: number): Promise<string[]> {
  const { emulator } = cluster;
  configureAzureEndpoints({ AZURE_ENDPOINT_ADDRESS: emulator.address, AZURE_CA_FILE: emulator.caFile });
  const dps = ProvisioningServiceClient.fromConnectionString(emulator.connectionStrings.dps);
  const groupKey = await existingGroupKey(dps).then(
    async (key) => key ?? (await createGroup(dps, emulator.hosts.test)),
  );

  const ids = numberedRegistrationIds('demo-device', count);
  cluster.spawnAlongside('devices', 'emulator/simulator/main', [
    ...['--count', String(count), '--prefix', 'demo-device', '--group-key', groupKey],
    ...['--emulator', emulator.address, '--mqtt', emulator.mqttAddress, '--ca-file', emulator.caFile],
    ...['--backoff-initial', '200', '--backoff-max', '2000'],
  ]);
  await waitFor(`${count} simulated devices to connect`, 60_000, undefined, async () => {
    const connected = await Promise.all(ids.map((id) => connectedAnywhere(cluster, id)));
    return connected.every(Boolean);
  });
  return ids;
}

async function existingGroupKey(dps: ProvisioningServiceClient): Promise<string | undefined> {
  try {
    const { responseBody } = await dps.getEnrollmentGroupAttestationMechanism(GROUP_ID);
    return responseBody.symmetricKey?.primaryKey;
  } catch (err) {
    if ((err as { response?: { statusCode?: number } }).response?.statusCode === 404) return undefined;
    throw err;
  }
}

async function createGroup(dps: ProvisioningServiceClient, testHub: string): Promise<string> {
  const primaryKey = randomBytes(64).toString('base64');
  await dps.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: GROUP_ID,
    attestation: {
      type: 'symmetricKey',
      symmetricKey: { primaryKey, secondaryKey: randomBytes(64).toString('base64') },
    },
    iotHubs: [testHub],
    allocationPolicy: 'hashed',
    provisioningStatus: 'enabled',
  } as unknown as EnrollmentGroup);
  return primaryKey;
}

async function connectedAnywhere(cluster: LocalCluster, id: string): Promise<boolean> {
  for (const hub of Object.keys(cluster.emulator.hosts)) {
    const res = await cluster.controlFetch(`/hubs/${hub}/devices/${encodeURIComponent(id)}`);
    if (res.ok && ((await res.json()) as { connectionState?: string }).connectionState === 'Connected') return true;
  }
  return false;
}
