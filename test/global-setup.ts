import { describeCli, resolveTemporalCli, startDevServer, type DevServer } from '../common/temporal-server';
import { HARNESS_ENV } from './helpers/harness-env';

/**
 * Starts ONE real Temporal dev server (with the project's search attributes) for the whole jest run.
 * TEMPORAL_TEST_ADDRESS points the run at an existing server instead.
 */
export default async function globalSetup(): Promise<void> {
  const existing = process.env.TEMPORAL_TEST_ADDRESS;
  if (existing) {
    process.env[HARNESS_ENV.address] = existing;
    console.log(`\n[harness] using existing Temporal server at ${existing}`);
    return;
  }
  const cli = resolveTemporalCli(process.env.TEMPORAL_CLI_PATH);
  const server = await startDevServer({ cli });
  (globalThis as { __temporalDevServer?: DevServer }).__temporalDevServer = server;
  process.env[HARNESS_ENV.address] = server.address;
  console.log(`\n[harness] Temporal dev server ${describeCli(cli)} listening on ${server.address}`);
}
