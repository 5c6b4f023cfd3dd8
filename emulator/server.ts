/**
 * The emulator's listeners: ONE HTTPS port for every Azure HTTP surface (routed by Host header), ONE MQTT-over-TLS
 * port for device traffic, and a plain-HTTP control API on loopback.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import { AzureError, sendHubError } from './azure-errors';
import { createEmulatorPki, type EmulatorPki } from './certs';
import { controlApp } from './control';
import { dpsDeviceRouter } from './dps-device';
import { closeEventGrid } from './eventgrid';
import { dpsServiceRouter } from './dps-service';
import { createHub, linkHubToDps, type CreateHubOptions } from './hub';
import { hubRouter } from './hub-rest';
import { limitsMiddleware } from './limits';
import { startMqtt, type MqttListener } from './mqtt';
import {
  GLOBAL_DPS_HOST,
  createEmulatorState,
  policyConnectionString,
  type DpsOptions,
  type EmulatorState,
  type HubState,
} from './state';

export interface EmulatorOptions {
  /** HTTPS port for hubs and DPS; 0 (default) picks a free port. */
  httpsPort?: number;
  /** MQTT-over-TLS port; 0 (default) picks a free port. */
  mqttPort?: number;
  /** Control API port; 0 (default) picks a free port; `false` disables the control API. */
  controlPort?: number | false;
  /** Interface to listen on (default 127.0.0.1). The control API always listens on loopback. */
  host?: string;
  /** Hubs to create at start; default `test` and `production`. */
  hubs?: CreateHubOptions[];
  /** Link every initial hub to the DPS (default true). */
  linkHubs?: boolean;
  dps?: DpsOptions;
  /** Reuse a CA (so a trusted ca.pem stays valid across restarts); default: a new CA. */
  ca?: { certPem: string; keyPem: string };
}

export interface RunningEmulator {
  /** `host:port` for `installAzureEndpointRouting`. */
  address: string;
  httpsPort: number;
  mqttPort: number;
  controlUrl?: string;
  caPem: string;
  pki: EmulatorPki;
  idScope: string;
  /** Owner connection strings (iothubowner / provisioningserviceowner) at start. */
  connectionStrings: { dps: string; hubs: Record<string, string> };
  state: EmulatorState;
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

/** Starts the emulator (in-process; ports 0 are ephemeral). */
export async function startEmulator(options: EmulatorOptions = {}): Promise<RunningEmulator> {
  const host = options.host ?? '127.0.0.1';
  const state = createEmulatorState(options.dps);
  for (const hubOptions of options.hubs ?? [{ name: 'test' }, { name: 'production' }]) {
    const hub = createHub(state, hubOptions);
    if (options.linkHubs !== false) linkHubToDps(state, hub);
  }
  const pki = createEmulatorPki(options.ca);

  // requestCert without rejecting: DPS X.509 attestation reads the device's client certificate itself.
  const httpsServer = https.createServer(
    { key: pki.server.keyPem, cert: pki.server.certPem, requestCert: true, rejectUnauthorized: false },
    azureApp(state),
  );
  const httpsPort = await listen(httpsServer, options.httpsPort ?? 0, host);

  let mqtt: MqttListener | undefined;
  let controlServer: http.Server | undefined;
  try {
    mqtt = await startMqtt({
      state,
      port: options.mqttPort ?? 0,
      host,
      tls: { key: pki.server.keyPem, cert: pki.server.certPem, ca: pki.ca.certPem },
    });
    let controlUrl: string | undefined;
    if (options.controlPort !== false) {
      controlServer = http.createServer(controlApp({ state, pki }));
      const controlPort = await listen(controlServer, options.controlPort ?? 0, '127.0.0.1');
      controlUrl = `http://127.0.0.1:${controlPort}`;
    }

    const hubs: Record<string, string> = {};
    for (const hub of state.hubs.values()) hubs[hub.name] = hubConnectionString(hub);
    const runningMqtt = mqtt;
    const runningControl = controlServer;
    return {
      address: `${host}:${httpsPort}`,
      httpsPort,
      mqttPort: mqtt.port,
      controlUrl,
      caPem: pki.ca.certPem,
      pki,
      idScope: state.dps.idScope,
      connectionStrings: { dps: dpsConnectionString(state), hubs },
      state,
      async stop() {
        await Promise.all([
          close(httpsServer),
          runningMqtt.close(),
          runningControl ? close(runningControl) : Promise.resolve(),
        ]);
        closeEventGrid(state);
        state.events.removeAllListeners();
      },
    };
  } catch (err) {
    await close(httpsServer);
    if (mqtt) await mqtt.close();
    if (controlServer) await close(controlServer);
    throw err;
  }
}
