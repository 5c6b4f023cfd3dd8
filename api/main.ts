import { createServer } from 'node:http';
import { Client, Connection } from '@temporalio/client';
import { loadConfig, type Config } from '../common/config';
import { createLogger } from '../common/logger';
import { startTracing, tracingClientInterceptors } from '../common/tracing';
import { temporalConnectionOptions } from '../common/temporal-connection';
import { dataConverterWith, payloadCodecFrom } from '../common/payload-codec';
import { exitOnStartupFailure, listen } from '../common/startup';
import { createApp, hubHostNames } from './app';
import { eventGridEntraOptions } from './auth/event-grid-entra';
import { apiSecurity } from './security';

let config: Config | undefined;

/** Standalone API process against a running Temporal server. */
async function main(): Promise<void> {
  config = loadConfig();
  const log = createLogger(config.LOG_LEVEL, 'iot-lifecycle-api');
  const tracing = startTracing(config, 'iot-lifecycle-api');
  const address = config.TEMPORAL_ADDRESS ?? `127.0.0.1:${config.TEMPORAL_PORT}`;
  // lazy: the API starts (and /readyz and Temporal routes answer 503) even while Temporal is down.
  const connection = Connection.lazy(temporalConnectionOptions(config, address));
  const codec = payloadCodecFrom(config);
  const client = new Client({
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    dataConverter: dataConverterWith(codec),
    interceptors: tracingClientInterceptors(tracing),
  });
  const security = apiSecurity(config);
  if (!security.auth?.apiKeys?.length && !security.auth?.oidc) {
    log.warn('no API_KEYS, API_KEYS_FILE or API_OIDC_ISSUER: every route but health, readiness and docs answers 401');
  }
  const app = createApp({
    client,
    taskQueue: config.TASK_QUEUE,
    log,
    environments: hubHostNames(config.AZURE_HUB_CONNECTION_STRINGS),
    eventGridSecret: config.EVENT_GRID_SECRET,
    eventGridEntra: eventGridEntraOptions(config),
    pageTokenSecret: config.API_PAGE_TOKEN_SECRET,
    quotas: config.AZURE_QUOTAS,
    fleetOperatorMaxDevices: config.FLEET_OPERATOR_MAX_DEVICES,
    security,
    codec,
  });
  const server = await listen(createServer(app), config.API_PORT, config.API_HOST, { ...config });
  log.info(
    { url: `http://${config.API_HOST}:${config.API_PORT}`, temporal: address, traces: Boolean(tracing) },
    'API listening',
  );
  const stop = () => {
    log.info('API stopping');
    server.close(
      () =>
        void connection
          .close()
          .then(() => tracing?.shutdown())
          .finally(() => process.exit(0)),
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch(exitOnStartupFailure('The API', () => ({ ...config })));
