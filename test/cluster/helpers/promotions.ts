import { WorkflowFailedError } from '@temporalio/client';
import { promotionWorkflowId } from '../../../common/messages';
import type { PromotionResult } from '../../../common/promotion';
import { SimulatedDevice } from '../../../emulator/simulator/device';
import { enrollSymmetricKeyDevice } from '../../../emulator/simulator/enroll';
import type { DrillCluster } from './cluster';
import { sleep, waitUntil, type Workload } from './drill';

/**
 * The Azure writes one successful promotion makes, counted by the emulator (surface/hub/operation → count), with the
 * default `migrate`: the enrollment re-pointed once, the test identity disabled once (DPS then moves it), and no
 * undo. A worker killed after a write and the retry that follows must not write again.
 */
const WRITES_PER_PROMOTION: Record<string, number> = {
  'dps//enrollmentUpdate': 1,
  'dps//enrollmentDelete': 0,
  'hub/test/deviceUpdate': 1,
  'hub/test/deviceCreate': 0,
};

interface DeviceUnderDrill {
  id: string;
  key: string;
  /** Kept offline from the start of its promotion until release(): its promotion waits through every fault. */
  late: boolean;
  sim?: SimulatedDevice;
  startAttempts: number;
  outcome?: { result?: PromotionResult; error?: unknown };
}

/**
 * `count` single promotions through the API process, `late` of them for devices that are offline until the
 * faults are over, the others started one every `staggerMs` while the faults strike.
 */
export class PromotionsWorkload implements Workload {
  readonly name: string;
  private readonly devices: DeviceUnderDrill[] = [];
  private kickoff?: Promise<void>;
  private readonly results: Array<Promise<void>> = [];

  constructor(
    private readonly drill: DrillCluster,
    private readonly options: { count: number; late: number; staggerMs: number; prefix: string },
  ) {
    this.name = `${options.count} promotions`;
  }

  async prepare(): Promise<void> {
    const { dps, hosts } = this.drill;
    for (let i = 0; i < this.options.count; i++) {
      const id = `${this.options.prefix}-${i + 1}`;
      const key = await enrollSymmetricKeyDevice(dps, {
        registrationId: id,
        hubHostName: hosts.test,
        initialTwin: { tags: { stage: 'test' } },
      });
      this.devices.push({ id, key, late: i < this.options.late, startAttempts: 0 });
    }
    for (const device of this.devices) device.sim = this.simulate(device);
    await Promise.all(this.devices.map((d) => connected(d.sim!, hosts.test)));
    await Promise.all(this.devices.filter((d) => d.late).map((d) => d.sim!.stop()));
  }

  async start(): Promise<void> {
    // The late ones first, so that something is in flight from the first fault on.
    const late = this.devices.filter((d) => d.late);
    await Promise.all(late.map((d) => this.startPromotion(d)));
    this.kickoff = (async () => {
      for (const device of this.devices.filter((d) => !d.late)) {
        await sleep(this.options.staggerMs);
        await this.startPromotion(device);
      }
    })();
    // Awaited (and its failure thrown) in release(); until then it must not count as unhandled.
    this.kickoff.catch(() => undefined);
  }

  inFlight(): number {
    return this.devices.filter((d) => d.startAttempts > 0 && !d.outcome).length;
  }

  async release(): Promise<void> {
    await this.kickoff;
    for (const device of this.devices.filter((d) => d.late)) device.sim = this.simulate(device);
  }

  async settled(timeoutMs: number): Promise<void> {
    await waitUntil(`${this.devices.length} promotions to finish`, timeoutMs, async () =>
      this.devices.every((d) => d.outcome),
    );
    await Promise.all(this.results);
  }

