/**
 * The device simulator's command line, against a running emulator (`npm run emulator`): `enroll` sets a device (or a
 * group) up in the emulated DPS through the real provisioning service client, `run` starts simulated devices on the
 * real device SDKs. `--help` prints the usage below.
 *
 * Keys never go on the command line, where `ps` shows them to every user: they come from a file (mode 0600 when
 * `enroll` writes it) or from the environment, read once at start.
 *
 * node:util's parseArgs reads the flags: it is built in, so the simulator needs no CLI package, and a usage text this
 * size is clearer written out than generated.
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import { z } from 'zod';
import { installAzureEndpointRouting } from '../../common/azure-routing';
import { stopOnSignals } from '../../common/shutdown';
import type { Attestation, SimulatedDeviceOptions, SimulatorEvent } from './device';
import { enrollSymmetricKeyDevice, enrollSymmetricKeyGroup, existingSymmetricKey } from './enroll';
import { Fleet, numberedRegistrationIds } from './fleet';

const USAGE = `Simulated Azure IoT devices against the emulator (npm run emulator).

Usage:
  npx tsx emulator/simulator/main.ts enroll --registration-id <id> [--hub <name>] [--symmetric-key-file <file>]
  npx tsx emulator/simulator/main.ts enroll --group <group id> [--hub <name>] [--group-key-file <file>]
  npx tsx emulator/simulator/main.ts [run] --registration-id <id> (--symmetric-key-file <file> | --cert-file <file> --key-file <file>)
  npx tsx emulator/simulator/main.ts [run] --count <n> [--prefix <p>] --group-key-file <file>
  npx tsx emulator/simulator/main.ts --help

enroll   Creates an individual enrollment (or a group) with symmetric keys for one hub, through the emulated DPS,
         and writes the key to the file (mode 0600), or prints it when no file is given. An enrollment that exists
         already is left as it is, and its key is handed over.
run      Provisions each device through DPS, connects it to its hub over MQTT (or talks to it over HTTPS), and
         re-registers it when the hub refuses it. The default command.

Keys (never on the command line, where ps shows them):
  --symmetric-key-file <file>   an individual enrollment's key      (or env SIMULATOR_SYMMETRIC_KEY)
  --group-key-file <file>       an enrollment group's key, for --count  (or env SIMULATOR_GROUP_KEY)
  --cert-file <file> --key-file <file>   X.509: device certificate (intermediates after it) and its private key

Options:
  --hub <name>                  hub to enroll for (enroll; default test)
  --prefix <p>                  registration ids <p>-1 … <p>-<n> (default sim)
  --id-scope <scope>            DPS id scope (default 0ne00000001)
  --control <url>               emulator control API (enroll; default http://127.0.0.1:8480); its token
                                from EMULATOR_CONTROL_TOKEN or .data/emulator/control-token
  --emulator <host:port>        emulator HTTPS address (default 127.0.0.1:8443)
  --mqtt <host:port>            emulator MQTT address for hubs and DPS over MQTT (default 127.0.0.1:8883)
  --ca-file <file>              emulator CA (default .data/emulator/ca.pem)
  --dps-transport http|mqtt     (default http)
  --hub-transport mqtt|https    (default mqtt). An HTTPS device never connects: it sends telemetry and polls for
                                cloud-to-device messages, and shows as "active" once its hub accepts a call
  --telemetry-interval <ms>     send telemetry this often (default: never over MQTT, 2000 over HTTPS)
  --report '<json>'             reported properties to send after each connection
  --backoff-initial <ms>, --backoff-max <ms>   back-off between failed attempts (default 1000, 60000)

Example:
  npx tsx emulator/simulator/main.ts enroll --registration-id dev-1 --symmetric-key-file dev-1.key
  npx tsx emulator/simulator/main.ts --registration-id dev-1 --symmetric-key-file dev-1.key`;

/** A mistake in the command line: reported in one line, with a pointer to --help, and exit code 2. */
class UsageError extends Error {}

const text = { type: 'string' } as const;
const FLAGS = {
  help: { type: 'boolean', short: 'h' },
  'registration-id': text,
  group: text,
  hub: text,
  count: text,
  prefix: text,
  'symmetric-key-file': text,
  'group-key-file': text,
  'cert-file': text,
  'key-file': text,
  'id-scope': text,
  control: text,
  emulator: text,
  mqtt: text,
  'ca-file': text,
  'dps-transport': text,
  'hub-transport': text,
  'telemetry-interval': text,
  report: text,
  'backoff-initial': text,
  'backoff-max': text,
} as const;

/** Flags that used to carry a key on the command line. */
const KEYS_ON_COMMAND_LINE = ['--symmetric-key', '--group-key'];

/** The control API's token: EMULATOR_CONTROL_TOKEN, else the file `npm start` and `npm run emulator` keep it in. */
const DEFAULT_CONTROL_TOKEN_FILE = '.data/emulator/control-token';

