/**
 * Each rollout control of a fleet operation, shown by its effect on a simulated fleet through the real stack
 * (API → Temporal → worker → activities → emulator → simulated devices): what starts when, what is never touched.
 */
import type { FleetResult, FleetStatus } from '../../common/fleet';
import { authed } from '../helpers/credentials';
import { recordHistory } from '../helpers/histories';
import { fleetChunkWorkflowId } from '../../common/messages';
import { fleetKit, until } from '../helpers/fleet';
import { enrollSymmetricKeyGroup } from '../../emulator/simulator/enroll';
import { connectedTo, simulate, startStack, uniqueId, type Stack } from '../helpers/stack';

jest.setTimeout(120_000);

/** Small, so that the size limit can be shown with a small fleet. */
const OPERATOR_MAX_DEVICES = 25;

let stack: Stack;
const kit = fleetKit(() => stack);
const { fleetOf, startFleet, devicesOf, statusOf } = kit;

beforeAll(async () => {
  stack = await startStack({ fleetOperatorMaxDevices: OPERATOR_MAX_DEVICES });
});
afterEach(async () => {
  stack.emulator.faults.clear();
  await kit.stopDevices();
});
afterAll(async () => {
  await stack?.stop();
});

/** Times (ms) the devices of an operation finished, in order. */
async function finishTimes(id: string): Promise<number[]> {
  return (await devicesOf(id)).map((d) => Date.parse(d.finishedAt!)).sort((a, b) => a - b);
}

/** Whether a device got no write at all from the emulator's point of view since `since`. */
const untouched = (since: ReturnType<Stack['emulator']['counters']['snapshot']>, id: string) =>
  stack.emulator.counters.diff(since, { id }).length === 0;

describe('rate', () => {
  it('starts no more devices a minute than maximumPerMinute, and keeps to that pace', async () => {
    const { ids } = await fleetOf(20);
    const { id, handle } = await startFleet({
      operation: 'revoke',
      targets: { registrationIds: ids },
      rollout: { maximumPerMinute: 120 },
    });
    const result: FleetResult = await handle.result();
    expect(result).toMatchObject({ outcome: 'completed', ratePerMinute: 120, counts: { succeeded: 20 } });

    const times = await finishTimes(id);
    // 2 a second from the start, after a first grant of 2: the k-th device never finished before the rate allowed
    // it to start (a device finishes after it starts; a slow machine only makes it later), give or take a token.
    const t0 = Date.parse(result.startedAt);
    times.forEach((t, i) =>
      expect({ device: i + 1, allowed: 2 + 1 + (2 * (t - t0)) / 1_000 >= i + 1 }).toEqual({
        device: i + 1,
        allowed: true,
      }),
    );
    // 20 devices at 2/s: about 9 s, and not absurdly slower.
    expect(times[times.length - 1] - times[0]).toBeGreaterThanOrEqual(7_000);
    expect(Date.parse(result.completedAt) - t0).toBeLessThan(40_000);
  });

  it('ramps the rate up by incrementFactor each time numberOfNotifiedThings more devices started', async () => {
    const { ids } = await fleetOf(24);
    const { id, handle } = await startFleet({
      operation: 'revoke',
      targets: { registrationIds: ids },
      rollout: {
        maximumPerMinute: 600,
        exponentialRate: {
          baseRatePerMinute: 60,
          incrementFactor: 2,
          rateIncreaseCriteria: { numberOfNotifiedThings: 4 },
        },
      },
    });
    const rates: number[] = [];
    let done = false;
    const result = (handle.result() as Promise<FleetResult>).finally(() => (done = true));
    while (!done) {
      const status = await statusOf(id).catch(() => undefined);
      if (status?.ratePerMinute && status.ratePerMinute !== rates[rates.length - 1]) rates.push(status.ratePerMinute);
      await new Promise((r) => setTimeout(r, 100));
    }
    const final = await result;
    expect(final).toMatchObject({ outcome: 'completed', counts: { succeeded: 24 } });
    // The rate in force went up in steps of ×2 from the base, never down, capped by maximumPerMinute.
    expect(rates[0]).toBe(60);
    expect(rates.length).toBeGreaterThanOrEqual(3);
    for (let i = 1; i < rates.length; i += 1) expect(rates[i]).toBeGreaterThan(rates[i - 1]);
    for (const rate of rates) expect([60, 120, 240, 480, 600]).toContain(rate);
    // …and the devices did go faster: the last quarter finished quicker than the first.
    const times = await finishTimes(id);
    expect(times[23] - times[18]).toBeLessThan(times[5] - times[0]);
  });
});

