/**
 * IoT hub registry REST (api-version 2021-04-12) for every hub, selected by the request's Host header.
 * Every call is authenticated with a policy SAS and the policy's rights, like Azure. The same host also serves the
 * hub's device endpoints for HTTPS devices (hub/device-rest.ts).
 */
import { setTimeout as delay } from 'node:timers/promises';
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import { z } from 'zod';
import { limitsMiddleware } from '../limits/middleware';
import { DeviceMethodError, type DeviceBroker, type MethodInvocation, type MethodResult } from '../mqtt/broker';
import { deviceBroker } from '../mqtt/listener';
import { SasError, authorizeWithPolicy, requestResource, type AccessRight } from '../security/sas';
import type { EmulatorState, HubState } from '../state';
import { hubDeviceRouter } from './device-rest';
import { AzureError, hubErrors, sendHubError } from './errors';
import { parseDeviceQuery } from './query';
import {
  bulkDevices,
  deleteDevice,
  deviceStatistics,
  deviceToWire,
  findHubByHost,
  getDevice,
  patchTwin,
  putDevice,
  putTwin,
  twinToWire,
  type DeviceInput,
} from './registry';

const READ: AccessRight[] = ['RegistryRead', 'RegistryWrite'];
const WRITE: AccessRight[] = ['RegistryWrite'];
const TWIN_READ: AccessRight[] = ['RegistryRead', 'RegistryWrite', 'ServiceConnect'];
const TWIN_WRITE: AccessRight[] = ['RegistryWrite', 'ServiceConnect'];
const SERVICE_CONNECT: AccessRight[] = ['ServiceConnect'];

const DEFAULT_PAGE = 100;
const MAX_PAGE = 1000;

function hubOf(res: Response): HubState {
  return res.locals.hub as HubState;
}

function ifMatch(req: Request): string | undefined {
  const value = req.get('If-Match');
  return value === undefined || value === '' ? undefined : value;
}

function sendJson(res: Response, status: number, body: unknown): void {
  res.status(status).setHeader('Content-Type', 'application/json; charset=utf-8');
  res.send(JSON.stringify(body));
}

/**
 * Authorizes the call with a policy holding any of the given rights, and whose `sr` covers what the call touches:
 * the hub (`sr=<host>`) or a prefix of the resource path (`sr=<host>/devices` for the identity registry,
 * `sr=<host>/devices/<id>` for one device); 401 otherwise.
 */
function authorize(rights: AccessRight[]) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const hub = hubOf(res);
    try {
      authorizeWithPolicy(req.get('Authorization'), hub.policies, {
        resource: requestResource(hub.hostName, req.path),
        anyOf: rights,
      });
    } catch (err) {
      if (err instanceof SasError) throw hubErrors.unauthorized(`Unauthorized: ${err.message}`);
      throw err;
    }
    next();
  };
}

function encodeContinuation(lastId: string): string {
  return Buffer.from(JSON.stringify({ after: lastId })).toString('base64');
}

function decodeContinuation(token: string): string {
  try {
    const parsed = JSON.parse(Buffer.from(token, 'base64').toString('utf8')) as { after?: unknown };
    if (typeof parsed.after === 'string') return parsed.after;
  } catch {
    // fall through to the 400 below
  }
  throw hubErrors.argument('Invalid continuation token');
}

function pageSize(req: Request): number {
  const header = req.get('x-ms-max-item-count');
  if (header === undefined || header === '') return DEFAULT_PAGE;
  const n = Number(header);
  if (!Number.isInteger(n) || n < 1) throw hubErrors.argument('x-ms-max-item-count must be a positive integer');
  return Math.min(n, MAX_PAGE);
}

function deviceInputFromBody(req: Request): DeviceInput {
  const body: unknown = req.body;
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw hubErrors.argument('The request body must be a device');
  }
  const input = body as DeviceInput;
  const id = req.params.id as string;
  if (input.deviceId !== undefined && input.deviceId !== id) {
    throw hubErrors.argument('The deviceId in the body does not match the URL');
  }
  return { ...input, deviceId: id };
}

