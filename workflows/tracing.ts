/**
 * Workflow interceptors (bundled with the workflows: worker/worker.ts, scripts/build.ts): Temporal's OpenTelemetry
 * interceptors, for the workflows whose start carried a trace context and only for them.
 *
 * The API and the worker's client add that context (`_tracer-data` header) only when tracing is configured
 * (common/tracing.ts). Without it these interceptors pass every call through untouched, so that with tracing off a
 * workflow makes no spans and calls no sink, and histories recorded before tracing existed replay unchanged.
 * Spans made here reach the exporter through the worker's `exporter` sink.
 */
import {
  OpenTelemetryInboundInterceptor,
  OpenTelemetryInternalsInterceptor,
  OpenTelemetryOutboundInterceptor,
} from '@temporalio/interceptors-opentelemetry/lib/workflow';
import type { Headers } from '@temporalio/common';
import type {
  WorkflowInboundCallsInterceptor,
  WorkflowInterceptors,
  WorkflowOutboundCallsInterceptor,
} from '@temporalio/workflow';

/** The header the OpenTelemetry interceptors carry the trace context in (their TRACE_HEADER). */
const TRACE_HEADER = '_tracer-data';

const carriesTrace = (headers: Headers) => TRACE_HEADER in headers;

export function interceptors(): WorkflowInterceptors {
  // Made on the first traced call only: the sandbox's tracer provider is not set up for untraced workflows.
  let otel: { inbound: OpenTelemetryInboundInterceptor; outbound: OpenTelemetryOutboundInterceptor } | undefined;
  const traced = () =>
    (otel ??= { inbound: new OpenTelemetryInboundInterceptor(), outbound: new OpenTelemetryOutboundInterceptor() });

  const inbound: WorkflowInboundCallsInterceptor = {
    execute: (input, next) => (carriesTrace(input.headers) ? traced().inbound.execute(input, next) : next(input)),
    handleSignal: (input, next) =>
      carriesTrace(input.headers) ? traced().inbound.handleSignal(input, next) : next(input),
    handleUpdate: (input, next) =>
      carriesTrace(input.headers) ? traced().inbound.handleUpdate(input, next) : next(input),
    validateUpdate: (input, next) =>
      carriesTrace(input.headers) ? traced().inbound.validateUpdate(input, next) : next(input),
  };

  // What the workflow does is traced when the workflow is (its execution or a signal carried a context).
  const outbound: WorkflowOutboundCallsInterceptor = {
    scheduleActivity: (input, next) => (otel ? otel.outbound.scheduleActivity(input, next) : next(input)),
    scheduleLocalActivity: (input, next) => (otel ? otel.outbound.scheduleLocalActivity(input, next) : next(input)),
    startChildWorkflowExecution: (input, next) =>
      otel ? otel.outbound.startChildWorkflowExecution(input, next) : next(input),
    continueAsNew: (input, next) => (otel ? otel.outbound.continueAsNew(input, next) : next(input)),
    signalWorkflow: (input, next) => (otel ? otel.outbound.signalWorkflow(input, next) : next(input)),
    getLogAttributes: (input, next) => (otel ? otel.outbound.getLogAttributes(input, next) : next(input)),
  };

  return {
    inbound: [inbound],
    outbound: [outbound],
    internals: [
      { dispose: (input, next) => (otel ? new OpenTelemetryInternalsInterceptor().dispose(input, next) : next(input)) },
    ],
  };
}
