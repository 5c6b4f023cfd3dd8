/**
 * The device endpoints of every hub over HTTPS, as azure-iot-device-http calls them (IoT Hub REST "Device"
 * operations, on the hub's host name like the registry):
 *
 * - `POST /devices/{id}/messages/events` — one device-to-cloud message (the body; application properties in
 *   `iothub-app-*` headers, `IoTHub-MessageId`, `IoTHub-CorrelationId`), or a batch when the content type is
 *   `application/vnd.microsoft.iothub.json` (a JSON array of `{body: <base64>, properties}`). 204.
 * - `GET /devices/{id}/messages/deviceBound` — the next cloud-to-device message, locked for one minute: 200 with the
 *   body, the lock token in `ETag` (quoted) and the message's properties in `iothub-*` headers; 204 when none waits.
 * - `DELETE /devices/{id}/messages/deviceBound/{lockToken}` completes it (with `?reject`, rejects it), `POST
 *   …/{lockToken}/abandon` puts it back: 204, or 412 DeviceMessageLockLost when the lock is no longer held.
 *
 * Authentication is per request, as on IoT Hub: a device SAS (`sr=<host>/devices/<id>`, signed with a device key), a
 * hub policy SAS with DeviceConnect, or the TLS client certificate of an X.509 device (thumbprint for `selfSigned`,
 * chain to a verified CA for `certificateAuthority`) — the same judgement as MQTT CONNECT (mqtt/credentials.ts).
 * Refusals: no credential at all, a disabled device or a credential that does not hold → 401
 * IotHubUnauthorizedAccess; a device the registry does not have → 404 DeviceNotFound.
 *
 * IoT Hub keeps no connection for HTTPS devices: a successful call moves the device's `lastActivityTime` and never its
 * `connectionState` ("IoT Hub tracks connectionState only for MQTT and AMQP", iot-hub-devguide-identity-registry).
 */
import type { TLSSocket } from 'node:tls';
import express, { type Request, type Response, type Router } from 'express';
import { z } from 'zod';
import type { DeviceBroker } from '../mqtt/broker';
import { credentialHolds, normalizeThumbprint, type Credential } from '../mqtt/credentials';
import { deviceBroker } from '../mqtt/listener';
import { peerCertificateChain } from '../security/certs';
import { SasError, parseSasToken } from '../security/sas';
import type { DeviceTelemetryEvent, EmulatorState, HubState } from '../state';
import type { Settlement } from './cloud-to-device';
import { AzureError, hubErrors } from './errors';
import { recordActivity } from './registry';

/** "The maximum size of a device-to-cloud message is 256 KB", batches over HTTPS included (iot-hub-devguide-quotas). */
const MAX_MESSAGE_BYTES = 256 * 1024;
const BATCH_CONTENT_TYPE = 'application/vnd.microsoft.iothub.json';
const APP_PROPERTY = 'iothub-app-';

type Telemetry = Omit<DeviceTelemetryEvent, 'hubName' | 'hubHostName' | 'deviceId'>;

/** What azure-iot-device-http's sendEventBatch writes: `[{"body":"<base64>","properties":{"iothub-app-k":"v"}}]`. */
const batchBody = z
  .array(z.object({ body: z.base64(), properties: z.record(z.string(), z.string()).optional() }))
  .min(1, 'a batch holds at least one message');

function hubOf(res: Response): HubState {
  return res.locals.hub as HubState;
}

function brokerOf(state: EmulatorState): DeviceBroker {
  const broker = deviceBroker(state);
  if (!broker) throw new AzureError(503, 'ServiceUnavailable', 'Device endpoints are not available');
  return broker;
}

/** The credential a request presents: its Authorization header, else its TLS client certificate. */
function credentialOf(req: Request): Credential | undefined {
  const token = req.get('Authorization');
  if (token) {
    let skn: string | undefined;
    try {
      skn = parseSasToken(token).skn;
    } catch (err) {
      if (err instanceof SasError) throw hubErrors.unauthorized(`Unauthorized: ${err.message}`);
      throw err;
    }
    return skn ? { kind: 'policy', token, policy: skn } : { kind: 'deviceKey', token };
  }
  const chain = peerCertificateChain(req.socket as TLSSocket);
  if (chain.length === 0) return undefined;
  const leaf = chain[0];
  return {
    kind: 'x509',
    sha1: normalizeThumbprint(leaf.fingerprint) ?? '',
    sha256: normalizeThumbprint(leaf.fingerprint256) ?? '',
    chain,
  };
}

