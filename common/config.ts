import { z } from 'zod';
import { QuotasConfig } from './quotas';
import { ApiKeyEntries } from './access';

/**
 * The process configuration, parsed once at start from the environment. Nothing else reads `process.env`:
 * entry points call `loadConfig()` and pass the parts each module needs.
 */

const hostPort = z
  .string()
  .regex(/^[^\s:]+:\d{1,5}$/, 'expected host:port, e.g. 127.0.0.1:7233')
  .describe('host:port');

const booleanFlag = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const port = z.coerce.number().int().min(0).max(65535);

/** Hub connection strings as JSON: {"test":"HostName=…;SharedAccessKeyName=…;SharedAccessKey=…", …}. */
const hubConnectionStrings = z
  .string()
  .transform((raw, ctx) => {
    try {
      return JSON.parse(raw) as unknown;
    } catch {
      ctx.addIssue({ code: 'custom', message: 'must be JSON: {"<environment>": "<hub connection string>"}' });
      return z.NEVER;
    }
  })
  .pipe(z.record(z.string().regex(/^[a-z0-9-]+$/i), z.string().regex(/HostName=[^;]+/, 'needs HostName=…')));

/** JSON in an environment variable, then checked by `schema`. */
const jsonOf = <T extends z.ZodType>(schema: T, example: string) =>
  z
    .string()
    .transform((raw, ctx) => {
      try {
        return JSON.parse(raw) as unknown;
      } catch {
        ctx.addIssue({ code: 'custom', message: `must be JSON: ${example}` });
        return z.NEVER;
      }
    })
    .pipe(schema);

/** A comma-separated list: `a, b,c` → ['a', 'b', 'c']. */
const commaList = <T extends z.ZodType<unknown, string>>(item: T) =>
  z
    .string()
    .transform((raw) =>
      raw
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    )
    .pipe(z.array(item).min(1));

