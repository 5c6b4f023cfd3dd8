import { randomUUID } from 'node:crypto';
import { isGrpcServiceError } from '@temporalio/client';

/**
 * Workflow updates that survive the server aborting them. Temporal aborts an update it has handed to a worker when
 * it fails the workflow task that carried it: most often `UnhandledCommand`, when the workflow completed or
 * continued as new in that task while new events (a child's signal, say) had arrived. The worker runs the task
 * again, but the update is gone, and its caller gets FAILED_PRECONDITION "Unable to perform workflow execution update
 * due to unexpected workflow task failure" (or UNAVAILABLE "workflow update was aborted"). Nothing of it was
 * applied, so asking again is right: each attempt carries the same update id, which Temporal deduplicates should an
 * earlier attempt have landed after all. Bounded by the request's Temporal deadline and by `ATTEMPTS`.
 */

const ATTEMPTS = 8;
const FIRST_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 1_000;

/** Whether the server aborted the update (the workflow task carrying it failed): nothing was applied. */
export function updateAbortedByServer(err: unknown): boolean {
  for (let e = err; e instanceof Error; e = e.cause) {
    if (!isGrpcServiceError(e)) continue;
    if (e.code === 9 && /unexpected workflow task failure/i.test(e.details)) return true;
    if (e.code === 14 && /workflow update was aborted/i.test(e.details)) return true;
  }
  return false;
}

/** Runs `update(updateId)` (one id for every attempt) again while the server aborts it. */
export async function updateWithRetry<T>(update: (updateId: string) => Promise<T>): Promise<T> {
  const updateId = randomUUID();
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await update(updateId);
    } catch (err) {
      if (attempt >= ATTEMPTS || !updateAbortedByServer(err)) throw err;
      const backoff = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** (attempt - 1));
      await new Promise((resolve) => setTimeout(resolve, backoff));
    }
  }
}
