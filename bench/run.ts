/**
 * `npm run bench`: speed and memory of the emulator and the promotion stack, on loopback, printed as one line per
 * measurement with its target and ratio, and written to `.data/bench/<timestamp>.json`. A missed target prints
 * MISSED and still exits 0; only a crash (or a measurement that cannot finish) exits non-zero.
 *
 *   npm run bench
 *   npm run bench -- --only registry,dps --registry-ops 5000
 *
 * Flags (defaults in brackets, each bounded): --registry-ops [500] single-device ops per kind, --bulk-calls [50]
 * bulk creates of 100, --registrations [100] DPS registrations, --devices [200] MQTT devices, --promotions [20]
 * concurrent promotions, --events [1000] DeviceConnected events in one Event Grid delivery, --concurrency [16] client
 * calls in flight (registry, DPS), --poll-interval-seconds [1] promotion polling (the API's floor is 1),
 * --audit-devices [2000] devices in the audited fleet, --audit-bucket-devices [a quarter of them] identities per bucket,
 * --timeout-seconds [240] per suite, --only mqtt,registry,dps,promotion,eventgrid,audit,fleet.
 *
 * The fleet suite (bench/fleet.ts, issue 10) runs only when named, `--only fleet`: at full size it takes about half
 * an hour. Its flags: --fleet-parts [revoke,history,webhook,promote,quota], --fleet-devices [10000] per side of the
 * revoke against the plain script, --fleet-quota-devices [6000] and --fleet-quota-scale [60] (quotas S1 x scale),
 * --fleet-promotions [2000] simulated devices promoted, --fleet-dry-run-devices [100000],
 * --fleet-history-devices [20000], --fleet-max-in-flight [1000], --fleet-timeout-seconds [3600] for the whole suite,
 * --scale (adds the 100,000-device revoke).
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { z } from 'zod';
import { loadConfig } from '../common/config';
import { describeCli, projectRoot, resolveTemporalCli } from '../common/temporal-server';
import { benchAudit } from './audit';
import { benchDps } from './dps';
import { benchEventGrid } from './eventgrid';
import { benchFleet, FLEET_PARTS } from './fleet';
import { gcExposed, scoped, startBenchEmulator, stopAllScopes } from './harness';
import { benchMqtt } from './mqtt';
import { benchPromotion } from './promotion';
import { benchRegistry } from './registry';
import {
  formatError,
  formatLine,
  judge,
  machine,
  writeReport,
  type Measurement,
  type MeasurementError,
  type Result,
} from './report';

// mqtt runs first: its memory reading is then taken in a process that no other suite has grown yet (RSS that
// earlier suites freed but kept would otherwise absorb part of the fleet's growth and flatter the figure).
const SUITES = ['mqtt', 'registry', 'dps', 'promotion', 'eventgrid', 'audit', 'fleet'] as const;
type Suite = (typeof SUITES)[number];
/** What runs without --only: all but the half-hour fleet suite. */
const DEFAULT_SUITES = SUITES.filter((s) => s !== 'fleet');

const count = (max: number, fallback: number) => z.coerce.number().int().min(1).max(max).default(fallback);

const optionsSchema = z.object({
  registryOps: count(100_000, 500),
  bulkCalls: count(1_000, 50),
  registrations: count(10_000, 100),
  devices: count(5_000, 200),
  promotions: count(500, 20),
  events: count(5_000, 1_000),
  auditDevices: count(200_000, 2_000),
  auditBucketDevices: z.coerce.number().int().min(100).max(1_000_000).optional(),
  concurrency: count(256, 16),
  pollIntervalSeconds: count(3_600, 1),
  timeoutSeconds: count(3_600, 240),
  fleetParts: z
    .string()
    .default(FLEET_PARTS.join(','))
    .transform((s) => s.split(',').map((x) => x.trim()))
    .pipe(z.array(z.enum(FLEET_PARTS)).min(1)),
  fleetDevices: count(100_000, 10_000),
  fleetQuotaDevices: count(100_000, 6_000),
  fleetQuotaScale: count(1_000, 60),
  fleetPromotions: count(5_000, 2_000),
  fleetDryRunDevices: count(100_000, 100_000),
  fleetHistoryDevices: count(100_000, 20_000),
  fleetMaxInFlight: count(1_000, 1_000),
  fleetTimeoutSeconds: count(14_400, 3_600),
  scale: z.boolean().default(false),
  only: z
    .string()
    .default(DEFAULT_SUITES.join(','))
    .transform((s) => s.split(',').map((x) => x.trim()))
    .pipe(z.array(z.enum(SUITES)).min(1)),
});
type BenchOptions = z.infer<typeof optionsSchema>;

