import { createHash, timingSafeEqual } from 'node:crypto';
import { Router, type RequestHandler } from 'express';
import { z } from 'zod';
import type { AppDeps } from '../app';
import { eventGridTokenCheck, type EventGridEntraOptions } from '../auth/event-grid-entra';
import { TokenRejected } from '../auth/jwt';
import { jsonBody } from '../body';
import { registerRoute, SECURITY_SCHEMES } from '../openapi';
import { problem } from '../problems';
import { temporalDeadline } from '../temporal';
import { validate } from '../validate';
import type { DeviceEventsRelayInput } from '../../common/device-events';
import { signalDeviceConnected } from '../../common/device-signals';
import { eventGridDeliveryWorkflowId, WORKFLOW_TYPES } from '../../common/messages';
import type { DeviceConnectedEvent } from '../../common/promotion';

/**
 * The Event Grid webhook for IoT hub events: `POST /v1/eventgrid` (and `OPTIONS` for the CloudEvents handshake).
 *
 * Secret: when EVENT_GRID_SECRET is set, every request must carry it, either as the query parameter `code`
 * (`https://…/v1/eventgrid?code=<secret>`, Azure's convention for webhook secrets; being part of the endpoint URL it
 * also reaches the validation handshakes) or as the header `x-iot-lifecycle-secret` (an Event Grid delivery
 * property marked secret). Otherwise 401.
 *
 * A `Microsoft.Devices.DeviceConnected` event from a configured hub signals `deviceConnected` to the promotion waiting
 * for that device, by its deterministic workflow id, at most once per (hub, device, sequenceNumber). A delivery with
 * more than RELAY_THRESHOLD such events is handed in one write to a relay workflow that signals them. Everything
 * else is acknowledged and ignored.
 */

export const EVENT_GRID_SECRET_QUERY = 'code';
export const EVENT_GRID_SECRET_HEADER = 'x-iot-lifecycle-secret';

const EVENT_TYPES = {
  subscriptionValidation: 'Microsoft.EventGrid.SubscriptionValidationEvent',
  deviceConnected: 'Microsoft.Devices.DeviceConnected',
} as const;

/** Signals in flight per delivery, when its events are signalled here. */
const SIGNAL_CONCURRENCY = 128;
/**
 * Past this many DeviceConnected events to pass on, a delivery is handed to a relay workflow in one write instead of
 * one signal per event (about 400 a second on the dev server): Event Grid batches up to 5,000 events a delivery.
 */
export const RELAY_THRESHOLD = 32;

const DEFAULT_DEDUP_CAPACITY = 10_000;

// ----- schemas -----

/** Event Grid schema (what IoT hub subscriptions use by default). */
const EventGridSchemaEvent = z
  .object({
    id: z.string().min(1),
    topic: z.string().optional(),
    subject: z.string(),
    eventType: z.string().min(1),
    eventTime: z.string().min(1),
    data: z.unknown(),
    dataVersion: z.string(),
    metadataVersion: z.string().optional(),
  })
  .transform((e) => ({ id: e.id, type: e.eventType, time: e.eventTime, subject: e.subject, data: e.data }));

/** CloudEvents 1.0 schema (subscriptions created with `--event-delivery-schema cloudeventschemav1_0`). */
const CloudEvent = z
  .object({
    specversion: z.literal('1.0'),
    id: z.string().min(1),
    source: z.string().min(1),
    type: z.string().min(1),
    time: z.string().min(1).optional(),
    subject: z.string().optional(),
    data: z.unknown(),
  })
  .transform((e) => ({ id: e.id, type: e.type, time: e.time, subject: e.subject, data: e.data }));

const SubscriptionValidationData = z.object({
  validationCode: z.string().min(1),
  validationUrl: z.string().optional(),
});

const DeviceConnectionData = z.object({
  hubName: z.string().regex(/^[A-Za-z0-9-]{1,63}$/, 'an IoT hub name'),
  deviceId: z.string().min(1).max(128),
  moduleId: z.string().optional(),
  deviceConnectionStateEventInfo: z.object({ sequenceNumber: z.string().min(1) }),
});

const DATA_SCHEMAS: Record<string, z.ZodType> = {
  [EVENT_TYPES.subscriptionValidation]: SubscriptionValidationData,
  [EVENT_TYPES.deviceConnected]: DeviceConnectionData,
};

/** An event of either schema, normalised; `data` is checked for the event types the webhook acts on. */
const WebhookEvent = z.union([EventGridSchemaEvent, CloudEvent]).superRefine((event, ctx) => {
  const schema = DATA_SCHEMAS[event.type];
  const result = schema?.safeParse(event.data);
  for (const issue of result?.error?.issues ?? []) ctx.addIssue({ ...issue, path: ['data', ...issue.path] });
});
type WebhookEvent = z.output<typeof WebhookEvent>;

