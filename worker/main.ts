import { NativeConnection } from '@temporalio/worker';
import { loadConfig, type Config } from '../common/config';
import { createLogger } from '../common/logger';
import { temporalConnectionOptions } from '../common/temporal-connection';
import { dataConverterWith, payloadCodecFrom } from '../common/payload-codec';
import { connectToTemporal, exitOnStartupFailure } from '../common/startup';
import { createAzureClients } from '../activities/azure-clients';
import { bundleWorkflows, createWorker } from './worker';
import { installRuntime } from './runtime';
import { configureAzureEndpoints } from './azure-endpoints';

let config: Config | undefined;

/** Standalone worker against a running Temporal server (TEMPORAL_ADDRESS) and configured Azure. */
async function main(): Promise<void> {
  config = loadConfig();
  const log = createLogger(config.LOG_LEVEL, 'iot-lifecycle-worker');
  installRuntime(config, config.TEMPORAL_METRICS_ADDRESS);
  configureAzureEndpoints(config);
  const address = config.TEMPORAL_ADDRESS ?? `127.0.0.1:${config.TEMPORAL_PORT}`;
  const connection = await connectToTemporal(address, () =>
    NativeConnection.connect(temporalConnectionOptions(config!, address)),
  );
  const worker = await createWorker({
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    taskQueue: config.TASK_QUEUE,
    workflowBundle: await bundleWorkflows(),
    deps: {
      azure: createAzureClients({
        dpsConnectionString: config.AZURE_DPS_CONNECTION_STRING,
        hubConnectionStrings: config.AZURE_HUB_CONNECTION_STRINGS,
      }),
    },
    shutdownGraceSeconds: config.SHUTDOWN_GRACE_SECONDS,
    dataConverter: dataConverterWith(payloadCodecFrom(config)),
  });
  log.info({ address, taskQueue: config.TASK_QUEUE }, 'worker started');
  // Worker.run() installs SIGINT/SIGTERM handlers that start a graceful shutdown.
  await worker.run();
  await connection.close();
  log.info('worker stopped');
}

main().catch(exitOnStartupFailure('The worker', () => ({ ...config })));
