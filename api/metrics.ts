import type { RequestHandler } from 'express';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { routeTemplates } from './routing';

/**
 * The API's Prometheus metrics (prom-client, one registry per app): HTTP requests by route template, method and
 * status, with their durations; Event Grid events by outcome; the process's own (CPU, memory, event loop).
 * `/metrics` (api/routes/metrics.ts) serves them with the worker's Temporal metrics when they run in one process.
 */
export interface ApiMetrics {
  registry: Registry;
  eventGridEvents: Counter<'outcome'>;
}

export function createApiMetrics(): ApiMetrics & { httpRequests: Counter<'method' | 'route' | 'status'> } {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'iot_lifecycle_api_' });
  const httpRequests = new Counter({
    name: 'iot_lifecycle_http_requests_total',
    help: 'HTTP requests answered, by route template, method and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry],
  });
  new Histogram({
    name: 'iot_lifecycle_http_request_duration_seconds',
    help: 'Time to answer HTTP requests, by route template and method',
    labelNames: ['method', 'route'] as const,
    buckets: [0.005, 0.025, 0.1, 0.25, 1, 2.5, 5, 15, 60],
    registers: [registry],
  });
  const eventGridEvents = new Counter({
    name: 'iot_lifecycle_eventgrid_events_total',
    help: 'Event Grid events received by the webhook, by what was done with them',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  return { registry, httpRequests, eventGridEvents };
}

/** Counts and times every request under its documented route template (never the raw path: ids would explode it). */
export function httpMetrics(metrics: ReturnType<typeof createApiMetrics>): RequestHandler {
  const routeOf = routeTemplates();
  const duration = metrics.registry.getSingleMetric('iot_lifecycle_http_request_duration_seconds') as Histogram<
    'method' | 'route'
  >;
  return (req, res, next) => {
    const stop = duration.startTimer();
    // Read now: routers mounted under a prefix (/v1) strip it from req.path while they handle the request.
    const path = req.path;
    res.on('finish', () => {
      const route = routeOf(path);
      metrics.httpRequests.inc({ method: req.method, route, status: String(res.statusCode) });
      stop({ method: req.method, route });
    });
    next();
  };
}