/** Body of `POST /twins/{id}/methods`, with the bounds IoT Hub documents. */
const methodBody = z.object({
  methodName: z.string().min(1).max(100),
  payload: z.unknown().optional(),
  responseTimeoutInSeconds: z.number().int().min(5).max(300).optional(),
  connectTimeoutInSeconds: z.number().int().min(0).max(300).optional(),
});

const ONLINE_POLL_MS = 200;

/**
 * Invokes a direct method; with `connectTimeoutInSeconds`, an offline device is waited for (until it is connected
 * and subscribed to methods) as IoT Hub does, else it is 404 DeviceNotOnline at once.
 */
async function invokeWhenOnline(
  broker: DeviceBroker,
  hubName: string,
  deviceId: string,
  invocation: MethodInvocation,
  connectTimeoutInSeconds: number,
): Promise<MethodResult> {
  const deadline = Date.now() + connectTimeoutInSeconds * 1000;
  for (;;) {
    try {
      return await broker.invokeMethod(hubName, deviceId, invocation);
    } catch (err) {
      const offline = err instanceof DeviceMethodError && err.code === 'DeviceNotOnline';
      if (!offline || Date.now() + ONLINE_POLL_MS > deadline) throw err;
      await delay(ONLINE_POLL_MS);
    }
  }
}

