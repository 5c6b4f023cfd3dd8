import { createHash } from 'node:crypto';
import {
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  type Client,
  type WorkflowExecutionDescription,
} from '@temporalio/client';
import stringify from 'safe-stable-stringify';
import { z } from 'zod';
import { describeExecution } from './operations';
import { problem } from './problems';

/**
 * Idempotent starts, kept in Temporal itself so that any replica of the (stateless) API answers the same: each
 * start records the request's fingerprint (SHA-256 of its canonical JSON, defaults applied) and the client's
 * Idempotency-Key, if any, in the workflow's memo. When a start finds the workflow id taken, the running workflow is
 * described and compared:
 *
 * - same fingerprint (and, when both carry one, the same key) → the same workflow is answered again (a replay);
 * - otherwise → 409 already-started, naming the running workflow.
 *
 * With an Idempotency-Key the latest run of the id is looked at first, even if it has closed: the same key and
 * request answer that run again instead of starting another; the same key with a different request is 422.
 * Keys are opaque (1–255 visible ASCII characters) and scoped to one workflow id; a run is remembered as long as
 * Temporal keeps it (the namespace's retention after it closed) and it is the id's latest run.
 */

export const IDEMPOTENCY_KEY_HEADER = 'Idempotency-Key';
export const REPLAYED_HEADER = 'Idempotent-Replayed';

/** The memo keys a start writes; visible in the Temporal UI beside the workflow. */
export const IDEMPOTENCY_MEMO = {
  fingerprint: 'requestFingerprint',
  key: 'idempotencyKey',
} as const;

export const IdempotencyHeaders = z.object({
  'idempotency-key': z
    .string()
    .regex(/^[\x21-\x7E]{1,255}$/, '1–255 visible ASCII characters')
    .optional()
    .describe(
      'Optional; the same key and request answer the same workflow (202, Idempotent-Replayed: true), even after ' +
        'it closed; the same key with a different request is 422.',
    ),
});

export interface IdempotentStartOptions {
  workflowId: string;
  /** The parsed request (defaults applied): what "the same request" means. */
  request: unknown;
  idempotencyKey?: string;
  /** Starts the workflow with this memo (conflict policy FAIL, so that a taken id raises already-started). */
  start: (memo: Record<string, string>) => Promise<{ workflowId: string; firstExecutionRunId: string }>;
}

export interface StartedRun {
  workflowId: string;
  runId: string;
  /** True when an earlier start by the same request is answered, nothing new started. */
  replayed: boolean;
}

export function requestFingerprint(request: unknown): string {
  // undefined only for undefined, which no parsed request is.
  return createHash('sha256')
    .update(stringify(request) ?? '')
    .digest('base64url');
}

export async function startIdempotently(client: Client, options: IdempotentStartOptions): Promise<StartedRun> {
  const { workflowId, idempotencyKey } = options;
  const fingerprint = requestFingerprint(options.request);

  if (idempotencyKey !== undefined) {
    const latest = await describeLatest(client, workflowId);
    if (latest && memoOf(latest).key === idempotencyKey) {
      if (memoOf(latest).fingerprint !== fingerprint) {
        throw problem(
          'idempotencyKeyReused',
          `Idempotency-Key ${idempotencyKey} started ${workflowId} with a different request`,
          { extensions: { workflowId, runId: latest.runId } },
        );
      }
      return { workflowId, runId: latest.runId, replayed: true };
    }
  }

  try {
    const memo: Record<string, string> = { [IDEMPOTENCY_MEMO.fingerprint]: fingerprint };
    if (idempotencyKey !== undefined) memo[IDEMPOTENCY_MEMO.key] = idempotencyKey;
    const handle = await options.start(memo);
    return { workflowId: handle.workflowId, runId: handle.firstExecutionRunId, replayed: false };
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    // The id's latest run is the one in flight (or, if it closed meanwhile, the one that just ran).
    const running = await describeLatest(client, workflowId);
    if (running) {
      const memo = memoOf(running);
      const sameKey = idempotencyKey === undefined || memo.key === undefined || memo.key === idempotencyKey;
      if (memo.fingerprint === fingerprint && sameKey) return { workflowId, runId: running.runId, replayed: true };
    }
    throw problem('alreadyStarted', `${workflowId} is already running, started by a different request`, {
      extensions: { workflowId, ...(running ? { runId: running.runId } : {}) },
    });
  }
}

async function describeLatest(client: Client, workflowId: string): Promise<WorkflowExecutionDescription | undefined> {
  try {
    return await describeExecution(client, workflowId);
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return undefined;
    throw err;
  }
}

function memoOf(description: WorkflowExecutionDescription): { fingerprint?: unknown; key?: unknown } {
  const memo = description.memo ?? {};
  return { fingerprint: memo[IDEMPOTENCY_MEMO.fingerprint], key: memo[IDEMPOTENCY_MEMO.key] };
}
