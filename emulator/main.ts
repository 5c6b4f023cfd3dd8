/**
 * `npm run emulator`: the emulator standalone with its default setup (hubs `test` and `production`, both linked
 * to the DPS) on fixed ports, printing what clients need.
 *
 * Flags (or environment): --https-port (EMULATOR_HTTPS_PORT, 8443), --mqtt-port (EMULATOR_MQTT_PORT, 8883),
 * --control-port (EMULATOR_CONTROL_PORT, 8480), --host (EMULATOR_HOST, 127.0.0.1), --data-dir
 * (DATA_DIR/emulator, .data/emulator), --no-persist, --client-env-file FILE. The CA is kept in the data dir so a
 * trusted ca.pem survives restarts, and so is the state (state.json: hubs, devices, enrollments, subscriptions)
 * unless --no-persist. --client-env-file writes what the worker and the API need to use this emulator
 * (AZURE_* variables) as an environment file, e.g. for `node --env-file` in docker-compose.yml.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { loadConfig } from '../common/config';
import { stopOnSignals } from '../common/shutdown';
import { ensureSecretFile } from '../common/secret-file';
import { controlTokenFile, generateControlToken } from './control/token';
import { persistCa, readPersistedCa } from './persistence/ca';
import { startEmulator } from './server';

interface EmulatorConfig {
  controlToken?: string;
  httpsPort: number;
  mqttPort: number;
  controlPort: number;
  host: string;
  dataDir: string;
  persist: boolean;
  clientEnvFile?: string;
}

const port = z.coerce.number().int().min(0).max(65535);

/** Flags override the project configuration (common/config.ts), which is read from the environment once. */
function readConfig(argv: string[]): EmulatorConfig {
  const { values } = parseArgs({
    args: argv,
    options: {
      'https-port': { type: 'string' },
      'mqtt-port': { type: 'string' },
      'control-port': { type: 'string' },
      host: { type: 'string' },
      'data-dir': { type: 'string' },
      'no-persist': { type: 'boolean' },
      'client-env-file': { type: 'string' },
    },
    strict: true,
  });
  const config = loadConfig();
  return z
    .object({
      controlToken: z.string().optional(),
      httpsPort: port,
      mqttPort: port,
      controlPort: port,
      host: z.string().min(1),
      dataDir: z.string().min(1),
      persist: z.boolean(),
      clientEnvFile: z.string().min(1).optional(),
    })
    .parse({
      controlToken: config.EMULATOR_CONTROL_TOKEN,
      httpsPort: values['https-port'] ?? config.EMULATOR_HTTPS_PORT,
      mqttPort: values['mqtt-port'] ?? config.EMULATOR_MQTT_PORT,
      controlPort: values['control-port'] ?? config.EMULATOR_CONTROL_PORT,
      host: values.host ?? config.EMULATOR_HOST,
      dataDir: values['data-dir'] ?? path.join(config.DATA_DIR, 'emulator'),
      persist: !values['no-persist'],
      clientEnvFile: values['client-env-file'],
    });
}

async function main(): Promise<void> {
  const config = readConfig(process.argv.slice(2));

  const emulator = await startEmulator({
    httpsPort: config.httpsPort,
    mqttPort: config.mqttPort,
    controlPort: config.controlPort,
    // Kept with the state, so that scripts and the simulator keep working across restarts; random without it.
    controlToken:
      config.controlToken ??
      (config.persist ? ensureSecretFile(controlTokenFile(config.dataDir), generateControlToken) : undefined),
    host: config.host,
    ca: readPersistedCa(config.dataDir),
    stateFile: config.persist ? path.join(config.dataDir, 'state.json') : undefined,
  });
  const caFile = persistCa(config.dataDir, emulator.pki);
  if (config.clientEnvFile) {
    // Single quotes: the hub map is JSON. The file holds service keys, hence 0600.
    const env = {
      AZURE_DPS_CONNECTION_STRING: emulator.connectionStrings.dps,
      AZURE_HUB_CONNECTION_STRINGS: JSON.stringify(emulator.connectionStrings.hubs),
      AZURE_ENDPOINT_ADDRESS: emulator.address,
      AZURE_CA_FILE: path.resolve(caFile),
    };
    const lines = Object.entries(env).map(([key, value]) => `${key}='${value}'`);
    writeFileSync(config.clientEnvFile, `${lines.join('\n')}\n`, { mode: 0o600 });
  }

  const lines = [
    'Azure IoT emulator running',
    `  HTTPS (hubs + DPS)  ${emulator.address}`,
    `  MQTT over TLS       ${config.host}:${emulator.mqttPort}`,
    `  control API         ${emulator.controlUrl}`,
    `  control API token   ${config.persist && !config.controlToken ? `in ${path.resolve(controlTokenFile(config.dataDir))}: ` : ''}${emulator.controlToken}`,
    `                      (send it as Authorization: Bearer <token>)`,
    `  CA certificate      ${path.resolve(caFile)}`,
    `  DPS id scope        ${emulator.idScope}`,
    `  state               ${emulator.stateFile ? path.resolve(emulator.stateFile) : 'in memory (--no-persist)'}`,
    '',
    'Service connection strings:',
    `  DPS         ${emulator.connectionStrings.dps}`,
    ...Object.entries(emulator.connectionStrings.hubs).map(([name, cs]) => `  hub ${name.padEnd(10)} ${cs}`),
    '',
    'Point the SDKs at it (project config):',
    `  AZURE_ENDPOINT_ADDRESS=${emulator.address} AZURE_CA_FILE=${path.resolve(caFile)}`,
    `Devices over MQTT: add GatewayHostName=${config.host}:${emulator.mqttPort} to the device connection string`,
    'and trust the CA with client.setOptions({ ca }).',
  ];
  console.log(lines.join('\n'));

  stopOnSignals(async (signal) => {
    console.log(`\n${signal}: stopping the emulator`);
    await emulator.stop();
  });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
