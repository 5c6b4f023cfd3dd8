import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { FleetOperationRequest, type FleetOperationRequestInput } from '../common/fleet';
import { UsageError } from './config';

/**
 * `fleet start`'s flags → the body of POST /v1/fleet-operations, checked against the API's own schema before it is
 * sent (the API checks again, and adds what only it knows: environments, quotas). A `--json` body is the base;
 * flags given alongside override its fields.
 */

export const START_OPTIONS = {
  ids: { type: 'string' },
  'ids-file': { type: 'string' },
  group: { type: 'string' },
  query: { type: 'string' },
  environment: { type: 'string' },
  json: { type: 'string' },
  // promote
  source: { type: 'string' },
  target: { type: 'string' },
  'reprovision-policy': { type: 'string' },
  'source-removal': { type: 'string' },
  protocol: { type: 'string' },
  'poll-interval': { type: 'string' },
  'on-timeout': { type: 'string' },
  // revoke, reinstate
  'hub-action': { type: 'string' },
  reason: { type: 'string' },
  'disconnect-timeout': { type: 'string' },
  // rollout
  'max-per-minute': { type: 'string' },
  'max-in-flight': { type: 'string' },
  'ramp-base': { type: 'string' },
  'ramp-factor': { type: 'string' },
  'ramp-every': { type: 'string' },
  'ramp-on': { type: 'string' },
  'abort-threshold': { type: 'string' },
  'abort-min': { type: 'string' },
  'abort-on': { type: 'string' },
  'device-timeout': { type: 'string' },
  retries: { type: 'string' },
  'retry-on': { type: 'string' },
  description: { type: 'string' },
  'dry-run': { type: 'boolean' },
} as const;

export const START_HELP = `Targets (one of):
  --ids a,b,c                 registration ids
  --ids-file <file|->         one registration id per line ('-': stdin; # comments and blank lines skipped)
  --group <enrollmentGroupId> every registration of an enrollment group
  --query "<SELECT * FROM devices WHERE …>" --environment <env>
                              a registry query of one environment's hub (the WHERE condition alone works too)
Parameters:
  promote:    --source <env> --target <env> --reprovision-policy migrate|reset --source-removal delete|disable
              --protocol mqtt|mqtt-ws|amqp|amqp-ws|https --poll-interval 30s --on-timeout rollback|park
  revoke:     --hub-action disable|delete --reason <text> --disconnect-timeout <seconds>
  reinstate:  --reason <text>
Rollout:
  --max-per-minute <n>        devices started per minute at most (capped by the Azure quotas)
  --max-in-flight <n>         devices in flight at once (default 200)
  --ramp-base <n> --ramp-factor <x> --ramp-every <n> [--ramp-on notified|succeeded]
                              exponential rate: start at n/min, multiply by x every n devices notified/succeeded
  --abort-threshold <percent> --abort-min <n> [--abort-on failed|timed-out|all]
                              cancel once that share of at least n executed devices failed (default on: all)
  --device-timeout <30m>      per device: past it the device is timed out
  --retries <n> [--retry-on failed|timed-out|all]
  --description <text>
  --json <file|->             the whole request body (flags given too override its fields)
  --dry-run                   print the plan (devices, hubs, binding quota, rate, duration); nothing changes
  --idempotency-key <key>     a retried start answers the same operation
  --detach                    print the operation id and exit instead of watching`;

const FAILURE_TYPES = { failed: 'FAILED', 'timed-out': 'TIMED_OUT', all: 'ALL' } as const;
const failureType = z
  .string()
  .transform((s) => s.toLowerCase().replace('_', '-'))
  .pipe(z.enum(Object.keys(FAILURE_TYPES) as Array<keyof typeof FAILURE_TYPES>))
  .transform((k) => FAILURE_TYPES[k]);
const int = z.coerce.number().int();
const num = z.coerce.number();

/** The flags' own shapes (numbers are numbers); ranges and combinations are the request schema's to judge. */
const StartFlags = z.object({
  ids: z.string().optional(),
  'ids-file': z.string().optional(),
  group: z.string().optional(),
  query: z.string().optional(),
  environment: z.string().optional(),
  json: z.string().optional(),
  source: z.string().optional(),
  target: z.string().optional(),
  'reprovision-policy': z.string().optional(),
  'source-removal': z.string().optional(),
  protocol: z.string().optional(),
  'poll-interval': z.string().optional(),
  'on-timeout': z.string().optional(),
  'hub-action': z.string().optional(),
  reason: z.string().optional(),
  'disconnect-timeout': int.optional(),
  'max-per-minute': int.optional(),
  'max-in-flight': int.optional(),
  'ramp-base': int.optional(),
  'ramp-factor': num.optional(),
  'ramp-every': int.optional(),
  'ramp-on': z.enum(['notified', 'succeeded']).optional(),
  'abort-threshold': num.optional(),
  'abort-min': int.optional(),
  'abort-on': failureType.optional(),
  'device-timeout': z.string().optional(),
  retries: int.optional(),
  'retry-on': failureType.optional(),
  description: z.string().optional(),
  'dry-run': z.boolean().optional(),
});
type StartFlags = z.infer<typeof StartFlags>;

