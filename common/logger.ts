import { context, isSpanContextValid, trace } from '@opentelemetry/api';
import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger };

/**
 * Headers that carry credentials, wherever a logged object holds them (pino-http's `req`/`res`, an error's request):
 * API keys, bearer tokens, cookies and Event Grid's SAS key and token.
 */
const SECRET_HEADERS = ['x-api-key', 'authorization', 'cookie', 'set-cookie', 'aeg-sas-key', 'aeg-sas-token'];
const REDACT_PATHS = SECRET_HEADERS.flatMap((h) => [
  `req.headers["${h}"]`,
  `res.headers["${h}"]`,
  `headers["${h}"]`,
  `*.headers["${h}"]`,
]);

/** Query parameters that carry secrets: Event Grid's webhook secret (`/v1/eventgrid?code=…`). */
const SECRET_QUERY = /([?&](?:code)=)[^&#]*/gi;

/** `url` with the values of secret query parameters replaced, for log lines and span attributes. */
export function redactUrl(url: string): string {
  return url.replace(SECRET_QUERY, '$1[Redacted]');
}

/** The active span's ids (common/tracing.ts), empty outside a traced request or activity, or with tracing off. */
export function activeTraceIds(): { trace_id?: string; span_id?: string } {
  const span = trace.getSpan(context.active());
  if (!span) return {};
  const ids = span.spanContext();
  return isSpanContextValid(ids) ? { trace_id: ids.traceId, span_id: ids.spanId } : {};
}

/**
 * Structured JSON logs on stdout (or `destination`); one logger per process, children per component. Every line
 * written inside a traced request or activity carries its `trace_id` and `span_id` (the names Temporal's
 * OpenTelemetry interceptors give them too), and credentials in headers and URLs are redacted.
 */
export function createLogger(level: string, name = 'iot-lifecycle', destination?: DestinationStream): Logger {
  const options = {
    name,
    level,
    base: { service: name },
    timestamp: pino.stdTimeFunctions.isoTime,
    mixin: activeTraceIds,
    redact: { paths: REDACT_PATHS, censor: '[Redacted]' },
  };
  return destination ? pino(options, destination) : pino(options);
}
