import { Client, Connection } from '@temporalio/client';
import { loadConfig, ConfigError } from '../common/config';
import { createLogger } from '../common/logger';
import { createApp, hubHostNames } from './app';

/** Standalone API process against a running Temporal server. */
async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.LOG_LEVEL, 'iot-lifecycle-api');
  const address = config.TEMPORAL_ADDRESS ?? `127.0.0.1:${config.TEMPORAL_PORT}`;
  // lazy: the API starts (and /readyz reports 503) even while Temporal is down.
  const connection = Connection.lazy({ address });
  const client = new Client({ connection, namespace: config.TEMPORAL_NAMESPACE });
  const app = createApp({
    client,
    taskQueue: config.TASK_QUEUE,
    log,
    environments: hubHostNames(config.AZURE_HUB_CONNECTION_STRINGS),
    eventGridSecret: config.EVENT_GRID_SECRET,
  });
  const server = app.listen(config.API_PORT, config.API_HOST, () => {
    log.info({ url: `http://${config.API_HOST}:${config.API_PORT}` }, 'API listening');
  });
  const stop = () => {
    log.info('API stopping');
    server.close(() => void connection.close().finally(() => process.exit(0)));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((err) => {
  console.error(err instanceof ConfigError ? err.message : err);
  process.exit(1);
});
