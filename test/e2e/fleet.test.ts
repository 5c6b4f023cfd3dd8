/**
 * Fleet operations through the real stack (API → Temporal → worker → activities → emulator → simulated devices):
 * the plan, and a list revoked and reinstated, whose histories are recorded for replay (a promotion fleet's: in
 * fleet-controls.test.ts). Each rollout control:
 * fleet-controls.test.ts; the worker killed mid-operation: fleet-crash.test.ts.
 */
import type { FleetResult } from '../../common/fleet';
import { fleetChunkWorkflowId } from '../../common/messages';
import { recordHistory } from '../helpers/histories';
import { fleetKit } from '../helpers/fleet';
import { connectedTo, startStack, uniqueId, type Stack } from '../helpers/stack';
import { authed } from '../helpers/credentials';

jest.setTimeout(240_000);

let stack: Stack;
const kit = fleetKit(() => stack);
const { fleetOf, startFleet, devicesOf } = kit;

beforeAll(async () => {
  stack = await startStack();
});
afterEach(async () => {
  await kit.stopDevices();
});
afterAll(async () => {
  await stack?.stop();
});

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
    await recordHistory(handle, 'fleet-v2-revoke', { keepWorkflowId: true });
    const chunk = stack.temporal.client.workflow.getHandle(fleetChunkWorkflowId(handle.workflowId, 0));
    await recordHistory(chunk, 'fleet-v2-revoke-chunk', { keepWorkflowId: true });
  });
  it('reinstates a revoked fleet (admin only): each device enabled again in DPS and the hub, and back online', async () => {
    const { ids, keys } = await fleetOf(6);
    const revoked = await startFleet({ operation: 'revoke', targets: { registrationIds: ids } });
    expect(await revoked.handle.result()).toMatchObject({ outcome: 'completed', counts: { succeeded: 6 } });
    for (const deviceId of ids) {
      expect((await stack.registries.test.get(deviceId)).responseBody).toMatchObject({ status: 'disabled' });
    }

    const body = { operation: 'reinstate', targets: { registrationIds: ids }, parameters: { reason: 'false alarm' } };
    const refused = await authed(stack.app, 'operator').post('/v1/fleet-operations').send(body).expect(403);
    expect(refused.body.type).toBe('/problems/forbidden');
    const { id, handle } = await startFleet(body, 'admin');
    const result: FleetResult = await handle.result();
    expect(result).toMatchObject({ outcome: 'completed', counts: { succeeded: 6, failed: 0 } });
    expect((await devicesOf(id)).map((d) => d.state)).toEqual(Array(6).fill('succeeded'));
    for (const deviceId of ids) {
      expect((await stack.registries.test.get(deviceId)).responseBody).toMatchObject({ status: 'enabled' });
      const enrollment = (await stack.dps.getIndividualEnrollment(deviceId)).responseBody;
      expect(enrollment.provisioningStatus).toBe('enabled');
    }
    // The devices authenticate again: each re-provisions and connects to the test hub.
    await Promise.all(
      ids.map((registrationId, i) => connectedTo(kit.device(registrationId, keys[i]), stack.hosts.test)),
    );
    await recordHistory(handle, 'fleet-v2-reinstate', { keepWorkflowId: true });
    const chunk = stack.temporal.client.workflow.getHandle(fleetChunkWorkflowId(handle.workflowId, 0));
    await recordHistory(chunk, 'fleet-v2-reinstate-chunk', { keepWorkflowId: true });
  });

  it('revokes an id nothing knows as done, but says so on that device (a misspelled id stands out)', async () => {
    const { ids } = await fleetOf(1);
    const typo = uniqueId('no-such-device');
    const { id, handle } = await startFleet({ operation: 'revoke', targets: { registrationIds: [ids[0], typo] } });
    const result: FleetResult = await handle.result();
    expect(result).toMatchObject({ outcome: 'completed', counts: { succeeded: 2 } });
    const listed = Object.fromEntries((await devicesOf(id)).map((d) => [d.registrationId, d]));
    expect(listed[typo]).toMatchObject({ state: 'succeeded', note: expect.stringMatching(/misspelled/) });
    expect(listed[ids[0]].state).toBe('succeeded');
    expect(listed[ids[0]].note).toBeUndefined();
  });
  it('lists a finished operation’s devices with no worker running (from results), and a dry run’s as none', async () => {
    const { ids } = await fleetOf(3);
    const { id, handle } = await startFleet({ operation: 'revoke', targets: { registrationIds: ids } });
    await handle.result();
    await stack.stopWorker();
    try {
      const listed = await devicesOf(id);
      expect(listed.map((d) => d.registrationId).sort()).toEqual([...ids].sort());
      expect(listed.map((d) => d.state)).toEqual(['succeeded', 'succeeded', 'succeeded']);
      expect(await devicesOf(id, 'failed')).toEqual([]);
    } finally {
      await stack.startWorker();
    }
    const dry = await authed(stack.app, 'operator')
      .post('/v1/fleet-operations')
      .send({ operation: 'revoke', targets: { registrationIds: ids }, dryRun: true })
      .expect(200);
    expect(dry.body.plan).toMatchObject({ devices: 3, chunks: 1 });
    expect(await devicesOf(dry.body.operationId)).toEqual([]);
  });
});
