import { randomBytes } from 'node:crypto';
import type { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type { IndividualEnrollment } from 'azure-iot-provisioning-service/dist/interfaces';

/**
 * Enrolls a symmetric-key device in DPS for one hub, through the real service client, the way an operator sets
 * up step 1 of a promotion. Returns the device's primary key (for the simulated device only).
 */
export async function enrollSymmetricKeyDevice(
  dps: ProvisioningServiceClient,
  options: { registrationId: string; hubHostName: string; initialTwin?: Record<string, unknown> },
): Promise<string> {
  const key = randomBytes(32).toString('base64');
  await dps.createOrUpdateIndividualEnrollment({
    registrationId: options.registrationId,
    deviceId: options.registrationId,
    attestation: {
      type: 'symmetricKey',
      symmetricKey: { primaryKey: key, secondaryKey: randomBytes(32).toString('base64') },
    },
    iotHubs: [options.hubHostName],
    allocationPolicy: 'hashed',
    provisioningStatus: 'enabled',
    ...(options.initialTwin ? { initialTwin: options.initialTwin } : {}),
  } as unknown as IndividualEnrollment);
  return key;
}