  async verify(): Promise<void> {
    const { dps, registries, hosts, client } = this.drill;
    const problems: string[] = [];
    let promoted = 0;
    for (const device of this.devices) {
      const fail = (what: string) => problems.push(`${device.id}: ${what}`);
      const { result, error } = device.outcome ?? {};
      if (error) fail(`promotion failed: ${String(error)}`);
      else if (result?.outcome !== 'promoted') fail(`outcome ${result?.outcome}`);
      else promoted++;

      const enrollment = (await dps.getIndividualEnrollment(device.id)).responseBody;
      if (JSON.stringify(enrollment.iotHubs) !== JSON.stringify([hosts.production])) {
        fail(`enrollment points at ${JSON.stringify(enrollment.iotHubs)}`);
      }
      const registration = (await dps.getDeviceRegistrationState(device.id)).responseBody;
      if (registration.assignedHub !== hosts.production) fail(`DPS assigns ${registration.assignedHub}`);
      const onProduction = await deviceIn(registries.production, device.id);
      // Azure (and the emulator) answer "Connected"; the SDK's type says lower case.
      if (onProduction?.status !== 'enabled' || String(onProduction.connectionState) !== 'Connected') {
        fail(`on production: ${JSON.stringify(onProduction && [onProduction.status, onProduction.connectionState])}`);
      }
      if (await deviceIn(registries.test, device.id)) fail('still on the test hub');
      if (device.sim?.state.assignedHub !== hosts.production || !device.sim.state.connected) {
        fail(`simulated device ${device.sim?.state.phase} on ${device.sim?.state.assignedHub}`);
      }

      const workflowId = promotionWorkflowId(device.id);
      let runs = 0;
      for await (const _ of client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) runs++;
      if (runs !== 1) fail(`${runs} workflow executions`);
      const writes = await this.writesOf(device.id);
      for (const [key, expected] of Object.entries(WRITES_PER_PROMOTION)) {
        if ((writes.get(key) ?? 0) !== expected) fail(`${key} written ${writes.get(key) ?? 0}×`);
      }
    }
    if (promoted !== this.devices.length) problems.unshift(`${promoted} of ${this.devices.length} promoted`);
    if (problems.length) throw new Error(`drill ${this.name} ended wrong:\n  ${problems.join('\n  ')}`);
  }

  async dispose(): Promise<void> {
    await Promise.all(this.devices.map((d) => d.sim?.stop()));
  }

  /** The emulator's write counters of one device, `surface/hub/operation` → count. */
  private async writesOf(id: string): Promise<Map<string, number>> {
    const res = await this.drill.cluster.controlFetch(`/counters?id=${encodeURIComponent(id)}`);
    const body = (await res.json()) as {
      counters: Array<{ surface: string; hub?: string; operation: string; count: number }>;
    };
    const writes = new Map<string, number>();
    for (const c of body.counters) {
      const key = `${c.surface}/${c.hub ?? ''}/${c.operation}`;
      writes.set(key, (writes.get(key) ?? 0) + c.count);
    }
    return writes;
  }

  /** Activity attempts after the first (a worker died under them, or Azure failed), over all promotions. */
  async retriedActivities(): Promise<number> {
    let retried = 0;
    for (const device of this.devices) {
      const history = await this.drill.client.workflow.getHandle(promotionWorkflowId(device.id)).fetchHistory();
      retried += (history.events ?? []).filter((e) => (e.activityTaskStartedEventAttributes?.attempt ?? 1) > 1).length;
    }
    return retried;
  }

  private simulate(device: DeviceUnderDrill): SimulatedDevice {
    const { emulator } = this.drill.cluster;
    return new SimulatedDevice({
      registrationId: device.id,
      idScope: emulator.idScope,
      attestation: { type: 'symmetricKey', key: device.key },
      hubMqttAddress: emulator.mqttAddress,
      dpsMqttAddress: emulator.mqttAddress,
      ca: emulator.caPem,
      backoff: { initialMs: 100, maxMs: 1_000 },
    }).start();
  }

  /**
   * POST /v1/promotions as a client would: retried while the API or Temporal is unavailable; a 409 means an
   * earlier attempt, whose answer was lost, did start it.
   */
  private async startPromotion(device: DeviceUnderDrill): Promise<void> {
    const deadline = Date.now() + 120_000;
    for (;;) {
      device.startAttempts++;
      const answer = await this.drill.cluster
        .apiFetch('/v1/promotions', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ registrationId: device.id, pollInterval: '2s' }),
        })
        .then(
          (res) => res.status,
          () => 0,
        );
      if (answer === 202 || answer === 409) break;
      if (Date.now() > deadline) throw new Error(`POST /v1/promotions for ${device.id}: last answer ${answer}`);
      await sleep(1_000);
    }
    this.results.push(this.awaitResult(device));
  }

  /** The workflow's result, waited for across outages (the client's own retries give up after a while). */
  private async awaitResult(device: DeviceUnderDrill): Promise<void> {
    const handle = this.drill.client.workflow.getHandle(promotionWorkflowId(device.id));
    for (;;) {
      try {
        device.outcome = { result: (await handle.result()) as PromotionResult };
        return;
      } catch (err) {
        if (err instanceof WorkflowFailedError) {
          device.outcome = { error: err };
          return;
        }
        await sleep(1_000);
      }
    }
  }
}

async function connected(sim: SimulatedDevice, hub: string): Promise<void> {
  await sim.waitFor((e) => e.type === 'connected' && e.hub === hub, 60_000);
}

async function deviceIn(registry: DrillCluster['registries']['test'], deviceId: string) {
  try {
    return (await registry.get(deviceId)).responseBody;
  } catch (err) {
    if ((err as Error).name === 'DeviceNotFoundError') return undefined;
    throw err;
  }
}