/** Authenticates the device named in the path (see the module comment for the answers); returns its id. */
function authenticate(state: EmulatorState, req: Request, res: Response): string {
  const hub = hubOf(res);
  const deviceId = req.params.id as string;
  const credential = credentialOf(req);
  // The first of the messages the 401003 troubleshooting page lists.
  if (!credential) throw hubErrors.unauthorized('Authorization header missing');
  const device = hub.devices.get(deviceId);
  // A deleted device: the SDK turns 404 into DeviceNotFoundError (azure-iot-device-http http_errors.ts), as
  // azure-iot-sdk-node#777 shows for a device removed from the hub.
  if (!device) throw hubErrors.deviceNotFound(deviceId);
  // "If Disabled, this device can't connect" (iot-hub-devguide-identity-registry, device identity properties).
  if (device.status !== 'enabled') throw hubErrors.unauthorized(`Device ${deviceId} is disabled`);
  const resource = `${hub.hostName}/devices/${deviceId}`;
  const verifiedCas = credential.kind === 'x509' ? brokerOf(state).caCertificates(hub.name) : [];
  if (!credentialHolds(hub, device, credential, resource, verifiedCas)) {
    throw hubErrors.unauthorized('Authentication failed for this device, renew token or certificate and reconnect');
  }
  return deviceId;
}

function appProperties(entries: Iterable<[string, unknown]>): Record<string, string> {
  const properties: Record<string, string> = {};
  for (const [name, value] of entries) {
    if (name.toLowerCase().startsWith(APP_PROPERTY) && typeof value === 'string') {
      properties[name.slice(APP_PROPERTY.length)] = value;
    }
  }
  return properties;
}

function telemetryOf(req: Request): Telemetry[] {
  const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  if (req.is(BATCH_CONTENT_TYPE)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      throw hubErrors.argument('The batch is not valid JSON');
    }
    const batch = batchBody.safeParse(parsed);
    if (!batch.success) throw hubErrors.argument(`Invalid message batch: ${batch.error.issues[0].message}`);
    return batch.data.map((message) => {
      const properties = message.properties ?? {};
      return {
        protocol: 'https',
        body: Buffer.from(message.body, 'base64'),
        properties: appProperties(Object.entries(properties)),
        ...(properties['iothub-messageid'] ? { messageId: properties['iothub-messageid'] } : {}),
        ...(properties['iothub-correlationid'] ? { correlationId: properties['iothub-correlationid'] } : {}),
      };
    });
  }
  const messageId = req.get('iothub-messageid');
  const correlationId = req.get('iothub-correlationid');
  return [
    {
      protocol: 'https',
      body,
      properties: appProperties(Object.entries(req.headers)),
      ...(messageId ? { messageId } : {}),
      ...(correlationId ? { correlationId } : {}),
    },
  ];
}

/** Express router for the device endpoints of every hub (mounted inside the hub router, which sets the hub). */
export function hubDeviceRouter(state: EmulatorState): Router {
  const router = express.Router();

  router.post(
    '/devices/:id/messages/events',
    express.raw({ type: () => true, limit: MAX_MESSAGE_BYTES }),
    (req, res) => {
      const hub = hubOf(res);
      const deviceId = authenticate(state, req, res);
      brokerOf(state).acceptTelemetry(hub, deviceId, telemetryOf(req));
      recordActivity(hub, deviceId);
      res.status(204).end();
    },
  );

  router.get('/devices/:id/messages/deviceBound', (req, res) => {
    const hub = hubOf(res);
    const deviceId = authenticate(state, req, res);
    const message = brokerOf(state).cloudToDevice.receive(hub.name, deviceId);
    recordActivity(hub, deviceId);
    if (!message) {
      res.status(204).end();
      return;
    }
    // The headers azure-iot-http-base's toMessage reads back: ETag (quotes stripped) is the lock token.
    res.setHeader('ETag', `"${message.lockToken}"`);
    res.setHeader('iothub-to', `/devices/${encodeURIComponent(deviceId)}/messages/deviceBound`);
    res.setHeader('iothub-sequencenumber', String(message.sequenceNumber));
    res.setHeader('iothub-enqueuedtime', message.enqueuedTime);
    res.setHeader('iothub-expiry', message.expiryTime);
    res.setHeader('iothub-deliverycount', String(message.deliveryCount));
    if (message.messageId) res.setHeader('iothub-messageid', message.messageId);
    if (message.correlationId) res.setHeader('iothub-correlationid', message.correlationId);
    for (const [name, value] of Object.entries(message.properties ?? {})) {
      res.setHeader(`${APP_PROPERTY}${name}`, value);
    }
    res.status(200).type('application/octet-stream').send(Buffer.from(message.payload));
  });

  const settle = (settlement: (req: Request) => Settlement) => (req: Request, res: Response) => {
    const hub = hubOf(res);
    const deviceId = authenticate(state, req, res);
    const lockToken = req.params.lockToken as string;
    if (!brokerOf(state).cloudToDevice.settle(hub.name, deviceId, lockToken, settlement(req))) {
      // 412002 DeviceMessageLockLost; the device SDKs map a 412 here to their lock-lost error
      // (azure-iot-sdk-csharp ClientExceptionHandlingHelper).
      throw new AzureError(
        412,
        'DeviceMessageLockLost',
        `The lock token ${lockToken} is not held: the message was settled, or its lock expired`,
      );
    }
    recordActivity(hub, deviceId);
    res.status(204).end();
  };
  router.delete(
    '/devices/:id/messages/deviceBound/:lockToken',
    settle((req) => ('reject' in req.query ? 'reject' : 'complete')),
  );
  router.post(
    '/devices/:id/messages/deviceBound/:lockToken/abandon',
    settle(() => 'abandon'),
  );

  return router;
}
