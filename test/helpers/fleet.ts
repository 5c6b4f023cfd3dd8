import type { WorkflowHandle } from '@temporalio/client';
import type { DeviceRecord, FleetStatus } from '../../common/fleet';
import type { SimulatedDevice } from '../../emulator/simulator/device';
import { enrollSymmetricKeyDevice } from '../../emulator/simulator/enroll';
import { authed } from './credentials';
import { connectedTo, simulate, uniqueId, type Stack } from './stack';

/**
 * Fleets of simulated devices and the fleet-operation routes, for the fleet e2e tests: `kit(() => stack)` in a
 * test file, `kit.stopDevices()` after each test.
 */
export function fleetKit(stackOf: () => Stack) {
  const running: SimulatedDevice[] = [];

  /**
   * `n` devices enrolled individually and provisioned to the test hub (then offline unless `online`), tagged
   * `{ stage: 'test', fleet: <the fleet's prefix> }` so a registry query can find exactly them.
   */
  async function fleetOf(
    n: number,
    options: { online?: boolean } = {},
  ): Promise<{ ids: string[]; prefix: string; devices: SimulatedDevice[]; keys: string[] }> {
    const stack = stackOf();
    const prefix = uniqueId('fleet');
    const ids = Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
    const devices: SimulatedDevice[] = [];
    const keys: string[] = [];
    for (const registrationId of ids) {
      const key = await enrollSymmetricKeyDevice(stack.dps, {
        registrationId,
        hubHostName: stack.hosts.test,
        initialTwin: { tags: { stage: 'test', fleet: prefix }, properties: { desired: {} } },
      });
      keys.push(key);
      devices.push(device(registrationId, key));
    }
    await Promise.all(devices.map((d) => connectedTo(d, stack.hosts.test)));
    if (!options.online) await Promise.all(devices.map((d) => d.stop()));
    return { ids, prefix, devices, keys };
  }

  /** A simulated device (again) for an enrolled registration id and key, stopped after the test. */
  function device(registrationId: string, key: string): SimulatedDevice {
    const d = simulate(stackOf(), {
      registrationId,
      kind: 'symmetricKey',
      attestation: { type: 'symmetricKey', key },
      secret: key,
    });
    running.push(d);
    return d;
  }

  async function startFleet(
    body: Record<string, unknown>,
    role: 'operator' | 'admin' = 'operator',
  ): Promise<{ id: string; handle: WorkflowHandle }> {
    const stack = stackOf();
    const res = await authed(stack.app, role).post('/v1/fleet-operations').send(body);
    expect(res.status).toBe(202);
    expect(res.headers.location).toBe(`/v1/fleet-operations/${res.body.operationId}`);
    return { id: res.body.operationId, handle: stack.temporal.client.workflow.getHandle(res.body.workflowId) };
  }

  /** Every device of an operation (optionally in one state), through the paged listing. */
  async function devicesOf(id: string, state?: string): Promise<DeviceRecord[]> {
    const all: DeviceRecord[] = [];
    let token: string | undefined;
    do {
      const res = await authed(stackOf().app, 'viewer')
        .get(`/v1/fleet-operations/${id}/devices`)
        .query({ pageSize: 7, ...(state ? { state } : {}), ...(token ? { nextPageToken: token } : {}) })
        .expect(200);
      all.push(...res.body.devices);
      token = res.body.nextPageToken;
    } while (token);
    return all;
  }

  const statusOf = (id: string) =>
    authed(stackOf().app, 'viewer')
      .get(`/v1/fleet-operations/${id}`)
      .expect(200)
      .then((r) => r.body.fleet as FleetStatus);

  /** Devices the test started itself, stopped after it like the others. */
  function track(...devices: SimulatedDevice[]): void {
    running.push(...devices);
  }

  async function stopDevices(): Promise<void> {
    await Promise.all(running.splice(0).map((d) => d.stop()));
  }

  return { fleetOf, device, track, startFleet, devicesOf, statusOf, stopDevices };
}

/** Polls `probe` until it returns a value (errors count as not yet). */
export async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The emulator writes one device got since `since` (DPS by registration id, the hubs by device id). */
export function writesOf(stack: Stack, since: ReturnType<Stack['emulator']['counters']['snapshot']>, id: string) {
  return stack.emulator.counters.diff(since, { id });
}