/** Event Grid schema deliveries are arrays; CloudEvents may come one per request (structured mode) or batched. */
const WebhookBody = z
  .union([z.array(WebhookEvent).max(5_000), WebhookEvent])
  .meta({ id: 'EventGridDelivery', description: 'Event Grid schema or CloudEvents 1.0 events, one or a batch' });

const Outcome = z.object({
  eventId: z.string(),
  eventType: z.string(),
  outcome: z.enum(['signalled', 'relayed', 'duplicate', 'noRunningPromotion', 'unknownHub', 'ignored']),
  workflowIds: z.array(z.string()).optional().describe('signalled: the workflow that received the event'),
  relayWorkflowId: z
    .string()
    .optional()
    .describe("relayed: the workflow that signals the delivery's events (its result says which found a promotion)"),
});
type Outcome = z.infer<typeof Outcome>;

const json = <T extends z.ZodType>(schema: T) => ({ 'application/json': { schema } });

/** Event Grid schema deliveries are application/json; CloudEvents ones use their own media types. */
const MEDIA_TYPES = ['application/json', 'application/cloudevents+json', 'application/cloudevents-batch+json'];

const DeliveryHeaders = z.object({
  'aeg-event-type': z.enum(['SubscriptionValidation', 'Notification', 'SubscriptionDeletion']).optional(),
});
const HandshakeHeaders = z.object({
  'webhook-request-origin': z.string().min(1).describe('CloudEvents webhook handshake: the sender, allowed back'),
  'webhook-request-rate': z.string().optional(),
});

// Either form of the secret, or an Entra token; the document keeps those the app accepts (see openApiDocument).
const security = [
  { [SECURITY_SCHEMES.eventGridCode]: [] },
  { [SECURITY_SCHEMES.eventGridHeader]: [] },
  { [SECURITY_SCHEMES.eventGridEntra]: [] },
];

registerRoute({
  method: 'post',
  path: '/v1/eventgrid',
  operationId: 'eventGridDelivery',
  auth: 'webhook',
  summary: 'Event Grid webhook for IoT hub events: subscription validation, then DeviceConnected → running promotions',
  description:
    'Events of either schema are accepted under any of the three media types; unknown fields of events are ' +
    'ignored (Azure adds fields over time). Up to 32 DeviceConnected events to pass on are signalled to their ' +
    'promotions before the answer (`signalled`, `noRunningPromotion`); more are recorded in one write as a relay ' +
    'workflow that signals them (`relayed`, with its id).',
  temporal: true,
  security,
  request: {
    headers: DeliveryHeaders,
    // The same events whichever media type carries them, as the route accepts them.
    body: { required: true, content: Object.fromEntries(MEDIA_TYPES.map((type) => [type, { schema: WebhookBody }])) },
  },
  responses: {
    200: {
      description: 'validation answer, or the events acknowledged with what was done for each',
      content: json(z.union([z.object({ validationResponse: z.string() }), z.object({ results: z.array(Outcome) })])),
    },
  },
});
registerRoute({
  method: 'options',
  path: '/v1/eventgrid',
  operationId: 'eventGridHandshake',
  auth: 'webhook',
  summary: 'CloudEvents 1.0 webhook validation handshake (WebHook-Request-Origin → WebHook-Allowed-Origin)',
  security,
  request: { headers: HandshakeHeaders },
  responses: {
    200: {
      description: 'delivery allowed for the requesting origin (no body)',
      headers: {
        'WebHook-Allowed-Origin': { schema: { type: 'string' }, required: true, description: 'the requesting origin' },
        'WebHook-Allowed-Rate': { schema: { type: 'string', enum: ['*'] }, required: true },
        Allow: { schema: { type: 'string' }, required: true },
      },
    },
  },
});

// ----- routes -----

