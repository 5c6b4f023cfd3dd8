import { z } from 'zod';

/**
 * The Azure quotas a fleet operation must stay within, as configured for the hubs and DPS it uses (AZURE_QUOTAS).
 * IoT Hub: registry operations 100/min per unit on F1, S1, S2, B1, B2 and 5,000/min per unit on S3; queries
 * 20/min per unit (S3: 1,000). DPS: 1,000 service operations and 1,000 device registrations per minute.
 * (Azure, "IoT Hub quotas and throttling"; "DPS limits".)
 */

const tier = z.enum(['F1', 'B1', 'B2', 'B3', 'S1', 'S2', 'S3']);

export const QuotasConfig = z
  .strictObject({
    hubs: z
      .record(
        z.string(),
        z.strictObject({ tier: tier.default('S1'), units: z.number().int().min(1).max(200).default(1) }),
      )
      .default({}),
    dps: z
      .strictObject({
        operationsPerMinute: z.number().int().min(1).default(1_000),
        registrationsPerMinute: z.number().int().min(1).default(1_000),
      })
      .default({ operationsPerMinute: 1_000, registrationsPerMinute: 1_000 }),
    /** Multiplies every rate: an emulator whose quotas are scaled up for a short rehearsal. */
    scale: z.number().positive().max(100_000).default(1),
  })
  .default({ hubs: {}, dps: { operationsPerMinute: 1_000, registrationsPerMinute: 1_000 }, scale: 1 });
export type QuotasConfig = z.output<typeof QuotasConfig>;

/** Registry operations per minute a hub allows (S1 with one unit when not configured). */
export function registryOpsPerMinute(quotas: QuotasConfig, environment: string): number {
  const { tier: t, units } = quotas.hubs[environment] ?? { tier: 'S1', units: 1 };
  return (t === 'S3' ? 5_000 : 100) * units * quotas.scale;
}

export function dpsOpsPerMinute(quotas: QuotasConfig): number {
  return quotas.dps.operationsPerMinute * quotas.scale;
}

/**
 * Azure calls one device costs each quota, per operation — counted from the activities: a revocation reads the
 * registration, the individual enrollment and maybe the group, writes one enrollment (a tenth of a bulk call) and
 * reads it back for the proof; in each hub it reads the identity, writes it (a hundredth of a bulk call) and reads
 * it back. A promotion is dominated by its polls while the device re-registers.
 */
export const CALLS_PER_DEVICE: Record<'promote' | 'revoke' | 'reinstate', { dps: number; perHub: number }> = {
  revoke: { dps: 4, perHub: 2 },
  reinstate: { dps: 4, perHub: 2 },
  promote: { dps: 10, perHub: 8 },
};

/**
 * The devices per minute the quotas allow for an operation over these hubs, and which quota binds: a fleet operation
 * never plans to go faster (Azure would answer 429s, retried but slowing everything).
 */
export function fleetQuota(
  quotas: QuotasConfig,
  operation: keyof typeof CALLS_PER_DEVICE,
  environments: string[],
): { devicesPerMinute: number; binding: string; callsPerDevice: Record<string, number> } {
  const calls = CALLS_PER_DEVICE[operation];
  let devicesPerMinute = dpsOpsPerMinute(quotas) / calls.dps;
  let binding = `DPS: ${dpsOpsPerMinute(quotas)} operations/min`;
  const callsPerDevice: Record<string, number> = { dps: calls.dps };
  for (const environment of environments) {
    const rate = registryOpsPerMinute(quotas, environment) / calls.perHub;
    callsPerDevice[environment] = calls.perHub;
    if (rate < devicesPerMinute) {
      devicesPerMinute = rate;
      binding = `hub ${environment}: ${registryOpsPerMinute(quotas, environment)} registry operations/min`;
    }
  }
  return { devicesPerMinute: Math.max(1, Math.floor(devicesPerMinute)), binding, callsPerDevice };
}
