/**
 * The device side of every IoT hub over MQTT, and the hand-over of DPS clients: the listener (mqtt/listener.ts)
 * reads each connection's CONNECT and passes it here, to route by username: `{idScope}/registrations/{regId}/…` goes
 * to DPS (dps/device-mqtt.ts), `{hubHostName}/{deviceId}/?api-version=…` to that hub's own aedes broker. A broker per
 * hub keeps hubs apart: the same device id on two hubs is two devices, and a second connection of one device to one
 * hub replaces the first, as on IoT Hub.
 *
 * Hub devices authenticate against the hub's registry (hub/registry.ts, mqtt/credentials.ts) with a SAS token
 * (device key, or a hub policy with DeviceConnect) or an X.509 client certificate (thumbprint for `selfSigned`,
 * chain to a verified CA for `certificateAuthority`). Every refusal is CONNACK 5 "not authorized", as on IoT Hub
 * (see NOT_AUTHORIZED), followed by the close of the connection. A device may only use its own topics; publishing
 * elsewhere closes the connection and subscribing elsewhere is refused in the SUBACK. Server-originated messages are
 * written to the one client they are for, never through topic routing (every device subscribes to the same
 * `$iothub/...` names).
 *
 * The registry drives live connections: deleting or disabling a device, or changing its credentials so that the
 * one it connected with no longer holds, closes its connection (that is how a device learns it was removed), and a
 * SAS-authenticated connection is closed when its token expires.
 */
import { randomUUID, X509Certificate } from 'node:crypto';
import type tls from 'node:tls';
import Aedes, { type AuthenticateError, type Client, type PublishPacket, type Subscription } from 'aedes';
import mqttPacket, { type IConnectPacket } from 'mqtt-packet';
import { createDpsMqttHandler, type DpsMqttHandler, type DpsMqttSession } from '../dps/device-mqtt';
import { CloudToDeviceQueues, type CloudToDeviceMessage } from '../hub/cloud-to-device';
import type { DeviceRecord } from '../hub/model';
import { findHubByHost, patchReported, recordActivity, setConnectionState, twinToWire } from '../hub/registry';
import { evaluateLimits } from '../limits/decide';
import { peerCertificateChain } from '../security/certs';
import { parseSasToken } from '../security/sas';
import type {
  DeviceEvent,
  DeviceTelemetryEvent,
  DeviceUpdatedEvent,
  EmulatorState,
  HubState,
  TwinDesiredUpdatedEvent,
} from '../state';
import { credentialHolds, normalizeThumbprint, type Credential } from './credentials';

/**
 * The only CONNACK refusal IoT Hub sends: "The Azure IoT Hub does not support all the MQTT CONNECT return code values
 * defined in the MQTT v3.1.1 specification, always returning Not Authorized (MQTT CONNECT Return Code 5) on MQTT
 * CONNECT failure" (azure-iot-sdk-c doc/connection_and_messaging_reliability.md, "Azure IoT Hub Limitations on MQTT
 * CONNECT Result Codes"). A device therefore cannot tell a deleted identity from a bad key or a busy hub. aedes
 * closes the connection right after writing the CONNACK, as MQTT 3.1.1 (3.2.2.3) requires.
 */
const NOT_AUTHORIZED = 5;

interface HubSession {
  hub: HubState;
  deviceId: string;
  credential: Credential;
  connectedAt: string;
  remoteAddress?: string;
  /** Filters the device subscribed to, for deciding what the hub may push. */
  subscriptions: Set<string>;
  expiryTimer?: NodeJS.Timeout;
  ready: boolean;
}

export interface DeviceConnectionInfo {
  hub: string;
  deviceId: string;
  authentication: 'sas' | 'sasPolicy' | 'x509';
  connectedAt: string;
  remoteAddress?: string;
  subscriptions: string[];
}

export interface MethodInvocation {
  methodName: string;
  payload?: unknown;
  /** Default 30 s (Azure's default), 5–300. */
  responseTimeoutInSeconds?: number;
}

export interface MethodResult {
  status: number;
  payload: unknown;
}