const address = z.string().regex(/^[^:]+:\d+$/, 'expected host:port');
const common = {
  idScope: z.string().min(1).default('0ne00000001'),
  emulator: address.default('127.0.0.1:8443'),
  caFile: z.string().min(1).default('.data/emulator/ca.pem'),
};

const enrollSchema = z
  .strictObject({
    ...common,
    registrationId: z.string().min(1).optional(),
    group: z.string().min(1).optional(),
    hub: z.string().min(1).default('test'),
    control: z.url().default('http://127.0.0.1:8480'),
    controlToken: z
      .string()
      .min(
        1,
        `no control API token: set EMULATOR_CONTROL_TOKEN or start the emulator so that ${DEFAULT_CONTROL_TOKEN_FILE} exists`,
      ),
    symmetricKeyFile: z.string().min(1).optional(),
    groupKeyFile: z.string().min(1).optional(),
  })
  .refine((c) => (c.registrationId === undefined) !== (c.group === undefined), {
    message: 'enroll needs either --registration-id or --group',
  })
  .refine((c) => !(c.group && c.symmetricKeyFile), { message: '--group writes its key with --group-key-file' })
  .refine((c) => !(c.registrationId && c.groupKeyFile), {
    message: '--registration-id writes its key with --symmetric-key-file',
  });

const runSchema = z
  .strictObject({
    ...common,
    registrationId: z.string().min(1).optional(),
    count: z.coerce.number().int().min(1).max(100_000).optional(),
    prefix: z.string().min(1).default('sim'),
    symmetricKey: z.string().min(1).optional(),
    groupKey: z.string().min(1).optional(),
    certFile: z.string().min(1).optional(),
    keyFile: z.string().min(1).optional(),
    mqtt: address.default('127.0.0.1:8883'),
    dpsTransport: z.enum(['http', 'mqtt']).default('http'),
    hubTransport: z.enum(['mqtt', 'https']).default('mqtt'),
    telemetryInterval: z.coerce.number().int().min(0).optional(),
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
    message:
      'give exactly one credential: --symmetric-key-file (or SIMULATOR_SYMMETRIC_KEY), --group-key-file (or ' +
      'SIMULATOR_GROUP_KEY), or --cert-file with --key-file',
  })
  .refine((c) => !c.certFile || !!c.keyFile, { message: '--cert-file needs --key-file' })
  .refine((c) => !c.symmetricKey || c.count === undefined, {
    message: 'a symmetric key is one device’s: use --group-key-file for a fleet',
  })
  .refine((c) => c.hubTransport !== 'https' || c.telemetryInterval !== 0, {
    message: 'an HTTPS device needs --telemetry-interval above 0: its calls are all its hub sees of it',
  })
  .refine((c) => c.hubTransport !== 'https' || c.report === undefined, {
    message: '--report needs a twin, which HTTPS devices do not have: use --hub-transport mqtt',
  });

/** The environment the simulator reads, once: the keys a shell can hand over without the command line. */
const environmentSchema = z.object({
  SIMULATOR_SYMMETRIC_KEY: z.string().min(1).optional(),
  SIMULATOR_GROUP_KEY: z.string().min(1).optional(),
  EMULATOR_CONTROL_TOKEN: z.string().min(1).optional(),
});

type Command =
  | { command: 'help' }
  | { command: 'enroll'; config: z.infer<typeof enrollSchema> }
  | { command: 'run'; config: z.infer<typeof runSchema> };

function readKeyFile(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
  }
}

function describeIssues(err: z.ZodError): string {
  return err.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ');
}

