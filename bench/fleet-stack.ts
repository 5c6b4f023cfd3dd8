/**
 * The stack the fleet benchmarks run on: the Temporal dev server, the emulator in this process, the project's worker
 * as a process of its own (so that its resident memory can be read, as test/helpers/worker-process.ts starts it)
 * and the REST API in this process with an admin key made for the run. Also: the fleet's devices written straight
 * into the emulator's state (set-up, not measured), and the event counts of every history a fleet operation made.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFile, mkdtemp, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Connection } from '@temporalio/client';
import { API_KEY_HEADER, generateApiKey } from '../api/auth/api-keys';
import { createApp } from '../api/app';
import { localKeyEntry } from '../api/security';
import { createLogger } from '../common/logger';
import { fleetChunkWorkflowId } from '../common/messages';
import type { QuotasConfig } from '../common/quotas';
import { startDevServer, type TemporalCli } from '../common/temporal-server';
import { putEnrollment } from '../emulator/dps/enrollments';
import { createDevice } from '../emulator/hub/registry';
import type { RunningEmulator } from '../emulator/server';
import { hubHost, startBenchEmulator, type Defer } from './harness';

const projectRoot = path.resolve(__dirname, '..');

export interface FleetStack {
  emulator: RunningEmulator;
  client: Client;
  namespace: string;
  temporalAddress: string;
  hosts: { test: string; production: string };
}

export async function startFleetStack(cli: TemporalCli, defer: Defer): Promise<FleetStack> {
  const server = await startDevServer({ cli });
  defer(() => server.stop());
  const emulator = await startBenchEmulator(defer);
  const connection = await Connection.connect({ address: server.address });
  defer(() => connection.close());
  return {
    emulator,
    client: new Client({ connection, namespace: server.namespace }),
    namespace: server.namespace,
    temporalAddress: server.address,
    hosts: { test: hubHost(emulator, 'test'), production: hubHost(emulator, 'production') },
  };
}

/** A worker process and an API in front of it, on a task queue of their own. */
export interface FleetService {
  apiUrl: string;
  taskQueue: string;
  worker: ChildProcess;
  /** Highest worker RSS seen since `resetRss` (MiB), sampled every 250 ms. */
  maxRssMiB(): number;
  /** The worker's RSS once it polls, before any work (MiB): its workflow bundle and runtime. */
  startRssMiB: number;
  resetRss(): void;
  /** POST with the run's admin key. */
  post(pathname: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }>;
  stop(): Promise<void>;
}

