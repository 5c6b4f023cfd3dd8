/**
 * 2. DPS device registration throughput through the real azure-iot-provisioning-device client over its HTTP
 * transport (register, then poll the operation until `assigned`), for devices of a symmetric-key enrollment
 * group; each registration also creates the device in the assigned hub. The emulator answers `retry-after: 0`
 * (configureDps, as test/emulator/simulator.test.ts does), so the client polls at once instead of waiting the
 * 2–3 s Azure asks for: the figure is the emulator's speed, not a wait.
 *
 * Target: DPS allows 1,000 registrations/min per service = 16.7/s (/work/shared/notes/azure-wire.md "Quotas").
 */
import { ProvisioningDeviceClient, type RegistrationResult } from 'azure-iot-provisioning-device';
import { Http as ProvisioningHttp } from 'azure-iot-provisioning-device-http';
import { SymmetricKeySecurityClient } from 'azure-iot-security-symmetric-key';
import { deriveDeviceKey } from '../emulator/security/sas';
import type { RunningEmulator } from '../emulator/server';
import { GLOBAL_DPS_HOST } from '../emulator/state';
import { enrollSymmetricKeyGroup, forEachConcurrently, hubHost, percentile, timed } from './harness';
import type { Measurement } from './report';

const DPS_REGISTRATIONS_PER_S = 1_000 / 60;

type ProvisioningSecurity = Parameters<typeof ProvisioningDeviceClient.create>[3];

export interface DpsBenchOptions {
  registrations: number;
  concurrency: number;
}

/** One device registration, callback form (the SDK's promise forms are not used anywhere in the project). */
function register(idScope: string, groupKey: string, registrationId: string): Promise<RegistrationResult> {
  const security = new SymmetricKeySecurityClient(registrationId, deriveDeviceKey(groupKey, registrationId));
  const client = ProvisioningDeviceClient.create(
    GLOBAL_DPS_HOST,
    idScope,
    new ProvisioningHttp(),
    security as unknown as ProvisioningSecurity,
  );
  return new Promise((resolve, reject) =>
    client.register((err, result) => (err ? reject(err) : resolve(result as RegistrationResult))),
  );
}

export async function benchDps(emulator: RunningEmulator, options: DpsBenchOptions): Promise<Measurement[]> {
  const groupKey = await enrollSymmetricKeyGroup(emulator, 'bench-dps');
  const testHub = hubHost(emulator, 'test');
  const check = (result: RegistrationResult, id: string) => {
    if (result.assignedHub !== testHub) throw new Error(`${id} was assigned to ${result.assignedHub}, not ${testHub}`);
  };

  // Warm-up: one registration per lane (TLS sessions, JIT).
  const warm = Array.from({ length: options.concurrency }, (_, i) => `bench-dps-warm-${i}`);
  await forEachConcurrently(warm, options.concurrency, async (id) =>
    check(await register(emulator.idScope, groupKey, id), id),
  );

  const ids = Array.from({ length: options.registrations }, (_, i) => `bench-dps-${i}`);
  const latencies: number[] = [];
  const seconds = await timed(() =>
    forEachConcurrently(ids, options.concurrency, async (id) => {
      const start = performance.now();
      check(await register(emulator.idScope, groupKey, id), id);
      latencies.push(performance.now() - start);
    }),
  );
  return [
    {
      name: 'dps.register (http)',
      value: options.registrations / seconds,
      unit: 'registrations/s',
      better: 'higher',
      target: DPS_REGISTRATIONS_PER_S,
      targetSource: 'Azure DPS, 1,000 registrations/min',
      details: {
        registrations: options.registrations,
        seconds,
        concurrency: options.concurrency,
        p50Ms: percentile(latencies, 50),
        p95Ms: percentile(latencies, 95),
      },
      note: `per registration p50 ${Math.round(percentile(latencies, 50))} ms, p95 ${Math.round(percentile(latencies, 95))} ms at ${options.concurrency} in flight`,
    },
  ];
}