describe('abort criteria', () => {
  it('aborts once the failed share passes the threshold, leaving the devices not started untouched', async () => {
    const { ids } = await fleetOf(14);
    // The test hub refuses the first four bulk writes (400, permanent): the devices in them fail.
    stack.emulator.faults.addRule({ surface: 'hub', hub: 'test', operation: 'deviceBulk', status: 400, times: 4 });
    const before = stack.emulator.counters.snapshot();
    const { id, handle } = await startFleet({
      operation: 'revoke',
      targets: { registrationIds: ids },
      rollout: { maximumPerMinute: 60 },
      abort: [{ failureType: 'FAILED', thresholdPercentage: 50, minNumberOfExecutedThings: 3 }],
    });
    const result: FleetResult = await handle.result();
    expect(result.outcome).toBe('aborted');
    expect(result.abortedBecause).toMatch(/^FAILED at \d+\.\d % of \d+ executed devices \(threshold 50 %\)$/);
    expect(result.counts.failed).toBeGreaterThanOrEqual(3);
    expect(result.counts.cancelled).toBeGreaterThan(0);
    expect(result.counts.pending + result.counts.inProgress).toBe(0);

    const cancelled = await devicesOf(id, 'cancelled');
    expect(cancelled.length).toBe(result.counts.cancelled);
    for (const d of cancelled) {
      expect(d.attempts).toBe(0);
      expect(untouched(before, d.registrationId)).toBe(true);
      expect((await stack.registries.test.get(d.registrationId)).responseBody).toMatchObject({ status: 'enabled' });
    }
    const failed = await devicesOf(id, 'failed');
    expect(failed.length).toBe(result.counts.failed);
    for (const d of failed) expect(d.error?.type).toBeDefined();
  });

  it('aborts on the ALL share (failed and timed out together) while a TIMED_OUT criterion is never met', async () => {
    const { ids } = await fleetOf(10);
    stack.emulator.faults.addRule({ surface: 'hub', hub: 'test', operation: 'deviceBulk', status: 400, times: 4 });
    const { id, handle } = await startFleet({
      operation: 'revoke',
      targets: { registrationIds: ids },
      rollout: { maximumPerMinute: 60 },
      abort: [
        { failureType: 'TIMED_OUT', thresholdPercentage: 50, minNumberOfExecutedThings: 3 },
        { failureType: 'ALL', thresholdPercentage: 50, minNumberOfExecutedThings: 3 },
      ],
    });
    const result: FleetResult = await handle.result();
    expect(result.outcome).toBe('aborted');
    expect(result.abortedBecause).toMatch(/^ALL at \d+\.\d % of \d+ executed devices \(threshold 50 %\)$/);
    expect(result.counts.timedOut).toBe(0);
    expect(result.counts.failed).toBeGreaterThanOrEqual(3);
    expect(result.counts.cancelled).toBeGreaterThan(0);
    expect(result.counts.succeeded + result.counts.failed + result.counts.cancelled).toBe(10);
    expect((await devicesOf(id, 'cancelled')).length).toBe(result.counts.cancelled);
  });

  it('aborts on the TIMED_OUT share: promotions that never reconnect count, the devices not started stay put', async () => {
    const { ids } = await fleetOf(12); // offline: they never reach production
    const before = stack.emulator.counters.snapshot();
    const { id, handle } = await startFleet({
      operation: 'promote',
      targets: { registrationIds: ids },
      parameters: { pollInterval: '1s' },
      deviceTimeout: '3s',
      rollout: { maximumPerMinute: 30 },
      abort: [{ failureType: 'TIMED_OUT', thresholdPercentage: 50, minNumberOfExecutedThings: 2 }],
    });
    const result: FleetResult = await handle.result();
    expect(result.outcome).toBe('aborted');
    expect(result.abortedBecause).toMatch(/^TIMED_OUT at \d+\.\d % of \d+ executed devices \(threshold 50 %\)$/);
    expect(result.counts.timedOut).toBeGreaterThanOrEqual(2);
    expect(result.counts.cancelled).toBeGreaterThan(0);
    expect(result.counts.timedOut + result.counts.cancelled).toBe(12);
    for (const d of await devicesOf(id, 'cancelled')) {
      expect(d.attempts).toBe(0);
      expect(untouched(before, d.registrationId)).toBe(true);
      expect((await stack.dps.getIndividualEnrollment(d.registrationId)).responseBody.iotHubs).toEqual([
        stack.hosts.test,
      ]);
    }
  });
});

