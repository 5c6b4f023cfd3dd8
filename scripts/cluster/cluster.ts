import { randomBytes } from 'node:crypto';
import { API_KEY_HEADER, generateApiKey, hashApiKey } from '../../api/auth/api-keys';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { setUpTemporal } from '../../common/temporal-setup';
import {
  setUpSchema,
  startPostgres,
  stopPostgres,
  temporalConnectionCount,
  terminateTemporalConnections,
} from './postgres';
import { portListening, reserveEphemeralPorts } from './ports';
import { ProcessTable, type ManagedProcess } from './processes';
import {
  frontendAddress,
  projectRoot,
  TEMPORAL_SERVICES,
  type ClusterSettings,
  type TemporalService,
} from './settings';
import { ensureTemporalBinaries, type TemporalBinaries } from './temporal-binary';

/**
 * The production topology on one machine, as separate processes: PostgreSQL, the Temporal server (one process per
 * service, or all-in-one), the emulator standing in for Azure, N workers and the API. `npm run cluster` and the
 * cluster drills (test/cluster) both drive it through this class; the drills also crash and restart its parts.
 */
export interface EmulatorEndpoints {
  /** Azure HTTPS (hubs and DPS) and MQTT addresses. */
  address: string;
  mqttAddress: string;
  controlUrl: string;
  caFile: string;
  caPem: string;
  idScope: string;
  connectionStrings: { dps: string; hubs: Record<string, string> };
  hosts: Record<string, string>;
}

type Say = (line: string) => void;

const TEMPORAL_CONFIG = path.join(__dirname, 'temporal.yaml');
const DYNAMIC_CONFIG = path.join(__dirname, 'dynamicconfig.yaml');

export class LocalCluster {
  readonly processes: ProcessTable;
  readonly temporalAddress: string;
  readonly apiUrl: string;
  readonly eventGridSecret = randomBytes(16).toString('hex');
  /** The emulator's control API token and an admin API key, made for this cluster's run. */
  readonly controlToken = randomBytes(24).toString('base64url');
  readonly apiKey = generateApiKey();
  private binaries?: TemporalBinaries;
  private connectionToTemporal?: Connection;
  private emulatorEndpoints?: EmulatorEndpoints;
  private readonly temporal = new Map<string, ManagedProcess>();
  private readonly workerProcesses: ManagedProcess[] = [];
  private api?: ManagedProcess;
  private emulatorProcess?: ManagedProcess;
  private readonly extra: ManagedProcess[] = [];
  private startedPostgres = false;
  private stopping = false;
  private workerCount = 0;
  private readonly exitGuard = () => this.killAllSync();
  private readonly say: Say;

  constructor(
    readonly settings: ClusterSettings,
    say: Say = (line) => console.log(`[cluster] ${line}`),
  ) {
    const since = Date.now();
    this.say = (line) => say(`+${((Date.now() - since) / 1000).toFixed(1)}s ${line}`);
    this.processes = new ProcessTable(settings.dataDir);
    this.temporalAddress = frontendAddress(settings);
    this.apiUrl = `http://127.0.0.1:${settings.apiPort}`;
  }

  get connection(): Connection {
    if (!this.connectionToTemporal) throw new Error('the cluster is not started');
    return this.connectionToTemporal;
  }

  get emulator(): EmulatorEndpoints {
    if (!this.emulatorEndpoints) throw new Error('the emulator is not started');
    return this.emulatorEndpoints;
  }

  get workers(): ManagedProcess[] {
    return this.workerProcesses.filter((w) => w.isRunning());
  }