/** A failed method invocation with IoT Hub's status and error code (404 DeviceNotOnline, 504 GatewayTimeout). */
export class DeviceMethodError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'DeviceMethodError';
  }
}

interface PendingMethod {
  resolve: (result: MethodResult) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

const authErrorOf = (returnCode: number, message: string): AuthenticateError =>
  Object.assign(new Error(message), { returnCode }) as AuthenticateError;

function topicQuery(topic: string): URLSearchParams {
  const q = topic.indexOf('?');
  return new URLSearchParams(q >= 0 ? topic.slice(q + 1) : '');
}

/**
 * The device side of every hub: live connections, what they may do, and the operations the service side needs
 * (direct methods, cloud-to-device messages). It also holds what the hub's HTTPS device endpoints share with MQTT
 * (hub/device-rest.ts): cloud-to-device queues, telemetry counts and verified CA certificates. One per emulator;
 * reach it with `deviceBroker(state)`.
 */
export class DeviceBroker {
  private readonly hubBrokers = new Map<string, Aedes>();
  private readonly sessions = new Map<Client, HubSession>();
  private readonly byDevice = new Map<string, Set<Client>>();
  private readonly pendingMethods = new Map<string, PendingMethod>();
  /** Cloud-to-device queues of every hub's devices, for MQTT delivery and HTTPS polling alike. */
  readonly cloudToDevice = new CloudToDeviceQueues();
  private readonly verifiedCas = new Map<string, X509Certificate[]>();
  private readonly telemetry = new Map<string, number>();
  /** Last known record of devices deleted while connected, for their disconnect event. */
  private readonly deletedWhileConnected = new Map<string, DeviceRecord>();
  private readonly dps: DpsMqttHandler;
  private readonly dpsBroker: Aedes;
  private readonly dpsSessions = new Map<Client, DpsMqttSession>();
  private readonly unsubscribeBus: () => void;

  constructor(
    private readonly state: EmulatorState,
    private readonly onActivity: () => void = () => undefined,
  ) {
    this.dps = createDpsMqttHandler(state);
    this.dpsBroker = this.createDpsBroker();
    const onDeleted = (e: DeviceEvent): void => this.onDeviceDeleted(e);
    const onUpdated = (e: DeviceUpdatedEvent): void => this.onDeviceUpdated(e);
    const onDesired = (e: TwinDesiredUpdatedEvent): void => this.onDesiredUpdated(e);
    state.events.on('deviceDeleted', onDeleted);
    state.events.on('deviceUpdated', onUpdated);
    state.events.on('twinDesiredUpdated', onDesired);
    this.unsubscribeBus = () => {
      state.events.off('deviceDeleted', onDeleted);
      state.events.off('deviceUpdated', onUpdated);
      state.events.off('twinDesiredUpdated', onDesired);
    };
  }

  /** Hands a new TLS connection to DPS or the right hub, based on its CONNECT (read, not consumed). */
  accept(socket: tls.TLSSocket, connect: IConnectPacket): void {
    const username = connect.username ?? '';
    if (this.dps.matches(username)) {
      this.dpsBroker.handle(socket);
      return;
    }
    const hub = findHubByHost(this.state, username.split('/')[0] ?? '');
    if (!hub) {
      // No such hub: refuse in MQTT terms rather than dropping the socket.
      socket.end(mqttPacket.generate({ cmd: 'connack', returnCode: NOT_AUTHORIZED, sessionPresent: false }));
      return;
    }
    this.hubBroker(hub).handle(socket);
  }

  /** Live device connections (all hubs, or one). */
  connections(hubName?: string): DeviceConnectionInfo[] {
    const list: DeviceConnectionInfo[] = [];
    for (const session of this.sessions.values()) {
      if (!session.ready || (hubName !== undefined && session.hub.name !== hubName)) continue;
      list.push({
        hub: session.hub.name,
        deviceId: session.deviceId,
        authentication:
          session.credential.kind === 'deviceKey' ? 'sas' : session.credential.kind === 'policy' ? 'sasPolicy' : 'x509',
        connectedAt: session.connectedAt,
        remoteAddress: session.remoteAddress,
        subscriptions: [...session.subscriptions],
      });
    }
    return list;
  }