/** Request paths → the flag that sets them, so that a schema issue names what the operator typed. */
const FLAG_OF: Array<[string, string]> = [
  ['targets.registrationIds', '--ids'],
  ['targets.enrollmentGroupId', '--group'],
  ['targets.query.environment', '--environment'],
  ['targets.query.where', '--query'],
  ['parameters.sourceEnvironment', '--source'],
  ['parameters.targetEnvironment', '--target'],
  ['parameters.reprovisionPolicy', '--reprovision-policy'],
  ['parameters.sourceRemoval', '--source-removal'],
  ['parameters.protocol', '--protocol'],
  ['parameters.pollInterval', '--poll-interval'],
  ['parameters.onTimeout', '--on-timeout'],
  ['parameters.hubAction', '--hub-action'],
  ['parameters.reason', '--reason'],
  ['parameters.disconnectTimeoutSeconds', '--disconnect-timeout'],
  ['rollout.maximumPerMinute', '--max-per-minute'],
  ['rollout.maximumInFlight', '--max-in-flight'],
  ['rollout.exponentialRate.baseRatePerMinute', '--ramp-base'],
  ['rollout.exponentialRate.incrementFactor', '--ramp-factor'],
  ['rollout.exponentialRate.rateIncreaseCriteria', '--ramp-every'],
  ['abort.0.thresholdPercentage', '--abort-threshold'],
  ['abort.0.minNumberOfExecutedThings', '--abort-min'],
  ['abort.0.failureType', '--abort-on'],
  ['deviceTimeout', '--device-timeout'],
  ['retries.0.numberOfRetries', '--retries'],
  ['retries.0.failureType', '--retry-on'],
  ['description', '--description'],
];

/** The flag behind a request path, if one sets it (`targets.registrationIds.3` → `--ids`). */
export function flagOf(path: string): string | undefined {
  return FLAG_OF.find(([p]) => path === p || path.startsWith(`${p}.`))?.[1];
}

export function readInput(file: string, readStdin: () => string): string {
  if (file === '-') return readStdin();
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
  }
}

/** The WHERE condition of `SELECT * FROM devices WHERE …`, or the condition itself. */
export function whereOf(query: string): string {
  const m = /^\s*select\s+\*\s+from\s+devices(?:\s+where\s+([\s\S]*))?$/i.exec(query);
  if (!m) return query.trim();
  if (!m[1]?.trim())
    throw new UsageError('--query: name a WHERE condition (a fleet operation never targets every device)');
  return m[1].trim();
}

/**
 * The request body: its operation (the positional argument, or the --json body's), targets, parameters and
 * rollout, validated by the API's schema. Throws UsageError with every problem, each named by its flag.
 */
