/**
 * The baseline of the fleet revoke: a plain script making the Azure calls a fleet revoke makes (activities/fleet.ts,
 * activities/revocation.ts, workflows/revocation.ts revokeDevices), with the same SDKs and the same concurrency, and
 * nothing durable. Per fleet: the registry query that selects the devices, pages of 500. Per batch of 100 devices:
 * - DPS: each device's registration state and individual enrollment read (8 at a time), then the disables written
 *   through the bulk enrollment API under their etags, 10 a call;
 * - every configured hub at once: each identity read (8 at a time), the enabled ones disabled through the registry's
 *   bulk API under their etags (100 a call), then read again for the proof;
 * - the proof in DPS: each individual enrollment read again (8 at a time).
 * What the product does besides, and this script does not: signal each device's promotion to stop (Temporal, not
 * Azure), and record all of it durably.
 */
import type { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type { IndividualEnrollment } from 'azure-iot-provisioning-service/dist/interfaces';
import type { Registry } from 'azure-iothub';
import { forEachConcurrently } from './harness';

const BATCH = 100;
const DPS_BULK = 10;
const REGISTRY_BULK = 100;
const READS_IN_FLIGHT = 8;
const QUERY_PAGE = 500;

const notFound = (err: unknown) =>
  (err as { response?: { statusCode?: number } })?.response?.statusCode === 404 ||
  (err as Error)?.name === 'DeviceNotFoundError';

/** Connections the emulator closed under a reused keep-alive socket, retried (the product's activities retry too). */
export const scriptStats = { networkRetries: 0 };
const NETWORK = /ECONNRESET|socket hang up|EPIPE/;

async function retried<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await call();
    } catch (err) {
      if (attempt >= 5 || !NETWORK.test(`${(err as Error)?.message} ${(err as { code?: string })?.code}`)) throw err;
      scriptStats.networkRetries += 1;
    }
  }
}

async function orAbsent<T>(call: () => Promise<T>): Promise<T | undefined> {
  try {
    return await retried(call);
  } catch (err) {
    if (notFound(err)) return undefined;
    throw err;
  }
}

export interface ScriptClients {
  dps: ProvisioningServiceClient;
  /** By environment; the first one is queried for the fleet. */
  hubs: Record<string, Registry>;
}

/** Revokes every device of `hubs[queryHub]` tagged `fleetbench = tag`; answers how many were revoked. */
export async function scriptedFleetRevoke(
  clients: ScriptClients,
  options: { queryHub: string; tag: string; batchesInFlight: number; statusReason: string },
): Promise<number> {
  const query = clients.hubs[options.queryHub].createQuery(
    `SELECT * FROM devices WHERE tags.fleetbench = '${options.tag}'`,
    QUERY_PAGE,
  );
  const ids: string[] = [];
  for (let token: string | undefined; ;) {
    const page = await retried(() => (token ? query.next(token) : query.next()));
    ids.push(...(page.result as Array<{ deviceId: string }>).map((d) => d.deviceId));
    token = query.continuationToken || undefined;
    if (!token) break;
  }
  const batches = Array.from({ length: Math.ceil(ids.length / BATCH) }, (_, b) =>
    ids.slice(b * BATCH, (b + 1) * BATCH),
  );
  let revoked = 0;
  await forEachConcurrently(batches, options.batchesInFlight, async (batch) => {
    const done = await revokeBatch(clients, batch, options.statusReason);
    revoked += done; // after the await: `revoked += await …` would add to the value read before it
  });
  return revoked;
}

async function revokeBatch(clients: ScriptClients, ids: string[], statusReason: string): Promise<number> {
  const { dps } = clients;
  // DPS: decide, then write 10 a call.
  const enrollments = new Map<string, IndividualEnrollment>();
  await forEachConcurrently(ids, READS_IN_FLIGHT, async (id) => {
    await orAbsent(() => dps.getDeviceRegistrationState(id));
    const e = (await orAbsent(() => dps.getIndividualEnrollment(id)))?.responseBody;
    if (e && e.provisioningStatus !== 'disabled') enrollments.set(id, e);
  });
  const writes = [...enrollments.values()].map((e) => ({ ...e, provisioningStatus: 'disabled' as const }));
  for (let i = 0; i < writes.length; i += DPS_BULK) {
    await retried(
      () =>
        new Promise<void>((resolve, reject) =>
          dps.runBulkEnrollmentOperation(
            { mode: 'updateIfMatchEtag', enrollments: writes.slice(i, i + DPS_BULK) } as never,
            (err) => (err ? reject(err) : resolve()),
          ),
        ),
    );
  }
  // Every hub at once: read, disable 100 a call, read again.
  const disabledIn = await Promise.all(
    Object.values(clients.hubs).map(async (registry) => {
      const read = async () => {
        const found = new Map<string, Record<string, unknown>>();
        await forEachConcurrently(ids, READS_IN_FLIGHT, async (id) => {
          const d = (await orAbsent(() => registry.get(id)))?.responseBody;
          if (d) found.set(id, d as unknown as Record<string, unknown>);
        });
        return found;
      };
      const before = await read();
      const toDisable = [...before.values()].filter((d) => d.status !== 'disabled');
      for (let i = 0; i < toDisable.length; i += REGISTRY_BULK) {
        const chunk = toDisable.slice(i, i + REGISTRY_BULK).map((d) => ({ ...d, status: 'disabled', statusReason }));
        const { responseBody } = await retried(() => registry.updateDevices(chunk as never, false));
        if (!responseBody.isSuccessful) throw new Error(`bulk disable failed: ${JSON.stringify(responseBody.errors)}`);
      }
      const after = await read();
      return [...after.values()].filter((d) => d.status === 'disabled').length;
    }),
  );
  // Proof: DPS refuses each one now.
  let refused = 0;
  await forEachConcurrently(ids, READS_IN_FLIGHT, async (id) => {
    const e = (await orAbsent(() => dps.getIndividualEnrollment(id)))?.responseBody;
    if (!e || e.provisioningStatus === 'disabled') refused += 1;
  });
  if (refused !== ids.length) throw new Error(`${ids.length - refused} of ${ids.length} devices still enrolled`);
  return Math.min(
    refused,
    disabledIn.reduce((a, b) => a + b, 0),
  );
}
