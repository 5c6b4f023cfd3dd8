/**
 * A simulated device built on the real Azure device SDKs, behaving like a field device that uses DPS for late
 * binding: it provisions through DPS, connects to the assigned hub over MQTT, and when the hub drops it, it
 * reconnects; when the hub refuses it (e.g. the device was removed), it re-runs DPS registration at once and connects
 * where DPS now sends it. Failed attempts are spaced by exponential back-off. The SDK's own retry policy is off: with
 * its default one a refused device keeps reconnecting for about four minutes (a CONNACK refusal on a reconnection is
 * a retryable NotConnectedError to the SDK), which would keep it from DPS.
 *
 * With `hubTransport: 'https'` (azure-iot-device-http) there is no connection: the device sends telemetry every
 * `telemetryIntervalMs` and polls for cloud-to-device messages (completing each). Its first successful call on a hub
 * is an `active` event (the counterpart of MQTT's `connected`); a failed call is `requestFailed`, and when the hub
 * refused it (401, 403 or 404: disabled, deleted, credentials changed) the device goes back to DPS at once, as over
 * MQTT. IoT Hub never shows an HTTPS device as Connected; only its `lastActivityTime` moves.
 *
 * Secrets (symmetric keys, private keys) come only from the options of the device; nothing is read from the
 * environment.
 */
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  Client,
  Message,
  SharedAccessKeyAuthenticationProvider,
  X509AuthenticationProvider,
  type Twin,
} from 'azure-iot-device';
// The package's index.d.ts declares `Http` as a namespace while index.js exports the class: take the typed class.
import { Http as DeviceHttp } from 'azure-iot-device-http/dist/http';
import { Mqtt as DeviceMqtt } from 'azure-iot-device-mqtt';
import { NoRetry } from 'azure-iot-common';
import { MqttBase } from 'azure-iot-mqtt-base';
import { ProvisioningDeviceClient, type RegistrationResult } from 'azure-iot-provisioning-device';
import { Http as ProvisioningHttp } from 'azure-iot-provisioning-device-http';
import { Mqtt as ProvisioningMqtt } from 'azure-iot-provisioning-device-mqtt';
import { SymmetricKeySecurityClient } from 'azure-iot-security-symmetric-key';
import { X509Security } from 'azure-iot-security-x509';
import { deriveDeviceKey } from '../security/sas';

export type Attestation =
  /** Individual enrollment with a symmetric key. */
  | { type: 'symmetricKey'; key: string }
  /** Enrollment group with a symmetric key: the device key is derived from the group key and registration id. */
  | { type: 'symmetricKeyGroup'; groupKey: string }
  /**
   * X.509: `certPem` is the device (leaf) certificate, followed by its issuing intermediates for X.509 CA
   * attestation (the TLS client presents the whole chain); `keyPem` its private key.
   */
  | { type: 'x509'; certPem: string; keyPem: string };

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  factor: number;
}

export interface SimulatedDeviceOptions {
  registrationId: string;
  idScope: string;
  attestation: Attestation;
  /** DPS device endpoint host for HTTP (default `global.azure-devices-provisioning.net`). */
  provisioningHost?: string;
  /** DPS device transport (default `http`). */
  dpsTransport?: 'http' | 'mqtt';
  /** `host:port` of DPS's MQTT endpoint (default `provisioningHost`, port 8883). */
  dpsMqttAddress?: string;
  /**
   * Protocol to the hub (default `mqtt`). `https` reaches the hub's own host name on port 443 (route it to the
   * emulator with `installAzureEndpointRouting`, as for DPS over HTTP); it has no twin, so no `reportedProperties`.
   */
  hubTransport?: 'mqtt' | 'https';
  /** `host:port` the device opens its hub MQTT connection to (the SDK's GatewayHostName); default the hub. */
  hubMqttAddress?: string;
  /** Extra CA certificate(s) (PEM) to trust for the hub (MQTT or HTTPS) and DPS over MQTT. */
  ca?: string;
  backoff?: Partial<BackoffOptions>;
  /** DPS registration payload. */
  payload?: unknown;
  /** Reported properties to send after every successful connection (none by default). */
  reportedProperties?: Record<string, unknown>;
  /**
   * Sends a telemetry message this often while connected (MQTT: 0 = never, the default). An HTTPS device makes itself
   * known to the hub only by its calls, so it needs one: default 2 s, 0 is refused.
   */
  telemetryIntervalMs?: number;
  /** HTTPS: how often the device polls for cloud-to-device messages (default 5 s). */
  cloudToDevicePollMs?: number;
}

