import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { createServer } from 'node:http';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { loadConfig, type Config } from '../common/config';
import { connectToTemporal, exitOnStartupFailure, listen } from '../common/startup';
import { QuotasConfig } from '../common/quotas';
import { createLogger, type Logger } from '../common/logger';
import { startTracing, tracingClientInterceptors } from '../common/tracing';
import { Lifecycle } from '../common/lifecycle';
import { describeCli, freePort, projectRoot, resolveTemporalCli, startDevServer } from '../common/temporal-server';
import { createAzureClients } from '../activities/azure-clients';
import { bundleWorkflows, createWorker } from '../worker/worker';
import { installRuntime } from '../worker/runtime';
import { configureAzureEndpoints } from '../worker/azure-endpoints';
import { createApp, hubHostNames } from '../api/app';
import { generateApiKey } from '../api/auth/api-keys';
import { eventGridEntraOptions } from '../api/auth/event-grid-entra';
import { apiSecurity, localKeyEntry } from '../api/security';
import { ensureSecretFile, LOCAL_KEY_FILES } from '../common/secret-file';
import { temporalConnectionOptions } from '../common/temporal-connection';
import { dataConverterWith, payloadCodecFrom } from '../common/payload-codec';
import { generateControlToken } from '../emulator/control/token';
import { installAzureEndpointRouting } from '../common/azure-routing';
import { startEmulator, type RunningEmulator } from '../emulator';
import { persistCa, readPersistedCa } from '../emulator/persistence/ca';
import { startRehearsal, type DevicePlacement, type Rehearsal } from './rehearsal';

/** Ranks of the parts in shutdown order: intake first, the Temporal server last. */
const RANK = { intake: 0, devices: 1, worker: 2, emulator: 3, temporal: 4 } as const;
/** `npm start` leaves nothing behind within 10 s of Ctrl-C: past this, whatever is left is killed. */
const FORCE_AFTER_MS = 8_000;
/** The worker's drain in `npm start` (its activities are retried by Temporal anyway). */
const WORKER_GRACE_SECONDS = 3;

/**
 * `npm start`: the embedded default in one process — a Temporal dev server with its Web UI (persisted under
 * DATA_DIR), the Azure emulator (unless Azure connection strings are configured), the worker and the API.
 * TEMPORAL_ADDRESS uses an existing Temporal server instead of starting one. Ctrl-C (or SIGTERM) stops it in any
 * phase: the API and the simulated devices first, then the worker drains, then the emulator, then the server.
 */
