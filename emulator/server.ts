/**
 * The emulator's listeners: ONE HTTPS port for every Azure HTTP surface (routed by Host header), ONE MQTT-over-TLS
 * port for device traffic, and a plain-HTTP control API on loopback.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import { controlApp } from './control/app';
import { generateControlToken } from './control/token';
import { resetEmulator } from './control/reset';
import type { WriteCounters } from './counters';
import { dpsDeviceRouter } from './dps/device-rest';
import { linkHubToDps } from './dps/linked-hubs';
import { dpsServiceRouter } from './dps/service-rest';
import { closeEventGrid } from './eventgrid/event-grid';
import { AzureError, sendHubError } from './hub/errors';
import { createHub, type CreateHubOptions } from './hub/registry';
import { hubRouter } from './hub/rest';
import { addFaultRule, removeFaultRule, type FaultRuleInput } from './limits/decide';
import { limitsMiddleware } from './limits/middleware';
import { startMqtt, type MqttListener } from './mqtt/listener';
import {
  StateFileError,
  createStateSaver,
  readStateFile,
  restoreRuntime,
  restoreState,
  saveOnStateEvents,
  takeSnapshot,
  type StateSaver,
} from './persistence/state-file';
import { createEmulatorPki, type EmulatorPki } from './security/certs';
import {
  GLOBAL_DPS_HOST,
  createEmulatorState,
  createLimitsState,
  policyConnectionString,
  type DpsOptions,
  type EmulatorState,
  type FaultRule,
  type HubState,
} from './state';

export interface EmulatorOptions {
  /** HTTPS port for hubs and DPS; 0 (default) picks a free port. */
  httpsPort?: number;
  /** MQTT-over-TLS port; 0 (default) picks a free port. */
  mqttPort?: number;
  /** Control API port; 0 (default) picks a free port; `false` disables the control API. */
  controlPort?: number | false;
  /** The control API's bearer token; default: a random one (`RunningEmulator.controlToken`). */
  controlToken?: string;
  /** Interface to listen on (default 127.0.0.1). The control API always listens on loopback. */
  host?: string;
  /** Hubs to create at start; default `test` and `production`. */
  hubs?: CreateHubOptions[];
  /** Link every initial hub to the DPS (default true). */
  linkHubs?: boolean;
  dps?: DpsOptions;
  /** Reuse a CA (so a trusted ca.pem stays valid across restarts); default: a new CA. */
  ca?: { certPem: string; keyPem: string };
  /**
   * Keep the state in this JSON file (see emulator/persistence/state-file.ts): loaded at start if it exists (it then
   * wins over `dps`; hubs of `hubs` that it lacks are added), saved about a second after changes and on `stop()`.
   */
  stateFile?: string;
}

export interface RunningEmulator {
  /** `host:port` for `installAzureEndpointRouting`. */
  address: string;
  httpsPort: number;
  mqttPort: number;
  controlUrl?: string;
  /** What the control API requires as `Authorization: Bearer <token>` (all but /health). */
  controlToken: string;
  caPem: string;
  pki: EmulatorPki;
  idScope: string;
  /** Owner connection strings (iothubowner / provisioningserviceowner) at start. */
  connectionStrings: { dps: string; hubs: Record<string, string> };
  state: EmulatorState;
  /**
   * Successful writes per surface, hub, operation and resource, e.g.
   * `counters.get({ surface: 'hub', hub: 'test', operation: 'deviceDelete', id: 'dev-1' })`; `snapshot()` and
   * `diff(snapshot)` tell what a piece of work wrote. See emulator/counters.ts.
   */
  counters: WriteCounters;
  /**
   * Fault injection in-process, as `POST /faults/rules` does it: `addRule({ surface, hub, operation, status, latencyMs,
   * phase, times })` (see FaultRule in emulator/state.ts: phase `after` applies the call and then replaces, drops
   * (status 0) or delays its answer); `removeRule(id)`; `rules()`; `clear()` drops every rule, error rate and
   * latency.
   */
  faults: {
    addRule(rule: FaultRuleInput): FaultRule;
    removeRule(id: string): boolean;
    rules(): FaultRule[];
    clear(): void;
  };
  /** What `POST /reset` does (see emulator/control/reset.ts). */
  reset(): Promise<void>;
  /** The state file, when persistence is on. */
  stateFile?: string;
  /** Writes the state file now (changes made in-process, outside requests, are otherwise saved with the next). */
  saveState(): Promise<void>;
  stop(): Promise<void>;
}

const DEVICE_REGISTRATION_PATH = /^\/[^/]+\/registrations\/[^/]+(\/|$)/i;

/** Owner connection string of a hub (or another of its policies). */
export function hubConnectionString(hub: HubState, policyName = 'iothubowner'): string {
  const policy = hub.policies.find((p) => p.keyName === policyName);
  if (!policy) throw new Error(`Hub ${hub.name} has no policy ${policyName}`);
  return policyConnectionString(hub.hostName, policy);
}

export function dpsConnectionString(state: EmulatorState, policyName = 'provisioningserviceowner'): string {
  const policy = state.dps.policies.find((p) => p.keyName === policyName);
  if (!policy) throw new Error(`DPS has no policy ${policyName}`);
  return policyConnectionString(state.dps.hostName, policy);
}