export function eventGridRoutes(deps: AppDeps): Router {
  const { client, log, taskQueue, eventGridSecret, eventGridEntra, eventGridDedupCapacity, environments = {} } = deps;
  const router = Router();
  const temporal = temporalDeadline(deps);
  // Events carry the hub's name only; its host name is the configured one (sovereign clouds use other domains).
  const hubHosts = new Map(
    Object.values(environments).map((host) => [host.split('.')[0].toLowerCase(), host] as const),
  );
  const seen = new RecentKeys(eventGridDedupCapacity ?? DEFAULT_DEDUP_CAPACITY);
  const authorize = authenticateDelivery(eventGridSecret, eventGridEntra);
  if (!eventGridSecret && !eventGridEntra) {
    log.warn('EVENT_GRID_SECRET is not set: the Event Grid webhook accepts unauthenticated events');
  }

  router.options('/eventgrid', authorize, validate({ headers: HandshakeHeaders }), (req, res) => {
    const origin = req.get('webhook-request-origin')!;
    res
      .set({ 'WebHook-Allowed-Origin': origin, 'WebHook-Allowed-Rate': '*', Allow: 'POST, OPTIONS' })
      .status(200)
      .end();
  });

  // The secret is checked before the body is read.
  const validDelivery = validate({ headers: DeliveryHeaders, body: WebhookBody });
  router.post('/eventgrid', authorize, jsonBody(MEDIA_TYPES), validDelivery, temporal, async (req, res) => {
    const events = Array.isArray(req.body) ? req.body : [req.body];
    const delivery = { deliveryCount: req.get('aeg-delivery-count'), subscription: req.get('aeg-subscription-name') };

    const validation = events.find((e) => e.type === EVENT_TYPES.subscriptionValidation);
    if (validation || req.get('aeg-event-type') === 'SubscriptionValidation') {
      if (!validation) throw bodyIssue('no SubscriptionValidationEvent in the request');
      const { validationCode } = SubscriptionValidationData.parse(validation.data);
      log.info({ ...delivery, eventId: validation.id }, 'Event Grid subscription validated');
      deps.metrics?.eventGridEvents.inc({ outcome: 'validated' });
      res.json({ validationResponse: validationCode });
      return;
    }

    // 1. What each event is, before anything is claimed or sent: a malformed one refuses the whole delivery (400)
    // and changes nothing.
    const results: Outcome[] = new Array(events.length);
    const toSignal: { index: number; event: DeviceConnectedEvent; key: string }[] = [];
    const parsed = events.map((event) =>
      event.type === EVENT_TYPES.deviceConnected ? DeviceConnectionData.parse(event.data) : undefined,
    );
    events.forEach((event, index) => {
      const outcome = { eventId: event.id, eventType: event.type };
      const data = parsed[index];
      if (!data) {
        log.debug({ ...delivery, ...outcome }, 'Event Grid event ignored');
        results[index] = { ...outcome, outcome: 'ignored' };
        return;
      }
      const hubHostName = hubHosts.get(data.hubName.toLowerCase());
      if (!hubHostName) {
        log.info({ ...delivery, ...outcome, hubName: data.hubName }, 'DeviceConnected from a hub not configured here');
        results[index] = { ...outcome, outcome: 'unknownHub' };
        return;
      }
      const signal: DeviceConnectedEvent = {
        hubHostName,
        deviceId: data.deviceId,
        sequenceNumber: data.deviceConnectionStateEventInfo.sequenceNumber,
        eventTime: event.time ?? new Date().toISOString(),
        eventId: event.id,
      };
      if (data.moduleId) {
        // A module of the device connected, not the device itself.
        log.debug({ ...delivery, ...outcome, ...signal, moduleId: data.moduleId }, 'module connection ignored');
        results[index] = { ...outcome, outcome: 'ignored' };
        return;
      }
      const key = [signal.hubHostName.toLowerCase(), signal.deviceId, signal.sequenceNumber].join('\n');
      if (seen.has(key)) {
        log.debug({ ...delivery, ...outcome, ...signal }, 'duplicate DeviceConnected ignored');
        results[index] = { ...outcome, outcome: 'duplicate' };
        return;
      }
      // Claimed now, so that a concurrent redelivery counts as a duplicate; released if the events cannot be passed
      // on, so that Event Grid's retry of this delivery is processed again.
      seen.add(key);
      toSignal.push({ index, event: signal, key });
    });

    // 2. Pass them on: each signalled by id when they are few; past RELAY_THRESHOLD, one durable write (a relay
    // workflow that signals them) so that even 5,000 events are answered in well under Event Grid's 30 s.
    // Bounded by the delivery's Temporal deadline (temporalDeadline): past it, 503 and Event Grid retries.
    try {
      if (toSignal.length > RELAY_THRESHOLD) {
        const relayWorkflowId = await relay(toSignal.map((s) => s.event));
        log.info({ ...delivery, events: toSignal.length, relayWorkflowId }, 'DeviceConnected events relayed');
        for (const { index } of toSignal) {
          results[index] = {
            eventId: events[index].id,
            eventType: events[index].type,
            outcome: 'relayed',
            relayWorkflowId,
          };
        }
      } else {
        await mapConcurrently(toSignal, SIGNAL_CONCURRENCY, async ({ index, event, key }) => {
          const outcome = { eventId: events[index].id, eventType: events[index].type };
          const context = { ...delivery, ...outcome, ...event };
          let workflowIds: string[];
          try {
            workflowIds = await signalDeviceConnected(client, event);
          } catch (err) {
            seen.delete(key);
            throw err;
          }
          if (workflowIds.length === 0) {
            log.debug(context, 'DeviceConnected: no running promotion of this device');
            results[index] = { ...outcome, outcome: 'noRunningPromotion' };
          } else {
            log.info({ ...context, workflowIds }, 'DeviceConnected signalled');
            results[index] = { ...outcome, outcome: 'signalled', workflowIds };
          }
        });
      }
    } catch (err) {
      if (toSignal.length > RELAY_THRESHOLD) for (const { key } of toSignal) seen.delete(key);
      throw err;
    }
    for (const result of results) deps.metrics?.eventGridEvents.inc({ outcome: result.outcome });
    res.json({ results });
  });

  /**
   * Starts the relay of a large delivery's events (workflows/device-events.ts), named by a digest of the events:
   * the same delivery again while its relay runs is the same workflow, not a second one.
   */
  async function relay(signals: DeviceConnectedEvent[]): Promise<string> {
    const digest = createHash('sha256');
    for (const s of signals) digest.update(`${s.hubHostName}\n${s.deviceId}\n${s.sequenceNumber}\n`);
    const workflowId = eventGridDeliveryWorkflowId(digest.digest('hex').slice(0, 32));
    const input: DeviceEventsRelayInput = { events: signals, receivedAt: new Date().toISOString() };
    await client.workflow.start(WORKFLOW_TYPES.relayDeviceConnectedEvents, {
      taskQueue,
      workflowId,
      args: [input],
      workflowIdConflictPolicy: 'USE_EXISTING',
      staticSummary: `Event Grid delivery: ${signals.length} DeviceConnected events`,
    });
    return workflowId;
  }

  return router;
}