/** `active`: an HTTPS device whose last call the hub accepted (an MQTT device is `connected` instead). */
export type SimulatorPhase = 'idle' | 'provisioning' | 'connecting' | 'connected' | 'active' | 'waiting' | 'stopped';

export type SimulatorEvent =
  | { type: 'provisioned'; time: string; assignedHub: string; deviceId: string; substatus?: string }
  | { type: 'provisioningFailed'; time: string; error: string }
  | { type: 'connected'; time: string; hub: string; deviceId: string }
  | { type: 'connectFailed'; time: string; hub: string; error: string; refused: boolean }
  | { type: 'disconnected'; time: string; hub: string; error?: string }
  | { type: 'twinReported'; time: string; hub: string }
  | { type: 'telemetrySent'; time: string; hub: string; count: number }
  /** HTTPS: the hub accepted the device's first call since it was provisioned or since a call failed. */
  | { type: 'active'; time: string; hub: string; deviceId: string }
  /** HTTPS: a call failed; `refused` (401, 403, 404) sends the device back to DPS at once. */
  | { type: 'requestFailed'; time: string; hub: string; error: string; refused: boolean; status?: number }
  /** HTTPS: a cloud-to-device message was received (and completed). */
  | { type: 'messageReceived'; time: string; hub: string; messageId?: string }
  | { type: 'stopped'; time: string };

export interface SimulatorState {
  registrationId: string;
  phase: SimulatorPhase;
  assignedHub?: string;
  deviceId?: string;
  /** Connected over MQTT (never for an HTTPS device: IoT Hub keeps no connection for it). */
  connected: boolean;
  /** The hub accepts the device: connected over MQTT, or its last HTTPS call succeeded. */
  active: boolean;
  telemetrySent: number;
  history: SimulatorEvent[];
}

interface Assignment {
  hub: string;
  deviceId: string;
}

const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 1_000, maxMs: 60_000, factor: 2 };
const HTTPS_TELEMETRY_INTERVAL_MS = 2_000;
const HTTPS_C2D_POLL_MS = 5_000;
const HISTORY_LIMIT = 200;

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Whether a failed HTTPS call was the hub refusing the device: "for 401 Unauthorized, 403 Forbidden, 404 Not Found
 * errors, perform a full re-registration" (DPS how-to-troubleshoot-dps). azure-iot-device-http keeps the response on
 * the error it reports.
 */
function httpStatus(err: unknown): number | undefined {
  const status = (err as { response?: { statusCode?: unknown } } | undefined)?.response?.statusCode;
  return typeof status === 'number' ? status : undefined;
}

const REFUSALS = new Set([401, 403, 404]);

/** Connection attempts that fail without an answer from the hub before the device asks DPS again. */
const HUB_FAILURES_BEFORE_DPS = 3;

/**
 * Whether a failed open was the hub refusing the device (a CONNACK refusal; IoT Hub only ever sends 5, "not
 * authorized") rather than the connection failing. mqtt.js reports a refusal as "Connection refused: <reason>"; the
 * device SDK keeps that text, inside its own message on a client's first connection.
 */
function refusedByHub(err: unknown): boolean {
  const e = err as { message?: unknown; transportError?: { message?: unknown } } | undefined;
  return /Connection refused: /.test(`${String(e?.message)} ${String(e?.transportError?.message)}`);
}

type RegistrationClient = ReturnType<typeof ProvisioningDeviceClient.create>;
/** The provisioning packages pin their own azure-iot-common / mqtt-base versions; the shapes are the same. */
type ProvisioningSecurity = Parameters<typeof ProvisioningDeviceClient.create>[3];
type ProvisioningMqttBase = ConstructorParameters<typeof ProvisioningMqtt>[0];