export const configSchema = z.object({
  TEMPORAL_ADDRESS: hostPort.optional(),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  /** TLS to TEMPORAL_ADDRESS; on by default when a CA, client certificate or API key is set. */
  TEMPORAL_TLS: booleanFlag.optional(),
  /** CA (PEM) of the Temporal frontend's certificate; default: the system's roots. */
  TEMPORAL_TLS_CA_FILE: z.string().min(1).optional(),
  /** mTLS: this client's certificate (PEM) and its key (PEM). */
  TEMPORAL_TLS_CERT_FILE: z.string().min(1).optional(),
  TEMPORAL_TLS_KEY_FILE: z.string().min(1).optional(),
  /** The name to verify the server's certificate against (SNI), when it is not the host of TEMPORAL_ADDRESS. */
  TEMPORAL_TLS_SERVER_NAME: z.string().min(1).optional(),
  /**
   * Where the Temporal SDK's Prometheus exporter listens (host:port) in the worker: its own metrics and the
   * workflows' and activities'. `npm start` picks a free loopback port and serves them at the API's /metrics.
   */
  TEMPORAL_METRICS_ADDRESS: hostPort.optional(),
  /** Temporal Cloud API key (sent over TLS as a bearer token). */
  TEMPORAL_API_KEY: z.string().min(1).optional(),
  /**
   * Payload encryption (common/payload-codec.ts): `id:base64key` pairs, comma-separated, each key 32 bytes; the
   * first encrypts, all decrypt (rotation). The worker and the API need the same list.
   */
  TEMPORAL_CODEC_KEYS: commaList(
    z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,32}:[A-Za-z0-9+/=_-]+$/, 'id:base64key')
      .transform((pair) => {
        const [id, key] = pair.split(':');
        return { id, key: Buffer.from(key, 'base64') };
      })
      .refine((k) => k.key.length === 32, 'each key is 32 bytes (openssl rand -base64 32)'),
  ).optional(),
  TEMPORAL_CLI_PATH: z.string().min(1).optional(),
  TEMPORAL_PORT: port.default(7233),
  TEMPORAL_UI_PORT: port.default(8233),
  TASK_QUEUE: z.string().min(1).default('iot-lifecycle'),
  API_PORT: port.default(3000),
  API_HOST: z.string().min(1).default('127.0.0.1'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  DATA_DIR: z.string().min(1).default('.data'),
  SHUTDOWN_GRACE_SECONDS: z.coerce.number().positive().default(30),
  /** Azure IoT Hub Device Provisioning Service connection string (service side, provisioningserviceowner). */
  AZURE_DPS_CONNECTION_STRING: z
    .string()
    .regex(/HostName=[^;]+/, 'needs HostName=…')
    .optional(),
  /** Environment name → IoT hub connection string (iothubowner or a registry read/write policy). */
  AZURE_HUB_CONNECTION_STRINGS: hubConnectionStrings.optional(),
  /**
   * Send traffic for *.azure-devices.net and *.azure-devices-provisioning.net to this address instead of
   * resolving the names (the embedded emulator, or a test double). Unset for real Azure.
   */
  AZURE_ENDPOINT_ADDRESS: hostPort.optional(),
  /** Extra CA certificate (PEM file) to trust for those endpoints, e.g. the emulator's CA. */
  AZURE_CA_FILE: z.string().min(1).optional(),
  /** `npm start` runs the embedded Azure emulator unless Azure connection strings are configured. */
  EMULATOR: booleanFlag.optional(),
  /** Interface `npm run emulator` listens on (the control API always stays on loopback). */
  EMULATOR_HOST: z.string().min(1).default('127.0.0.1'),
  EMULATOR_HTTPS_PORT: port.default(8443),
  EMULATOR_MQTT_PORT: port.default(8883),
  EMULATOR_CONTROL_PORT: port.default(8480),
  /** The emulator control API's bearer token; default: made once and kept in DATA_DIR/emulator/control-token. */
  EMULATOR_CONTROL_TOKEN: z.string().min(16, 'use at least 16 characters').optional(),
  /** Simulated devices `npm start` enrolls and connects to the emulator's test hub, ready to promote. */
  REHEARSAL_DEVICES: z.coerce.number().int().min(0).max(1000).default(3),
  EVENT_GRID_SECRET: z.string().min(16, 'use at least 16 characters').optional(),
  /** Above this many devices, a fleet operation needs the admin role (an operator's limit); 0–5000. */
  FLEET_OPERATOR_MAX_DEVICES: z.coerce.number().int().min(0).max(5000).default(1000),
  /**
   * The quotas of the hubs and DPS (JSON): {"hubs":{"test":{"tier":"S1","units":1}},"dps":{"operationsPerMinute":1000},
   * "scale":1}. Fleet operations never plan to exceed them. Hubs not named count as S1 with one unit.
   */
  AZURE_QUOTAS: jsonOf(
    QuotasConfig,
    '{"hubs":{"test":{"tier":"S1","units":1}},"dps":{"operationsPerMinute":1000}}',
  ).optional(),
  /** Accept Event Grid's Microsoft Entra–secured delivery from this tenant (its id). */
  EVENT_GRID_ENTRA_TENANT_ID: z.uuid().optional(),
  /** The webhook application's id URI or client id, as the subscription names it; comma-separated. */
  EVENT_GRID_ENTRA_AUDIENCE: commaList(z.string().min(1)).optional(),
  /** The tenant's signing keys; default https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys. */
  EVENT_GRID_ENTRA_JWKS_URI: z.url().optional(),
  /** HMAC key of the API's list page tokens; every replica needs the same. Unset: random per process. */
  API_PAGE_TOKEN_SECRET: z.string().min(32, 'use at least 32 characters').optional(),

  // ----- API security (api/security.ts) -----
  /** API keys by hash: [{"id":"ci","role":"operator","sha256":"<hex>","name":"CI"}]; `npm run api-key` makes one. */
  API_KEYS: jsonOf(ApiKeyEntries, '[{"id":"ci","role":"operator","sha256":"<hex SHA-256 of the key>"}]').optional(),
  /** A JSON file with the same list (mount it as a secret); read at start. */
  API_KEYS_FILE: z.string().min(1).optional(),
  /** OIDC issuer of bearer tokens, e.g. https://login.microsoftonline.com/<tenant>/v2.0 (Microsoft Entra ID v2). */
  API_OIDC_ISSUER: z.url().optional(),
  /** Accepted audiences, comma-separated: the API's application id URI (api://…) and/or its client id. */
  API_OIDC_AUDIENCE: commaList(z.string().min(1)).optional(),
  /** The issuer's signing keys, e.g. https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys. */
  API_OIDC_JWKS_URI: z.url().optional(),
  /** The claim that holds the caller's roles (viewer, operator, admin). */
  API_OIDC_ROLES_CLAIM: z.string().min(1).default('roles'),
  /** Host header values the API answers to (DNS rebinding guard); default: loopback names when API_HOST is loopback. */
  API_ALLOWED_HOSTS: commaList(z.string().regex(/^[^\s/,]+$/, 'a host name, optionally with :port')).optional(),
  /** Browser origins allowed by CORS, e.g. the Temporal UI for the codec endpoint; none by default. */
  API_CORS_ORIGINS: commaList(z.url()).optional(),
  /** Mutating requests a client (API key or token subject) may send per minute; 429 past it. */
  API_RATE_LIMIT_PER_MINUTE: z.coerce.number().int().min(1).default(60),

  // ----- Traces (common/tracing.ts): OpenTelemetry's standard names; off unless an endpoint is set -----
  /** OTLP/HTTP (protobuf) base URL of a collector, e.g. http://otel-collector:4318; traces go to <url>/v1/traces. */
  OTEL_EXPORTER_OTLP_ENDPOINT: z.url().optional(),
  /** The full traces URL, when it is not <OTEL_EXPORTER_OTLP_ENDPOINT>/v1/traces. */
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: z.url().optional(),
  /** Headers sent with every export, `key=value` comma-separated (e.g. a collector's API key); never logged. */
  OTEL_EXPORTER_OTLP_HEADERS: z
    .string()
    .transform((raw, ctx) => {
      const pairs = raw
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
        .map((pair) => pair.split('='));
      if (pairs.some(([key, ...value]) => !key || value.length === 0)) {
        ctx.addIssue({ code: 'custom', message: 'expected key=value pairs, comma-separated' });
        return z.NEVER;
      }
      return Object.fromEntries(
        pairs.map(([key, ...value]) => [key.trim(), decodeURIComponent(value.join('=').trim())]),
      );
    })
    .optional(),
  /** service.name of the spans; default iot-lifecycle-api, iot-lifecycle-worker, or iot-lifecycle (npm start). */
  OTEL_SERVICE_NAME: z.string().min(1).optional(),
  /** true: no traces even with an endpoint set. */
  OTEL_SDK_DISABLED: booleanFlag.default(false),
});

