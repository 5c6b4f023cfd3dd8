import { Router } from 'express';
import { z } from 'zod';
import type { Payload } from '@temporalio/common';
import type { AppDeps } from '../app';
import { jsonBody } from '../body';
import { registerRoute } from '../openapi';
import { validate } from '../validate';

/**
 * The codec endpoint for the Temporal UI (and `temporal` CLI's `--codec-endpoint`): `POST /codec/decode` and
 * `/codec/encode` translate payloads with the API's own codec (common/payload-codec.ts), so people with the viewer
 * role see twin values in the UI while histories keep ciphertext. The UI calls it from the browser: allow its origin
 * in API_CORS_ORIGINS and let it pass its access token (the UI's "pass access token"), or put it behind a proxy that
 * adds an API key. Without a codec configured, payloads come back as they are.
 */

const base64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'base64');
const JsonPayload = z.strictObject({
  metadata: z.record(z.string(), base64).optional(),
  data: base64.optional(),
});
const Payloads = z
  .strictObject({ payloads: z.array(JsonPayload).max(1_000) })
  .meta({ id: 'Payloads', description: 'Temporal payloads as the UI sends them: metadata values and data in base64' });
type JsonPayload = z.infer<typeof JsonPayload>;

const NamespaceHeader = z.object({ 'x-namespace': z.string().optional().describe('the UI names the namespace') });

for (const [operation, summary] of [
  ['decode', 'Decrypt payloads for the Temporal UI (payloads this codec did not encrypt pass through)'],
  ['encode', 'Encrypt payloads for the Temporal UI (signal or query input typed in the UI)'],
] as const) {
  registerRoute({
    method: 'post',
    path: `/codec/${operation}`,
    operationId: `codec${operation[0].toUpperCase()}${operation.slice(1)}`,
    summary,
    auth: 'viewer',
    changes: false,
    request: {
      headers: NamespaceHeader,
      body: { required: true, content: { 'application/json': { schema: Payloads } } },
    },
    responses: {
      200: { description: 'the payloads, translated', content: { 'application/json': { schema: Payloads } } },
    },
  });
}

export function codecRoutes({ codec }: Pick<AppDeps, 'codec'>): Router {
  const router = Router();
  const valid = validate({ headers: NamespaceHeader, body: Payloads });
  router.post('/codec/decode', jsonBody(), valid, async (req, res) => {
    const payloads = req.body.payloads.map(fromJson);
    res.json({ payloads: (codec ? await codec.decode(payloads) : payloads).map(toJson) });
  });
  router.post('/codec/encode', jsonBody(), valid, async (req, res) => {
    const payloads = req.body.payloads.map(fromJson);
    res.json({ payloads: (codec ? await codec.encode(payloads) : payloads).map(toJson) });
  });
  return router;
}

function fromJson(payload: JsonPayload): Payload {
  return {
    metadata: Object.fromEntries(Object.entries(payload.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')])),
    data: Buffer.from(payload.data ?? '', 'base64'),
  };
}

function toJson(payload: Payload): JsonPayload {
  return {
    metadata: Object.fromEntries(
      Object.entries(payload.metadata ?? {}).map(([k, v]) => [
        k,
        Buffer.from(v ?? new Uint8Array()).toString('base64'),
      ]),
    ),
    data: Buffer.from(payload.data ?? new Uint8Array()).toString('base64'),
  };
}