describe('device timeout', () => {
  it('times out a revocation batch past deviceTimeout, and a TIMED_OUT retry finishes it', async () => {
    const { ids } = await fleetOf(4);
    // The test hub answers the first bulk write after 8 s: the batch's devices pass their 3 s deviceTimeout.
    stack.emulator.faults.addRule({ surface: 'hub', hub: 'test', operation: 'deviceBulk', latencyMs: 8_000, times: 1 });
    const { id, handle } = await startFleet({
      operation: 'revoke',
      targets: { registrationIds: ids },
      deviceTimeout: '3s',
      retries: [{ failureType: 'TIMED_OUT', numberOfRetries: 1 }],
    });
    const result: FleetResult = await handle.result();
    expect(result).toMatchObject({ outcome: 'completed', counts: { succeeded: 4, timedOut: 0 } });
    for (const d of await devicesOf(id)) {
      expect(d).toMatchObject({ state: 'succeeded', attempts: 2, error: { type: 'DeviceTimeout' } });
      expect((await stack.registries.test.get(d.registrationId)).responseBody).toMatchObject({ status: 'disabled' });
    }
  });

  it('counts a batch past deviceTimeout as timedOut when no retry is left', async () => {
    const { ids } = await fleetOf(3);
    stack.emulator.faults.addRule({ surface: 'hub', hub: 'test', operation: 'deviceBulk', latencyMs: 6_000, times: 1 });
    const { id, handle } = await startFleet({
      operation: 'revoke',
      targets: { registrationIds: ids },
      deviceTimeout: '2s',
    });
    const result: FleetResult = await handle.result();
    expect(result).toMatchObject({ outcome: 'completedWithFailures', counts: { timedOut: 3, succeeded: 0 } });
    for (const d of await devicesOf(id, 'timedOut')) {
      expect(d).toMatchObject({ attempts: 1, error: { type: 'DeviceTimeout', message: expect.stringMatching(/2s/) } });
    }
  });
});