/** The Azure HTTP surfaces as one express app, dispatched by Host header. */
export function azureApp(state: EmulatorState): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');

  app.use(hubRouter(state));

  const dpsService = express.Router();
  dpsService.use(limitsMiddleware(state, 'dpsService'));
  dpsService.use(dpsServiceRouter(state));
  const dpsDevice = express.Router();
  dpsDevice.use(limitsMiddleware(state, 'dpsDevice'));
  dpsDevice.use(dpsDeviceRouter(state));

  app.use((req: Request, res: Response, next: NextFunction) => {
    const host = req.hostname.toLowerCase();
    const isDps = host === state.dps.hostName;
    if (host === GLOBAL_DPS_HOST || (isDps && DEVICE_REGISTRATION_PATH.test(req.path))) {
      dpsDevice(req, res, next);
    } else if (isDps) {
      dpsService(req, res, next);
    } else {
      next();
    }
  });

  // No such host: what the hub SDK reports as IotHubNotFoundError.
  app.use((req: Request, res: Response) => {
    sendHubError(res, new AzureError(404, 'IotHubNotFound', `No IoT hub or DPS is emulated at ${req.hostname}`));
  });
  return app;
}

function listen(server: http.Server | https.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function close(server: http.Server | https.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** Runs a restore step, reporting a failure as a problem of the state file. */
function restoreFrom<T>(file: string, restore: () => T): T {
  try {
    return restore();
  } catch (err) {
    throw new StateFileError(file, (err as Error).message);
  }
}

/** Starts the emulator (in-process; ports 0 are ephemeral). */
export async function startEmulator(options: EmulatorOptions = {}): Promise<RunningEmulator> {
  const host = options.host ?? '127.0.0.1';
  const { stateFile } = options;
  const snapshot = stateFile ? readStateFile(stateFile) : undefined;
  const state = snapshot ? restoreFrom(stateFile!, () => restoreState(snapshot)) : createEmulatorState(options.dps);
  for (const hubOptions of options.hubs ?? [{ name: 'test' }, { name: 'production' }]) {
    if (state.hubs.has(hubOptions.name)) continue; // from the state file
    const hub = createHub(state, hubOptions);
    if (options.linkHubs !== false) linkHubToDps(state, hub);
  }
  const pki = createEmulatorPki(options.ca);
  const controlToken = options.controlToken ?? generateControlToken();
  let mqtt: MqttListener | undefined;
  let saver: StateSaver | undefined;
  if (stateFile) {
    // The listener's broker, not deviceBroker(state): the final save runs after the listener has stopped.
    saver = createStateSaver(stateFile, () => takeSnapshot(state, mqtt?.broker), {
      onError: (err) => process.emitWarning(`Emulator state could not be saved to ${stateFile}: ${err.message}`),
    });
    saveOnStateEvents(state, saver);
  }
  const markDirty = (): void => saver?.markDirty();
  // Any request may change state (a GET of a DPS operation too); the saver skips writes that change nothing.
  const saveAfterRequests = (server: http.Server | https.Server): void => {
    if (saver) server.on('request', (_req, res: http.ServerResponse) => res.on('finish', markDirty));
  };

  // requestCert without rejecting: DPS X.509 attestation reads the device's client certificate itself.
  const httpsServer = https.createServer(
    { key: pki.server.keyPem, cert: pki.server.certPem, requestCert: true, rejectUnauthorized: false },
    azureApp(state),
  );
  saveAfterRequests(httpsServer);
  const httpsPort = await listen(httpsServer, options.httpsPort ?? 0, host);

  let controlServer: http.Server | undefined;
  try {
    mqtt = await startMqtt({
      state,
      port: options.mqttPort ?? 0,
      host,
      tls: { key: pki.server.keyPem, cert: pki.server.certPem, ca: pki.ca.certPem },
      onActivity: markDirty,
    });
    if (snapshot) restoreFrom(stateFile!, () => restoreRuntime(state, snapshot, mqtt!.broker));
    let controlUrl: string | undefined;
    if (options.controlPort !== false) {
      controlServer = http.createServer(controlApp({ state, pki, token: controlToken }));
      saveAfterRequests(controlServer);
      const controlPort = await listen(controlServer, options.controlPort ?? 0, '127.0.0.1');
      controlUrl = `http://127.0.0.1:${controlPort}`;
    }

    const hubs: Record<string, string> = {};
    for (const hub of state.hubs.values()) hubs[hub.name] = hubConnectionString(hub);
    const runningMqtt = mqtt;
    const runningControl = controlServer;
    // At once, so that the keys generated for a new state file are on disk from the start.
    await saver?.save();
    return {
      address: `${host}:${httpsPort}`,
      httpsPort,
      mqttPort: mqtt.port,
      controlUrl,
      controlToken,
      caPem: pki.ca.certPem,
      pki,
      idScope: state.dps.idScope,
      connectionStrings: { dps: dpsConnectionString(state), hubs },
      state,
      counters: state.counters,
      faults: {
        addRule: (rule) => addFaultRule(state.limits, rule),
        removeRule: (id) => removeFaultRule(state.limits, id),
        rules: () => state.limits.faults.rules.map((rule) => ({ ...rule })),
        clear: () => {
          state.limits.faults = createLimitsState().faults;
        },
      },
      reset: () => resetEmulator(state),
      stateFile,
      saveState: () => saver?.save() ?? Promise.resolve(),
      async stop() {
        await Promise.all([
          close(httpsServer),
          runningMqtt.close(),
          runningControl ? close(runningControl) : Promise.resolve(),
        ]);
        try {
          // After the listeners closed: nothing changes any more, and every device is disconnected.
          await saver?.close();
        } finally {
          closeEventGrid(state);
          state.events.removeAllListeners();
        }
      },
    };
  } catch (err) {
    await close(httpsServer);
    if (mqtt) await mqtt.close();
    if (controlServer) await close(controlServer);
    closeEventGrid(state);
    state.events.removeAllListeners();
    throw err;
  }
}
