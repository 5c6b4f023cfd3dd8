import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { z } from 'zod';
import type { FleetPlan, FleetResult, FleetStatus } from '../common/fleet';
import { Api, ApiError } from './api';
import { CliEnv, credentialsFrom, UsageError } from './config';
import { EXIT, EXIT_CODES_HELP } from './exit-codes';
import { planLines, progressLine, summaryLines } from './progress';
import { START_HELP, START_OPTIONS, startRequest } from './start-request';
import { opPath, watch, type OperationView } from './watch';

/**
 * `npm run cli -- fleet …`: the operators' command line for fleet operations, over the REST API only (so it works
 * against any deployment the API key or token reaches). node:util's parseArgs and zod: no CLI framework needed for
 * one resource's eight commands.
 */

const COMMAND = 'npm run cli --';
/** The API's own headers (api/idempotency.ts), not imported: the CLI does not load the API. */
const IDEMPOTENCY_KEY_HEADER = 'Idempotency-Key';
const REPLAYED_HEADER = 'Idempotent-Replayed';

const GLOBAL_OPTIONS = {
  api: { type: 'string' },
  'api-key': { type: 'string' },
  token: { type: 'string' },
  'key-file': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;
const WATCH_OPTIONS = { interval: { type: 'string' } } as const;
const COMMANDS = {
  start: { ...START_OPTIONS, ...WATCH_OPTIONS, 'idempotency-key': { type: 'string' }, detach: { type: 'boolean' } },
  watch: WATCH_OPTIONS,
  status: { output: { type: 'string' } },
  pause: { reason: { type: 'string' } },
  resume: {},
  cancel: { force: { type: 'boolean' }, reason: { type: 'string' } },
  'retry-failed': { ...WATCH_OPTIONS, detach: { type: 'boolean' } },
  list: {
    status: { type: 'string' },
    'page-size': { type: 'string' },
    'next-page-token': { type: 'string' },
    output: { type: 'string' },
  },
} as const satisfies Record<string, ParseArgsConfig['options']>;
type Command = keyof typeof COMMANDS;

const HELP = `Usage: ${COMMAND} fleet <command> [arguments] [options]

Fleet operations (promote, revoke or reinstate many devices as one throttled rollout), through the REST API.

Commands:
  start <promote|revoke|reinstate> <targets> [options]   start one, then watch it (--detach: print its id)
  watch <operationId> [--interval 1]                      live progress until it ends; exit code says how
  status <operationId> [--output json]                    the status once
  pause <operationId> [--reason <text>]                   no device starts until resumed
  resume <operationId>
  cancel <operationId> [--force] [--reason <text>]        no device starts any more (--force: in flight too)
  retry-failed <operationId> [--detach]                   a new operation over its failed and timed-out devices
  list [--status running|completed|…] [--page-size n] [--next-page-token t] [--output json]

Options of every command:
  --api <url>          the API (env IOT_LIFECYCLE_API; default http://127.0.0.1:3000)
  --api-key <key>      an API key (env IOT_LIFECYCLE_API_KEY; default: the key \`npm start\` keeps in
                       DATA_DIR/local-operator.key)
  --key-file <file>    read the API key from a file (e.g. .data/local-admin.key: reinstating needs admin)
  --token <jwt>        an OIDC bearer token instead (env IOT_LIFECYCLE_TOKEN)
  -h, --help

fleet start:
${START_HELP.replace(/^/gm, '  ')}

Watching (start, retry-failed, watch): a progress bar on a terminal, a line per change (at least every 10 s) in a
log. Ctrl-C stops watching only; the operation goes on.

${EXIT_CODES_HELP}
`;

/** Whether a watch is under way: Ctrl-C then stops the watch instead of the process. */
const session = { watching: false };

const Interval = z.coerce.number().min(0.2).max(60).default(1);
const Output = z.enum(['text', 'json']).default('text');

async function main(argv: string[], env: CliEnv, signal: AbortSignal): Promise<number> {
  const allOptions = Object.assign({}, GLOBAL_OPTIONS, ...Object.values(COMMANDS)) as ParseArgsConfig['options'];
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options: allOptions, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values, positionals } = parsed as { values: Record<string, unknown>; positionals: string[] };
  const [resource, command, ...args] = positionals;
  if (values.help || !resource) {
    process.stdout.write(HELP);
    return values.help ? EXIT.ok : EXIT.usage;
  }
  if (resource !== 'fleet') throw new UsageError(`unknown resource "${resource}": the CLI knows "fleet"`);
  if (!command || !(command in COMMANDS)) {
    throw new UsageError(
      `${command ? `unknown command "${command}"` : 'name a command'}: ${Object.keys(COMMANDS).join(', ')}`,
    );
  }
  const cmd = command as Command;
  const allowed = new Set([...Object.keys(GLOBAL_OPTIONS), ...Object.keys(COMMANDS[cmd])]);
  const stray = Object.keys(values).filter((k) => !allowed.has(k));
  if (stray.length) throw new UsageError(`not an option of fleet ${cmd}: ${stray.map((k) => `--${k}`).join(', ')}`);

  const api = new Api(
    (values.api as string | undefined) ?? env.IOT_LIFECYCLE_API,
    credentialsFrom(
      {
        apiKey: values['api-key'] as string | undefined,
        token: values.token as string | undefined,
        keyFile: values['key-file'] as string | undefined,
      },
      env,
    ),
  );
  const out = { write: (s: string) => void process.stdout.write(s), isTTY: Boolean(process.stdout.isTTY) };
  const flag = <T extends z.ZodType>(name: string, schema: T): z.output<T> => {
    const r = schema.safeParse(values[name]);
    if (!r.success)
      throw new UsageError(`--${name}: ${r.error.issues[0].message} (got ${JSON.stringify(values[name])})`);
    return r.data;
  };
  const watchIt = (id: string) => {
    const intervalMs = flag('interval', Interval) * 1000;
    session.watching = true;
    return watch(api, id, out, { intervalMs, signal, command: COMMAND });
  };
  const idArg = () => {
    if (args.length !== 1) throw new UsageError(`fleet ${cmd} takes one operation id`);
    return args[0];
  };
  const noArgs = () => {
    if (args.length) throw new UsageError(`fleet ${cmd} takes no arguments (got ${args.join(' ')})`);
  };

  switch (cmd) {
    case 'start': {
      if (args.length > 1) throw new UsageError(`fleet start takes one operation (got ${args.join(' ')})`);
      const body = startRequest(args[0], values, () => readFileSync(0, 'utf8'));
      const key = values['idempotency-key'] as string | undefined;
      const res = await api.post<{ operationId: string; statusUrl?: string; plan?: FleetPlan }>(
        '/v1/fleet-operations',
        body,
        key ? { [IDEMPOTENCY_KEY_HEADER]: key } : {},
      );
      const replayed =
        res.headers.get(REPLAYED_HEADER) === 'true' ? ' (an earlier start with this idempotency key)' : '';
      if (res.status === 200 && res.body.plan) {
        out.write(`Plan of fleet ${body.operation} ${res.body.operationId} (dry run, nothing changed)${replayed}:\n`);
        for (const line of planLines(res.body.plan)) out.write(`  ${line}\n`);
        return EXIT.ok;
      }
      return started(res.body.operationId, `Started fleet ${body.operation} ${res.body.operationId}${replayed}`);
    }
    case 'watch':
      return watchIt(idArg());
    case 'status': {
      const id = idArg();
      const output = flag('output', Output);
      const view = (await api.get<OperationView>(opPath(id))).body;
      if (output === 'json') out.write(`${JSON.stringify(view, null, 2)}\n`);
      else for (const line of statusLines(id, view)) out.write(`${line}\n`);
      return EXIT.ok;
    }
    case 'pause':
    case 'resume':
    case 'cancel': {
      const id = idArg();
      const body =
        cmd === 'resume'
          ? {}
          : {
              ...(values.reason !== undefined ? { reason: values.reason } : {}),
              ...(values.force ? { force: true } : {}),
            };
      const status = (await api.post<FleetStatus>(`${opPath(id)}/${cmd}`, body)).body;
      const done = { pause: 'Paused', resume: 'Resumed', cancel: 'Cancelling' }[cmd];
      out.write(`${done} fleet operation ${id}: ${progressLine(status)}\n`);
      if (cmd === 'cancel') out.write(`Watch it end: ${COMMAND} fleet watch ${id}\n`);
      return EXIT.ok;
    }
    case 'retry-failed': {
      const id = idArg();
      const res = await api.post<{ operationId: string }>(`${opPath(id)}/retry-failed`, {});
      return started(
        res.body.operationId,
        `Started fleet operation ${res.body.operationId} over the failed devices of ${id}`,
      );
    }
    case 'list': {
      noArgs();
      const output = flag('output', Output);
      const res = await api.get<{ operations: OperationView[]; nextPageToken?: string }>('/v1/fleet-operations', {
        status: values.status as string | undefined,
        pageSize: values['page-size'] as string | undefined,
        nextPageToken: values['next-page-token'] as string | undefined,
      });
      if (output === 'json') {
        out.write(`${JSON.stringify(res.body, null, 2)}\n`);
        return EXIT.ok;
      }
      for (const op of res.body.operations) {
        const o = op as OperationView & { startTime?: string };
        out.write(`${o.operationId}  ${o.status}  ${o.phase ?? '-'}  ${o.startTime ?? ''}\n`);
      }
      if (!res.body.operations.length) out.write('No fleet operations.\n');
      if (res.body.nextPageToken)
        out.write(`More: ${COMMAND} fleet list --next-page-token ${res.body.nextPageToken}\n`);
      return EXIT.ok;
    }
  }

  async function started(id: string, line: string): Promise<number> {
    if (values.detach) {
      process.stderr.write(`${line}\n`);
      out.write(`${id}\n`);
      return EXIT.ok;
    }
    out.write(`${line}; watching (Ctrl-C stops watching, not the operation)\n`);
    return watchIt(id);
  }
}

