import { randomUUID } from 'node:crypto';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { Client, Connection } from '@temporalio/client';
import type { WorkflowBundleOption } from '@temporalio/worker';
import { createWorker, loadWorkflowBundle } from '../../worker/worker';
import type { ActivityDeps } from '../../activities';
import { HARNESS_ENV } from './harness-env';

export function harnessAddress(): string {
  const address = process.env[HARNESS_ENV.address];
  if (!address) throw new Error('no Temporal server: run the tests through jest (global setup starts one)');
  return address;
}

let bundle: Promise<WorkflowBundleOption> | undefined;
/** One workflow bundle per test file; against the compiled build, the build's own bundle. */
export function workflowBundle(): Promise<WorkflowBundleOption> {
  bundle ??= loadWorkflowBundle();
  return bundle;
}

export function uniqueTaskQueue(prefix = 'test'): string {
  return `${prefix}-${randomUUID()}`;
}

export interface TemporalTestContext {
  client: Client;
  connection: Connection;
  nativeConnection: NativeConnection;
  close(): Promise<void>;
}

export async function connectToHarness(): Promise<TemporalTestContext> {
  const address = harnessAddress();
  const connection = await Connection.connect({ address });
  const nativeConnection = await NativeConnection.connect({ address });
  const client = new Client({ connection, namespace: 'default' });
  return {
    client,
    connection,
    nativeConnection,
    async close() {
      await connection.close();
      await nativeConnection.close();
    },
  };
}

/** Runs the project's real worker (real workflows bundle, real activities) while `fn` runs. */
export async function withProjectWorker<T>(
  ctx: TemporalTestContext,
  taskQueue: string,
  deps: ActivityDeps,
  fn: (worker: Worker) => Promise<T>,
): Promise<T> {
  const worker = await createWorker({
    connection: ctx.nativeConnection,
    namespace: 'default',
    taskQueue,
    deps,
    workflowBundle: await workflowBundle(),
    shutdownGraceSeconds: 2,
  });
  return worker.runUntil(() => fn(worker));
}
