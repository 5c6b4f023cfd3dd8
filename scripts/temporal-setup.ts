/**
 * `npm run temporal:setup` (compiled: `node dist/scripts/temporal-setup.js`): creates the namespace and the
 * project's search attributes on an existing Temporal cluster. Safe to run again; it only adds what is missing.
 *
 *   TEMPORAL_ADDRESS=temporal.example.internal:7233 TEMPORAL_NAMESPACE=iot npm run temporal:setup -- --retention 30d
 */
import { parseArgs } from 'node:util';
import { Connection } from '@temporalio/client';
import type { Duration } from '@temporalio/common/lib/time';
import { ConfigError, loadConfig } from '../common/config';
import { setUpTemporal } from '../common/temporal-setup';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { retention: { type: 'string', default: '72h' }, 'timeout-seconds': { type: 'string', default: '60' } },
    strict: true,
  });
  const config = loadConfig();
  if (!config.TEMPORAL_ADDRESS) throw new ConfigError(['TEMPORAL_ADDRESS: set it to the cluster frontend (host:port)']);
  const connection = await Connection.connect({ address: config.TEMPORAL_ADDRESS });
  try {
    const report = await setUpTemporal(connection, {
      namespace: config.TEMPORAL_NAMESPACE,
      retention: values.retention as Duration,
      timeoutMs: Number(values['timeout-seconds']) * 1000,
    });
    const added = report.searchAttributesAdded;
    console.log(
      `namespace ${config.TEMPORAL_NAMESPACE} at ${config.TEMPORAL_ADDRESS}: ` +
        `${report.namespaceCreated ? 'created' : 'already there'}; ` +
        `search attributes ${added.length ? `added ${added.join(', ')}` : 'all present'}`,
    );
  } finally {
    await connection.close();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof ConfigError ? err.message : err);
  process.exit(1);
});