/** Maps items with at most `concurrency` calls in flight; the first failure fails the whole (after all settle). */
async function mapConcurrently<T, R>(items: T[], concurrency: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  const errors: unknown[] = [];
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const index = next++;
      try {
        results[index] = await fn(items[index]);
      } catch (err) {
        errors.push(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, lane));
  if (errors.length) throw errors[0];
  return results;
}

/**
 * Authenticates a delivery before its body is read: an Entra token (when configured) in `Authorization: Bearer`,
 * or else the shared secret (when configured). With neither configured every delivery is accepted.
 */
function authenticateDelivery(secret: string | undefined, entra: EventGridEntraOptions | undefined): RequestHandler {
  if (!secret && !entra) return (_req, _res, next) => next();
  const expected = secret ? digest(secret) : undefined;
  const checkToken = entra ? eventGridTokenCheck(entra) : undefined;
  const challenge = [...(expected ? ['ApiKey realm="Event Grid webhook"'] : []), ...(entra ? ['Bearer'] : [])];
  const refuse = (detail: string) =>
    problem('unauthorized', detail, { headers: { 'WWW-Authenticate': challenge.join(', ') } });
  return async (req, _res, next) => {
    const bearer = /^Bearer +(\S+)$/i.exec(req.get('authorization') ?? '')?.[1];
    if (checkToken && bearer !== undefined) {
      try {
        await checkToken(bearer);
      } catch (err) {
        if (err instanceof TokenRejected) throw refuse(`Event Grid token refused: ${err.message}`);
        throw err;
      }
      return next();
    }
    const query = req.query[EVENT_GRID_SECRET_QUERY];
    const offered = [typeof query === 'string' ? query : undefined, req.get(EVENT_GRID_SECRET_HEADER)];
    // Compared as digests: equal length, constant time.
    if (expected && offered.some((value) => value !== undefined && timingSafeEqual(digest(value), expected))) {
      return next();
    }
    throw refuse(
      expected ? 'the Event Grid secret is missing or wrong' : 'an Event Grid Entra token is required (Bearer)',
    );
  };
}

function bodyIssue(message: string): z.ZodError {
  return new z.ZodError([{ code: 'custom', path: ['body'], message, input: undefined }]);
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

/**
 * The most recently seen keys, the least recently seen forgotten first once `capacity` is reached. A Set keeps
 * insertion order, which is all an LRU of plain keys needs: not worth a dependency.
 */
class RecentKeys {
  private readonly keys = new Set<string>();
  constructor(private readonly capacity: number) {}

  has(key: string): boolean {
    if (!this.keys.has(key)) return false;
    this.keys.delete(key);
    this.keys.add(key);
    return true;
  }

  add(key: string): void {
    this.keys.delete(key);
    this.keys.add(key);
    if (this.keys.size > this.capacity) this.keys.delete(this.keys.values().next().value as string);
  }

  delete(key: string): void {
    this.keys.delete(key);
  }
}