  /** Brings everything up in dependency order; on any failure (or stop() meanwhile) stops what it started. */
  async start(): Promise<void> {
    const started = Date.now();
    process.once('exit', this.exitGuard);
    try {
      this.processes.reapLeftovers(this.say);
      await this.checkPortsFree();
      this.checkBuild();
      this.binaries = await ensureTemporalBinaries(this.settings.temporal.version, this.say);
      this.step();

      // The cluster is this topology's own, so stop() stops it, also when an earlier run left it running.
      this.startedPostgres = true;
      const { maxConnections } = startPostgres(this.settings.postgres, this.say);
      setUpSchema(this.settings.postgres, this.binaries, this.say);
      this.say(
        `PostgreSQL ${this.settings.postgres.version}/${this.settings.postgres.cluster} ready on 127.0.0.1:` +
          `${this.settings.postgres.port} (max_connections ${maxConnections})`,
      );
      this.step();

      const services = this.settings.topology === 'all-in-one' ? [undefined] : [...TEMPORAL_SERVICES];
      // One after the other: on an empty database the first one writes the cluster metadata, and processes
      // starting together race to insert it (the loser exits with a duplicate key error).
      for (const service of services) {
        this.startTemporalProcess(service);
        await this.waitForTemporalProcess(service);
      }
      this.connectionToTemporal = await Connection.connect({ address: this.temporalAddress });
      const setup = await setUpTemporal(this.connection, { namespace: this.settings.temporal.namespace });
      this.say(
        `Temporal ${this.settings.temporal.version} serving on ${this.temporalAddress} ` +
          `(${this.settings.topology === 'all-in-one' ? 'one process' : 'one process per service'}); namespace ` +
          `${this.settings.temporal.namespace} ${setup.namespaceCreated ? 'created' : 'kept'}, search attributes ` +
          `${setup.searchAttributesAdded.length ? `added: ${setup.searchAttributesAdded.join(', ')}` : 'present'}`,
      );
      this.step();

      await this.startEmulator();
      this.step();
      await Promise.all(Array.from({ length: this.settings.workers }, () => this.startWorker()));
      this.say(`${this.settings.workers} workers polling ${this.settings.taskQueue}`);
      this.step();
      await this.startApi();
      await this.subscribeWebhook();
      await this.checkEndToEnd();
      this.say(`API ready; a connectivity workflow went API → Temporal → worker → emulator`);
      this.say(`up in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Stops in reverse dependency order, each part given its grace time; PostgreSQL last. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const grace = this.settings.shutdownGraceSeconds * 1000 + 5_000;
    await Promise.all([...this.extra, ...(this.api ? [this.api] : [])].map((p) => p.stop(5_000)));
    await Promise.all(this.workerProcesses.map((w) => w.stop(grace)));
    await this.emulatorProcess?.stop(5_000);
    await this.connectionToTemporal?.close().catch(() => undefined);
    // The internal worker and the frontend first (clients see Unavailable at once), history last.
    for (const service of ['worker', 'frontend', 'matching', 'history', undefined] as const) {
      await this.temporal.get(temporalProcessName(service))?.stop(15_000);
    }
    // Whatever a start interrupted by this stop spawned meanwhile.
    await Promise.all(this.processes.running().map((p) => p.stop(5_000)));
    if (this.startedPostgres) stopPostgres(this.settings.postgres);
    const left = this.processes.running();
    process.removeListener('exit', this.exitGuard);
    if (left.length) throw new Error(`still running after stop: ${left.map((p) => `${p.name} (${p.pid})`).join(', ')}`);
  }

  /** A second Ctrl-C: no more grace. */
  killAllSync(): void {
    this.processes.killAllSync();
    if (this.startedPostgres) {
      try {
        stopPostgres(this.settings.postgres, 'immediate');
      } catch {
        // exiting anyway
      }
    }
  }

  // ---- parts, also used by the drills ----

  /** Starts one more worker process (from `distDir`, e.g. a newer build) and waits until it polls. */
  async startWorker(options: { distDir?: string; label?: string } = {}): Promise<ManagedProcess> {
    this.step();
    const name = `${options.label ?? 'worker'}-${++this.workerCount}`;
    const worker = this.processes.spawn({
      name,
      ...this.nodeEntry('worker', options.distDir),
      env: this.appEnv(),
    });
    this.workerProcesses.push(worker);
    await this.waitForPoller(worker);
    return worker;
  }

  /**
   * kill -9 of a Temporal service process (`history`, …), or of the one server process in all-in-one mode,
   * then waits until it has exited.
   */
  async killTemporal(service: TemporalService): Promise<string> {
    const name = temporalProcessName(this.settings.topology === 'all-in-one' ? undefined : service);
    await this.temporal.get(name)?.kill();
    return name;
  }

  /** Starts a killed Temporal process again (same ports, same database) and waits until it serves. */
  async restartTemporal(service: TemporalService): Promise<void> {
    const target = this.settings.topology === 'all-in-one' ? undefined : service;
    this.step();
    this.startTemporalProcess(target);
    await this.waitForTemporalProcess(target);
  }

  terminatePostgresConnections(): number {
    return terminateTemporalConnections(this.settings.postgres);
  }

  postgresConnections(): number {
    return temporalConnectionCount(this.settings.postgres);
  }

  /** A process the caller starts alongside (e.g. `npm run cluster`'s simulated devices), stopped with the rest. */
  spawnAlongside(name: string, entry: string, args: string[]): ManagedProcess {
    this.step();
    const { command, args: entryArgs, cwd } = this.nodeEntry(entry);
    const p = this.processes.spawn({ name, command, args: [...entryArgs, ...args], cwd, env: baseEnv() });
    this.extra.push(p);
    return p;
  }

  // ---- internals ----

  /** Between start-up steps and before every spawn: nothing new once stop() has begun. */
  private step(): void {
    if (this.stopping) throw new Error('the cluster is stopping');
  }

  private async checkPortsFree(): Promise<void> {
    const { ports } = this.settings.temporal;
    const listening = [
      ...Object.values(ports).filter((p) => p !== ports.metrics),
      ...[0, 1, 2, 3].map((i) => ports.metrics + i),
      this.settings.apiPort,
      ...Object.values(this.settings.emulator),
    ];
    const busy: number[] = [];
    for (const port of listening) if (await portListening(port)) busy.push(port);
    if (busy.length) {
      throw new Error(
        `ports in use on 127.0.0.1: ${busy.join(', ')} (another npm run cluster or a cluster drill running? ` +
          'stop it first)',
      );
    }
    const reserved = reserveEphemeralPorts([this.settings.apiPort, ...Object.values(this.settings.emulator)]);
    if (reserved.length) this.say(`reserved ports ${reserved.join(', ')} (net.ipv4.ip_local_reserved_ports)`);
  }

  private checkBuild(): void {
    if (this.settings.build !== 'dist') return;
    if (!existsSync(path.join(this.settings.distDir, 'workflow-bundle.js'))) {
      throw new Error(`no compiled build in ${this.settings.distDir}: run npm run build`);
    }
  }

  /** `node <distDir>/<entry>.js` (an explicit `distDir` is a build to deploy: always compiled), or tsx on the source. */
  private nodeEntry(entry: string, distDir?: string) {
    const file = entry.includes('/') ? entry : `${entry}/main`;
    const args =
      distDir || this.settings.build === 'dist'
        ? [path.join(distDir ?? this.settings.distDir, `${file}.js`)]
        : ['--import', 'tsx', path.join(projectRoot, `${file}.ts`)];
    return { command: process.execPath, args, cwd: projectRoot };
  }

  private startTemporalProcess(service: TemporalService | undefined): ManagedProcess {
    const { temporal, postgres } = this.settings;
    const metricsOffset = service ? TEMPORAL_SERVICES.indexOf(service) : 0;
    const env = {
      ...baseEnv(),
      TEMPORAL_LOG_LEVEL: temporal.logLevel,
      TEMPORAL_HISTORY_SHARDS: String(temporal.historyShards),
      TEMPORAL_DB: postgres.database,
      TEMPORAL_VISIBILITY_DB: postgres.visibilityDatabase,
      TEMPORAL_DB_ADDRESS: `127.0.0.1:${postgres.port}`,
      TEMPORAL_DB_USER: postgres.user,
      TEMPORAL_DB_PASSWORD: postgres.password,
      TEMPORAL_DB_MAX_CONNS: String(temporal.maxConns),
      TEMPORAL_METRICS_PORT: String(temporal.ports.metrics + metricsOffset),
      TEMPORAL_FRONTEND_PORT: String(temporal.ports.frontend),
      TEMPORAL_FRONTEND_MEMBERSHIP_PORT: String(temporal.ports.frontendMembership),
      TEMPORAL_FRONTEND_HTTP_PORT: String(temporal.ports.frontendHttp),
      TEMPORAL_HISTORY_PORT: String(temporal.ports.history),
      TEMPORAL_HISTORY_MEMBERSHIP_PORT: String(temporal.ports.historyMembership),
      TEMPORAL_MATCHING_PORT: String(temporal.ports.matching),
      TEMPORAL_MATCHING_MEMBERSHIP_PORT: String(temporal.ports.matchingMembership),
      TEMPORAL_WORKER_PORT: String(temporal.ports.worker),
      TEMPORAL_WORKER_MEMBERSHIP_PORT: String(temporal.ports.workerMembership),
      TEMPORAL_DYNAMIC_CONFIG_FILE: DYNAMIC_CONFIG,
    };
    const args = [
      '--config-file',
      TEMPORAL_CONFIG,
      '--allow-no-auth',
      'start',
      ...(service ? ['--service', service] : []),
    ];
    const name = temporalProcessName(service);
    const p = this.processes.spawn({ name, command: this.binaries!.server, args, env, cwd: this.settings.dataDir });
    this.temporal.set(name, p);
    return p;
  }

  private async waitForTemporalProcess(service: TemporalService | undefined): Promise<void> {
    const name = temporalProcessName(service);
    const p = this.temporal.get(name)!;
    const port = this.settings.temporal.ports[service ?? 'frontend'];
    await waitFor(`${name} to listen on ${port}`, 60_000, p, () => portListening(port));
    if (service === undefined || service === 'frontend') {
      await waitFor(`the frontend to serve`, 60_000, p, async () => {
        const connection = await Connection.connect({ address: this.temporalAddress, connectTimeout: 1_000 });
        try {
          const { status } = await connection.healthService.check({});
          return status === 1; // SERVING
        } finally {
          await connection.close();
        }
      });
    }
  }

  private async startEmulator(): Promise<void> {
    const { httpsPort, mqttPort, controlPort } = this.settings.emulator;
    const dir = path.join(this.settings.dataDir, 'emulator');
    const { command, args, cwd } = this.nodeEntry('emulator');
    const flags = [
      '--https-port',
      httpsPort,
      '--mqtt-port',
      mqttPort,
      '--control-port',
      controlPort,
      '--data-dir',
      dir,
    ];
    if (this.settings.postgres.fresh) flags.push('--no-persist');
    const controlUrl = `http://127.0.0.1:${controlPort}`;
    await this.startListening(
      () => {
        const p = this.processes.spawn({
          name: 'emulator',
          command,
          args: [...args, ...flags.map(String)],
          cwd,
          env: { ...baseEnv(), EMULATOR_CONTROL_TOKEN: this.controlToken },
        });
        this.emulatorProcess = p;
        return p;
      },
      (p) => waitFor('the emulator', 30_000, p, async () => (await fetch(`${controlUrl}/health`)).ok),
    );

    const dps = (await getJson(`${controlUrl}/dps`, this.controlToken)) as ControlDps;
    const hubs = (await getJson(`${controlUrl}/hubs`, this.controlToken)) as ControlHub[];
    const owner = (policies: ControlPolicy[], keyName: string) => {
      const policy = policies.find((x) => x.keyName === keyName);
      if (!policy) throw new Error(`emulator has no ${keyName} policy`);
      return policy.connectionString;
    };
    const caFile = path.join(dir, 'ca.pem');
    this.emulatorEndpoints = {
      address: `127.0.0.1:${httpsPort}`,
      mqttAddress: `127.0.0.1:${mqttPort}`,
      controlUrl,
      caFile,
      caPem: readFileSync(caFile, 'utf8'),
      idScope: dps.idScope,
      connectionStrings: {
        dps: owner(dps.policies, 'provisioningserviceowner'),
        hubs: Object.fromEntries(hubs.map((h) => [h.name, owner(h.policies, 'iothubowner')])),
      },
      hosts: Object.fromEntries(hubs.map((h) => [h.name, h.hostName])),
    };
    this.say(
      `emulator: Azure HTTPS ${this.emulator.address}, MQTT ${this.emulator.mqttAddress}, control ${controlUrl}`,
    );
  }

  /** The configuration every worker and the API get: the project's own variables, nothing from this shell. */
  private appEnv(): NodeJS.ProcessEnv {
    return {
      ...baseEnv(),
      TEMPORAL_ADDRESS: this.temporalAddress,
      TEMPORAL_NAMESPACE: this.settings.temporal.namespace,
      TASK_QUEUE: this.settings.taskQueue,
      LOG_LEVEL: 'info',
      DATA_DIR: this.settings.dataDir,
      SHUTDOWN_GRACE_SECONDS: String(this.settings.shutdownGraceSeconds),
      AZURE_DPS_CONNECTION_STRING: this.emulator.connectionStrings.dps,
      AZURE_HUB_CONNECTION_STRINGS: JSON.stringify(this.emulator.connectionStrings.hubs),
      AZURE_ENDPOINT_ADDRESS: this.emulator.address,
      AZURE_CA_FILE: this.emulator.caFile,
      EVENT_GRID_SECRET: this.eventGridSecret,
      API_KEYS: JSON.stringify([
        { id: 'cluster', name: 'npm run cluster', role: 'admin', sha256: hashApiKey(this.apiKey) },
      ]),
      API_HOST: '127.0.0.1',
      API_PORT: String(this.settings.apiPort),
    };
  }

  /**
   * A worker is ready when the server lists it (its default identity, pid@host) among the task queue's pollers.
   * A poll lands on one of the queue's partitions (4 by default: the root and /_sys/<queue>/1…3), and each
   * partition lists only its own pollers, so all of them are asked.
   */
  private async waitForPoller(worker: ManagedProcess): Promise<void> {
    const identity = `${worker.pid}@${os.hostname()}`;
    const queue = this.settings.taskQueue;
    const partitions = [queue, ...[1, 2, 3].map((i) => `/_sys/${queue}/${i}`)];
    await waitFor(`${worker.name} to poll ${queue}`, 60_000, worker, async () => {
      for (const name of partitions) {
        const { pollers } = await this.connection.withDeadline(Date.now() + 3_000, () =>
          this.connection.workflowService.describeTaskQueue({
            namespace: this.settings.temporal.namespace,
            taskQueue: { name },
          }),
        );
        if ((pollers ?? []).some((p) => p.identity === identity)) return true;
      }
      return false;
    });
  }

  private async startApi(): Promise<void> {
    await this.startListening(
      () => (this.api = this.processes.spawn({ name: 'api', ...this.nodeEntry('api'), env: this.appEnv() })),
      (p) => waitFor('the API', 30_000, p, async () => (await fetch(`${this.apiUrl}/readyz`)).ok),
    );
  }

  /**
   * Starts a process that listens on a port of the ephemeral range (see ports.ts). Where the ports could not be
   * reserved, or a connection took one before they were, the process exits with EADDRINUSE: it is started again
   * until the port is free (a TIME_WAIT remnant lasts 60 s).
   */
  private async startListening(
    spawn: () => ManagedProcess,
    ready: (p: ManagedProcess) => Promise<void>,
  ): Promise<void> {
    const deadline = Date.now() + 75_000;
    for (;;) {
      this.step();
      const p = spawn();
      try {
        return await ready(p);
      } catch (err) {
        const busy = !p.isRunning() && String((err as Error).message).includes('EADDRINUSE');
        if (!busy || Date.now() > deadline) throw err;
        this.say(`${p.name}: its port is held by another socket (EADDRINUSE); starting it again`);
        await new Promise((resolve) => setTimeout(resolve, 2_000));
      }
    }
  }

  /** Event Grid of the production hub → the API's webhook, as on Azure (promotions finish without it, by polling). */
  private async subscribeWebhook(): Promise<void> {
    const url = `${this.emulator.controlUrl}/eventgrid/hubs/production/subscriptions/iot-lifecycle`;
    // A kept emulator state holds the last run's subscription, with its secret: replace it.
    await this.controlFetch(url, { method: 'DELETE' });
    const res = await this.controlFetch(url, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        endpointUrl: `${this.apiUrl}/v1/eventgrid?code=${this.eventGridSecret}`,
        includedEventTypes: ['Microsoft.Devices.DeviceConnected', 'Microsoft.Devices.DeviceDisconnected'],
      }),
    });
    if (!res.ok) throw new Error(`Event Grid subscription: ${res.status} ${await res.text()}`);
  }