export async function startFleetService(stack: FleetStack, quotas: QuotasConfig, defer: Defer): Promise<FleetService> {
  const taskQueue = `bench-fleet-${randomUUID()}`;
  const dir = await mkdtemp(path.join(tmpdir(), 'iot-lifecycle-bench-'));
  const caFile = path.join(dir, 'ca.pem');
  await writeFile(caFile, stack.emulator.caPem);
  // The production shape when there is a build (node dist/worker/main.js, the prebuilt workflow bundle); from the
  // sources otherwise, when the worker bundles its workflows itself and webpack's memory counts in its RSS.
  const compiled = path.join(projectRoot, 'dist', 'worker', 'main.js');
  const entry = existsSync(compiled) ? [compiled] : ['--import', 'tsx', path.join(projectRoot, 'worker', 'main.ts')];
  const worker = spawn(process.execPath, entry, {
    cwd: projectRoot,
    env: {
      PATH: process.env.PATH,
      TEMPORAL_ADDRESS: stack.temporalAddress,
      TEMPORAL_NAMESPACE: stack.namespace,
      TASK_QUEUE: taskQueue,
      AZURE_DPS_CONNECTION_STRING: stack.emulator.connectionStrings.dps,
      AZURE_HUB_CONNECTION_STRINGS: JSON.stringify(stack.emulator.connectionStrings.hubs),
      AZURE_ENDPOINT_ADDRESS: stack.emulator.address,
      AZURE_CA_FILE: caFile,
      AZURE_QUOTAS: JSON.stringify(quotas),
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  const stopWorker = async () => {
    if (worker.exitCode === null && worker.signalCode === null) worker.kill('SIGTERM');
    await Promise.race([exited, sleep(15_000).then(() => worker.kill('SIGKILL'))]);
  };
  defer(stopWorker);

  let maxRss = 0;
  const sampler = setInterval(() => {
    void readRssMiB(worker.pid!).then((rss) => {
      if (rss !== undefined) maxRss = Math.max(maxRss, rss);
    });
  }, 250);
  defer(() => clearInterval(sampler));

  await waitForPollers(stack, taskQueue, worker);
  const startRssMiB = (await readRssMiB(worker.pid!)) ?? 0;

  const adminKey = generateApiKey();
  const app = createApp({
    security: { auth: { apiKeys: [localKeyEntry('bench-admin', 'admin', adminKey)] }, rateLimitPerMinute: 100_000 },
    client: stack.client,
    taskQueue,
    log: createLogger('silent'),
    environments: stack.hosts,
    eventGridSecret: randomBytes(16).toString('hex'),
  });
  const api: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const stopApi = () => new Promise<void>((resolve) => api.close(() => resolve()));
  defer(stopApi);
  const apiUrl = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;

  return {
    apiUrl,
    taskQueue,
    worker,
    maxRssMiB: () => maxRss,
    startRssMiB,
    resetRss: () => void (maxRss = 0),
    async post(pathname, body) {
      const res = await fetch(`${apiUrl}${pathname}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', [API_KEY_HEADER]: adminKey },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    },
    async stop() {
      clearInterval(sampler);
      await stopApi();
      await stopWorker();
    },
  };
}

async function readRssMiB(pid: number): Promise<number | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const kib = /^VmRSS:\s+(\d+) kB/m.exec(status)?.[1];
    return kib ? Number(kib) / 1024 : undefined;
  } catch {
    return undefined; // exited, or not Linux
  }
}

/** Until the worker polls both the workflow and the activity task queue (it bundles the workflows first). */
async function waitForPollers(stack: FleetStack, taskQueue: string, worker: ChildProcess): Promise<void> {
  const deadline = Date.now() + 180_000;
  while (Date.now() < deadline) {
    if (worker.exitCode !== null) throw new Error(`the worker process exited with ${worker.exitCode}`);
    const polling = await Promise.all(
      [1, 2].map(async (taskQueueType) => {
        const answer = await stack.client.workflowService.describeTaskQueue({
          namespace: stack.namespace,
          taskQueue: { name: taskQueue },
          taskQueueType,
        });
        return (answer.pollers ?? []).length > 0;
      }),
    );
    if (polling.every(Boolean)) return;
    await sleep(250);
  }
  throw new Error('the worker process did not start polling within 180 s');
}

/**
 * `n` devices as an operator's fleet looks after provisioning: an enabled symmetric-key individual enrollment in
 * DPS for the test hub, and an enabled identity in the test hub tagged `fleetbench = <tag>` (what the fleet
 * operation's registry query selects). Written into the emulator's state directly: 100,000 devices through the
 * SDKs would take longer than the measurements. Returns the device ids (= registration ids).
 */
export function seedFleet(
  emulator: RunningEmulator,
  tag: string,
  n: number,
  options: { dps?: boolean; hub?: 'test' | 'production' } = {},
): string[] {
  const hub = emulator.state.hubs.get(options.hub ?? 'test')!;
  const key = () => randomBytes(32).toString('base64');
  const width = String(n).length;
  const ids = Array.from({ length: n }, (_, i) => `${tag}-${String(i).padStart(width, '0')}`);
  for (const id of ids) {
    if (options.dps !== false) {
      putEnrollment(
        emulator.state,
        id,
        {
          registrationId: id,
          deviceId: id,
          attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key(), secondaryKey: key() } },
          iotHubs: [hub.hostName],
          allocationPolicy: 'hashed',
          provisioningStatus: 'enabled',
        },
        undefined,
      );
    }
    const device = createDevice(hub, {
      deviceId: id,
      status: 'enabled',
      authentication: { type: 'sas', symmetricKey: { primaryKey: key(), secondaryKey: key() } },
    } as Parameters<typeof createDevice>[1]);
    device.twin.tags = { fleetbench: tag };
  }
  return ids;
}

/** Drops every device, enrollment and registration: each measurement starts from an emulator of its own size. */
export function clearFleet(emulator: RunningEmulator): void {
  for (const hub of emulator.state.hubs.values()) hub.devices.clear();
  emulator.state.dps.enrollments.clear();
  emulator.state.dps.registrations.clear();
}

export interface HistorySizes {
  /** Every history walked: the operation's runs (continue-as-new) and its chunks. */
  histories: number;
  runs: number;
  maxEvents: number;
  maxEventsIn: string;
  totalEvents: number;
  /** Activity attempts past the first, as the chunks' histories record them (retries of throttled calls, …). */
  retriedActivities: number;
}

/** Walks a fleet operation's runs (back through continue-as-new) and its chunk children, counting events. */
export async function fleetHistorySizes(client: Client, workflowId: string, chunks: number): Promise<HistorySizes> {
  const sizes: HistorySizes = {
    histories: 0,
    runs: 0,
    maxEvents: 0,
    maxEventsIn: '',
    totalEvents: 0,
    retriedActivities: 0,
  };
  const count = async (id: string, runId?: string) => {
    const history = await client.workflow.getHandle(id, runId).fetchHistory();
    const events = history.events ?? [];
    sizes.histories += 1;
    sizes.totalEvents += events.length;
    if (events.length > sizes.maxEvents) {
      sizes.maxEvents = events.length;
      sizes.maxEventsIn = runId ? `${id} (run …${runId.slice(-8)})` : id;
    }
    for (const e of events) {
      if ((e.activityTaskStartedEventAttributes?.attempt ?? 1) > 1) sizes.retriedActivities += 1;
    }
    return events;
  };
  // The latest run first, then back through the runs it continued.
  let runId: string | undefined = (await client.workflow.getHandle(workflowId).describe()).runId;
  while (runId) {
    const events = await count(workflowId, runId);
    sizes.runs += 1;
    runId = events[0]?.workflowExecutionStartedEventAttributes?.continuedExecutionRunId || undefined;
  }
  for (let index = 0; index < chunks; index += 1) await count(fleetChunkWorkflowId(workflowId, index));
  return sizes;
}