describe('pause and resume', () => {
  it('starts no device while paused, completes after resume, and records who paused and resumed', async () => {
    const { ids } = await fleetOf(16);
    const { id, handle } = await startFleet({
      operation: 'revoke',
      targets: { registrationIds: ids },
      rollout: { maximumPerMinute: 120 },
    });
    await until('a few devices done', async () => ((await statusOf(id)).counts.succeeded >= 3 ? true : undefined));
    const paused = await authed(stack.app, 'operator')
      .post(`/v1/fleet-operations/${id}/pause`)
      .send({ reason: 'night shift' })
      .expect(200);
    expect(paused.body).toMatchObject({ phase: 'paused', pausedBecause: 'night shift' });
    // What was granted before the pause (a tick's worth, 2 devices a second) still starts and settles; then nothing
    // moves. Counts reach the status every 2 s, so "settled" is the same status 3 s apart.
    let last = paused.body as FleetStatus;
    const settled = await until('in-flight devices settled', async () => {
      await new Promise((r) => setTimeout(r, 3_000));
      const s = await statusOf(id);
      const same = s.started === last.started && s.counts.inProgress === 0;
      last = s;
      return same ? s : undefined;
    });
    expect(settled.started - (paused.body as FleetStatus).started).toBeLessThanOrEqual(4);
    const frozen = stack.emulator.counters.snapshot();
    await new Promise((r) => setTimeout(r, 4_000));
    const still = await statusOf(id);
    expect(still.started).toBe(settled.started);
    expect(still.counts).toEqual(settled.counts);
    expect(still.counts.pending).toBeGreaterThan(0);
    expect(stack.emulator.counters.diff(frozen)).toEqual([]);

    await authed(stack.app, 'admin').post(`/v1/fleet-operations/${id}/resume`).expect(200);
    const result: FleetResult = await handle.result();
    expect(result).toMatchObject({ outcome: 'completed', counts: { succeeded: 16 } });
    expect(result.operatorActions).toEqual([
      { action: 'pause', requestedBy: expect.objectContaining({ subject: 'test-operator' }), at: expect.any(String) },
      { action: 'resume', requestedBy: expect.objectContaining({ subject: 'test-admin' }), at: expect.any(String) },
    ]);
  });
});

describe('rollout groups', () => {
  it('runs the first group, pauses after it as asked, and runs the rest once resumed', async () => {
    const { ids } = await fleetOf(8);
    const before = stack.emulator.counters.snapshot();
    const { id, handle } = await startFleet({
      operation: 'revoke',
      targets: { registrationIds: ids },
      groups: [{ size: { devices: 3 }, pauseAfter: true }],
    });
    const paused = await until('paused after group 1', async () => {
      const s = await statusOf(id);
      return s.phase === 'paused' ? s : undefined;
    });
    expect(paused).toMatchObject({
      pausedBecause: 'group 1 done: paused after it as requested',
      started: 3,
      counts: { succeeded: 3, pending: 5 },
      group: { index: 0, of: 2 },
    });
    const first = (await devicesOf(id, 'succeeded')).map((d) => d.registrationId);
    for (const other of ids.filter((i) => !first.includes(i))) expect(untouched(before, other)).toBe(true);

    await authed(stack.app, 'operator').post(`/v1/fleet-operations/${id}/resume`).expect(200);
    const result: FleetResult = await handle.result();
    expect(result).toMatchObject({ outcome: 'completed', counts: { succeeded: 8 } });
  });
});

describe('rollout groups that fail', () => {
  it('aborts when a group passes its error threshold and onError is abort: the later groups never start', async () => {
    const { ids } = await fleetOf(9);
    // The first group's one bulk write is refused (400): all of its devices fail.
    stack.emulator.faults.addRule({ surface: 'hub', hub: 'test', operation: 'deviceBulk', status: 400, times: 1 });
    const before = stack.emulator.counters.snapshot();
    const { id, handle } = await startFleet({
      operation: 'revoke',
      targets: { registrationIds: ids },
      groups: [{ size: { devices: 3 }, errorThresholdPercent: 50, onError: 'abort' }],
    });
    const result: FleetResult = await handle.result();
    expect(result).toMatchObject({
      outcome: 'aborted',
      abortedBecause: 'group 1: 100.0 % failed (threshold 50 %)',
      counts: { failed: 3, cancelled: 6, succeeded: 0 },
    });
    const failed = (await devicesOf(id, 'failed')).map((d) => d.registrationId);
    for (const other of ids.filter((i) => !failed.includes(i))) expect(untouched(before, other)).toBe(true);
  });
});

