import express from 'express';
import { z } from 'zod';
import { EventGridError, IOT_HUB_EVENT_TYPES, eventGridFor } from '../eventgrid/event-grid';
import type { EmulatorState } from '../state';

const subscriptionBody = z.object({
  endpointUrl: z.string().min(1),
  secret: z.string().min(1).optional(),
  includedEventTypes: z.array(z.enum(IOT_HUB_EVENT_TYPES)).min(1).optional(),
});

const optionsBody = z.object({
  maxDeliveryAttempts: z.number().int().min(1).max(30).optional(),
  initialRetryDelayMs: z.number().int().min(0).optional(),
  maxRetryDelayMs: z.number().int().min(0).optional(),
  requestTimeoutMs: z.number().int().min(1).optional(),
});

/**
 * Control API routes (mounted at `/eventgrid`):
 * - `GET /subscriptions[?hub=]`, `GET /hubs/:hub/subscriptions/:name`
 * - `PUT /hubs/:hub/subscriptions/:name` `{endpointUrl, secret?, includedEventTypes?}` → 201 after the handshake,
 *   400 `WebhookValidationFailed` / 404 / 409 otherwise
 * - `DELETE /hubs/:hub/subscriptions/:name` → 204 (404 if none)
 * - `GET /dead-letters[?hub=]`
 * - `GET|PUT /options` `{maxDeliveryAttempts, initialRetryDelayMs, maxRetryDelayMs, requestTimeoutMs}`
 */
export function eventGridRouter(state: EmulatorState): express.Router {
  const router = express.Router();
  const hubQuery = (req: express.Request): string | undefined =>
    typeof req.query.hub === 'string' ? req.query.hub : undefined;
  router.get('/subscriptions', (req, res) => {
    res.json(eventGridFor(state).list(hubQuery(req)));
  });
  router.get('/hubs/:hub/subscriptions/:name', (req, res) => {
    const view = eventGridFor(state).get(req.params.hub, req.params.name);
    if (!view) res.status(404).json({ error: `No event subscription ${req.params.name}` });
    else res.json(view);
  });
  router.put('/hubs/:hub/subscriptions/:name', async (req, res) => {
    const parsed = subscriptionBody.safeParse(req.body);
    if (!parsed.success) {
      res.status(400).json({ error: 'invalid request', issues: parsed.error.issues });
      return;
    }
    try {
      const view = await eventGridFor(state).subscribe({ hub: req.params.hub, name: req.params.name, ...parsed.data });
      res.status(201).json(view);
    } catch (err) {
      if (!(err instanceof EventGridError)) throw err;
      res.status(err.status).json({ error: err.message, code: err.code });
    }
  });
  router.delete('/hubs/:hub/subscriptions/:name', (req, res) => {
    if (eventGridFor(state).unsubscribe(req.params.hub, req.params.name)) res.status(204).end();
    else res.status(404).json({ error: `No event subscription ${req.params.name}` });
  });
  router.get('/dead-letters', (req, res) => {
    res.json(eventGridFor(state).deadLetters(hubQuery(req)));
  });
  router.get('/options', (_req, res) => {
    res.json(eventGridFor(state).options);
  });
  router.put('/options', (req, res) => {
    const parsed = optionsBody.safeParse(req.body);
    if (!parsed.success) {
      res.status(400).json({ error: 'invalid request', issues: parsed.error.issues });
      return;
    }
    res.json(eventGridFor(state).configure(parsed.data));
  });
  return router;
}