  /**
   * Counts device-to-cloud messages the hub accepted (over any protocol) and announces each on the state bus
   * (`deviceTelemetry`).
   */
  acceptTelemetry(
    hub: HubState,
    deviceId: string,
    messages: Array<Omit<DeviceTelemetryEvent, 'hubName' | 'hubHostName' | 'deviceId'>>,
  ): void {
    const key = `${hub.name}/${deviceId}`;
    this.telemetry.set(key, (this.telemetry.get(key) ?? 0) + messages.length);
    for (const message of messages) {
      this.state.events.emit('deviceTelemetry', { hubName: hub.name, hubHostName: hub.hostName, deviceId, ...message });
    }
  }

  /** Telemetry messages accepted from a device (or the whole hub when `deviceId` is omitted). */
  telemetryCount(hubName: string, deviceId?: string): number {
    if (deviceId !== undefined) return this.telemetry.get(`${hubName}/${deviceId}`) ?? 0;
    let total = 0;
    for (const [key, count] of this.telemetry) if (key.startsWith(`${hubName}/`)) total += count;
    return total;
  }

  /**
   * Adds a verified CA certificate to a hub (IoT Hub's "Certificates"): devices with `certificateAuthority`
   * authentication must present a chain that ends at one of them.
   */
  addVerifiedCaCertificate(hubName: string, certPem: string): void {
    const list = this.verifiedCas.get(hubName) ?? [];
    list.push(new X509Certificate(certPem));
    this.verifiedCas.set(hubName, list);
  }

  /** A hub's verified CA certificates. */
  caCertificates(hubName: string): X509Certificate[] {
    return [...(this.verifiedCas.get(hubName) ?? [])];
  }

  /** PEMs of a hub's verified CA certificates. */
  verifiedCaCertificates(hubName: string): string[] {
    return (this.verifiedCas.get(hubName) ?? []).map((cert) => cert.toString());
  }

  /** Closes every connection of a device (e.g. for fault injection); returns how many were closed. */
  disconnectDevice(hubName: string, deviceId: string): number {
    const clients = [...(this.byDevice.get(`${hubName}/${deviceId}`) ?? [])];
    for (const client of clients) client.close();
    return clients.length;
  }

