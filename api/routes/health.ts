import { Router } from 'express';
import { z } from 'zod';
import type { AppDeps } from '../app';
import { registerRoute } from '../openapi';

const Health = z.object({ status: z.literal('ok') });
const Ready = z.object({ status: z.enum(['ready', 'unavailable']), reason: z.string().optional() });

registerRoute({
  method: 'get',
  path: '/healthz',
  operationId: 'healthz',
  auth: 'public',
  summary: 'The process is up',
  responses: { 200: { description: 'up', content: { 'application/json': { schema: Health } } } },
});
registerRoute({
  method: 'get',
  path: '/readyz',
  operationId: 'readyz',
  auth: 'public',
  summary: 'Temporal is reachable',
  responses: {
    200: { description: 'ready', content: { 'application/json': { schema: Ready } } },
    503: { description: 'Temporal unreachable; reason says why', content: { 'application/json': { schema: Ready } } },
  },
});

export function healthRoutes({ client }: AppDeps): Router {
  const router = Router();
  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/readyz', async (_req, res) => {
    try {
      await client.connection.withDeadline(Date.now() + 2_000, () => client.workflowService.getSystemInfo({}));
      res.json({ status: 'ready' });
    } catch (err) {
      const reason = `Temporal at ${describeAddress(client)} is unreachable: ${(err as Error).message}`;
      res.status(503).json({ status: 'unavailable', reason });
    }
  });
  return router;
}

function describeAddress(client: AppDeps['client']): string {
  const options = (client.connection as { options?: { address?: string } }).options;
  return options?.address ?? 'the configured address';
}