function statusLines(id: string, view: OperationView): string[] {
  const lines = [`Fleet operation ${id}: ${view.status}${view.phase ? `, phase ${view.phase}` : ''}`];
  const fleet = view.fleet;
  if (fleet) {
    lines.push(`  ${fleet.operation}: ${progressLine(fleet)}`);
    if ('outcome' in fleet) lines.push(...summaryLines(id, fleet as FleetResult).map((l) => `  ${l}`));
    if (fleet.plan) lines.push(...planLines(fleet.plan).map((l) => `  ${l}`));
  }
  if (view.failure) lines.push(`  ${view.failure.type}: ${view.failure.message}`);
  if (view.progressUnavailable) lines.push(`  live status unavailable: ${view.progressUnavailable}`);
  return lines;
}

function run(): void {
  const env = CliEnv.safeParse(process.env);
  if (!env.success) {
    process.stderr.write(`error: ${env.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}\n`);
    process.exit(EXIT.usage);
  }
  // Ctrl-C while watching stops the watch (which says how to resume it); at any other moment, exits at once.
  const interrupt = new AbortController();
  process.on('SIGINT', () => {
    if (!session.watching || interrupt.signal.aborted) process.exit(EXIT.interrupted);
    interrupt.abort();
  });
  main(process.argv.slice(2), env.data, interrupt.signal).then(
    (code) => process.exit(code),
    (err: unknown) => {
      if (err instanceof UsageError) {
        process.stderr.write(`error: ${err.message}\n(${COMMAND} fleet --help for usage)\n`);
        process.exit(EXIT.usage);
      }
      if (err instanceof ApiError) {
        process.stderr.write(`error: ${err.message}\n`);
        process.exit(err.exitCode);
      }
      process.stderr.write(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(EXIT.api);
    },
  );
}

run();