async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.LOG_LEVEL);
  const lifecycle = new Lifecycle(log, { forceAfterMs: FORCE_AFTER_MS });
  lifecycle.installSignalHandlers();
  // The worker's Temporal metrics on a loopback port, served with the API's own at /metrics.
  const temporalMetrics = config.TEMPORAL_METRICS_ADDRESS ?? `127.0.0.1:${await freePort()}`;
  installRuntime(config, log, temporalMetrics);
  const tracing = startTracing(config, 'iot-lifecycle');
  if (tracing) lifecycle.add('traces', RANK.temporal, () => tracing.shutdown());
  const dataDir = path.resolve(projectRoot, config.DATA_DIR);
  // The embedded default's own operator key and emulator control token, made once and kept under DATA_DIR (0600).
  const local = localSecrets(config, dataDir);

  try {
    // 1. Temporal: existing cluster, or the dev server with a persisted SQLite file and the Web UI.
    let temporalAddress = config.TEMPORAL_ADDRESS;
    let uiUrl: string | undefined;
    if (!temporalAddress) {
      const cli = resolveTemporalCli(config.TEMPORAL_CLI_PATH);
      log.info({ cli: describeCli(cli) }, 'starting Temporal dev server');
      const server = await startDevServer({
        cli,
        port: config.TEMPORAL_PORT,
        uiPort: config.TEMPORAL_UI_PORT,
        dbFilename: path.join(dataDir, 'temporal.sqlite'),
        namespace: config.TEMPORAL_NAMESPACE,
        signal: lifecycle.signal,
        stopTimeoutMs: 3_000,
      });
      lifecycle.onForce(() => server.kill());
      lifecycle.add('temporal server', RANK.temporal, () => server.stop());
      temporalAddress = server.address;
      uiUrl = server.uiUrl;
    }
    lifecycle.checkpoint();

    // 2. Azure: configured connection strings, or the embedded emulator.
    const useEmulator = config.EMULATOR ?? !(config.AZURE_DPS_CONNECTION_STRING || config.AZURE_HUB_CONNECTION_STRINGS);
    let azure = { dps: config.AZURE_DPS_CONNECTION_STRING, hubs: config.AZURE_HUB_CONNECTION_STRINGS };
    let emulator: RunningEmulator | undefined;
    if (useEmulator) {
      const running = await startEmbeddedEmulator(config, dataDir, local.controlToken);
      emulator = running;
      lifecycle.add('emulator', RANK.emulator, () => running.stop());
      installAzureEndpointRouting({ address: running.address, caPem: running.caPem });
      azure = { dps: running.connectionStrings.dps, hubs: running.connectionStrings.hubs };
    } else {
      configureAzureEndpoints(config);
    }
    lifecycle.checkpoint();

    // The emulator's quotas are off: the rehearsal plans fleet operations against S3-sized hubs unless told otherwise.
    const quotas =
      config.AZURE_QUOTAS ??
      (emulator ? QuotasConfig.parse({ hubs: { test: { tier: 'S3' }, production: { tier: 'S3' } } }) : undefined);

    // The embedded default makes up its own webhook secret; with real Azure, set EVENT_GRID_SECRET.
    const eventGridSecret = config.EVENT_GRID_SECRET ?? (emulator ? randomBytes(16).toString('hex') : undefined);

    // 3. Worker.
    const address = temporalAddress;
    // TLS, mTLS or an API key for an existing cluster (TEMPORAL_ADDRESS); the embedded dev server is plain loopback.
    const connectionOptions = config.TEMPORAL_ADDRESS ? temporalConnectionOptions(config, address) : { address };
    const nativeConnection = await connectToTemporal(address, () => NativeConnection.connect(connectionOptions));
    lifecycle.add('temporal worker connection', RANK.emulator, () => nativeConnection.close());
    // One client for the API and for activities that act on other workflows; closed after the worker drained.
    const codec = payloadCodecFrom(config);
    const connection = await connectToTemporal(address, () => Connection.connect(connectionOptions));
    lifecycle.add('temporal client connection', RANK.emulator, () => connection.close());
    const client = new Client({
      connection,
      namespace: config.TEMPORAL_NAMESPACE,
      dataConverter: dataConverterWith(codec),
      interceptors: tracingClientInterceptors(tracing),
    });
    const workflowBundle = await bundleWorkflows();
    lifecycle.checkpoint();
    const worker = await createWorker({
      connection: nativeConnection,
      namespace: config.TEMPORAL_NAMESPACE,
      taskQueue: config.TASK_QUEUE,
      workflowBundle,
      deps: {
        azure: createAzureClients({ dpsConnectionString: azure.dps, hubConnectionStrings: azure.hubs }),
        temporal: client,
        quotas,
      },
      shutdownGraceSeconds: Math.min(config.SHUTDOWN_GRACE_SECONDS, WORKER_GRACE_SECONDS),
      dataConverter: dataConverterWith(codec),
      tracing,
    });
    const workerDone = worker.run();
    lifecycle.add('worker', RANK.worker, async () => {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await workerDone;
    });
    lifecycle.checkpoint();

    // 4. API.
    const app = createApp({
      client,
      taskQueue: config.TASK_QUEUE,
      log,
      environments: hubHostNames(azure.hubs),
      eventGridSecret,
      eventGridEntra: eventGridEntraOptions(config),
      pageTokenSecret: config.API_PAGE_TOKEN_SECRET,
      quotas,
      fleetOperatorMaxDevices: config.FLEET_OPERATOR_MAX_DEVICES,
      security: apiSecurity(config, [
        localKeyEntry('local-operator', 'operator', local.operatorKey),
        localKeyEntry('local-admin', 'admin', local.adminKey),
      ]),
      codec,
      temporalMetricsUrl: `http://${temporalMetrics}/metrics`,
    });
    const api = await listen(createServer(app), config.API_PORT, config.API_HOST, { ...config });
    lifecycle.add('API', RANK.intake, async () => {
      const closed = new Promise<void>((resolve) => api.close(() => resolve()));
      api.closeAllConnections();
      await closed;
    });
    lifecycle.checkpoint();

    // 5. Rehearsal devices on the emulator, connected and ready to be promoted.
    let rehearsal: Rehearsal | undefined;
    if (emulator && config.REHEARSAL_DEVICES > 0) {
      rehearsal = await startRehearsal({
        emulator,
        apiUrl: `http://${config.API_HOST}:${config.API_PORT}`,
        eventGridSecret: eventGridSecret!,
        deviceIds: Array.from({ length: config.REHEARSAL_DEVICES }, (_, i) => `demo-device-${i + 1}`),
        log,
        signal: lifecycle.signal,
      });
      const devices = rehearsal;
      lifecycle.add('simulated devices', RANK.devices, () => devices.stop());
    }
    lifecycle.checkpoint();

    printUrls(log, config, temporalAddress, uiUrl, emulator, rehearsal ? await rehearsal.whereAreThey() : []);
  } catch (err) {
    if (lifecycle.isStopping) return; // Ctrl-C during start-up: the lifecycle stops what runs and exits.
    await lifecycle.stop();
    throw err;
  }
}

