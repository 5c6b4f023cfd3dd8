import { randomBytes } from 'node:crypto';
import type { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type { EnrollmentGroup, IndividualEnrollment } from 'azure-iot-provisioning-service/dist/interfaces';

/**
 * Enrolls a symmetric-key device in DPS for one hub, through the real service client, the way an operator sets
 * up step 1 of a promotion. Returns the device's primary key (for the simulated device only).
 */
export async function enrollSymmetricKeyDevice(
  dps: ProvisioningServiceClient,
  options: { registrationId: string; hubHostName: string; initialTwin?: Record<string, unknown>; deviceId?: string },
): Promise<string> {
  const key = randomBytes(32).toString('base64');
  await dps.createOrUpdateIndividualEnrollment({
    registrationId: options.registrationId,
    deviceId: options.deviceId ?? options.registrationId,
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

/** Creates a symmetric-key enrollment group for one hub (DPS generates its keys); returns the group's primary key. */
export async function enrollSymmetricKeyGroup(
  dps: ProvisioningServiceClient,
  options: { groupId: string; hubHostName: string },
): Promise<string> {
  const created = await dps.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: options.groupId,
    attestation: { type: 'symmetricKey' },
    iotHubs: [options.hubHostName],
    allocationPolicy: 'hashed',
    provisioningStatus: 'enabled',
  } as unknown as EnrollmentGroup);
  return created.responseBody.attestation.symmetricKey!.primaryKey;
}

/** The primary symmetric key of an existing enrollment or group, or undefined when there is none (404). */
export async function existingSymmetricKey(
  dps: ProvisioningServiceClient,
  target: { registrationId: string } | { groupId: string },
): Promise<string | undefined> {
  const lookup =
    'groupId' in target
      ? dps.getEnrollmentGroupAttestationMechanism(target.groupId)
      : dps.getIndividualEnrollmentAttestationMechanism(target.registrationId);
  return lookup.then(
    (answer) => answer.responseBody.symmetricKey?.primaryKey,
    (err: { response?: { statusCode?: number } }) => {
      if (err.response?.statusCode === 404) return undefined;
      throw err;
    },
  );
}
