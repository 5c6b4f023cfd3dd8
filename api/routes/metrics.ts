import { Router } from 'express';
import { z } from 'zod';
import type { ApiMetrics } from '../metrics';
import { registerRoute } from '../openapi';

/** How long /metrics waits for the worker's Temporal exporter before answering without its part. */
const TEMPORAL_SCRAPE_TIMEOUT_MS = 2_000;

registerRoute({
  method: 'get',
  path: '/metrics',
  operationId: 'metrics',
  summary: 'Prometheus metrics: the API’s, and the worker’s Temporal metrics when they run in one process',
  auth: 'viewer',
  responses: {
    200: {
      description: 'Prometheus text exposition format',
      content: { 'text/plain': { schema: z.string() } },
    },
  },
});

export function metricsRoutes(metrics: ApiMetrics, temporalMetricsUrl?: string): Router {
  const router = Router();
  router.get('/metrics', async (_req, res) => {
    const parts = [await metrics.registry.metrics()];
    if (temporalMetricsUrl) parts.push(await scrape(temporalMetricsUrl));
    res.type(metrics.registry.contentType).send(parts.join('\n'));
  });
  return router;
}

/** The worker's Temporal metrics (core's Prometheus exporter on loopback); a comment line if it does not answer. */
async function scrape(url: string): Promise<string> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(TEMPORAL_SCRAPE_TIMEOUT_MS) });
    if (!res.ok) return `# Temporal metrics unavailable: ${url} answered ${res.status}\n`;
    return await res.text();
  } catch (err) {
    return `# Temporal metrics unavailable: ${(err as Error).message}\n`;
  }
}