  /** A call to the emulator's control API (a full URL, or a path on it) with the cluster's control token. */
  controlFetch(url: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${this.controlToken}`);
    return fetch(url.startsWith('/') ? `${this.emulator.controlUrl}${url}` : url, { ...init, headers });
  }

  /** A call to the API (a path) with the cluster's admin API key. */
  apiFetch(apiPath: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    headers.set(API_KEY_HEADER, this.apiKey);
    return fetch(`${this.apiUrl}${apiPath}`, { ...init, headers });
  }

  /** API → Temporal (all services) → a worker → the emulator, through the connectivity workflow. */
  private async checkEndToEnd(): Promise<void> {
    const res = await this.apiFetch('/v1/diagnostics/connectivity', { method: 'POST' });
    const report = (await res.json()) as { allReachable?: boolean };
    if (!res.ok || !report.allReachable) {
      throw new Error(`end-to-end check failed: ${res.status} ${JSON.stringify(report)}`);
    }
  }
}

function temporalProcessName(service: TemporalService | undefined): string {
  return service ? `temporal-${service}` : 'temporal';
}

interface ControlPolicy {
  keyName: string;
  connectionString: string;
}
interface ControlDps {
  idScope: string;
  policies: ControlPolicy[];
}
interface ControlHub {
  name: string;
  hostName: string;
  policies: ControlPolicy[];
}

/** What every child gets from this process's environment: enough to run, none of the shell's project settings. */
function baseEnv(): NodeJS.ProcessEnv {
  const keep = ['PATH', 'HOME', 'LANG', 'TZ', 'NODE_EXTRA_CA_CERTS', 'SSL_CERT_FILE'];
  return Object.fromEntries(keep.filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]]));
}

async function getJson(url: string, controlToken: string): Promise<unknown> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${controlToken}` } });
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
  return res.json();
}

/** Polls `check` until true; fails at once, with the end of the process's log, if the process exits. */
export async function waitFor(
  what: string,
  timeoutMs: number,
  process: ManagedProcess | undefined,
  check: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    if (process && !process.isRunning()) {
      throw new Error(
        `${process.name} exited while waiting for ${what}; end of ${process.logFile}:\n${tail(process.logFile)}`,
      );
    }
    try {
      // One slow answer must not outlast the deadline.
      let timer: NodeJS.Timeout | undefined;
      const answer = await Promise.race([
        check(),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('no answer within 5 s')), 5_000))),
      ]).finally(() => clearTimeout(timer));
      if (answer) return;
    } catch (err) {
      lastError = err;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const detail = process ? `\nend of ${process.logFile}:\n${tail(process.logFile)}` : '';
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${String(lastError ?? 'no answer')})${detail}`);
}

function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
