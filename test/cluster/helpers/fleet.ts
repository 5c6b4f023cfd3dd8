import { randomBytes } from 'node:crypto';
import type { Device } from 'azure-iothub';
import type {
  BulkEnrollmentOperationResult,
  IndividualEnrollment,
} from 'azure-iot-provisioning-service/dist/interfaces';
import type { FleetResult, FleetStatus } from '../../../common/fleet';
import { fleetStatusQuery } from '../../../common/messages';
import type { DrillCluster } from './cluster';
import { sleep, waitUntil, type Workload } from './drill';

/**
 * The Azure writes a fleet revoke (hubAction `disable`) makes per device, counted by the emulator: its individual
 * enrollment disabled once, its identity on the test hub disabled once, nothing deleted. A worker killed after a
 * bulk write, and the retry that follows, must not write a device again.
 */
const WRITES_PER_DEVICE: Record<string, number> = {
  'dps//enrollmentUpdate': 1,
  'dps//enrollmentDelete': 0,
  'hub/test/deviceUpdate': 1,
  'hub/test/deviceDelete': 0,
};

interface CounterEntry {
  surface: string;
  hub?: string;
  operation: string;
  id?: string;
  count: number;
}

/**
 * One fleet operation through the API process: `count` devices (individual symmetric-key enrollments with an
 * identity on the test hub, made with Azure's bulk calls) revoked at `ratePerMinute`, while the faults strike.
 */
export class FleetRevokeWorkload implements Workload {
  readonly name: string;
  private readonly ids: string[];
  private workflowId?: string;
  private status?: FleetStatus;
  private result?: FleetResult;
  private failure?: unknown;
  private polling = false;
  private poller?: Promise<void>;

  constructor(
    private readonly drill: DrillCluster,
    private readonly options: { count: number; ratePerMinute: number; prefix: string },
  ) {
    this.name = `fleet revoke of ${options.count}`;
    this.ids = Array.from({ length: options.count }, (_, i) => `${options.prefix}-${String(i).padStart(5, '0')}`);
  }