describe('cancel', () => {
  it('leaves finished devices as they are and never touches the devices not started', async () => {
    const { ids } = await fleetOf(16);
    const before = stack.emulator.counters.snapshot();
    const { id, handle } = await startFleet({
      operation: 'revoke',
      targets: { registrationIds: ids },
      rollout: { maximumPerMinute: 60 },
    });
    await until('a few devices done', async () => ((await statusOf(id)).counts.succeeded >= 3 ? true : undefined));
    await authed(stack.app, 'operator')
      .post(`/v1/fleet-operations/${id}/cancel`)
      .send({ reason: 'wrong batch' })
      .expect(200);
    const result: FleetResult = await handle.result();
    expect(result.outcome).toBe('cancelled');
    expect(result.counts.succeeded).toBeGreaterThanOrEqual(3);
    expect(result.counts.cancelled).toBeGreaterThan(0);
    expect(result.counts.succeeded + result.counts.cancelled).toBe(16);
    for (const d of await devicesOf(id, 'succeeded')) {
      expect((await stack.registries.test.get(d.registrationId)).responseBody).toMatchObject({ status: 'disabled' });
    }
    for (const d of await devicesOf(id, 'cancelled')) {
      expect(untouched(before, d.registrationId)).toBe(true);
      expect((await stack.registries.test.get(d.registrationId)).responseBody).toMatchObject({ status: 'enabled' });
    }
    // A closed operation takes no more controls.
    await authed(stack.app, 'operator').post(`/v1/fleet-operations/${id}/resume`).expect(409);
  });
});

describe('controls while planning', () => {
  /** A fleet whose snapshot takes a while: its registry query answers after `ms`. */
  async function slowlyPlanned(n: number, ms: number) {
    const fleet = await fleetOf(n);
    stack.emulator.faults.addRule({ surface: 'hub', operation: 'queryDevices', latencyMs: ms, times: 1 });
    const before = stack.emulator.counters.snapshot();
    const started = await startFleet({
      operation: 'revoke',
      targets: { query: { environment: 'test', where: `tags.fleet = '${fleet.prefix}'` } },
    });
    await until('planning', async () => ((await statusOf(started.id)).phase === 'planning' ? true : undefined));
    return { ...fleet, ...started, before };
  }

  it('cancels an operation still taking its snapshot: it ends cancelled and no device is touched', async () => {
    const { ids, id, handle, before } = await slowlyPlanned(3, 6_000);
    const cancelled = await authed(stack.app, 'operator')
      .post(`/v1/fleet-operations/${id}/cancel`)
      .send({ reason: 'wrong query' })
      .expect(200);
    expect(cancelled.body).toMatchObject({ phase: 'cancelling' });
    const result: FleetResult = await handle.result();
    expect(result).toMatchObject({ outcome: 'cancelled', phase: 'cancelled', started: 0, counts: { succeeded: 0 } });
    expect(result.operatorActions).toEqual([
      { action: 'cancel', requestedBy: expect.objectContaining({ subject: 'test-operator' }), at: expect.any(String) },
    ]);
    for (const device of ids) expect(untouched(before, device)).toBe(true);
  });

  it('takes a pause while planning, starts nothing once planned, and runs when resumed', async () => {
    const { ids, id, handle, before } = await slowlyPlanned(3, 3_000);
    const paused = await authed(stack.app, 'operator')
      .post(`/v1/fleet-operations/${id}/pause`)
      .send({ reason: 'hold until the line stops' })
      .expect(200);
    expect(paused.body).toMatchObject({ phase: 'planning', pausedBecause: 'hold until the line stops' });
    const planned = await until('planned and paused', async () => {
      const s = await statusOf(id);
      return s.phase === 'paused' ? s : undefined;
    });
    expect(planned).toMatchObject({ started: 0, plan: { devices: 3 }, pausedBecause: 'hold until the line stops' });
    await new Promise((r) => setTimeout(r, 2_000));
    expect((await statusOf(id)).started).toBe(0);
    for (const device of ids) expect(untouched(before, device)).toBe(true);

    await authed(stack.app, 'operator').post(`/v1/fleet-operations/${id}/resume`).expect(200);
    const result: FleetResult = await handle.result();
    expect(result).toMatchObject({ outcome: 'completed', counts: { succeeded: 3 } });
    expect(result.operatorActions?.map((a) => a.action)).toEqual(['pause', 'resume']);
  });
});