/**
 * The emulator keeps its CA and its state under DATA_DIR, so that a trusted ca.pem stays valid and devices and
 * enrollments (which parked or rolled-back promotions refer to) are still there after a restart.
 */
async function startEmbeddedEmulator(config: Config, dataDir: string, controlToken: string): Promise<RunningEmulator> {
  const dir = path.join(dataDir, 'emulator');
  const emulator = await startEmulator({
    controlToken,
    httpsPort: config.EMULATOR_HTTPS_PORT,
    mqttPort: config.EMULATOR_MQTT_PORT,
    controlPort: config.EMULATOR_CONTROL_PORT,
    ca: readPersistedCa(dir),
    stateFile: path.join(dir, 'state.json'),
  });
  persistCa(dir, emulator.pki);
  return emulator;
}

function printUrls(
  log: Logger,
  config: Config,
  temporal: string,
  uiUrl?: string,
  emulator?: RunningEmulator,
  devices: DevicePlacement[] = [],
) {
  const api = `http://${config.API_HOST}:${config.API_PORT}`;
  const lines = [
    '',
    'iot-lifecycle is running',
    `  API:          ${api}  (GET /readyz, /openapi.json)`,
    `  Temporal:     ${temporal}`,
    `  Temporal UI:  ${uiUrl ?? '(existing cluster: use its UI)'}`,
  ];
  if (emulator) {
    lines.push(
      `  Emulator:     Azure HTTPS at ${emulator.address}, MQTT at 127.0.0.1:${emulator.mqttPort}`,
      `  Emulator control API: ${emulator.controlUrl}  (-H "Authorization: Bearer ${config.EMULATOR_CONTROL_TOKEN ? '$EMULATOR_CONTROL_TOKEN' : `$(cat ${shownPath(config, CONTROL_TOKEN_FILE)})`}")`,
      `  Emulator CA:  ${path.join(config.DATA_DIR, 'emulator', 'ca.pem')}`,
      `  DPS id scope: ${emulator.idScope}`,
    );
  }
  if (devices.length) {
    // What is true now: a device promoted in an earlier run is on production, and its curl would be refused.
    lines.push('  Simulated devices:');
    for (const d of devices) {
      lines.push(`    ${d.registrationId}: ${d.environment ?? 'not provisioned'}${d.revoked ? ' (revoked)' : ''}`);
    }
    const live = devices.filter((d) => !d.revoked);
    const onTest = live.find((d) => d.environment === 'test');
    const onProduction = live.find((d) => d.environment === 'production');
    // The keys stay in their files: the curls read them, so they never appear in the terminal or a log.
    const keyOf = (file: string) => `-H "X-API-Key: $(cat ${shownPath(config, file)})"`;
    const key = keyOf(OPERATOR_KEY_FILE);
    const post = (path: string, body: string, status: string, with_ = key) => [
      `    curl -i -X POST ${api}${path} ${with_} -H 'content-type: application/json' \\`,
      `      -d '${body}'`,
      `    curl ${api}${status} ${key}`,
    ];
    const curl = (body: string, id: string) => post('/v1/promotions', body, `/v1/promotions/${id}`);
    if (onTest) {
      lines.push(
        '  Promote one to production:',
        ...curl(`{"registrationId":"${onTest.registrationId}"}`, onTest.registrationId),
      );
    }
    if (onProduction) {
      lines.push(
        `  ${onTest ? 'Or move' : 'Move'} one back to test:`,
        ...curl(
          `{"registrationId":"${onProduction.registrationId}","sourceEnvironment":"production","targetEnvironment":"test"}`,
          onProduction.registrationId,
        ),
      );
    }
    // Revocation: the last live device (the promote curl names the first), or reinstating one already revoked.
    const toRevoke = live.length > 1 ? live[live.length - 1] : undefined;
    const revoked = devices.find((d) => d.revoked);
    if (toRevoke) {
      const id = toRevoke.registrationId;
      lines.push(
        '  Revoke one (DPS refuses it, every hub disables it):',
        ...post('/v1/revocations', `{"registrationId":"${id}","reason":"rehearsal"}`, `/v1/revocations/devices/${id}`),
      );
    }
    if (revoked ?? toRevoke) {
      const id = (revoked ?? toRevoke)!.registrationId;
      lines.push(
        `  Reinstate ${revoked ? 'the revoked one' : 'it afterwards'} (an admin's, with the local admin key):`,
        ...post(
          '/v1/reinstatements',
          `{"registrationId":"${id}"}`,
          `/v1/reinstatements/devices/${id}`,
          keyOf(ADMIN_KEY_FILE),
        ),
      );
    }
  }
  lines.push('Press Ctrl-C to stop.', '');
  log.info({ temporal, uiUrl, controlUrl: emulator?.controlUrl }, 'started');
  console.log(lines.join('\n'));
}