/** How long stop() waits for an in-flight DPS registration to acknowledge its cancellation. */
const CANCEL_WAIT_MS = 2_000;

/** Rejects once the signal aborts (the device is stopping). */
function aborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    const stop = () => reject(new Error('stopped'));
    if (signal.aborted) stop();
    else signal.addEventListener('abort', stop, { once: true });
  });
}

/** Closes a device client, without waiting on a close that never calls back. */
async function closeBounded(client: Client): Promise<void> {
  await Promise.race([call((cb) => client.close(cb)).catch(() => undefined), sleep(CANCEL_WAIT_MS)]);
}

/** Callback-style SDK call → promise (the SDK's own promise forms are not used: some never settle). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the SDK callbacks carry assorted result types
function call<T = any>(fn: (cb: (err?: Error | null, result?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => fn((err, result) => (err ? reject(err) : resolve(result as T))));
}

export class SimulatedDevice extends EventEmitter<{ event: [SimulatorEvent] }> {
  private readonly backoff: BackoffOptions;
  private phase: SimulatorPhase = 'idle';
  private assignment?: Assignment;
  private client?: Client;
  private registration?: RegistrationClient;
  private telemetryCount = 0;
  private readonly history: SimulatorEvent[] = [];
  private readonly stopController = new AbortController();
  private loop?: Promise<void>;

  constructor(readonly options: SimulatedDeviceOptions) {
    super();
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    if (options.hubTransport === 'https') {
      if (options.telemetryIntervalMs === 0) {
        throw new Error('an HTTPS device needs telemetryIntervalMs > 0: its calls are all the hub sees of it');
      }
      if (options.reportedProperties) throw new Error('an HTTPS device has no twin: reportedProperties need MQTT');
    }
  }

  private get https(): boolean {
    return this.options.hubTransport === 'https';
  }

  get state(): SimulatorState {
    return {
      registrationId: this.options.registrationId,
      phase: this.phase,
      assignedHub: this.assignment?.hub,
      deviceId: this.assignment?.deviceId,
      connected: this.phase === 'connected',
      active: this.phase === 'connected' || this.phase === 'active',
      telemetrySent: this.telemetryCount,
      history: [...this.history],
    };
  }

  /** Starts the device's life (provision, connect, stay connected, recover); returns immediately. */
  start(): this {
    if (!this.loop) this.loop = this.run();
    return this;
  }

  /** Disconnects and ends the device's life; resolves when everything is closed. */
  async stop(): Promise<void> {
    if (this.stopController.signal.aborted) return this.loop;
    this.stopController.abort();
    const registration = this.registration;
    if (registration) {
      await Promise.race([call((cb) => registration.cancel(cb)).catch(() => undefined), sleep(CANCEL_WAIT_MS)]);
    }
    await this.closeClient();
    await this.loop;
  }

  /** Resolves with the first event (past or future) matching `predicate`; rejects after `timeoutMs`. */
  waitFor(predicate: (event: SimulatorEvent) => boolean, timeoutMs = 30_000): Promise<SimulatorEvent> {
    const seen = this.history.find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const onEvent = (event: SimulatorEvent): void => {
        if (!predicate(event)) return;
        clearTimeout(timer);
        this.off('event', onEvent);
        resolve(event);
      };
      const timer = setTimeout(() => {
        this.off('event', onEvent);
        reject(new Error(`${this.options.registrationId}: no matching simulator event within ${timeoutMs} ms`));
      }, timeoutMs);
      this.on('event', onEvent);
    });
  }

  private get stopped(): boolean {
    return this.stopController.signal.aborted;
  }

  private record(event: SimulatorEvent): void {
    this.history.push(event);
    if (this.history.length > HISTORY_LIMIT) this.history.splice(0, this.history.length - HISTORY_LIMIT);
    this.emit('event', event);
  }

  private async run(): Promise<void> {
    let failures = 0;
    let hubFailures = 0;
    // Whether the assignment in hand came from DPS just now (rather than from before a drop).
    let fresh = false;
    const wait = async (): Promise<void> => {
      this.phase = 'waiting';
      const ms = Math.min(this.backoff.initialMs * this.backoff.factor ** failures, this.backoff.maxMs);
      failures += 1;
      await sleep(ms, undefined, { signal: this.stopController.signal }).catch(() => undefined);
    };
    const hubFailed = async (hub: string, err: unknown): Promise<void> => {
      const time = new Date().toISOString();
      const status = httpStatus(err);
      const refused = this.https ? status !== undefined && REFUSALS.has(status) : refusedByHub(err);
      if (this.https) {
        this.record({
          type: 'requestFailed',
          time,
          hub,
          error: message(err),
          refused,
          ...(status !== undefined ? { status } : {}),
        });
      } else {
        this.record({ type: 'connectFailed', time, hub, error: message(err), refused });
      }
      if (refused) {
        // The hub refused this device (deleted, disabled, or its credentials changed): ask DPS where it belongs
        // now — "for 401 Unauthorized, 403 Forbidden, 404 Not Found errors, perform a full re-registration"
        // (DPS how-to-troubleshoot-dps). At once, unless DPS has just sent it here: then back off first, so a device
        // that no hub accepts does not hammer DPS.
        this.assignment = undefined;
        if (fresh) await wait();
      } else {
        // Not an answer from the hub (network, TLS, throttling, server errors): retry the same hub with back-off,
        // and ask DPS only after repeated failures, since the hub may be gone.
        hubFailures += 1;
        if (hubFailures >= HUB_FAILURES_BEFORE_DPS) {
          this.assignment = undefined;
          hubFailures = 0;
        }
        await wait();
      }
      fresh = false;
    };
    while (!this.stopped) {
      if (!this.assignment) {
        this.phase = 'provisioning';
        try {
          this.assignment = await this.provision();
          fresh = true;
        } catch (err) {
          if (this.stopped) break;
          this.record({ type: 'provisioningFailed', time: new Date().toISOString(), error: message(err) });
          await wait();
          continue;
        }
      }
      const { hub } = this.assignment;
      this.phase = 'connecting';
      let ended: Promise<Error | undefined>;
      try {
        ({ ended } = await (this.https ? this.openHttps(this.assignment) : this.connect(this.assignment)));
      } catch (err) {
        if (this.stopped) break;
        await hubFailed(hub, err);
        continue;
      }
      failures = 0;
      hubFailures = 0;
      fresh = false;
      const error = await ended;
      if (this.stopped) break;
      if (this.https) {
        // A failed call ends an HTTPS session: judged like a failed first call (fresh is false, so a refusal goes
        // to DPS at once).
        await hubFailed(hub, error);
        continue;
      }
      this.record({
        type: 'disconnected',
        time: new Date().toISOString(),
        hub,
        ...(error ? { error: message(error) } : {}),
      });
      // A dropped device first tries to reconnect to its hub (the loop does that); only a refusal sends it to DPS.
    }
    this.phase = 'stopped';
    this.record({ type: 'stopped', time: new Date().toISOString() });
  }

  private async provision(): Promise<Assignment> {
    const { options } = this;
    const provisioningHost = options.provisioningHost ?? 'global.azure-devices-provisioning.net';
    let transport: ProvisioningHttp | ProvisioningMqtt;
    let host = provisioningHost;
    if (options.dpsTransport === 'mqtt') {
      // The DPS MQTT transport connects to `mqtts://<provisioningHost>` and takes TLS options only through
      // the MqttBase it is given.
      const base = new MqttBase();
      if (options.ca) base.setOptions({ ca: options.ca });
      transport = new ProvisioningMqtt(base as unknown as ProvisioningMqttBase);
      host = options.dpsMqttAddress ?? provisioningHost;
    } else {
      transport = new ProvisioningHttp();
    }
    const { attestation, registrationId } = options;
    const security = (attestation.type === 'x509'
      ? new X509Security(registrationId, { cert: attestation.certPem, key: attestation.keyPem })
      : new SymmetricKeySecurityClient(registrationId, this.deviceKey())) as unknown as ProvisioningSecurity;
    const registration = ProvisioningDeviceClient.create(host, options.idScope, transport, security);
    if (options.payload !== undefined) registration.setProvisioningPayload(options.payload as object);
    this.registration = registration;
    let result: RegistrationResult;
    try {
      // A cancelled registration does not always call back: stopping must not wait for it.
      result = await Promise.race([
        call<RegistrationResult>((cb) => registration.register(cb)),
        aborted(this.stopController.signal),
      ]);
    } finally {
      this.registration = undefined;
    }
    const assignment = { hub: result.assignedHub, deviceId: result.deviceId };
    this.record({
      type: 'provisioned',
      time: new Date().toISOString(),
      assignedHub: assignment.hub,
      deviceId: assignment.deviceId,
      ...(typeof result.substatus === 'string' ? { substatus: result.substatus } : {}),
    });
    return assignment;
  }

  private deviceKey(): string {
    const { attestation, registrationId } = this.options;
    if (attestation.type === 'symmetricKey') return attestation.key;
    if (attestation.type === 'symmetricKeyGroup') return deriveDeviceKey(attestation.groupKey, registrationId);
    throw new Error('X.509 devices have no symmetric key');
  }

  /** Opens the hub connection; resolves with a promise that settles when the connection drops. */
  private async connect(assignment: Assignment): Promise<{ ended: Promise<Error | undefined> }> {
    const { options } = this;
    const gateway = options.hubMqttAddress;
    let client: Client;
    if (options.attestation.type === 'x509') {
      // A connection string cannot carry GatewayHostName for X.509 devices; the provider can.
      const provider = new X509AuthenticationProvider({
        host: assignment.hub,
        deviceId: assignment.deviceId,
        ...(gateway ? { gatewayHostName: gateway } : {}),
        x509: { cert: options.attestation.certPem, key: options.attestation.keyPem },
      });
      client = Client.fromAuthenticationProvider(provider, DeviceMqtt);
    } else {
      const connectionString =
        `HostName=${assignment.hub};DeviceId=${assignment.deviceId};SharedAccessKey=${this.deviceKey()}` +
        (gateway ? `;GatewayHostName=${gateway}` : '');
      client = Client.fromConnectionString(connectionString, DeviceMqtt);
    }
    // The simulator owns reconnection (it must decide between reconnecting and re-provisioning).
    client.setRetryPolicy(new NoRetry());
    client.on('error', () => undefined);
    const dropped = new Promise<Error | undefined>((resolve) => {
      // The SDK emits results.Disconnected with the transport error as `transportObj`.
      client.on('disconnect', (result?: { transportObj?: unknown }) =>
        resolve(result?.transportObj instanceof Error ? result.transportObj : undefined),
      );
      // stop() closes the client itself, which emits nothing.
      this.stopController.signal.addEventListener('abort', () => resolve(undefined), { once: true });
    });
    this.client = client;
    try {
      if (options.ca) await call((cb) => client.setOptions({ ca: options.ca }, cb));
      // An open in flight when the device stops may never call back once stop() closed the client.
      await Promise.race([call((cb) => client.open(cb)), aborted(this.stopController.signal)]);
    } catch (err) {
      this.client = undefined;
      await closeBounded(client);
      throw err;
    }
    if (this.stopped) {
      await this.closeClient();
      return { ended: dropped };
    }
    this.phase = 'connected';
    this.record({
      type: 'connected',
      time: new Date().toISOString(),
      hub: assignment.hub,
      deviceId: assignment.deviceId,
    });
    void this.afterConnect(client, assignment.hub, dropped);
    return { ended: dropped };
  }

  /**
   * Starts an HTTPS device on its hub: the first telemetry message must succeed (else this throws the error the SDK
   * reported); resolves with a promise that settles with the error of the first call that fails afterwards — a
   * telemetry send, a cloud-to-device poll or its completion.
   */
  private async openHttps(assignment: Assignment): Promise<{ ended: Promise<Error | undefined> }> {
    const { options } = this;
    const provider =
      options.attestation.type === 'x509'
        ? new X509AuthenticationProvider({
            host: assignment.hub,
            deviceId: assignment.deviceId,
            x509: { cert: options.attestation.certPem, key: options.attestation.keyPem },
          })
        : SharedAccessKeyAuthenticationProvider.fromConnectionString(
            `HostName=${assignment.hub};DeviceId=${assignment.deviceId};SharedAccessKey=${this.deviceKey()}`,
          );
    // The transport is built here rather than by Client.fromConnectionString because only it reports the failures of
    // the cloud-to-device polls it runs on its own timer (as `error` events; the client swallows them).
    const transport = new DeviceHttp(provider);
    const client = new Client(transport);
    client.setRetryPolicy(new NoRetry());
    client.on('error', () => undefined);
    let end!: (err?: Error) => void;
    const ended = new Promise<Error | undefined>((resolve) => {
      const { signal } = this.stopController;
      const stopped = (): void => resolve(undefined);
      signal.addEventListener('abort', stopped, { once: true });
      end = (err) => {
        // A device that keeps failing opens many sessions: each lets go of the stop signal when it ends.
        signal.removeEventListener('abort', stopped);
        resolve(err);
        if (this.client === client) void this.closeClient();
      };
    });
    transport.on('error', (err: Error) => end(err));
    this.client = client;
    const pollSeconds = (options.cloudToDevicePollMs ?? HTTPS_C2D_POLL_MS) / 1000;
    try {
      await call((cb) =>
        client.setOptions(
          { ...(options.ca ? { ca: options.ca } : {}), http: { receivePolicy: { interval: pollSeconds } } },
          cb,
        ),
      );
      await call((cb) => client.open(cb));
      await this.sendTelemetry(client, assignment.hub);
    } catch (err) {
      this.client = undefined;
      end();
      await call((cb) => client.close(cb)).catch(() => undefined);
      throw err;
    }
    if (this.stopped) {
      await this.closeClient();
      return { ended };
    }
    this.phase = 'active';
    this.record({ type: 'active', time: new Date().toISOString(), hub: assignment.hub, deviceId: assignment.deviceId });
    client.on('message', (msg: Message) => {
      client.complete(msg, (err) => {
        if (err) end(err);
        else
          this.record({
            type: 'messageReceived',
            time: new Date().toISOString(),
            hub: assignment.hub,
            ...(msg.messageId ? { messageId: String(msg.messageId) } : {}),
          });
      });
    });
    void (async () => {
      const interval = options.telemetryIntervalMs ?? HTTPS_TELEMETRY_INTERVAL_MS;
      for (;;) {
        await sleep(interval, undefined, { signal: this.stopController.signal }).catch(() => undefined);
        if (this.stopped || this.client !== client) return;
        try {
          await this.sendTelemetry(client, assignment.hub);
        } catch (err) {
          end(err as Error);
          return;
        }
      }
    })();
    return { ended };
  }

  private async sendTelemetry(client: Client, hub: string): Promise<void> {
    const body = JSON.stringify({ registrationId: this.options.registrationId, seq: this.telemetryCount + 1 });
    await call((cb) => client.sendEvent(new Message(body), cb));
    this.telemetryCount += 1;
    if (this.telemetryCount === 1 || this.telemetryCount % 100 === 0) {
      this.record({ type: 'telemetrySent', time: new Date().toISOString(), hub, count: this.telemetryCount });
    }
  }

  /** Reports properties and sends telemetry while the connection lasts; failures here end with the drop. */
  private async afterConnect(client: Client, hub: string, dropped: Promise<Error | undefined>): Promise<void> {
    let live = true;
    void dropped.then(() => (live = false));
    const { reportedProperties, telemetryIntervalMs } = this.options;
    try {
      if (reportedProperties) {
        const twin = await call<Twin>((cb) => client.getTwin(cb));
        await call((cb) => twin.properties.reported.update(reportedProperties, cb));
        this.record({ type: 'twinReported', time: new Date().toISOString(), hub });
      }
      while (live && telemetryIntervalMs && !this.stopped && this.client === client) {
        await this.sendTelemetry(client, hub);
        await sleep(telemetryIntervalMs, undefined, { signal: this.stopController.signal }).catch(() => undefined);
      }
    } catch {
      // The connection went away mid-operation: the `disconnect` handler drives what happens next.
    }
  }

  private async closeClient(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) await closeBounded(client);
  }
}
