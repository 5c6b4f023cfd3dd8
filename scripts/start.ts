import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Server } from 'node:http';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { ConfigError, loadConfig, type Config } from '../common/config';
import { createLogger, type Logger } from '../common/logger';
import { stopOnSignals } from '../common/shutdown';
import { describeCli, projectRoot, resolveTemporalCli, startDevServer } from '../common/temporal-server';
import { createAzureClients } from '../activities/azure-clients';
import { bundleWorkflows, createWorker } from '../worker/worker';
import { configureAzureEndpoints } from '../worker/azure-endpoints';
import { createApp, hubHostNames } from '../api/app';
import { installAzureEndpointRouting } from '../common/azure-routing';
import { startEmulator, type RunningEmulator } from '../emulator';
import { persistCa, readPersistedCa } from '../emulator/persistence/ca';
import { startRehearsal } from './rehearsal';

/**
 * `npm start`: the embedded default in one process — a Temporal dev server with its Web UI (persisted under
 * DATA_DIR), the Azure emulator (unless Azure connection strings are configured), the worker and the API.
 * TEMPORAL_ADDRESS uses an existing Temporal server instead of starting one.
 */
async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.LOG_LEVEL);
  Runtime.install({
    logger: new DefaultLogger(config.LOG_LEVEL === 'debug' || config.LOG_LEVEL === 'trace' ? 'INFO' : 'WARN'),
  });
  const dataDir = path.resolve(projectRoot, config.DATA_DIR);
  const stops: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const stop of stops.reverse()) await stop().catch((err) => log.error({ err }, 'error while stopping'));
  };

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
      });
      stops.push(() => server.stop());
      temporalAddress = server.address;
      uiUrl = server.uiUrl;
    }

    // 2. Azure: configured connection strings, or the embedded emulator.
    const useEmulator = config.EMULATOR ?? !(config.AZURE_DPS_CONNECTION_STRING || config.AZURE_HUB_CONNECTION_STRINGS);
    let azure = { dps: config.AZURE_DPS_CONNECTION_STRING, hubs: config.AZURE_HUB_CONNECTION_STRINGS };
    let emulator: RunningEmulator | undefined;
    if (useEmulator) {
      emulator = await startEmbeddedEmulator(config, dataDir);
      stops.push(() => emulator!.stop());
      installAzureEndpointRouting({ address: emulator.address, caPem: emulator.caPem });
      azure = { dps: emulator.connectionStrings.dps, hubs: emulator.connectionStrings.hubs };
    } else {
      configureAzureEndpoints(config);
    }

    // The embedded default makes up its own webhook secret; with real Azure, set EVENT_GRID_SECRET.
    const eventGridSecret = config.EVENT_GRID_SECRET ?? (emulator ? randomBytes(16).toString('hex') : undefined);

    // 3. Worker.
    const nativeConnection = await NativeConnection.connect({ address: temporalAddress });
    const worker = await createWorker({
      connection: nativeConnection,
      namespace: config.TEMPORAL_NAMESPACE,
      taskQueue: config.TASK_QUEUE,
      workflowBundle: await bundleWorkflows(),
      deps: { azure: createAzureClients({ dpsConnectionString: azure.dps, hubConnectionStrings: azure.hubs }) },
      shutdownGraceSeconds: config.SHUTDOWN_GRACE_SECONDS,
    });
    const workerDone = worker.run();
    stops.push(async () => {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await workerDone;
      await nativeConnection.close();
    });

    // 4. API.
    const connection = await Connection.connect({ address: temporalAddress });
    const client = new Client({ connection, namespace: config.TEMPORAL_NAMESPACE });
    const api = await listen(
      createApp({
        client,
        taskQueue: config.TASK_QUEUE,
        log,
        environments: hubHostNames(azure.hubs),
        eventGridSecret,
      }),
      config,
    );
    stops.push(async () => {
      await new Promise<void>((resolve) => api.close(() => resolve()));
      await connection.close();
    });

    // 5. Rehearsal devices on the emulator, connected to the test hub and ready to be promoted.
    let rehearsalIds: string[] = [];
    if (emulator && config.REHEARSAL_DEVICES > 0) {
      rehearsalIds = Array.from({ length: config.REHEARSAL_DEVICES }, (_, i) => `demo-device-${i + 1}`);
      const rehearsal = await startRehearsal({
        emulator,
        apiUrl: `http://${config.API_HOST}:${config.API_PORT}`,
        eventGridSecret: eventGridSecret!,
        deviceIds: rehearsalIds,
        log,
      });
      stops.push(() => rehearsal.stop());
    }

    printUrls(log, config, temporalAddress, uiUrl, emulator, rehearsalIds);
  } catch (err) {
    await stopAll();
    throw err;
  }

  stopOnSignals(async (signal) => {
    log.info({ signal }, 'stopping');
    await stopAll();
  });
}

/**
 * The emulator keeps its CA and its state under DATA_DIR, so that a trusted ca.pem stays valid and devices and
 * enrollments (which parked or rolled-back promotions refer to) are still there after a restart.
 */
async function startEmbeddedEmulator(config: Config, dataDir: string): Promise<RunningEmulator> {
  const dir = path.join(dataDir, 'emulator');
  const emulator = await startEmulator({
    httpsPort: config.EMULATOR_HTTPS_PORT,
    mqttPort: config.EMULATOR_MQTT_PORT,
    controlPort: config.EMULATOR_CONTROL_PORT,
    ca: readPersistedCa(dir),
    stateFile: path.join(dir, 'state.json'),
  });
  persistCa(dir, emulator.pki);
  return emulator;
}

function listen(app: ReturnType<typeof createApp>, config: Config): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = app.listen(config.API_PORT, config.API_HOST, () => resolve(server));
    server.once('error', reject);
  });
}

function printUrls(
  log: Logger,
  config: Config,
  temporal: string,
  uiUrl?: string,
  emulator?: RunningEmulator,
  rehearsalIds: string[] = [],
) {
  const lines = [
    '',
    'iot-lifecycle is running',
    `  API:          http://${config.API_HOST}:${config.API_PORT}  (GET /readyz, /openapi.json)`,
    `  Temporal:     ${temporal}`,
    `  Temporal UI:  ${uiUrl ?? '(existing cluster: use its UI)'}`,
  ];
  if (emulator) {
    lines.push(
      `  Emulator:     Azure HTTPS at ${emulator.address}, MQTT at 127.0.0.1:${emulator.mqttPort}`,
      `  Emulator control API: ${emulator.controlUrl}`,
      `  Emulator CA:  ${path.join(config.DATA_DIR, 'emulator', 'ca.pem')}`,
      `  DPS id scope: ${emulator.idScope}`,
    );
  }
  if (rehearsalIds.length) {
    lines.push(
      `  Simulated devices on the test hub: ${rehearsalIds.join(', ')}`,
      '  Promote one to production:',
      `    curl -i -X POST http://${config.API_HOST}:${config.API_PORT}/v1/promotions -H 'content-type: application/json' \\`,
      `      -d '{"registrationId":"${rehearsalIds[0]}"}'`,
      `    curl http://${config.API_HOST}:${config.API_PORT}/v1/promotions/${rehearsalIds[0]}`,
    );
  }
  lines.push('Press Ctrl-C to stop.', '');
  log.info({ temporal, uiUrl, controlUrl: emulator?.controlUrl }, 'started');
  console.log(lines.join('\n'));
}

main().catch((err) => {
  console.error(err instanceof ConfigError ? err.message : err);
  process.exit(1);
});
