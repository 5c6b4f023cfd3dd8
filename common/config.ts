import { z } from 'zod';
import { QuotasConfig } from './quotas';

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

/** A variable holding JSON that must match `schema`. */
function jsonOf<T extends z.ZodType>(schema: T) {
  return z
    .string()
    .transform((raw, ctx) => {
      try {
        return JSON.parse(raw) as unknown;
      } catch {
        ctx.addIssue({ code: 'custom', message: 'must be JSON' });
        return z.NEVER;
      }
    })
    .pipe(schema);
}

export const configSchema = z.object({
  TEMPORAL_ADDRESS: hostPort.optional(),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
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
  /** Simulated devices `npm start` enrolls and connects to the emulator's test hub, ready to promote. */
  REHEARSAL_DEVICES: z.coerce.number().int().min(0).max(1000).default(3),
  EVENT_GRID_SECRET: z.string().min(16, 'use at least 16 characters').optional(),
  /**
   * The quotas of the hubs and DPS (JSON): {"hubs":{"test":{"tier":"S1","units":1}},"dps":{"operationsPerMinute":1000},
   * "scale":1}. Fleet operations never plan to exceed them. Hubs not named count as S1 with one unit.
   */
  AZURE_QUOTAS: jsonOf(QuotasConfig).optional(),
  /** HMAC key of the API's list page tokens; every replica needs the same. Unset: random per process. */
  API_PAGE_TOKEN_SECRET: z.string().min(32, 'use at least 32 characters').optional(),
});

export type Config = z.infer<typeof configSchema>;

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
  const parsed = configSchema.safeParse(relevant);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`));
  }
  return parsed.data;
}
