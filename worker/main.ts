import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { loadConfig, type Config } from '../common/config';
import { createLogger } from '../common/logger';
import { startTracing, tracingClientInterceptors } from '../common/tracing';
import { temporalConnectionOptions } from '../common/temporal-connection';
import { dataConverterWith, payloadCodecFrom } from '../common/payload-codec';
import { connectToTemporal, exitOnStartupFailure } from '../common/startup';
import { createAzureClients } from '../activities/azure-clients';
import { createWorker, loadWorkflowBundle } from './worker';
import { installRuntime } from './runtime';
import { configureAzureEndpoints } from './azure-endpoints';

let config: Config | undefined;

/** Standalone worker against a running Temporal server (TEMPORAL_ADDRESS) and configured Azure. */
async function main(): Promise<void> {
  config = loadConfig();
  const log = createLogger(config.LOG_LEVEL, 'iot-lifecycle-worker');
  const tracing = startTracing(config, 'iot-lifecycle-worker');
  installRuntime(config, log, config.TEMPORAL_METRICS_ADDRESS);
  configureAzureEndpoints(config);
  const address = config.TEMPORAL_ADDRESS ?? `127.0.0.1:${config.TEMPORAL_PORT}`;
  const connectionOptions = temporalConnectionOptions(config, address);
  const connection = await connectToTemporal(address, () => NativeConnection.connect(connectionOptions));
  const dataConverter = dataConverterWith(payloadCodecFrom(config));
  // Activities that act on other workflows (a revocation stopping promotions) use a client of their own.
  const clientConnection = await connectToTemporal(address, () => Connection.connect(connectionOptions));
  const client = new Client({
    connection: clientConnection,
    namespace: config.TEMPORAL_NAMESPACE,
    dataConverter,
    interceptors: tracingClientInterceptors(tracing),
  });
  const workflowBundle = await loadWorkflowBundle();
  const worker = await createWorker({
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    taskQueue: config.TASK_QUEUE,
    workflowBundle,
    deps: {
      azure: createAzureClients({
        dpsConnectionString: config.AZURE_DPS_CONNECTION_STRING,
        hubConnectionStrings: config.AZURE_HUB_CONNECTION_STRINGS,
      }),
      temporal: client,
      quotas: config.AZURE_QUOTAS,
    },
    shutdownGraceSeconds: config.SHUTDOWN_GRACE_SECONDS,
    dataConverter,
    tracing,
  });
  const bundle = 'codePath' in workflowBundle ? workflowBundle.codePath : 'bundled from the sources at start';
  log.info(
    { address, taskQueue: config.TASK_QUEUE, workflowBundle: bundle, traces: Boolean(tracing) },
    'worker started',
  );
  // Worker.run() installs SIGINT/SIGTERM handlers that start a graceful shutdown.
  await worker.run();
  await clientConnection.close();
  await connection.close();
  await tracing?.shutdown();
  log.info('worker stopped');
}

main().catch(exitOnStartupFailure('The worker', () => ({ ...config })));
