import { existsSync } from 'node:fs';
import path from 'node:path';
import {
  NativeConnection,
  Worker,
  bundleWorkflowCode,
  type WorkflowBundleOption,
  type WorkflowBundlePath,
  type WorkflowBundleWithSourceMap,
} from '@temporalio/worker';
import type { DataConverter } from '@temporalio/common';
import {
  OpenTelemetryActivityInboundInterceptor,
  OpenTelemetryActivityOutboundInterceptor,
  makeWorkflowExporter,
} from '@temporalio/interceptors-opentelemetry';
import { createActivities, type ActivityDeps } from '../activities';
import type { Tracing } from '../common/tracing';

export const workflowsPath = require.resolve('../workflows');
/** The workflow interceptors every bundle carries: OpenTelemetry for traced workflows (workflows/tracing.ts). */
export const workflowInterceptorModules = [require.resolve('../workflows/tracing')];

/**
 * `npm run build` writes the workflow bundle next to the compiled code (dist/workflow-bundle.js), so the compiled
 * worker starts without webpack and runs exactly the bundle that was built and tested. From the sources (tsx) the
 * path never exists and the workflows are bundled at start.
 */
export const prebuiltBundlePath = path.join(__dirname, '..', 'workflow-bundle.js');

export function prebuiltWorkflowBundle(): WorkflowBundlePath | undefined {
  return existsSync(prebuiltBundlePath) ? { codePath: prebuiltBundlePath } : undefined;
}

export interface WorkerOptions {
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  deps: ActivityDeps;
  /** A pre-built bundle (the build's, or one per test file); otherwise the workflows are bundled at start. */
  workflowBundle?: WorkflowBundleOption;
  shutdownGraceSeconds?: number;
  identity?: string;
  /** The payload codec (common/payload-codec.ts), the same as the API client's. */
  dataConverter?: DataConverter;
  /** Traces (common/tracing.ts): activity spans, and the exporter of the spans traced workflows make. */
  tracing?: Tracing;
}

export function bundleWorkflows(): Promise<WorkflowBundleWithSourceMap> {
  return bundleWorkflowCode({ workflowsPath, workflowInterceptorModules, logger: quietBundlerLogger });
}

/** The build's bundle when running compiled, otherwise a fresh one from the sources. */
export async function loadWorkflowBundle(): Promise<WorkflowBundleOption> {
  return prebuiltWorkflowBundle() ?? (await bundleWorkflows());
}

/** Builds the project's worker: the workflows bundle plus the activities with their Azure clients injected. */
export async function createWorker(options: WorkerOptions): Promise<Worker> {
  return Worker.create({
    connection: options.connection,
    namespace: options.namespace,
    taskQueue: options.taskQueue,
    ...(options.identity ? { identity: options.identity } : {}),
    ...(options.workflowBundle ? { workflowBundle: options.workflowBundle } : { workflowsPath }),
    activities: createActivities(options.deps),
    ...(options.dataConverter ? { dataConverter: options.dataConverter } : {}),
    ...tracingOptions(options.tracing),
    shutdownGraceTime: `${options.shutdownGraceSeconds ?? 30} seconds`,
  });
}

/**
 * With tracing, activities run in spans joined to their workflow's trace, and traced workflows' spans are exported;
 * without it, the `exporter` sink is still there (a workflow started by a traced API into an untraced worker finds
 * it), and drops what it is given.
 */
function tracingOptions(tracing: Tracing | undefined): Pick<WorkerCreateOptions, 'interceptors' | 'sinks'> {
  if (!tracing) return { sinks: { exporter: { export: { fn: () => undefined, callDuringReplay: false } } } };
  return {
    interceptors: {
      activity: [
        (ctx) => ({
          inbound: new OpenTelemetryActivityInboundInterceptor(ctx),
          outbound: new OpenTelemetryActivityOutboundInterceptor(ctx),
        }),
      ],
    },
    sinks: { exporter: makeWorkflowExporter(tracing.spanProcessor, tracing.resource) },
  };
}

type WorkerCreateOptions = Parameters<typeof Worker.create>[0];

const quietBundlerLogger = {
  log: () => undefined,
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: (message: string) => console.warn(message),
  error: (message: string) => console.error(message),
};