  async prepare(): Promise<void> {
    const { dps, registries, hosts, cluster } = this.drill;
    const key = () => randomBytes(32).toString('base64');
    // DPS takes 10 enrollments a bulk call, the registry 100 devices.
    for (let i = 0; i < this.ids.length; i += 10) {
      const enrollments = this.ids.slice(i, i + 10).map(
        (registrationId) =>
          ({
            registrationId,
            deviceId: registrationId,
            attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key(), secondaryKey: key() } },
            iotHubs: [hosts.test],
            allocationPolicy: 'static',
            provisioningStatus: 'enabled',
          }) as unknown as IndividualEnrollment,
      );
      // The SDK's promise form of runBulkEnrollmentOperation never settles; its callback form does.
      const result = await new Promise<BulkEnrollmentOperationResult>((resolve, reject) =>
        dps.runBulkEnrollmentOperation({ mode: 'create', enrollments }, (err, res) =>
          err ? reject(err) : resolve(res!),
        ),
      );
      if (!result.isSuccessful) throw new Error(`bulk enrollment: ${JSON.stringify(result.errors)}`);
    }
    for (let i = 0; i < this.ids.length; i += 100) {
      const devices = this.ids.slice(i, i + 100).map(
        (deviceId) =>
          ({
            deviceId,
            status: 'enabled',
            authentication: { symmetricKey: { primaryKey: key(), secondaryKey: key() } },
          }) as unknown as Device,
      );
      const { responseBody } = await registries.test.addDevices(devices);
      if (!responseBody.isSuccessful) throw new Error(`bulk identities: ${JSON.stringify(responseBody.errors)}`);
    }
    // Only the operation's own writes count from here on.
    const reset = await cluster.controlFetch('/counters', { method: 'DELETE' });
    if (!reset.ok) throw new Error(`DELETE /counters: ${reset.status}`);
  }

  async start(): Promise<void> {
    const res = await this.drill.cluster.apiFetch('/v1/fleet-operations', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        operation: 'revoke',
        targets: { registrationIds: this.ids },
        parameters: { reason: 'cluster drill', hubAction: 'disable' },
        rollout: { maximumPerMinute: this.options.ratePerMinute },
      }),
    });
    const body = (await res.json()) as { workflowId?: string };
    if (res.status !== 202 || !body.workflowId)
      throw new Error(`POST /v1/fleet-operations: ${res.status} ${JSON.stringify(body)}`);
    this.workflowId = body.workflowId;
    this.polling = true;
    // The drill's clock: devices in flight, from the operation's status query (faults make some polls fail).
    this.poller = (async () => {
      while (this.polling) {
        this.status = await this.handle()
          .query(fleetStatusQuery)
          .catch(() => this.status);
        await sleep(300);
      }
    })();
    void this.handle()
      .result()
      .then(
        (result: FleetResult) => (this.result = result),
        (err: unknown) => (this.failure = err),
      );
  }

  inFlight(): number {
    // Once the rollout has started devices and until it has finished them all: the devices not done yet.
    if (this.result || this.failure || !this.status || this.status.started === 0) return 0;
    const { pending, inProgress } = this.status.counts;
    return pending + inProgress;
  }

  async release(): Promise<void> {
    // Faults over: the remaining devices go at full speed, and verification reads are not slowed.
    const res = await this.drill.cluster.controlFetch('/faults', {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ latencyMs: 0 }),
    });
    if (!res.ok) throw new Error(`PUT /faults: ${res.status}`);
  }

  async settled(timeoutMs: number): Promise<void> {
    await waitUntil(`the ${this.name} to finish`, timeoutMs, async () => Boolean(this.result || this.failure));
    this.polling = false;
    await this.poller;
  }

  async verify(): Promise<void> {
    if (this.failure) throw new Error(`the fleet operation failed: ${String(this.failure)}`);
    const result = this.result!;
    const problems: string[] = [];
    const n = this.ids.length;
    if (result.outcome !== 'completed') problems.push(`outcome ${result.outcome}`);
    const expected = { pending: 0, inProgress: 0, succeeded: n, failed: 0, timedOut: 0, cancelled: 0 };
    if (JSON.stringify(result.counts) !== JSON.stringify(expected)) {
      problems.push(`counts ${JSON.stringify(result.counts)}, expected ${JSON.stringify(expected)}`);
    }
    if (result.started !== n) problems.push(`${result.started} devices started, expected ${n}`);

    const { dps, registries } = this.drill;
    const ids = [...this.ids];
    const check = async () => {
      for (let id = ids.pop(); id; id = ids.pop()) {
        const enrollment = (await retried(() => dps.getIndividualEnrollment(id))).responseBody;
        if (enrollment.provisioningStatus !== 'disabled')
          problems.push(`${id}: enrollment ${enrollment.provisioningStatus}`);
        const identity = (await retried(() => registries.test.get(id))).responseBody;
        if (identity.status !== 'disabled') problems.push(`${id}: identity ${identity.status} on the test hub`);
      }
    };
    await Promise.all(Array.from({ length: 8 }, check));

    const res = await this.drill.cluster.controlFetch('/counters');
    const { counters } = (await res.json()) as { counters: CounterEntry[] };
    const writes = new Map<string, number>();
    for (const c of counters) {
      if (!c.id) continue;
      const key = `${c.surface}/${c.hub ?? ''}/${c.operation}|${c.id.toLowerCase()}`;
      writes.set(key, (writes.get(key) ?? 0) + c.count);
    }
    let repeated = 0;
    let lost = 0;
    for (const id of this.ids) {
      for (const [operation, count] of Object.entries(WRITES_PER_DEVICE)) {
        const got = writes.get(`${operation}|${id.toLowerCase()}`) ?? 0;
        if (got > count) repeated++;
        if (got < count) lost++;
        if (got !== count) problems.push(`${id}: ${operation} written ${got}×, expected ${count}`);
      }
    }
    process.stdout.write(
      `[drill ${this.name}] ${result.counts.succeeded} revoked, ${lost} writes lost, ${repeated} repeated\n`,
    );
    if (problems.length) {
      const shown = problems.slice(0, 30);
      if (problems.length > shown.length) shown.push(`… and ${problems.length - shown.length} more`);
      throw new Error(`drill ${this.name} ended wrong:\n  ${shown.join('\n  ')}`);
    }
  }

  async dispose(): Promise<void> {
    this.polling = false;
    await this.poller;
  }

  private handle() {
    return this.drill.client.workflow.getHandle(this.workflowId!);
  }
}

/** A read of the verification, again after a dropped connection (a socket the emulator closed while idle). */
async function retried<T>(read: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await read();
    } catch (err) {
      const network = /socket hang up|ECONNRESET|EPIPE/i.test(String((err as Error).message ?? err));
      if (!network || attempt >= 5) throw err;
      await sleep(200 * attempt);
    }
  }
}