  /**
   * Invokes a direct method on a connected device, as the service's `POST /twins/{id}/methods` does. Rejects with
   * DeviceMethodError 404 `DeviceNotOnline` when the device has no connection subscribed to methods, and 504
   * `GatewayTimeout` when it does not answer in time.
   */
  invokeMethod(hubName: string, deviceId: string, invocation: MethodInvocation): Promise<MethodResult> {
    const client = this.liveClient(hubName, deviceId, (s) => this.subscribed(s, '$iothub/methods/POST/#'));
    if (!client) {
      return Promise.reject(new DeviceMethodError(404, 'DeviceNotOnline', `Device ${deviceId} is not online`));
    }
    const timeoutSeconds = Math.min(Math.max(invocation.responseTimeoutInSeconds ?? 30, 5), 300);
    const rid = randomUUID();
    return new Promise<MethodResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pendingMethods.delete(rid);
        reject(new DeviceMethodError(504, 'GatewayTimeout', `Timed out waiting for ${deviceId} to answer`));
      }, timeoutSeconds * 1000);
      timer.unref();
      this.pendingMethods.set(rid, { resolve, reject, timer });
      const payload = JSON.stringify(invocation.payload ?? null);
      this.send(client, `$iothub/methods/POST/${invocation.methodName}/?$rid=${rid}`, payload);
    });
  }

  /**
   * Sends a cloud-to-device message: delivered now if the device listens, otherwise queued (as IoT Hub queues
   * them) and delivered when it subscribes. Throws 404-like Error when the device does not exist.
   */
  sendCloudToDevice(hubName: string, deviceId: string, message: CloudToDeviceMessage): void {
    const hub = this.state.hubs.get(hubName);
    const device = hub?.devices.get(deviceId);
    if (!hub || !device) throw new DeviceMethodError(404, 'DeviceNotFound', `Device ${deviceId} not found`);
    device.cloudToDeviceMessageCount += 1;
    this.cloudToDevice.enqueue(hubName, deviceId, message);
    this.flushCloudToDevice(hubName, deviceId);
  }

  /**
   * Forgets every device connection, as the control API's reset needs: live hub and DPS connections are closed
   * without disconnect events (reset removes the devices themselves), the hubs' brokers are replaced so no
   * persistent session survives, and pending method calls, queued cloud-to-device messages, telemetry counts and
   * verified CA certificates are dropped.
   */
  async reset(): Promise<void> {
    for (const pending of this.pendingMethods.values()) {
      clearTimeout(pending.timer);
      pending.reject(new DeviceMethodError(503, 'ServiceUnavailable', 'Emulator reset'));
    }
    this.pendingMethods.clear();
    for (const session of this.sessions.values()) clearTimeout(session.expiryTimer);
    this.sessions.clear();
    this.byDevice.clear();
    this.deletedWhileConnected.clear();
    this.cloudToDevice.clear();
    this.telemetry.clear();
    this.verifiedCas.clear();
    const dpsClients = [...this.dpsSessions.keys()];
    for (const client of dpsClients) this.endDpsSession(client);
    for (const client of dpsClients) client.close();
    const hubBrokers = [...this.hubBrokers.values()];
    this.hubBrokers.clear();
    await Promise.all(hubBrokers.map((b) => new Promise<void>((resolve) => b.close(() => resolve()))));
  }

  async close(): Promise<void> {
    this.unsubscribeBus();
    for (const pending of this.pendingMethods.values()) {
      clearTimeout(pending.timer);
      pending.reject(new DeviceMethodError(503, 'ServiceUnavailable', 'Emulator stopping'));
    }
    this.pendingMethods.clear();
    for (const session of this.sessions.values()) clearTimeout(session.expiryTimer);
    const brokers = [this.dpsBroker, ...this.hubBrokers.values()];
    await Promise.all(brokers.map((b) => new Promise<void>((resolve) => b.close(() => resolve()))));
  }

  // -------------------------------------------------------------------------------------------------------------
  // DPS

  private createDpsBroker(): Aedes {
    const broker = new Aedes({
      authenticate: (client, username, password, done) => {
        const result = this.dps.connect({
          clientId: client.id,
          username: username ?? '',
          password,
          socket: client.conn as tls.TLSSocket,
        });
        if (!result.ok) return done(authErrorOf(result.returnCode, 'DPS refused the connection'), false);
        this.dpsSessions.set(client, result.session);
        done(null, true);
      },
      authorizePublish: (client, packet, done) => {
        const session = client && this.dpsSessions.get(client);
        if (!client || !session) return done(new Error('not connected'));
        const handled = session.publish(
          packet.topic,
          packet.payload as Buffer,
          (topic, payload) => this.send(client, topic, payload),
          () => client.close(),
        );
        this.onActivity();
        done(handled ? null : new Error(`Topic ${packet.topic} is not a DPS topic`));
      },
      authorizeSubscribe: (_client, sub, done) => done(null, sub.topic === '$dps/registrations/res/#' ? sub : null),
      // Requests are answered point to point; nothing a DPS client publishes reaches another client.
      authorizeForward: (_client, packet) => (packet.topic.startsWith('$dps/registrations/res/') ? packet : null),
    });
    broker.on('clientDisconnect', (client) => this.endDpsSession(client));
    broker.on('clientError', (client) => this.endDpsSession(client));
    return broker;
  }

  private endDpsSession(client: Client): void {
    const session = this.dpsSessions.get(client);
    if (!session) return;
    this.dpsSessions.delete(client);
    session.close();
  }

  // -------------------------------------------------------------------------------------------------------------
  // Hubs

  private hubBroker(hub: HubState): Aedes {
    let broker = this.hubBrokers.get(hub.name);
    if (broker) return broker;
    broker = new Aedes({
      authenticate: (client, username, password, done) => {
        const decision = evaluateLimits(this.state, {
          surface: 'mqtt',
          operation: 'connect',
          quotaClass: 'connection',
          hub,
          answered: false,
        });
        const finish = (): void => {
          if (decision.kind === 'fault' && decision.status === 0) {
            // An injected fault with status 0: the connection drops without a CONNACK.
            (client.conn as tls.TLSSocket).destroy();
            return done(authErrorOf(NOT_AUTHORIZED, 'Connection dropped'), false);
          }
          if (decision.kind !== 'pass') {
            // Throttled or an injected fault: refused like any other CONNECT failure (see NOT_AUTHORIZED).
            return done(authErrorOf(NOT_AUTHORIZED, 'Server unavailable'), false);
          }
          try {
            const session = this.authenticate(hub, client, username ?? '', password);
            this.sessions.set(client, session);
            done(null, true);
          } catch (err) {
            done(err as AuthenticateError, false);
          }
        };
        if (decision.delayMs > 0) setTimeout(finish, decision.delayMs);
        else finish();
      },
      authorizePublish: (client, packet, done) => {
        const session = client && this.sessions.get(client);
        if (!client || !session) return done(new Error('not connected'));
        const allowed = this.onPublish(client, session, packet);
        this.onActivity();
        done(allowed ? null : new Error(`Topic ${packet.topic} is not allowed`));
      },
      authorizeSubscribe: (client, sub, done) => {
        const session = this.sessions.get(client);
        const allowed = !!session && this.subscriptionAllowed(session, sub);
        // Also called for the subscriptions aedes restores for a persistent (clean=false) session, which the SDK
        // relies on: after a reconnect it does not subscribe again.
        if (allowed) session.subscriptions.add(sub.topic);
        done(null, allowed ? sub : null);
      },
      // The hub writes to devices directly; device publishes are never relayed to other devices.
      authorizeForward: (_client, packet) => (isServerTopic(packet.topic) ? packet : null),
    });
    broker.on('clientReady', (client) => this.onReady(client));
    broker.on('clientDisconnect', (client) => this.endSession(client));
    broker.on('clientError', (client) => this.endSession(client));
    broker.on('connectionError', (client) => this.endSession(client));
    broker.on('subscribe', (subs, client) => this.onSubscribed(client, subs));
    broker.on('unsubscribe', (topics, client) => {
      const session = this.sessions.get(client);
      if (session) for (const topic of topics) session.subscriptions.delete(topic);
    });
    this.hubBrokers.set(hub.name, broker);
    return broker;
  }

  /** Checks a CONNECT against the hub's registry; throws an AuthenticateError (CONNACK code) if refused. */
  private authenticate(hub: HubState, client: Client, username: string, password: Buffer | undefined): HubSession {
    // `{hostName}/{deviceId}/?api-version=…` (a module would add a segment; modules are not emulated).
    const [host, deviceId, rest] = username.split('/');
    if (!host || !deviceId || rest === undefined || !rest.startsWith('?')) {
      throw authErrorOf(NOT_AUTHORIZED, `Malformed username ${username}`);
    }
    if (client.id !== deviceId) throw authErrorOf(NOT_AUTHORIZED, 'Client id must be the device id');
    const device = hub.devices.get(deviceId);
    if (!device) throw authErrorOf(NOT_AUTHORIZED, `Device ${deviceId} is not registered`);
    if (device.status !== 'enabled') throw authErrorOf(NOT_AUTHORIZED, `Device ${deviceId} is disabled`);
    const socket = client.conn as tls.TLSSocket;
    const credential = password?.length
      ? this.sasCredential(hub, device, password.toString('utf8'))
      : this.x509Credential(hub, device, socket);
    if (!credential) throw authErrorOf(NOT_AUTHORIZED, `Device ${deviceId} failed authentication`);
    return {
      hub,
      deviceId,
      credential,
      connectedAt: new Date().toISOString(),
      remoteAddress: socket.remoteAddress,
      subscriptions: new Set(),
      ready: false,
    };
  }

  private deviceResource(hub: HubState, deviceId: string): string {
    return `${hub.hostName}/devices/${deviceId}`;
  }

  private sasCredential(hub: HubState, device: DeviceRecord, token: string): Credential | undefined {
    let skn: string | undefined;
    try {
      skn = parseSasToken(token).skn;
    } catch {
      throw authErrorOf(NOT_AUTHORIZED, 'Malformed SharedAccessSignature');
    }
    const credential: Credential = skn ? { kind: 'policy', token, policy: skn } : { kind: 'deviceKey', token };
    return credentialHolds(hub, device, credential, this.deviceResource(hub, device.deviceId)) ? credential : undefined;
  }

  private x509Credential(hub: HubState, device: DeviceRecord, socket: tls.TLSSocket): Credential | undefined {
    const chain = peerCertificateChain(socket);
    if (chain.length === 0) return undefined;
    const leaf = chain[0];
    const credential: Credential = {
      kind: 'x509',
      sha1: normalizeThumbprint(leaf.fingerprint) ?? '',
      sha256: normalizeThumbprint(leaf.fingerprint256) ?? '',
      chain,
    };
    return credentialHolds(hub, device, credential, '', this.verifiedCas.get(hub.name)) ? credential : undefined;
  }

  private onReady(client: Client): void {
    const session = this.sessions.get(client);
    if (!session) return;
    session.ready = true;
    const key = `${session.hub.name}/${session.deviceId}`;
    const clients = this.byDevice.get(key) ?? new Set<Client>();
    clients.add(client);
    this.byDevice.set(key, clients);
    this.deletedWhileConnected.delete(key);
    if (session.credential.kind !== 'x509') {
      // IoT Hub closes a connection when the SAS token it was opened with expires (the SDK renews before that).
      const expiresInMs = parseSasToken(session.credential.token).se * 1000 - Date.now();
      session.expiryTimer = setTimeout(() => client.close(), Math.max(expiresInMs, 0));
      session.expiryTimer.unref();
    }
    setConnectionState(session.hub, session.deviceId, true);
    this.flushCloudToDevice(session.hub.name, session.deviceId);
  }

  private endSession(client: Client): void {
    const session = this.sessions.get(client);
    if (!session) return;
    this.sessions.delete(client);
    clearTimeout(session.expiryTimer);
    if (!session.ready) return;
    const key = `${session.hub.name}/${session.deviceId}`;
    const clients = this.byDevice.get(key);
    clients?.delete(client);
    if (clients && clients.size > 0) return;
    this.byDevice.delete(key);
    const deleted = this.deletedWhileConnected.get(key);
    if (deleted) {
      // The registry no longer has the device, but its connection did end: announce it like IoT Hub does.
      this.deletedWhileConnected.delete(key);
      const at = new Date().toISOString();
      const device = { ...deleted, connectionState: 'Disconnected' as const, connectionStateUpdatedTime: at };
      this.state.events.emit('deviceDisconnected', {
        hubName: session.hub.name,
        hubHostName: session.hub.hostName,
        deviceId: session.deviceId,
        device,
      });
      return;
    }
    setConnectionState(session.hub, session.deviceId, false);
  }

  private subscriptionAllowed(session: HubSession, sub: Subscription): boolean {
    const own = `devices/${session.deviceId}/messages/devicebound/`;
    return (
      sub.topic === '$iothub/twin/res/#' ||
      sub.topic === '$iothub/twin/PATCH/properties/desired/#' ||
      sub.topic === '$iothub/methods/POST/#' ||
      sub.topic === `${own}#` ||
      sub.topic === own
    );
  }

  private onSubscribed(client: Client, subs: Subscription[]): void {
    const session = this.sessions.get(client);
    if (!session) return;
    if (subs.some((s) => s.topic.startsWith(`devices/${session.deviceId}/messages/devicebound/`))) {
      this.flushCloudToDevice(session.hub.name, session.deviceId);
    }
  }

  private subscribed(session: HubSession, filter: string): boolean {
    return session.subscriptions.has(filter);
  }

  /** Handles one device PUBLISH; false ⇒ the topic is not the device's to use (the connection is closed). */
  private onPublish(client: Client, session: HubSession, packet: PublishPacket): boolean {
    const { hub, deviceId } = session;
    const topic = packet.topic;
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    const events = `devices/${deviceId}/messages/events/`;
    if (topic.startsWith(events)) {
      // The topic ends in the message's property bag: system properties as `$.mid`, `$.cid`, …, the rest are the
      // application's (iot-hub-mqtt-support, "Sending device-to-cloud messages").
      const bag = new URLSearchParams(topic.slice(events.length));
      const properties: Record<string, string> = {};
      for (const [name, value] of bag) if (!name.startsWith('$.')) properties[name] = value;
      this.acceptTelemetry(hub, deviceId, [
        {
          protocol: 'mqtt',
          body: payload,
          properties,
          ...(bag.has('$.mid') ? { messageId: bag.get('$.mid')! } : {}),
          ...(bag.has('$.cid') ? { correlationId: bag.get('$.cid')! } : {}),
        },
      ]);
      recordActivity(hub, deviceId);
      return true;
    }
    if (topic.startsWith('$iothub/twin/GET/') || topic.startsWith('$iothub/twin/PATCH/properties/reported/')) {
      recordActivity(hub, deviceId);
      this.onTwinRequest(client, session, topic, payload);
      return true;
    }
    if (topic.startsWith('$iothub/methods/res/')) {
      const status = Number(topic.split('/')[3]);
      const rid = topicQuery(topic).get('$rid') ?? '';
      const pending = this.pendingMethods.get(rid);
      if (pending) {
        this.pendingMethods.delete(rid);
        clearTimeout(pending.timer);
        let body: unknown = null;
        try {
          body = payload.length ? JSON.parse(payload.toString('utf8')) : null;
        } catch {
          body = payload.toString('utf8');
        }
        pending.resolve({ status, payload: body });
      }
      return true;
    }
    return false;
  }

  private onTwinRequest(client: Client, session: HubSession, topic: string, payload: Buffer): void {
    const rid = topicQuery(topic).get('$rid');
    if (!rid) return;
    const reply = (status: number, body: unknown, extra = ''): void =>
      this.send(
        client,
        `$iothub/twin/res/${status}/?$rid=${encodeURIComponent(rid)}${extra}`,
        body === undefined ? '' : JSON.stringify(body),
      );
    const read = topic.startsWith('$iothub/twin/GET/');
    const decision = evaluateLimits(this.state, {
      surface: 'mqtt',
      operation: read ? 'deviceGetTwin' : 'deviceUpdateReported',
      quotaClass: read ? 'twinRead' : 'twinUpdate',
      hub: session.hub,
    });
    const fault = (status: number, message: string | undefined): void => {
      if (status === 0) client.close();
      else reply(status, { errorCode: status * 1000 + 1, message: message ?? 'Injected fault' });
    };
    const answer = (): void => {
      if (decision.kind === 'throttle') {
        reply(429, { errorCode: 429001, message: 'Twin operations are being throttled' });
      } else if (decision.kind === 'fault') {
        fault(decision.status, decision.message);
      } else {
        // A rule with phase `after` sees the request applied, then replaces, drops or delays its answer.
        this.answerTwinRequest(session, read, payload, (status, body, extra) => {
          const after = decision.after?.settle(status < 300);
          const deliver = (): void => {
            if (after?.status !== undefined) fault(after.status, after.message);
            else reply(status, body, extra);
          };
          if (after?.latencyMs) setTimeout(deliver, after.latencyMs);
          else deliver();
        });
      }
    };
    if (decision.delayMs > 0) setTimeout(answer, decision.delayMs);
    else answer();
  }

  private answerTwinRequest(
    session: HubSession,
    read: boolean,
    payload: Buffer,
    reply: (status: number, body: unknown, extra?: string) => void,
  ): void {
    const device = session.hub.devices.get(session.deviceId);
    if (!device) {
      reply(404, { errorCode: 404001, message: `Device ${session.deviceId} not found` });
      return;
    }
    if (read) {
      reply(200, (twinToWire(device) as { properties: unknown }).properties);
      return;
    }
    let patch: unknown;
    try {
      patch = JSON.parse(payload.toString('utf8'));
    } catch {
      reply(400, { errorCode: 400004, message: 'Reported properties patch is not valid JSON' });
      return;
    }
    try {
      const version = patchReported(session.hub, session.deviceId, patch as Record<string, unknown>);
      reply(204, undefined, `&$version=${version}`);
    } catch (err) {
      reply(400, { errorCode: 400004, message: (err as Error).message });
    }
  }

  private onDesiredUpdated(e: TwinDesiredUpdatedEvent): void {
    for (const client of this.byDevice.get(`${e.hubName}/${e.deviceId}`) ?? []) {
      const session = this.sessions.get(client);
      if (!session || !this.subscribed(session, '$iothub/twin/PATCH/properties/desired/#')) continue;
      this.send(client, `$iothub/twin/PATCH/properties/desired/?$version=${e.version}`, JSON.stringify(e.patch));
    }
  }

  private onDeviceDeleted(e: DeviceEvent): void {
    // A deleted identity takes its queue with it, connected or not.
    this.cloudToDevice.drop(e.hubName, e.deviceId);
    const key = `${e.hubName}/${e.deviceId}`;
    const clients = [...(this.byDevice.get(key) ?? [])];
    if (clients.length === 0) return;
    this.deletedWhileConnected.set(key, e.device);
    for (const client of clients) client.close();
  }

  private onDeviceUpdated(e: DeviceUpdatedEvent): void {
    const clients = [...(this.byDevice.get(`${e.hubName}/${e.deviceId}`) ?? [])];
    for (const client of clients) {
      const session = this.sessions.get(client);
      if (!session) continue;
      const stillValid =
        e.device.status === 'enabled' &&
        credentialHolds(
          session.hub,
          e.device,
          session.credential,
          this.deviceResource(session.hub, e.deviceId),
          this.verifiedCas.get(e.hubName),
        );
      if (!stillValid) client.close();
    }
  }

  private liveClient(hubName: string, deviceId: string, accept: (s: HubSession) => boolean): Client | undefined {
    for (const client of this.byDevice.get(`${hubName}/${deviceId}`) ?? []) {
      const session = this.sessions.get(client);
      if (session && accept(session)) return client;
    }
    return undefined;
  }

  private flushCloudToDevice(hubName: string, deviceId: string): void {
    if (!this.cloudToDevice.hasReady(hubName, deviceId)) return;
    const client = this.liveClient(hubName, deviceId, (s) =>
      [...s.subscriptions].some((t) => t.startsWith(`devices/${deviceId}/messages/devicebound/`)),
    );
    if (!client) return;
    for (const message of this.cloudToDevice.takeReady(hubName, deviceId)) {
      const props = new URLSearchParams();
      if (message.messageId) props.set('$.mid', message.messageId);
      if (message.correlationId) props.set('$.cid', message.correlationId);
      for (const [k, v] of Object.entries(message.properties ?? {})) props.set(k, v);
      this.send(client, `devices/${deviceId}/messages/devicebound/${props.toString()}`, message.payload, 1);
    }
    // lastActivityTime: "the last time the device authenticated, sent a message, or received a message" (the
    // service SDKs' Device.lastActivityTime); keep-alive pings are none of these.
    const hub = this.state.hubs.get(hubName);
    if (hub) recordActivity(hub, deviceId);
  }

  /** Writes a PUBLISH to one client only. */
  private send(client: Client, topic: string, payload: string | Buffer, qos: 0 | 1 = 0): void {
    client.publish(
      { cmd: 'publish', topic, payload: Buffer.from(payload), qos, dup: false, retain: false },
      () => undefined,
    );
  }
}

/** Topics only the hub publishes (to one device); devices cannot publish on them. */
function isServerTopic(topic: string): boolean {
  return (
    topic.startsWith('$iothub/twin/res/') ||
    topic.startsWith('$iothub/twin/PATCH/properties/desired/') ||
    topic.startsWith('$iothub/methods/POST/') ||
    /^devices\/[^/]+\/messages\/devicebound\//.test(topic)
  );
}