function parseCommand(argv: string[], env: Record<string, string | undefined>): Command {
  const secretFlag = argv.find((arg) => KEYS_ON_COMMAND_LINE.includes(arg.split('=')[0]));
  if (secretFlag) {
    throw new UsageError(
      `${secretFlag.split('=')[0]} is gone: a key on the command line shows in ps. Use ` +
        `${secretFlag.split('=')[0]}-file <file> or the environment (see --help)`,
    );
  }
  let parsed: ReturnType<typeof parseArgs<{ args: string[]; options: typeof FLAGS; allowPositionals: true }>>;
  try {
    parsed = parseArgs({ args: argv, options: FLAGS, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) return { command: 'help' };
  const [command = 'run', ...extra] = positionals;
  if (extra.length || (command !== 'enroll' && command !== 'run')) {
    throw new UsageError(`unknown command ${[command, ...extra].join(' ')}`);
  }
  const environment = environmentSchema.parse(env);
  const shared = { idScope: values['id-scope'], emulator: values.emulator, caFile: values['ca-file'] };
  try {
    if (command === 'enroll') {
      return {
        command,
        config: enrollSchema.parse({
          ...shared,
          registrationId: values['registration-id'],
          group: values.group,
          hub: values.hub,
          control: values.control,
          controlToken: environment.EMULATOR_CONTROL_TOKEN ?? readOptional(DEFAULT_CONTROL_TOKEN_FILE) ?? '',
          symmetricKeyFile: values['symmetric-key-file'],
          groupKeyFile: values['group-key-file'],
        }),
      };
    }
    for (const flag of ['group', 'hub', 'control'] as const) {
      if (values[flag] !== undefined) throw new UsageError(`--${flag} belongs to enroll`);
    }
    const symmetricKeyFile = values['symmetric-key-file'];
    const groupKeyFile = values['group-key-file'];
    return {
      command,
      config: runSchema.parse({
        ...shared,
        registrationId: values['registration-id'],
        count: values.count,
        prefix: values.prefix,
        symmetricKey: symmetricKeyFile ? readKeyFile(symmetricKeyFile) : environment.SIMULATOR_SYMMETRIC_KEY,
        groupKey: groupKeyFile ? readKeyFile(groupKeyFile) : environment.SIMULATOR_GROUP_KEY,
        certFile: values['cert-file'],
        keyFile: values['key-file'],
        mqtt: values.mqtt,
        dpsTransport: values['dps-transport'],
        hubTransport: values['hub-transport'],
        telemetryInterval: values['telemetry-interval'],
        report: values.report,
        backoffInitial: values['backoff-initial'],
        backoffMax: values['backoff-max'],
      }),
    };
  } catch (err) {
    if (err instanceof z.ZodError) throw new UsageError(describeIssues(err));
    throw err;
  }
}

function readOptional(file: string): string | undefined {
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined;
}

async function controlGet<T>(control: string, token: string, path: string): Promise<T> {
  const res = await fetch(new URL(path, control), { headers: { authorization: `Bearer ${token}` } });
  if (!res.ok) throw new Error(`emulator control API ${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

/** Writes a key for the owner only, or prints it when there is no file. */
function handOver(key: string, file: string | undefined, variable: string): string {
  if (!file) return `${variable}=${key}`;
  writeFileSync(file, `${key}\n`, { mode: 0o600 });
  chmodSync(file, 0o600); // an existing file keeps its mode on write
  return `key written to ${file}`;
}

async function enroll(config: z.infer<typeof enrollSchema>): Promise<void> {
  const dps = await controlGet<{ policies: Array<{ keyName: string; connectionString: string }> }>(
    config.control,
    config.controlToken,
    '/dps',
  );
  const hub = await controlGet<{ hostName: string }>(
    config.control,
    config.controlToken,
    `/hubs/${encodeURIComponent(config.hub)}`,
  );
  const owner = dps.policies.find((p) => p.keyName === 'provisioningserviceowner');
  if (!owner) throw new Error('the emulated DPS has no provisioningserviceowner policy');
  // The real provisioning service client, as an operator's tooling would use it.
  const uninstall = installAzureEndpointRouting({
    address: config.emulator,
    caPem: readFileSync(config.caFile, 'utf8'),
  });
  try {
    const client = ProvisioningServiceClient.fromConnectionString(owner.connectionString);
    if (config.group) {
      const groupId = config.group;
      const key =
        (await existingSymmetricKey(client, { groupId })) ??
        (await enrollSymmetricKeyGroup(client, { groupId, hubHostName: hub.hostName }));
      console.log(`enrolled group ${groupId}; ${handOver(key, config.groupKeyFile, 'SIMULATOR_GROUP_KEY')}`);
    } else {
      const registrationId = config.registrationId!;
      const key =
        (await existingSymmetricKey(client, { registrationId })) ??
        (await enrollSymmetricKeyDevice(client, { registrationId, hubHostName: hub.hostName }));
      console.log(`enrolled ${registrationId}; ${handOver(key, config.symmetricKeyFile, 'SIMULATOR_SYMMETRIC_KEY')}`);
    }
  } finally {
    uninstall();
  }
}

function describe(registrationId: string, event: SimulatorEvent): string {
  const { type, time, ...rest } = event;
  return `${time} ${registrationId} ${type} ${JSON.stringify(rest)}`;
}

async function run(config: z.infer<typeof runSchema>): Promise<void> {
  const caPem = readFileSync(config.caFile, 'utf8');
  // DPS over HTTP and hubs over HTTPS go through https.request: route the Azure host names to the emulator.
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
    attestation = { type: 'symmetricKey', key: config.symmetricKey! };
  }

  const options: Omit<SimulatedDeviceOptions, 'registrationId' | 'attestation'> = {
    idScope: config.idScope,
    dpsTransport: config.dpsTransport,
    hubTransport: config.hubTransport,
    dpsMqttAddress: config.mqtt,
    hubMqttAddress: config.mqtt,
    ca: caPem,
    backoff: { initialMs: config.backoffInitial, maxMs: config.backoffMax },
    telemetryIntervalMs: config.telemetryInterval,
    reportedProperties: config.report,
  };
  const fleet = new Fleet({
    ...options,
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

async function main(): Promise<void> {
  const parsed = parseCommand(process.argv.slice(2), process.env);
  if (parsed.command === 'help') console.log(USAGE);
  else if (parsed.command === 'enroll') await enroll(parsed.config);
  else await run(parsed.config);
}

main().catch((err: unknown) => {
  if (err instanceof UsageError) {
    console.error(`simulator: ${err.message}\nRun with --help for usage.`);
    process.exit(2);
  }
  console.error(`simulator: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
