import type { RegistrationView } from '../activities/dps';
import type { ConnectionCheck } from '../activities/registry';
import type { PromotionRequest } from '../common/promotion';

/**
 * What still stands between the device and "landed on the target", or undefined when it has landed: DPS assigns it
 * to the target after re-registering since the re-point, the target's identity is enabled with the attestation's
 * authentication, and the device authenticated there (a live connection; for HTTPS devices, which keep no
 * connection state in IoT Hub and raise no DeviceConnected, activity since the re-point).
 */
export function landingProblem(facts: {
  registration: RegistrationView | null;
  connection: ConnectionCheck;
  targetHub: string;
  since: string;
  protocol: PromotionRequest['protocol'];
  expectedAuth: string;
}): string | undefined {
  const { registration, connection, targetHub, since } = facts;
  const after = (time: string | undefined) => time !== undefined && Date.parse(time) >= Date.parse(since);
  if (!registration || registration.assignedHub !== targetHub || registration.status !== 'assigned') {
    return `DPS assigns the device to ${registration?.assignedHub ?? 'no hub'} (${registration?.status ?? 'no registration'})`;
  }
  if (!after(registration.lastUpdatedDateTimeUtc))
    return 'the device has not re-registered with DPS since the re-point';
  if (!connection.present) return `the device is not in ${targetHub} yet`;
  if (connection.status !== 'enabled') return `the device is ${connection.status} in ${targetHub}`;
  if (connection.authType !== facts.expectedAuth) {
    return `the device authenticates with ${connection.authType} in ${targetHub}, expected ${facts.expectedAuth}`;
  }
  if (facts.protocol === 'https') {
    return after(connection.lastActivityTime) ? undefined : `no activity in ${targetHub} since the re-point`;
  }
  return connection.connectionState === 'Connected' ? undefined : `not connected to ${targetHub}`;
}