export function startRequest(
  operation: string | undefined,
  rawFlags: Record<string, unknown>,
  readStdin: () => string,
): FleetOperationRequestInput {
  const parsedFlags = StartFlags.safeParse(rawFlags);
  if (!parsedFlags.success) {
    throw new UsageError(
      parsedFlags.error.issues
        .map((i) => `--${i.path.join('.')}: ${i.message} (got ${JSON.stringify(rawFlags[String(i.path[0])])})`)
        .join('\n'),
    );
  }
  const f = parsedFlags.data;
  let base: Record<string, unknown> = {};
  if (f.json) {
    try {
      base = JSON.parse(readInput(f.json, readStdin)) as Record<string, unknown>;
    } catch (err) {
      if (err instanceof UsageError) throw err;
      throw new UsageError(`--json ${f.json}: not JSON (${(err as Error).message})`);
    }
    if (!base || typeof base !== 'object' || Array.isArray(base)) throw new UsageError(`--json: not a JSON object`);
  }
  const op = operation ?? (base.operation as string | undefined);
  if (!op) throw new UsageError('name the operation: fleet start promote|revoke|reinstate …');

  const body: Record<string, unknown> = { ...base, operation: op };
  const targets = targetsOf(f, readStdin);
  if (targets) body.targets = targets;
  else if (!base.targets) {
    throw new UsageError('name the devices: --ids, --ids-file, --group, or --query with --environment');
  }
  const parameters = definedOnly({
    sourceEnvironment: f.source,
    targetEnvironment: f.target,
    reprovisionPolicy: f['reprovision-policy'],
    sourceRemoval: f['source-removal'],
    protocol: f.protocol,
    pollInterval: f['poll-interval'],
    onTimeout: f['on-timeout'],
    hubAction: f['hub-action'],
    reason: f.reason,
    disconnectTimeoutSeconds: f['disconnect-timeout'],
  });
  if (Object.keys(parameters).length) body.parameters = { ...(base.parameters as object), ...parameters };

  const ramp = [f['ramp-base'], f['ramp-factor'], f['ramp-every']];
  if (ramp.some((v) => v !== undefined) && ramp.some((v) => v === undefined)) {
    throw new UsageError('an exponential rate takes all three of --ramp-base, --ramp-factor and --ramp-every');
  }
  const rollout = definedOnly({
    maximumPerMinute: f['max-per-minute'],
    maximumInFlight: f['max-in-flight'],
    exponentialRate:
      f['ramp-base'] === undefined
        ? undefined
        : {
            baseRatePerMinute: f['ramp-base'],
            incrementFactor: f['ramp-factor'],
            rateIncreaseCriteria:
              f['ramp-on'] === 'succeeded'
                ? { numberOfSucceededThings: f['ramp-every'] }
                : { numberOfNotifiedThings: f['ramp-every'] },
          },
  });
  if (Object.keys(rollout).length) body.rollout = { ...(base.rollout as object), ...rollout };

  if ((f['abort-threshold'] === undefined) !== (f['abort-min'] === undefined)) {
    throw new UsageError('abort criteria take both --abort-threshold <percent> and --abort-min <devices>');
  }
  if (f['abort-threshold'] !== undefined) {
    body.abort = [
      {
        failureType: f['abort-on'] ?? 'ALL',
        thresholdPercentage: f['abort-threshold'],
        minNumberOfExecutedThings: f['abort-min'],
      },
    ];
  } else if (f['abort-on']) throw new UsageError('--abort-on goes with --abort-threshold and --abort-min');
  if (f.retries !== undefined) body.retries = [{ failureType: f['retry-on'] ?? 'ALL', numberOfRetries: f.retries }];
  else if (f['retry-on']) throw new UsageError('--retry-on goes with --retries <n>');
  if (f['device-timeout'] !== undefined) body.deviceTimeout = f['device-timeout'];
  if (f.description !== undefined) body.description = f.description;
  if (f['dry-run']) body.dryRun = true;

  const checked = FleetOperationRequest.safeParse(body);
  if (!checked.success) {
    throw new UsageError(
      checked.error.issues
        .map((i) => {
          const path = i.path.join('.');
          if (i.code === 'unrecognized_keys') {
            // A flag of another operation (--hub-action on a promote), or a field the --json body should not have.
            return i.keys
              .map((k) => {
                const flag = flagOf(path ? `${path}.${k}` : k);
                return flag
                  ? `${flag}: not an option of a ${op}`
                  : `${path ? `${path}.` : ''}${k}: not a field of a ${op}`;
              })
              .join('\n');
          }
          const flag = flagOf(path);
          return `${flag ?? (path || 'request')}: ${i.message}`;
        })
        .join('\n'),
    );
  }
  return body as FleetOperationRequestInput;
}

function targetsOf(f: StartFlags, readStdin: () => string): FleetOperationRequestInput['targets'] | undefined {
  const given = [f.ids, f['ids-file'], f.group, f.query].filter((v) => v !== undefined).length;
  if (given > 1) throw new UsageError('name the devices one way: --ids, --ids-file, --group or --query');
  if (f.environment !== undefined && f.query === undefined) throw new UsageError('--environment goes with --query');
  if (f.ids !== undefined) return { registrationIds: splitIds(f.ids.split(',')) };
  if (f['ids-file'] !== undefined) {
    const lines = readInput(f['ids-file'], readStdin).split(/\r?\n/);
    const ids = splitIds(lines.filter((l) => !l.trim().startsWith('#')));
    if (!ids.length) throw new UsageError(`--ids-file ${f['ids-file']}: no registration ids in it`);
    return { registrationIds: ids };
  }
  if (f.group !== undefined) return { enrollmentGroupId: f.group };
  if (f.query !== undefined) {
    if (!f.environment) throw new UsageError('--query needs --environment <env> (whose hub registry to query)');
    return { query: { environment: f.environment, where: whereOf(f.query) } };
  }
  return undefined;
}

const splitIds = (parts: string[]) => parts.map((s) => s.trim()).filter(Boolean);

function definedOnly(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}
