import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Request, RequestHandler, Response } from 'express';
import { context, trace } from '@opentelemetry/api';
import { pinoHttp } from 'pino-http';
import { redactUrl, type Logger } from '../common/logger';
import { UNTRACED_PATHS } from '../common/tracing';
import { correlationIdOf } from './correlation';
import { routeTemplates } from './routing';

/** Probes and scrapes: logged at debug, or they would be most of the info lines. */
const PROBES = new Set(UNTRACED_PATHS);

/**
 * One line per answered request (pino-http), after correlation(): `method`, `route` (the template, never the raw
 * path), `status`, `durationMs` and `requestId` (the correlation id of X-Correlation-Id and problem bodies), plus
 * `trace_id`/`span_id` when traced. Info, except probes (debug) and 5xx (warn; api/errors.ts logs the error). The `req`
 * it carries has its URL's secret query parameters and its credential headers redacted (common/logger.ts).
 */
export function requestLog(log: Logger): RequestHandler {
  const routeOf = routeTemplates();
  const pathOf = (req: IncomingMessage) => ((req as Request).originalUrl ?? req.url ?? '').split('?')[0];
  return pinoHttp({
    logger: log,
    genReqId: (_req: IncomingMessage, res: ServerResponse) => correlationIdOf(res as Response),
    // The request's own child logger only binds the id; the line at the end carries the rest.
    quietReqLogger: true,
    customAttributeKeys: { reqId: 'requestId', responseTime: 'durationMs' },
    customProps: (req: IncomingMessage) => ({ method: req.method, route: routeOf(pathOf(req)) }),
    customSuccessObject: (_req, res, value: object) => ({ ...value, status: res.statusCode }),
    // pino-http makes up an `err` (with a stack) for a 5xx; the error middleware logs the real one (api/errors.ts).
    customErrorObject: (_req, res, _err, { err: _made, ...value }: Record<string, unknown>) => ({
      ...value,
      status: res.statusCode,
    }),
    customSuccessMessage: () => 'request',
    customErrorMessage: () => 'request',
    customLogLevel: (req, res, err) => {
      if (err || res.statusCode >= 500) return 'warn';
      return PROBES.has(routeOf(pathOf(req))) ? 'debug' : 'info';
    },
    // What the line says of the request beyond the props above; the status is already top-level.
    serializers: {
      req: (req: { url?: string; headers?: Record<string, unknown> }) => ({
        url: redactUrl(req.url ?? ''),
        headers: req.headers,
      }),
      res: () => undefined,
    },
  });
}

/**
 * Names the request's server span (common/tracing.ts) by method and route template, as OpenTelemetry's HTTP
 * conventions ask (`POST /v1/promotions`), and sets `http.route`; a no-op when tracing is off.
 */
export function traceRoute(): RequestHandler {
  const routeOf = routeTemplates();
  return (req, _res, next) => {
    const span = trace.getSpan(context.active());
    if (span?.isRecording()) {
      const route = routeOf(req.path);
      span.updateName(`${req.method} ${route}`);
      span.setAttribute('http.route', route);
    }
    next();
  };
}