/** Where `npm start` keeps its local secrets, under DATA_DIR. */
const OPERATOR_KEY_FILE = LOCAL_KEY_FILES.operator;
/** Reinstatement is an admin's: the rehearsal has a local admin key too, in its own file. */
const ADMIN_KEY_FILE = LOCAL_KEY_FILES.admin;
const CONTROL_TOKEN_FILE = path.join('emulator', 'control-token');

function localSecrets(
  config: Config,
  dataDir: string,
): { operatorKey: string; adminKey: string; controlToken: string } {
  return {
    operatorKey: ensureSecretFile(path.join(dataDir, OPERATOR_KEY_FILE), generateApiKey),
    adminKey: ensureSecretFile(path.join(dataDir, ADMIN_KEY_FILE), generateApiKey),
    controlToken:
      config.EMULATOR_CONTROL_TOKEN ?? ensureSecretFile(path.join(dataDir, CONTROL_TOKEN_FILE), generateControlToken),
  };
}

/** A file under DATA_DIR as the banner shows it: relative when DATA_DIR is, so the curls work from the project. */
function shownPath(config: Config, file: string): string {
  return path.join(config.DATA_DIR, file);
}

main().catch(
  exitOnStartupFailure('npm start', () => {
    try {
      return { ...loadConfig() };
    } catch {
      return {}; // the configuration itself is what failed: the error says which variable
    }
  }),
);