describe('controls racing the end of an operation', () => {
  it('answers every pause, resume and cancel 200 or 409, never 5xx or 404, and a 200 is applied', async () => {
    // Small operations end within a second of their start, so controls land in the workflow task that completes
    // the run: Temporal then fails that task (UnhandledCommand, as chunk signals arrived) and aborts the update it
    // carried. The API asks again with the same update id, or answers 409 once the operation has closed.
    const answers: Record<string, number> = {};
    const applied: { id: string; action: string }[] = [];
    const ids: string[] = [];
    await Promise.all(
      Array.from({ length: 6 }, async (_, lane) => {
        for (let round = 0; round < 8; round += 1) {
          const { id } = await startFleet({ operation: 'revoke', targets: { registrationIds: [uniqueId('race')] } });
          ids.push(id);
          const steps: [string, object][] = [
            ['pause', { reason: 'hold' }],
            ['resume', {}],
            ['cancel', { force: round % 2 === 0 }],
            ['pause', {}],
            ['cancel', {}],
          ];
          for (const [action, body] of steps.slice(lane % 3)) {
            const res = await authed(stack.app, 'operator').post(`/v1/fleet-operations/${id}/${action}`).send(body);
            answers[`${action} ${res.status}`] = (answers[`${action} ${res.status}`] ?? 0) + 1;
            if (res.status === 200) applied.push({ id, action });
            else
              expect({ action, status: res.status, type: res.body.type }).toEqual({
                action,
                status: 409,
                type: expect.stringMatching(/^\/problems\/(not-running|wrong-state)$/),
              });
            await new Promise((r) => setTimeout(r, lane * 5));
          }
        }
      }),
    );
    expect(answers['cancel 200']).toBeGreaterThan(0);
    // A control answered 200 was applied: the operation's result records it.
    for (const id of ids) {
      const result: FleetResult = await stack.temporal.client.workflow.getHandle(`fleet/${id}`).result();
      const recorded = (result.operatorActions ?? []).map((a) => a.action.replace(' (force)', ''));
      const answered = applied.filter((a) => a.id === id).map((a) => a.action);
      expect({ id, recorded }).toEqual({ id, recorded: answered });
    }
  });
});

describe('size limit', () => {
  it('refuses an operator a list longer than FLEET_OPERATOR_MAX_DEVICES and lets an admin run it', async () => {
    const ids = Array.from({ length: OPERATOR_MAX_DEVICES + 1 }, (_, i) => `size-limit-${Date.now()}-${i}`);
    const body = { operation: 'revoke', targets: { registrationIds: ids }, dryRun: true };
    const refused = await authed(stack.app, 'operator').post('/v1/fleet-operations').send(body);
    expect(refused.status).toBe(403);
    expect(refused.headers['content-type']).toMatch(/application\/problem\+json/);
    const planned = await authed(stack.app, 'admin').post('/v1/fleet-operations').send(body).expect(200);
    expect(planned.body.plan.devices).toBe(OPERATOR_MAX_DEVICES + 1);
    // At the limit, an operator may.
    await authed(stack.app, 'operator')
      .post('/v1/fleet-operations')
      .send({ ...body, targets: { registrationIds: ids.slice(1) } })
      .expect(200);
  });
});

