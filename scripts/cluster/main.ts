/**
 * `npm run cluster`: the production topology on this machine, as separate processes, until Ctrl-C.
 *
 *   PostgreSQL 15 (own Debian cluster, port 5433) → Temporal server 1.32.2 built under .tools/ (one process per
 *   service, or --all-in-one) → the Azure emulator → N workers (`node dist/worker/main.js`) → the API → simulated
 *   devices on the emulator's test hub.
 *
 * Flags: --all-in-one, --workers N (2), --devices N (3; 0 = none), --source (run the TypeScript by tsx instead of
 * the compiled build), --fresh (empty Temporal databases and emulator), --data-dir DIR (.data/cluster),
 * --log-level warn|info|debug (the Temporal server's), --prepare (only build dist/ and the Temporal server, then
 * exit: CI does this before the drills). Ctrl-C stops everything, PostgreSQL last; a second Ctrl-C kills what is
 * left at once.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { LocalCluster } from './cluster';
import { enrollDemoDevices } from './devices';
import { defaultSettings, projectRoot, type ClusterSettings } from './settings';
import { ensureTemporalBinaries } from './temporal-binary';

const flagsSchema = z.object({
  'all-in-one': z.boolean().default(false),
  workers: z.coerce.number().int().min(1).max(16).default(2),
  devices: z.coerce.number().int().min(0).max(1000).default(3),
  source: z.boolean().default(false),
  fresh: z.boolean().default(false),
  'data-dir': z.string().min(1).optional(),
  'log-level': z.enum(['debug', 'info', 'warn', 'error']).default('warn'),
  prepare: z.boolean().default(false),
});

function readSettings(argv: string[]): ClusterSettings & { prepareOnly: boolean } {
  const { values } = parseArgs({
    args: argv,
    options: {
      'all-in-one': { type: 'boolean' },
      workers: { type: 'string' },
      devices: { type: 'string' },
      source: { type: 'boolean' },
      fresh: { type: 'boolean' },
      'data-dir': { type: 'string' },
      'log-level': { type: 'string' },
      prepare: { type: 'boolean' },
    },
    strict: true,
  });
  const flags = flagsSchema.parse(values);
  const base = defaultSettings();
  return {
    ...base,
    topology: flags['all-in-one'] ? 'all-in-one' : 'per-service',
    workers: flags.workers,
    devices: flags.devices,
    build: flags.source ? 'source' : 'dist',
    dataDir: flags['data-dir'] ? path.resolve(flags['data-dir']) : base.dataDir,
    postgres: { ...base.postgres, fresh: flags.fresh },
    temporal: { ...base.temporal, logLevel: flags['log-level'] },
    prepareOnly: flags.prepare,
  };
}

/** Builds dist/ when it is missing or older than any product source (npm run build). */
function ensureBuild(say: (line: string) => void): void {
  const bundle = path.join(projectRoot, 'dist', 'workflow-bundle.js');
  const builtAt = existsSync(bundle) ? statSync(bundle).mtimeMs : 0;
  const sources = ['workflows', 'activities', 'common', 'worker', 'api', 'emulator'].flatMap((dir) =>
    readdirSync(path.join(projectRoot, dir), { recursive: true, encoding: 'utf8' }).map((f) => path.join(dir, f)),
  );
  const inputs = [...sources, 'scripts/temporal-setup.ts', 'tsconfig.json', 'tsconfig.build.json', 'package-lock.json'];
  const stale = inputs.find((f) => statSync(path.join(projectRoot, f)).mtimeMs > builtAt);
  if (!stale) return;
  say(builtAt ? `rebuilding dist/ (${stale} changed)` : 'building dist/ (npm run build)');
  const build = spawnSync('npm', ['run', '--silent', 'build'], { cwd: projectRoot, stdio: 'inherit' });
  if (build.status !== 0) throw new Error('npm run build failed');
}

async function main(): Promise<void> {
  const settings = readSettings(process.argv.slice(2));
  const say = (line: string) => console.log(`[cluster] ${line}`);
  if (settings.build === 'dist') ensureBuild(say);
  if (settings.prepareOnly) {
    const binaries = await ensureTemporalBinaries(settings.temporal.version, say);
    say(`ready: ${settings.build === 'dist' ? 'dist/ and ' : ''}${path.relative(projectRoot, binaries.server)}`);
    return;
  }
  const cluster = new LocalCluster(settings, say);

  let firstSignalAt = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    // One Ctrl-C can arrive twice: from the terminal to the whole process group, and relayed by npm or tsx.
    if (firstSignalAt && Date.now() - firstSignalAt < 1_000) return;
    if (firstSignalAt) {
      console.log(`\n${signal} again: killing everything now`);
      cluster.killAllSync();
      process.exit(130);
    }
    firstSignalAt = Date.now();
    console.log(`\n${signal}: stopping (press Ctrl-C again to kill at once)`);
    cluster.stop().then(
      () => {
        console.log('stopped; nothing left running');
        process.exit(0);
      },
      (err: unknown) => {
        console.error(err);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  await cluster.start();
  const devices = settings.devices > 0 ? await enrollDemoDevices(cluster, settings.devices) : [];
  printSummary(cluster, devices);
}

function printSummary(cluster: LocalCluster, devices: string[]): void {
  const { settings } = cluster;
  const rel = (p: string) => path.relative(process.cwd(), p) || '.';
  const workers = cluster.workers.map((w) => `${w.name} (pid ${w.pid})`).join(', ');
  const lines = [
    '',
    `iot-lifecycle cluster is running (${settings.build === 'dist' ? 'compiled build, node dist/…' : 'sources, tsx'})`,
    `  API:          ${cluster.apiUrl}  (GET /readyz, /openapi.json)`,
    `  Temporal:     ${cluster.temporalAddress}, namespace ${settings.temporal.namespace}, ` +
      `${settings.topology === 'all-in-one' ? 'one server process' : 'history, matching, frontend and worker processes'}`,
    `  Temporal CLI: .tools/temporal/bin/temporal workflow list --address ${cluster.temporalAddress}`,
    `  PostgreSQL:   127.0.0.1:${settings.postgres.port} (cluster ${settings.postgres.version}/${settings.postgres.cluster}, ` +
      `${cluster.postgresConnections()} Temporal connections open)`,
    `  Workers:      ${workers} on task queue ${settings.taskQueue}`,
    `  Emulator:     Azure HTTPS ${cluster.emulator.address}, MQTT ${cluster.emulator.mqttAddress}, ` +
      `control ${cluster.emulator.controlUrl} (Authorization: Bearer ${cluster.controlToken})`,
    `  API key:      ${cluster.apiKey} (admin, for this run only; header X-API-Key)`,
    `  Logs:         ${rel(cluster.processes.logDir)}/`,
  ];
  if (devices.length) {
    lines.push(
      `  Simulated devices on the test hub: ${devices.join(', ')}`,
      '  Promote one to production:',
      `    curl -i -X POST ${cluster.apiUrl}/v1/promotions -H 'content-type: application/json' -H 'x-api-key: ${cluster.apiKey}' \\`,
      `      -d '{"registrationId":"${devices[0]}"}'`,
      `    curl -H 'x-api-key: ${cluster.apiKey}' ${cluster.apiUrl}/v1/promotions/${devices[0]}`,
    );
  }
  lines.push('Press Ctrl-C to stop everything (PostgreSQL last).', '');
  console.log(lines.join('\n'));
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
