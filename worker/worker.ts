import { NativeConnection, Worker, bundleWorkflowCode, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import type { DataConverter } from '@temporalio/common';
import { createActivities, type ActivityDeps } from '../activities';

export const workflowsPath = require.resolve('../workflows');

export interface WorkerOptions {
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  deps: ActivityDeps;
  /** A pre-built bundle (tests build one per file); otherwise the workflows are bundled at start. */
  workflowBundle?: WorkflowBundleWithSourceMap;
  shutdownGraceSeconds?: number;
  identity?: string;
  /** The payload codec (common/payload-codec.ts), the same as the API client's. */
  dataConverter?: DataConverter;
}

export function bundleWorkflows(): Promise<WorkflowBundleWithSourceMap> {
  return bundleWorkflowCode({ workflowsPath, logger: quietBundlerLogger });
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
    shutdownGraceTime: `${options.shutdownGraceSeconds ?? 30} seconds`,
  });
}

const quietBundlerLogger = {
  log: () => undefined,
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: (message: string) => console.warn(message),
  error: (message: string) => console.error(message),
};