export type Config = z.infer<typeof configSchema>;

/** Settings that only work with others: each missing partner is an issue of its own. */
const TOGETHER: Array<[keyof Config, Array<keyof Config>]> = [
  ['API_OIDC_ISSUER', ['API_OIDC_AUDIENCE', 'API_OIDC_JWKS_URI']],
  ['EVENT_GRID_ENTRA_TENANT_ID', ['EVENT_GRID_ENTRA_AUDIENCE']],
  ['TEMPORAL_TLS_CERT_FILE', ['TEMPORAL_TLS_KEY_FILE']],
  ['TEMPORAL_TLS_KEY_FILE', ['TEMPORAL_TLS_CERT_FILE']],
];

function requireTogether(config: Config, ctx: z.RefinementCtx): void {
  for (const [setting, partners] of TOGETHER) {
    if (config[setting] === undefined) continue;
    for (const partner of partners) {
      if (config[partner] === undefined) {
        ctx.addIssue({ code: 'custom', path: [partner], message: `required with ${setting}` });
      }
    }
  }
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const relevant = Object.fromEntries(
    Object.keys(configSchema.shape)
      .filter((key) => env[key] !== undefined && env[key] !== '')
      .map((key) => [key, env[key]]),
  );
  const parsed = configSchema.superRefine(requireTogether).safeParse(relevant);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`));
  }
  return parsed.data;
}