function readOptions(argv: string[]): BenchOptions {
  const text = { type: 'string' } as const;
  const { values } = parseArgs({
    args: argv,
    options: {
      'registry-ops': text,
      'bulk-calls': text,
      registrations: text,
      devices: text,
      promotions: text,
      events: text,
      'audit-devices': text,
      'audit-bucket-devices': text,
      concurrency: text,
      'poll-interval-seconds': text,
      'timeout-seconds': text,
      'fleet-parts': text,
      'fleet-devices': text,
      'fleet-quota-devices': text,
      'fleet-quota-scale': text,
      'fleet-promotions': text,
      'fleet-dry-run-devices': text,
      'fleet-history-devices': text,
      'fleet-max-in-flight': text,
      'fleet-timeout-seconds': text,
      scale: { type: 'boolean' },
      only: text,
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(
      'npm run bench -- [--only mqtt,registry,dps,promotion,eventgrid,audit,fleet] [--registry-ops 500] ' +
        '[--bulk-calls 50] [--registrations 100] [--devices 200] [--promotions 20] [--events 1000] ' +
        '[--concurrency 16] [--poll-interval-seconds 1] [--timeout-seconds 240] ' +
        '[--audit-devices 2000] [--audit-bucket-devices N] ' +
        '[--fleet-parts revoke,history,webhook,promote,quota] [--fleet-devices 10000] [--fleet-quota-devices 6000] ' +
        '[--fleet-quota-scale 60] [--fleet-promotions 2000] [--fleet-dry-run-devices 100000] ' +
        '[--fleet-history-devices 20000] [--fleet-max-in-flight 1000] [--fleet-timeout-seconds 3600] [--scale]\n' +
        '(fleet runs only when named in --only)',
    );
    process.exit(0);
  }
  return optionsSchema.parse({
    registryOps: values['registry-ops'],
    bulkCalls: values['bulk-calls'],
    registrations: values.registrations,
    devices: values.devices,
    promotions: values.promotions,
    events: values.events,
    auditDevices: values['audit-devices'],
    auditBucketDevices: values['audit-bucket-devices'],
    concurrency: values.concurrency,
    pollIntervalSeconds: values['poll-interval-seconds'],
    timeoutSeconds: values['timeout-seconds'],
    fleetParts: values['fleet-parts'],
    fleetDevices: values['fleet-devices'],
    fleetQuotaDevices: values['fleet-quota-devices'],
    fleetQuotaScale: values['fleet-quota-scale'],
    fleetPromotions: values['fleet-promotions'],
    fleetDryRunDevices: values['fleet-dry-run-devices'],
    fleetHistoryDevices: values['fleet-history-devices'],
    fleetMaxInFlight: values['fleet-max-in-flight'],
    fleetTimeoutSeconds: values['fleet-timeout-seconds'],
    scale: values.scale,
    only: values.only,
  });
}

async function main(): Promise<number> {
  const options = readOptions(process.argv.slice(2));
  const config = loadConfig();
  // Worker lifecycle lines would interleave with the results; warnings and errors still show.
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const cli = resolveTemporalCli(config.TEMPORAL_CLI_PATH);
  const timeoutMs = options.timeoutSeconds * 1000;
  const startedAt = new Date().toISOString();
  const host = machine();
  console.log(
    `iot-lifecycle bench: node ${host.node}, ${host.cpus} x ${host.cpuModel}, ${host.totalMemoryMiB} MiB; ` +
      `GC ${gcExposed ? 'exposed' : 'not exposed (memory figures include garbage)'}`,
  );

  const suites: Record<Suite, () => Promise<Measurement[]>> = {
    registry: () =>
      scoped('registry', timeoutMs, async (defer) =>
        benchRegistry(await startBenchEmulator(defer), {
          ops: options.registryOps,
          bulkCalls: options.bulkCalls,
          concurrency: options.concurrency,
        }),
      ),
    dps: () =>
      scoped('dps', timeoutMs, async (defer) =>
        benchDps(await startBenchEmulator(defer), {
          registrations: options.registrations,
          concurrency: options.concurrency,
        }),
      ),
    mqtt: () =>
      scoped('mqtt', timeoutMs, async (defer) =>
        benchMqtt(await startBenchEmulator(defer), { devices: options.devices, timeoutMs }, defer),
      ),
    promotion: () =>
      scoped('promotion', timeoutMs, (defer) =>
        benchPromotion(
          { promotions: options.promotions, pollIntervalSeconds: options.pollIntervalSeconds, cli, timeoutMs },
          defer,
        ),
      ),
    eventgrid: () => scoped('eventgrid', timeoutMs, (defer) => benchEventGrid({ events: options.events, cli }, defer)),
    audit: () =>
      scoped('audit', timeoutMs, (defer) =>
        benchAudit({ devices: options.auditDevices, bucketDevices: options.auditBucketDevices, cli }, defer),
      ),
    fleet: () =>
      scoped('fleet', options.fleetTimeoutSeconds * 1000, (defer) =>
        benchFleet(
          {
            parts: options.fleetParts,
            revokeDevices: options.fleetDevices,
            quotaDevices: options.fleetQuotaDevices,
            quotaScale: options.fleetQuotaScale,
            promotions: options.fleetPromotions,
            events: options.events,
            dryRunDevices: options.fleetDryRunDevices,
            historyRevokeDevices: options.fleetHistoryDevices,
            scale: options.scale,
            maximumInFlight: options.fleetMaxInFlight,
            cli,
            timeoutMs: options.fleetTimeoutSeconds * 1000,
          },
          defer,
        ),
      ),
  };

  const results: Result[] = [];
  const errors: MeasurementError[] = [];
  for (const suite of SUITES.filter((s) => options.only.includes(s))) {
    if (suite === 'promotion' || suite === 'eventgrid' || suite === 'fleet')
      console.log(`(${suite}: Temporal ${describeCli(cli)})`);
    try {
      for (const measurement of await suites[suite]()) {
        const result = judge(measurement);
        results.push(result);
        console.log(formatLine(result));
      }
    } catch (err) {
      const error = { suite, error: (err as Error).stack ?? String(err) };
      errors.push(error);
      console.log(formatError({ suite, error: (err as Error).message ?? String(err) }));
    }
  }

  const missed = results.filter((r) => !r.meets).length;
  console.log(
    `${results.length} measurements: ${results.length - missed} ok, ${missed} MISSED` +
      (errors.length ? `, ${errors.length} suite(s) failed` : ''),
  );
  const file = await writeReport(path.resolve(projectRoot, config.DATA_DIR, 'bench'), {
    startedAt,
    finishedAt: new Date().toISOString(),
    machine: host,
    gcExposed,
    options,
    results,
    errors,
  });
  console.log(`results: ${path.relative(process.cwd(), file)}`);
  return errors.length ? 1 : 0;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping everything the bench started`);
    void stopAllScopes().finally(() => process.exit(130));
  });
}

main().then(
  // Exit explicitly: SDK clients keep idle keep-alive sockets and timers that would hold the process open.
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    void stopAllScopes().finally(() => process.exit(1));
  },
);
