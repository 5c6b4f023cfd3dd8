/**
 * Simulated device(s) against a running emulator (`npm run emulator`), on the real device SDKs:
 *
 *   npx tsx emulator/simulator/main.ts --registration-id dev-1 --symmetric-key <key>
 *   npx tsx emulator/simulator/main.ts --count 50 --prefix sim --group-key <enrollment group key>
 *   npx tsx emulator/simulator/main.ts --registration-id dev-x --cert-file dev-x.pem --key-file dev-x.key
 *
 * Flags: --registration-id | --count N --prefix P; attestation: --symmetric-key K | --group-key K |
 * --cert-file F --key-file F (X.509; for X.509 CA put the intermediates after the leaf in the cert file);
 * --id-scope (0ne00000001), --emulator (HTTPS address for DPS over HTTP, 127.0.0.1:8443), --mqtt (MQTT address
 * for hubs and DPS over MQTT, 127.0.0.1:8883), --ca-file (.data/emulator/ca.pem), --dps-transport http|mqtt,
 * --telemetry-interval ms (0), --report '<json reported properties>', --backoff-initial ms, --backoff-max ms.
 *
 * Secrets come only from these flags and files: the simulator reads no environment variables.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { stopOnSignals } from '../../common/shutdown';
import { installAzureEndpointRouting } from '../../common/azure-routing';
import type { Attestation, SimulatedDeviceOptions, SimulatorEvent } from './device';
import { Fleet, numberedRegistrationIds } from './fleet';

const address = z.string().regex(/^[^:]+:\d+$/, 'expected host:port');

const configSchema = z
  .object({
    registrationId: z.string().min(1).optional(),
    count: z.coerce.number().int().min(1).max(100_000).optional(),
    prefix: z.string().min(1).default('sim'),
    symmetricKey: z.string().min(1).optional(),
    groupKey: z.string().min(1).optional(),
    certFile: z.string().min(1).optional(),
    keyFile: z.string().min(1).optional(),
    idScope: z.string().min(1).default('0ne00000001'),
    emulator: address.default('127.0.0.1:8443'),
    mqtt: address.default('127.0.0.1:8883'),
    caFile: z.string().min(1).default('.data/emulator/ca.pem'),
    dpsTransport: z.enum(['http', 'mqtt']).default('http'),
    telemetryInterval: z.coerce.number().int().min(0).default(0),
    report: z
      .string()
      .transform((s, ctx) => {
        try {
          return JSON.parse(s) as Record<string, unknown>;
        } catch {
          ctx.addIssue({ code: 'custom', message: '--report must be JSON' });
          return z.NEVER;
        }
      })
      .optional(),
    backoffInitial: z.coerce.number().int().min(0).default(1_000),
    backoffMax: z.coerce.number().int().min(0).default(60_000),
  })
  .refine((c) => (c.registrationId === undefined) !== (c.count === undefined), {
    message: 'give either --registration-id or --count',
  })
  .refine((c) => [c.symmetricKey, c.groupKey, c.certFile].filter(Boolean).length === 1, {
    message: 'give exactly one of --symmetric-key, --group-key, --cert-file',
  })
  .refine((c) => !c.certFile || !!c.keyFile, { message: '--cert-file needs --key-file' })
  .refine((c) => !c.symmetricKey || c.count === undefined, {
    message: '--symmetric-key is one device’s key: use --group-key for a fleet',
  });

type SimulatorConfig = z.infer<typeof configSchema>;

function readConfig(argv: string[]): SimulatorConfig {
  const text = { type: 'string' } as const;
  const { values } = parseArgs({
    args: argv,
    options: {
      'registration-id': text,
      count: text,
      prefix: text,
      'symmetric-key': text,
      'group-key': text,
      'cert-file': text,
      'key-file': text,
      'id-scope': text,
      emulator: text,
      mqtt: text,
      'ca-file': text,
      'dps-transport': text,
      'telemetry-interval': text,
      report: text,
      'backoff-initial': text,
      'backoff-max': text,
    },
    strict: true,
  });
  return configSchema.parse({
    registrationId: values['registration-id'],
    count: values.count,
    prefix: values.prefix,
    symmetricKey: values['symmetric-key'],
    groupKey: values['group-key'],
    certFile: values['cert-file'],
    keyFile: values['key-file'],
    idScope: values['id-scope'],
    emulator: values.emulator,
    mqtt: values.mqtt,
    caFile: values['ca-file'],
    dpsTransport: values['dps-transport'],
    telemetryInterval: values['telemetry-interval'],
    report: values.report,
    backoffInitial: values['backoff-initial'],
    backoffMax: values['backoff-max'],
  });
}

function describe(registrationId: string, event: SimulatorEvent): string {
  const { type, time, ...rest } = event;
  return `${time} ${registrationId} ${type} ${JSON.stringify(rest)}`;
}

async function main(): Promise<void> {
  const config = readConfig(process.argv.slice(2));
  const caPem = readFileSync(config.caFile, 'utf8');
  // DPS over HTTP goes through https.request: route the Azure host names to the emulator.
  installAzureEndpointRouting({ address: config.emulator, caPem });

  let attestation: Attestation;
  if (config.certFile && config.keyFile) {
    attestation = {
      type: 'x509',
      certPem: readFileSync(config.certFile, 'utf8'),
      keyPem: readFileSync(config.keyFile, 'utf8'),
    };
  } else if (config.groupKey) {
    attestation = { type: 'symmetricKeyGroup', groupKey: config.groupKey };
  } else {
    attestation = { type: 'symmetricKey', key: config.symmetricKey ?? '' };
  }

  const common: Omit<SimulatedDeviceOptions, 'registrationId' | 'attestation'> = {
    idScope: config.idScope,
    dpsTransport: config.dpsTransport,
    dpsMqttAddress: config.mqtt,
    hubMqttAddress: config.mqtt,
    ca: caPem,
    backoff: { initialMs: config.backoffInitial, maxMs: config.backoffMax },
    telemetryIntervalMs: config.telemetryInterval,
    reportedProperties: config.report,
  };
  const fleet = new Fleet({
    ...common,
    registrationIds: config.registrationId
      ? [config.registrationId]
      : numberedRegistrationIds(config.prefix, config.count ?? 1),
    attestationFor: () => attestation,
    startIntervalMs: 20,
  });
  for (const device of fleet.devices) {
    device.on('event', (event) => console.log(describe(device.options.registrationId, event)));
  }
  await fleet.start();
  const summaryTimer = config.count
    ? setInterval(() => console.log(`summary ${JSON.stringify(fleet.summary())}`), 10_000)
    : undefined;

  stopOnSignals(async (signal) => {
    clearInterval(summaryTimer);
    console.log(`\n${signal}: stopping ${fleet.devices.length} simulated device(s)`);
    await fleet.stop();
  });
}

main().catch((err: unknown) => {
  console.error(err instanceof z.ZodError ? z.prettifyError(err) : err);
  process.exit(1);
});