/** Express router answering for every hub host; anything not a hub host falls through. */
export function hubRouter(state: EmulatorState): Router {
  const router = express.Router();

  router.use((req, res, next) => {
    const hub = findHubByHost(state, req.hostname);
    if (!hub) {
      next('router');
      return;
    }
    res.locals.hub = hub;
    next();
  });
  router.use(limitsMiddleware(state, 'hub', (req) => findHubByHost(state, req.hostname)));
  router.use((req, _res, next) => {
    if (typeof req.query['api-version'] !== 'string') {
      throw new AzureError(400, 'InvalidProtocolVersion', 'The api-version query parameter is required');
    }
    next();
  });
  // Device telemetry is any octet stream, so the device endpoints come before the registry's JSON parser.
  router.use(hubDeviceRouter(state));
  router.use(express.json({ type: () => true, limit: '4mb' }));

  router.post('/devices/query', authorize(TWIN_READ), (req, res) => {
    const hub = hubOf(res);
    const query = parseDeviceQuery((req.body as { query?: unknown } | undefined)?.query);
    const matching = [...hub.devices.values()]
      .sort((a, b) => (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0))
      .map(twinToWire)
      .filter(query.where);
    if (query.countAlias) {
      res.setHeader('x-ms-item-type', 'Raw');
      sendJson(res, 200, [{ [query.countAlias]: matching.length }]);
      return;
    }
    const token = req.get('x-ms-continuation');
    const after = token ? decodeContinuation(token) : undefined;
    const start = after === undefined ? 0 : matching.findIndex((doc) => (doc.deviceId as string) > after);
    const rest = start < 0 ? [] : matching.slice(start);
    const page = rest.slice(0, pageSize(req));
    res.setHeader('x-ms-item-type', 'Twin');
    // No continuation header on the last page, or SDK callers loop forever.
    if (rest.length > page.length) {
      res.setHeader('x-ms-continuation', encodeContinuation(page[page.length - 1].deviceId as string));
    }
    sendJson(res, 200, page);
  });

  router.get('/devices', authorize(READ), (req, res) => {
    const top = req.query.top === undefined ? MAX_PAGE : Number(req.query.top);
    if (!Number.isInteger(top) || top < 1 || top > MAX_PAGE) throw hubErrors.argument('top must be 1 to 1000');
    sendJson(res, 200, [...hubOf(res).devices.values()].slice(0, top).map(deviceToWire));
  });

  router.post('/devices', authorize(WRITE), (req, res) => {
    const hub = hubOf(res);
    const operations = { create: 'deviceCreate', update: 'deviceUpdate', delete: 'deviceDelete' } as const;
    const result = bulkDevices(hub, req.body, (write, id) =>
      state.counters.record({ surface: 'hub', hub: hub.name, operation: operations[write], id }),
    );
    state.counters.record({ surface: 'hub', hub: hub.name, operation: 'deviceBulk' });
    sendJson(res, result.isSuccessful ? 200 : 400, result);
  });

  router.put('/devices/:id', authorize(WRITE), (req, res) => {
    const hub = hubOf(res);
    const condition = ifMatch(req);
    const device = putDevice(hub, deviceInputFromBody(req), condition);
    const operation = condition === undefined ? 'deviceCreate' : 'deviceUpdate';
    state.counters.record({ surface: 'hub', hub: hub.name, operation, id: device.deviceId });
    sendJson(res, 200, deviceToWire(device));
  });

  router.get('/devices/:id', authorize(READ), (req, res) => {
    sendJson(res, 200, deviceToWire(getDevice(hubOf(res), req.params.id as string)));
  });

  router.delete('/devices/:id', authorize(WRITE), (req, res) => {
    const hub = hubOf(res);
    const device = deleteDevice(hub, req.params.id as string, ifMatch(req));
    state.counters.record({ surface: 'hub', hub: hub.name, operation: 'deviceDelete', id: device.deviceId });
    res.status(204).end();
  });

  router.get('/twins/:id', authorize(TWIN_READ), (req, res) => {
    sendJson(res, 200, twinToWire(getDevice(hubOf(res), req.params.id as string)));
  });

  router.patch('/twins/:id', authorize(TWIN_WRITE), (req, res) => {
    const hub = hubOf(res);
    const device = patchTwin(hub, req.params.id as string, req.body ?? {}, ifMatch(req));
    state.counters.record({ surface: 'hub', hub: hub.name, operation: 'twinUpdate', id: device.deviceId });
    sendJson(res, 200, twinToWire(device));
  });

  router.put('/twins/:id', authorize(TWIN_WRITE), (req, res) => {
    const hub = hubOf(res);
    const device = putTwin(hub, req.params.id as string, req.body ?? {}, ifMatch(req));
    state.counters.record({ surface: 'hub', hub: hub.name, operation: 'twinReplace', id: device.deviceId });
    sendJson(res, 200, twinToWire(device));
  });

  router.post('/twins/:id/methods', authorize(SERVICE_CONNECT), async (req, res) => {
    const hub = hubOf(res);
    const deviceId = getDevice(hub, req.params.id as string).deviceId;
    const parsed = methodBody.safeParse(req.body);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join(', ');
      throw hubErrors.argument(`Invalid direct method request (${issues})`);
    }
    const broker = deviceBroker(state);
    if (!broker) throw new AzureError(503, 'ServiceUnavailable', 'Device connections are not available');
    const { connectTimeoutInSeconds = 0, ...invocation } = parsed.data;
    try {
      sendJson(res, 200, await invokeWhenOnline(broker, hub.name, deviceId, invocation, connectTimeoutInSeconds));
    } catch (err) {
      if (err instanceof DeviceMethodError) throw new AzureError(err.status, err.code, err.message);
      throw err;
    }
  });

  router.get('/statistics/devices', authorize(READ), (_req, res) => {
    sendJson(res, 200, deviceStatistics(hubOf(res)));
  });

  router.use((req) => {
    throw new AzureError(404, 'NotFound', `${req.method} ${req.path} is not supported by the emulated hub`);
  });

  router.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    if (err instanceof AzureError) {
      sendHubError(res, err);
      return;
    }
    const status = (err as { status?: number; type?: string }).status;
    if (status === 400 || (err as { type?: string }).type === 'entity.parse.failed') {
      sendHubError(res, hubErrors.argument('The request body is not valid JSON'));
      return;
    }
    if (status === 413) {
      sendHubError(res, new AzureError(413, 'MessageTooLarge', 'The request body is too large'));
      return;
    }
    if (status !== undefined && status >= 400 && status < 500) {
      // Any other refusal of the body parser (e.g. 415 for an unsupported Content-Encoding) is the client's.
      sendHubError(res, new AzureError(status, 'ArgumentInvalid', (err as Error).message));
      return;
    }
    sendHubError(res, new AzureError(500, 'ServerError', 'Internal error'));
  });

  return router;
}
