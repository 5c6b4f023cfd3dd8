/**
 * Fleet operations through the real stack (API → Temporal → worker → activities → emulator → simulated devices):
 * each rollout control shown by its effect on a simulated fleet.
 */
import type { WorkflowHandle } from '@temporalio/client';
import type { FleetResult } from '../../common/fleet';
import type { SimulatedDevice } from '../../emulator/simulator/device';
import { enrollSymmetricKeyDevice } from '../../emulator/simulator/enroll';
import { recordHistory } from '../helpers/histories';
import { connectedTo, simulate, startStack, uniqueId, type Stack } from '../helpers/stack';
import { authed } from '../helpers/credentials';

jest.setTimeout(240_000);

let stack: Stack;
const running: SimulatedDevice[] = [];

beforeAll(async () => {
  stack = await startStack();
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((d) => d.stop()));
});
afterAll(async () => {
  await stack?.stop();
});

/** `n` devices enrolled individually and provisioned to the test hub (then offline unless `online`). */
async function fleetOf(
  n: number,
  options: { online?: boolean } = {},
): Promise<{ ids: string[]; devices: SimulatedDevice[] }> {
  const prefix = uniqueId('fleet');
  const ids = Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
  const devices: SimulatedDevice[] = [];
  for (const registrationId of ids) {
    const key = await enrollSymmetricKeyDevice(stack.dps, {
      registrationId,
      hubHostName: stack.hosts.test,
      initialTwin: { tags: { stage: 'test' }, properties: { desired: {} } },
    });
    devices.push(
      simulate(stack, {
        registrationId,
        kind: 'symmetricKey',
        attestation: { type: 'symmetricKey', key },
        secret: key,
      }),
    );
  }
  running.push(...devices);
  await Promise.all(devices.map((d) => connectedTo(d, stack.hosts.test)));
  if (!options.online) await Promise.all(devices.map((d) => d.stop()));
  return { ids, devices };
}

async function startFleet(body: Record<string, unknown>): Promise<{ id: string; handle: WorkflowHandle }> {
  const res = await authed(stack.app, 'operator').post('/v1/fleet-operations').send(body);
  expect(res.status).toBe(202);
  expect(res.headers.location).toBe(`/v1/fleet-operations/${res.body.operationId}`);
  return { id: res.body.operationId, handle: stack.temporal.client.workflow.getHandle(res.body.workflowId) };
}

async function devicesOf(id: string, state?: string) {
  const all: Array<{ registrationId: string; state: string; attempts: number; error?: { type: string } }> = [];
  let token: string | undefined;
  do {
    const res = await authed(stack.app, 'viewer')
      .get(`/v1/fleet-operations/${id}/devices`)
      .query({ pageSize: 7, ...(state ? { state } : {}), ...(token ? { nextPageToken: token } : {}) })
      .expect(200);
    all.push(...res.body.devices);
    token = res.body.nextPageToken;
  } while (token);
  return all;
}

describe('fleet operations', () => {
  it('plans a dry run — devices, hubs, the quota-bound rate and duration — and changes nothing', async () => {
    const { ids } = await fleetOf(12);
    const before = stack.emulator.counters.snapshot();
    const res = await authed(stack.app, 'operator')
      .post('/v1/fleet-operations')
      .send({
        operation: 'revoke',
        targets: { registrationIds: ids },
        dryRun: true,
        rollout: { maximumPerMinute: 600 },
      })
      .expect(200);
    expect(res.body.plan).toMatchObject({
      devices: 12,
      chunks: 1,
      ratePerMinute: 600,
      sample: ids.slice(0, 12),
      quota: { devicesPerMinute: expect.any(Number), binding: expect.any(String) },
    });
    expect(res.body.plan.estimatedSeconds).toBeGreaterThanOrEqual(1);
    expect(stack.emulator.counters.diff(before)).toEqual([]);
  });

  it('revokes a list of devices and lists each device’s state, a page at a time', async () => {
    const { ids, devices } = await fleetOf(15, { online: true });
    const { id, handle } = await startFleet({
      operation: 'revoke',
      targets: { registrationIds: ids },
      parameters: { reason: 'line 3 recall' },
    });
    const result: FleetResult = await handle.result();
    expect(result).toMatchObject({ outcome: 'completed', counts: { succeeded: 15, failed: 0, pending: 0 } });
    const listed = await devicesOf(id);
    expect(listed.map((d) => d.registrationId).sort()).toEqual([...ids].sort());
    expect(listed.every((d) => d.state === 'succeeded')).toBe(true);
    expect(await devicesOf(id, 'failed')).toEqual([]);
    for (const deviceId of ids) {
      expect((await stack.registries.test.get(deviceId)).responseBody).toMatchObject({ status: 'disabled' });
    }
    await Promise.all(devices.map((d) => d.waitFor((e) => e.type === 'provisioningFailed', 30_000)));
    await recordHistory(handle, 'fleet-v1-revoke');
  });
});
