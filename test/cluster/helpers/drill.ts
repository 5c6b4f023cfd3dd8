import type { DrillCluster } from './cluster';

/**
 * A cluster drill: a workload (single promotions now; a fleet operation later) runs on the real topology while
 * faults strike one after the other; then every device must be in its correct state, with nothing lost or done
 * twice. A new kind of operation becomes one more drill by implementing `Workload` and calling `runDrill` with
 * `standardFaults()`, in one more file under test/cluster/.
 */
export interface Workload {
  readonly name: string;
  /** Enrolls and connects its devices; nothing is started yet. */
  prepare(): Promise<void>;
  /** Starts the operation(s); may keep starting in the background while the faults strike. */
  start(): Promise<void>;
  /** Operations started and not yet finished: a fault that strikes when this is 0 tests nothing. */
  inFlight(): number;
  /** After the last fault: whatever the workload held back (devices kept offline) goes ahead. */
  release(): Promise<void>;
  /** Resolves when every operation has finished. */
  settled(timeoutMs: number): Promise<void>;
  /** Throws unless every device is in its correct state and the counts are exact. */
  verify(): Promise<void>;
  /** Stops its devices (also after a failure). */
  dispose(): Promise<void>;
}

export interface Fault {
  readonly name: string;
  /** Strikes, then brings the cluster back (as a supervisor would); returns what happened, for the report. */
  strike(drill: DrillCluster): Promise<string>;
}

export interface DrillEvent {
  at: number;
  fault: string;
  inFlight: number;
  detail: string;
  recoveredAfterMs: number;
}

/** kill -9 of the oldest worker process, and a new worker in its place. */
export const killWorker: Fault = {
  name: 'kill -9 a worker',
  async strike({ cluster }) {
    const [victim] = cluster.workers;
    if (!victim) throw new Error('no worker running');
    await victim.kill();
    const replacement = await cluster.startWorker();
    return `${victim.name} (pid ${victim.pid}) killed; ${replacement.name} (pid ${replacement.pid}) polling`;
  },
};

/** kill -9 of the history service (of the whole server in all-in-one mode), restarted after `downMs`. */
export function killHistory(downMs = 3_000): Fault {
  return {
    name: 'kill -9 the history service',
    async strike({ cluster }) {
      const killed = await cluster.killTemporal('history');
      await sleep(downMs);
      await cluster.restartTemporal('history');
      return `${killed} killed, down ${downMs} ms, restarted`;
    },
  };
}

/** Every PostgreSQL backend of the Temporal databases ended at once (pg_terminate_backend). */
export const terminatePostgresConnections: Fault = {
  name: "terminate PostgreSQL's connections",
  async strike({ cluster, client }) {
    const ended = cluster.terminatePostgresConnections();
    if (ended === 0) throw new Error('no Temporal connection to terminate');
    // The server reconnects on its own; recovered once it answers from the database again.
    await waitUntil('Temporal to read from PostgreSQL again', 60_000, async () => {
      await client.workflowService.describeNamespace({ namespace: cluster.settings.temporal.namespace });
      return true;
    });
    return `${ended} backends terminated`;
  },
};

/** What issue 12 asks of every drill: a worker killed three times, the history service once, PostgreSQL once. */
export function standardFaults(): Fault[] {
  return [killWorker, killHistory(), killWorker, terminatePostgresConnections, killWorker];
}

/**
 * Runs `workload` while `faults` strike one after another (each when at least one operation is in flight, at
 * least `gapMs` after the previous one recovered), then releases it, waits for it to settle and verifies it.
 */
export async function runDrill(
  drill: DrillCluster,
  workload: Workload,
  faults: Fault[],
  options: { gapMs?: number; settleTimeoutMs?: number } = {},
): Promise<DrillEvent[]> {
  const started = Date.now();
  const events: DrillEvent[] = [];
  const log = (line: string) => process.stdout.write(`[drill ${workload.name}] +${secs(started)} ${line}\n`);
  try {
    await workload.prepare();
    log('prepared');
    await workload.start();
    for (const fault of faults) {
      await sleep(options.gapMs ?? 2_000);
      await waitUntil(`an operation in flight before "${fault.name}"`, 120_000, async () => workload.inFlight() > 0);
      const inFlight = workload.inFlight();
      const at = Date.now();
      const detail = await fault.strike(drill);
      const event = { at: at - started, fault: fault.name, inFlight, detail, recoveredAfterMs: Date.now() - at };
      events.push(event);
      log(`${fault.name} with ${inFlight} in flight: ${detail} (recovered in ${event.recoveredAfterMs} ms)`);
    }
    await workload.release();
    log('released');
    await workload.settled(options.settleTimeoutMs ?? 300_000);
    log('settled');
    await workload.verify();
    log('verified');
    return events;
  } finally {
    await workload.dispose();
  }
}

export async function waitUntil(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      lastError = err;
    }
    await sleep(250);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`);
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const secs = (since: number) => `${((Date.now() - since) / 1000).toFixed(1)}s`;
