import express from 'express';
import { z } from 'zod';
import { DeviceMethodError, type DeviceBroker } from '../mqtt/broker';
import { deviceBroker } from '../mqtt/listener';
import type { EmulatorState } from '../state';

/**
 * Control API routes (mounted at `/mqtt`): `GET /connections[?hub=]`; `POST /hubs/:hub/ca-certificates`
 * `{certificatePem}` (a verified CA for `certificateAuthority` devices); `POST /hubs/:hub/devices/:id/disconnect`
 * (drop a device's connection, as a network fault would); `POST /hubs/:hub/devices/:id/methods`
 * `{methodName, payload?, responseTimeoutInSeconds?}`; `POST /hubs/:hub/devices/:id/messages` `{payload,
 * messageId?, correlationId?, properties?}` (cloud-to-device: pushed to a subscribed MQTT device, or queued, also for
 * HTTPS devices to poll).
 */
export function mqttControlRouter(state: EmulatorState): express.Router {
  const router = express.Router();
  const broker = (): DeviceBroker => {
    const running = deviceBroker(state);
    if (!running) throw new DeviceMethodError(503, 'ServiceUnavailable', 'The MQTT listener is not running');
    return running;
  };
  const hubName = (req: express.Request): string => {
    const name = req.params.hub as string;
    if (!state.hubs.has(name)) throw new DeviceMethodError(404, 'IotHubNotFound', `No hub named ${name}`);
    return name;
  };
  router.get('/connections', (req, res) => {
    res.json(broker().connections(typeof req.query.hub === 'string' ? req.query.hub : undefined));
  });
  router.post('/hubs/:hub/ca-certificates', (req, res) => {
    const body = z.object({ certificatePem: z.string().min(1) }).parse(req.body);
    broker().addVerifiedCaCertificate(hubName(req), body.certificatePem);
    res.status(204).end();
  });
  router.post('/hubs/:hub/devices/:id/disconnect', (req, res) => {
    res.json({ closed: broker().disconnectDevice(hubName(req), req.params.id as string) });
  });
  router.post('/hubs/:hub/devices/:id/methods', async (req, res) => {
    const body = z
      .object({
        methodName: z.string().min(1),
        payload: z.unknown().optional(),
        responseTimeoutInSeconds: z.number().int().min(5).max(300).optional(),
      })
      .parse(req.body);
    res.json(await broker().invokeMethod(hubName(req), req.params.id as string, body));
  });
  router.post('/hubs/:hub/devices/:id/messages', (req, res) => {
    const body = z
      .object({
        payload: z.string(),
        messageId: z.string().optional(),
        correlationId: z.string().optional(),
        properties: z.record(z.string(), z.string()).optional(),
      })
      .parse(req.body);
    broker().sendCloudToDevice(hubName(req), req.params.id as string, body);
    res.status(202).end();
  });
  router.use((err: unknown, _req: express.Request, res: express.Response, next: express.NextFunction) => {
    if (err instanceof DeviceMethodError) res.status(err.status).json({ error: err.message, code: err.code });
    else next(err);
  });
  return router;
}
