import { IncomingMessage } from 'node:http';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { Resource } from '@opentelemetry/resources';
import { BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import type { ClientInterceptors } from '@temporalio/client';
import { OpenTelemetryWorkflowClientInterceptor } from '@temporalio/interceptors-opentelemetry/lib/client';
import type { Config } from './config';
import { redactUrl } from './logger';

/**
 * OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when OTEL_EXPORTER_OTLP_ENDPOINT (or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; otherwise nothing is installed and nothing is paid: no tracer provider,
 * no context manager, no patched `http`, and the Temporal interceptors are not added (see worker/worker.ts and
 * workflows/tracing.ts).
 *
 * Installed, it traces inbound HTTP requests (the API's server spans, named by route template in api/tracing.ts) and
 * outbound HTTP(S) calls (the Azure SDKs' REST calls), and gives the Temporal interceptors the processor and resource
 * that workflow spans, which are made inside the workflow sandbox, are exported with.
 */
export interface Tracing {
  spanProcessor: SpanProcessor;
  resource: Resource;
  /** Flushes the spans not yet exported and stops exporting. */
  shutdown(): Promise<void>;
}

/** Paths whose requests are not traced: probes and scrapes, many a minute, of no interest in a trace. */
export const UNTRACED_PATHS = ['/healthz', '/readyz', '/metrics'];

type TracingConfig = Pick<
  Config,
  | 'OTEL_EXPORTER_OTLP_ENDPOINT'
  | 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'
  | 'OTEL_EXPORTER_OTLP_HEADERS'
  | 'OTEL_SERVICE_NAME'
  | 'OTEL_SDK_DISABLED'
>;

export function tracesUrl(config: TracingConfig): string | undefined {
  if (config.OTEL_SDK_DISABLED) return undefined;
  if (config.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) return config.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  if (config.OTEL_EXPORTER_OTLP_ENDPOINT) return `${config.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/+$/, '')}/v1/traces`;
  return undefined;
}

/** Installs tracing for this process when configured (call it first, before any request is served). */
export function startTracing(config: TracingConfig, defaultServiceName: string): Tracing | undefined {
  const url = tracesUrl(config);
  if (!url) return undefined;
  const resource = new Resource({ 'service.name': config.OTEL_SERVICE_NAME ?? defaultServiceName });
  // url and headers given here, from the parsed configuration, take precedence over the exporter's own env reading.
  const spanProcessor = new BatchSpanProcessor(
    new OTLPTraceExporter({ url, headers: config.OTEL_EXPORTER_OTLP_HEADERS ?? {} }),
  );
  const provider = new NodeTracerProvider({ resource, spanProcessors: [spanProcessor] });
  // The AsyncLocalStorage context manager and the W3C trace-context propagator (traceparent in and out).
  provider.register();
  registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [
      new HttpInstrumentation({
        ignoreIncomingRequestHook: (req: IncomingMessage) =>
          UNTRACED_PATHS.includes((req.url ?? '').split('?')[0].replace(/\/+$/, '')),
        // Span attributes carry the URL; the Event Grid secret (?code=) must not leave with them.
        requestHook: (span, request) => {
          if (request instanceof IncomingMessage) {
            span.setAttribute('http.target', redactUrl(request.url ?? ''));
            span.setAttribute(
              'http.url',
              redactUrl(`http://${request.headers.host ?? 'localhost'}${request.url ?? ''}`),
            );
          }
        },
      }),
    ],
  });
  // express and the Azure SDKs loaded http and https before this ran; the instrumentation patches a module when it is
  // next required, so require them now (the patch changes the shared module objects and Server.prototype).
  /* eslint-disable @typescript-eslint/no-require-imports */
  require('http');
  require('https');
  /* eslint-enable @typescript-eslint/no-require-imports */
  return { spanProcessor, resource, shutdown: () => provider.shutdown() };
}

/**
 * The Temporal client's interceptors with tracing: starting, signalling, querying or cancelling a workflow makes a
 * span and hands its context to the workflow (the `_tracer-data` header workflows/tracing.ts looks for).
 */
export function tracingClientInterceptors(tracing: Tracing | undefined): ClientInterceptors | undefined {
  return tracing ? { workflow: [new OpenTelemetryWorkflowClientInterceptor()] } : undefined;
}