describe('promotion fleets', () => {
  it('promotes online devices to production', async () => {
    const { ids, devices } = await fleetOf(4, { online: true });
    const { id, handle } = await startFleet({
      operation: 'promote',
      targets: { registrationIds: ids },
      parameters: { pollInterval: '1s' },
    });
    const result: FleetResult = await handle.result();
    expect(result).toMatchObject({ outcome: 'completed', counts: { succeeded: 4 } });
    await Promise.all(devices.map((d) => connectedTo(d, stack.hosts.production)));
    for (const d of await devicesOf(id)) {
      expect(d).toMatchObject({ state: 'succeeded', attempts: 1, workflowId: `promote/${d.registrationId}` });
      expect((await stack.dps.getIndividualEnrollment(d.registrationId)).responseBody.iotHubs).toEqual([
        stack.hosts.production,
      ]);
    }
    await recordHistory(handle, 'fleet-v2-promote', { keepWorkflowId: true });
    const chunk = stack.temporal.client.workflow.getHandle(fleetChunkWorkflowId(handle.workflowId, 0));
    await recordHistory(chunk, 'fleet-v2-promote-chunk', { keepWorkflowId: true });
  });

  it('times out devices that never reconnect, retries them as TIMED_OUT retries say, and counts them', async () => {
    const { ids } = await fleetOf(3); // offline: they never reach production
    const { id, handle } = await startFleet({
      operation: 'promote',
      targets: { registrationIds: ids },
      parameters: { pollInterval: '1s' },
      deviceTimeout: '3s',
      retries: [
        { failureType: 'FAILED', numberOfRetries: 0 },
        { failureType: 'TIMED_OUT', numberOfRetries: 1 },
      ],
    });
    const result: FleetResult = await handle.result();
    expect(result).toMatchObject({
      outcome: 'completedWithFailures',
      counts: { timedOut: 3, succeeded: 0, failed: 0, pending: 0, inProgress: 0 },
    });
    for (const d of await devicesOf(id, 'timedOut')) {
      expect(d).toMatchObject({ attempts: 2, error: { type: 'ReconnectionDeadlineExceeded' } });
      // Each attempt rolled back: the device still belongs to the test hub.
      expect((await stack.dps.getIndividualEnrollment(d.registrationId)).responseBody.iotHubs).toEqual([
        stack.hosts.test,
      ]);
    }
  });

  it('retries exactly the failed and timed-out devices of an earlier operation, which succeed once fixed', async () => {
    const { ids, devices, keys } = await fleetOf(6, { online: true });
    const offline = ids.slice(3);
    await Promise.all(devices.slice(3).map((d) => d.stop()));
    const first = await startFleet({
      operation: 'promote',
      targets: { registrationIds: ids },
      parameters: { pollInterval: '1s' },
      deviceTimeout: '8s',
    });
    const earlier: FleetResult = await first.handle.result();
    expect(earlier).toMatchObject({ outcome: 'completedWithFailures', counts: { succeeded: 3, timedOut: 3 } });

    // The cause fixed: the devices are back online (on the test hub, where the rollback left them).
    const back = offline.map((registrationId, i) => kit.device(registrationId, keys[3 + i]));
    await Promise.all(back.map((d) => connectedTo(d, stack.hosts.test)));
    const res = await authed(stack.app, 'operator').post(`/v1/fleet-operations/${first.id}/retry-failed`).expect(202);
    expect(res.headers.location).toBe(`/v1/fleet-operations/${res.body.operationId}`);
    const retried: FleetResult = await stack.temporal.client.workflow.getHandle(res.body.workflowId).result();
    expect(retried).toMatchObject({ outcome: 'completed', counts: { succeeded: 3 }, plan: { devices: 3 } });
    expect((await devicesOf(res.body.operationId)).map((d) => d.registrationId).sort()).toEqual([...offline].sort());
    await Promise.all(back.map((d) => connectedTo(d, stack.hosts.production)));
  });

  it('on a forced cancel cancels the promotions in flight, which roll back; a plain cancel lets them end', async () => {
    const { ids } = await fleetOf(6); // offline: their promotions wait for them
    const forced = await startFleet({
      operation: 'promote',
      targets: { registrationIds: ids.slice(0, 3) },
      parameters: { pollInterval: '1s' },
      deviceTimeout: '10m',
    });
    const plain = await startFleet({
      operation: 'promote',
      targets: { registrationIds: ids.slice(3) },
      parameters: { pollInterval: '1s' },
      deviceTimeout: '6s',
    });
    for (const { id } of [forced, plain]) {
      await until('all in flight', async () => ((await statusOf(id)).counts.inProgress === 3 ? true : undefined));
    }
    await authed(stack.app, 'operator')
      .post(`/v1/fleet-operations/${forced.id}/cancel`)
      .send({ force: true })
      .expect(200);
    await authed(stack.app, 'operator').post(`/v1/fleet-operations/${plain.id}/cancel`).expect(200);

    const forcedResult: FleetResult = await forced.handle.result();
    expect(forcedResult).toMatchObject({ outcome: 'cancelled', counts: { cancelled: 3, inProgress: 0 } });
    // Long before their 10-minute deadline.
    expect(Date.parse(forcedResult.completedAt) - Date.parse(forcedResult.startedAt)).toBeLessThan(60_000);
    const plainResult: FleetResult = await plain.handle.result();
    expect(plainResult).toMatchObject({ outcome: 'cancelled', counts: { timedOut: 3, cancelled: 0 } });
    for (const registrationId of ids) {
      expect((await stack.dps.getIndividualEnrollment(registrationId)).responseBody.iotHubs).toEqual([
        stack.hosts.test,
      ]);
    }
  });
});

describe('targets', () => {
  it('targets an enrollment group’s devices as they were at the start', async () => {
    const groupId = uniqueId('fleetgroup');
    const groupKey = await enrollSymmetricKeyGroup(stack.dps, { groupId, hubHostName: stack.hosts.test });
    const member = (registrationId: string) =>
      simulate(stack, {
        registrationId,
        kind: 'symmetricKeyGroup',
        enrollmentGroupId: groupId,
        attestation: { type: 'symmetricKeyGroup', groupKey },
        secret: groupKey,
      });
    const ids = Array.from({ length: 5 }, (_, i) => `${groupId}-m${i}`);
    const members = ids.map(member);
    kit.track(...members);
    await Promise.all(members.map((d) => connectedTo(d, stack.hosts.test)));

    const before = stack.emulator.counters.snapshot();
    const { id, handle } = await startFleet({
      operation: 'revoke',
      targets: { enrollmentGroupId: groupId },
      rollout: { maximumPerMinute: 60 },
    });
    await until('planned', async () => ((await statusOf(id)).plan ? true : undefined));
    // A device that joins the group after the start is not part of the operation.
    const late = member(`${groupId}-late`);
    kit.track(late);
    await connectedTo(late, stack.hosts.test);

    const result: FleetResult = await handle.result();
    expect(result).toMatchObject({ outcome: 'completed', counts: { succeeded: 5 }, plan: { devices: 5 } });
    expect((await devicesOf(id)).map((d) => d.registrationId).sort()).toEqual([...ids].sort());
    expect(stack.emulator.counters.diff(before, { id: `${groupId}-late`, operation: 'deviceUpdate' })).toEqual([]);
    expect((await stack.registries.test.get(`${groupId}-late`)).responseBody).toMatchObject({ status: 'enabled' });
  });

  it('targets the devices a registry query finds in one environment', async () => {
    const { ids, prefix } = await fleetOf(5);
    const others = await fleetOf(2);
    const before = stack.emulator.counters.snapshot();
    const { id, handle } = await startFleet({
      operation: 'revoke',
      targets: { query: { environment: 'test', where: `tags.fleet = '${prefix}'` } },
    });
    const result: FleetResult = await handle.result();
    expect(result).toMatchObject({
      outcome: 'completed',
      counts: { succeeded: 5 },
      plan: { devices: 5, byHub: { [stack.hosts.test]: 5 } },
    });
    expect((await devicesOf(id)).map((d) => d.registrationId).sort()).toEqual([...ids].sort());
    for (const other of others.ids) expect(untouched(before, other)).toBe(true);
  });
});
