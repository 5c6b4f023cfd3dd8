import { z } from 'zod';
import {
  WorkflowFailedError,
  type Client,
  type WorkflowExecutionDescription,
  type WorkflowExecutionInfo,
  type WorkflowExecutionStatusName,
} from '@temporalio/client';
// The public list() iterator hides the server's page token; the API pages with the raw RPC and decodes each
// execution with the SDK's own helper instead of a hand-written decoder.
import { executionInfoFromRaw } from '@temporalio/client/lib/helpers';
import {
  ActivityFailure,
  ApplicationFailure,
  CancelledFailure,
  TemporalFailure,
  TerminatedFailure,
  TimeoutFailure,
} from '@temporalio/common';
import type { QueryDefinition } from '@temporalio/workflow';
import type { Logger } from '../common/logger';
import type { PageTokens } from './page-tokens';
import { visibilityLiteral } from './visibility';

/**
 * What every operation's routes share (promotions, revocations, reinstatements): execution statuses as the API
 * names them, listing a page from visibility with signed page tokens, and the detail of one run — its live status
 * while it runs, its result, failure and report once it has closed.
 */

/** Execution statuses as the API names them → the visibility ExecutionStatus value. */
export const STATUS_FILTERS = {
  running: 'Running',
  completed: 'Completed',
  failed: 'Failed',
  cancelled: 'Canceled',
  terminated: 'Terminated',
  timedOut: 'TimedOut',
  continuedAsNew: 'ContinuedAsNew',
} as const;
export type StatusFilter = keyof typeof STATUS_FILTERS;
export const StatusFilter = z.enum(Object.keys(STATUS_FILTERS) as StatusFilter[]);
export const ExecutionStatus = z.enum([...(Object.keys(STATUS_FILTERS) as StatusFilter[]), 'unknown']);
export type ExecutionStatus = z.infer<typeof ExecutionStatus>;

export const STATUS_BY_NAME: Partial<Record<WorkflowExecutionStatusName, ExecutionStatus>> = {
  RUNNING: 'running',
  COMPLETED: 'completed',
  FAILED: 'failed',
  CANCELLED: 'cancelled',
  TERMINATED: 'terminated',
  TIMED_OUT: 'timedOut',
  CONTINUED_AS_NEW: 'continuedAsNew',
};

export const PageSize = z.coerce.number().int().min(1).max(1000).default(50);
export const NextPageToken = z
  .string()
  .regex(/^[A-Za-z0-9_-]+$/, 'the nextPageToken of a previous page')
  .optional();

export const Started = z.object({ workflowId: z.string(), runId: z.string(), statusUrl: z.string() });

export const Failure = z.object({
  type: z.string().describe('the named failure type, or Cancelled / Terminated / TimedOut'),
  message: z.string(),
  details: z.array(z.unknown()).optional(),
});
export type Failure = z.infer<typeof Failure>;

/** The fields of an operation's detail that come from the run itself rather than its search attributes. */
export const RunDetail = z.object({
  progress: z
    .record(z.string(), z.unknown())
    .optional()
    .describe('running: the live status from the workflow’s status query'),
  progressUnavailable: z.string().optional().describe('running, but the status query did not answer: why'),
  result: z.record(z.string(), z.unknown()).optional().describe('completed: the result'),
  failure: Failure.optional().describe('failed, cancelled, terminated or timed out: what ended it'),
  report: z
    .record(z.string(), z.unknown())
    .optional()
    .describe('closed: how the run ended, from its memo (outcome, terminal phase, failure type, what is left)'),
  undecodable: z
    .string()
    .optional()
    .describe('part of the run (memo, status, result) is encrypted with a codec key this API does not hold: which'),
});
export type RunDetail = z.infer<typeof RunDetail>;

export const json = <T extends z.ZodType>(schema: T) => ({ 'application/json': { schema } });

/** How long GET waits for the live status query before answering from search attributes alone. */
const STATUS_QUERY_TIMEOUT_MS = 3_000;

/**
 * `describe()` of a run (the latest when no runId) that never fails on its memo: a memo written with a codec key
 * this API lacks (a rotated key, another deployment's worker) leaves the run described from its undecoded record,
 * without the memo, and `undecodable` says what could not be read.
 */
export async function describeExecution(
  client: Client,
  workflowId: string,
  runId?: string,
): Promise<WorkflowExecutionDescription & { undecodable?: string }> {
  try {
    return await client.workflow.getHandle(workflowId, runId).describe();
  } catch (err) {
    if (!undecodable(err)) throw err;
    const raw = await client.workflowService.describeWorkflowExecution({
      namespace: client.options.namespace,
      execution: { workflowId, runId },
    });
    const info = await executionInfoFromRaw(
      withoutMemo(raw.workflowExecutionInfo!),
      client.options.loadedDataConverter,
      raw,
      client.options.namespace,
    );
    return Object.assign(info as unknown as WorkflowExecutionDescription, { undecodable: (err as Error).message });
  }
}

/** The latest run of `workflowId` (404 through the error middleware when there is none) and what it has to say. */
export async function describeRun(
  client: Client,
  log: Logger,
  workflowId: string,
  statusQuery: QueryDefinition<unknown>,
): Promise<{ description: WorkflowExecutionDescription; status: ExecutionStatus; detail: RunDetail }> {
  // The latest run; then everything else about exactly that run, even if a new one starts meanwhile.
  const detail: RunDetail = {};
  const description = await describeExecution(client, workflowId);
  if (description.undecodable) detail.undecodable = description.undecodable;
  const handle = client.workflow.getHandle(workflowId, description.runId, { followRuns: false });
  const status = STATUS_BY_NAME[description.status.name] ?? 'unknown';
  const unreadable = (err: unknown) => {
    if (!undecodable(err)) throw err;
    detail.undecodable = (err as Error).message;
    return undefined;
  };
  const report = description.memo?.report as Record<string, unknown> | undefined;
  if (report && status !== 'running') detail.report = report;
  if (status === 'running') {
    try {
      const progress = await client.withDeadline(Date.now() + STATUS_QUERY_TIMEOUT_MS, () => handle.query(statusQuery));
      detail.progress = progress as Record<string, unknown>;
    } catch (err) {
      // No worker polling, or the query failed: the search attributes still say the phase.
      detail.progressUnavailable = (err as Error).message;
      log.warn({ workflowId, err }, 'status query did not answer');
    }
  } else if (status === 'completed') {
    const result = (await handle.result().catch(unreadable)) as Record<string, unknown> | undefined;
    if (result) detail.result = result;
  } else if (status !== 'continuedAsNew' && status !== 'unknown') {
    const failure = await handle.result().then(
      () => undefined,
      (err: unknown) => (undecodable(err) ? unreadable(err) : describeFailure(err)),
    );
    if (failure) detail.failure = failure;
  }
  return { description, status, detail };
}

/** One page of runs matching `clauses` (ANDed), newest first, with a page token signed for exactly this query. */
export async function listRuns(
  client: Client,
  pageTokens: PageTokens,
  options: { clauses: string[]; pageSize: number; nextPageToken?: string },
): Promise<{ executions: Array<Omit<WorkflowExecutionInfo, 'raw'>>; nextPageToken?: string }> {
  const query = options.clauses.join(' AND ');
  let serverToken: Buffer | undefined;
  if (options.nextPageToken) {
    serverToken = pageTokens.open(options.nextPageToken, query);
    if (!serverToken) {
      throw new z.ZodError([
        {
          code: 'custom',
          path: ['query', 'nextPageToken'],
          message: 'not a nextPageToken of this listing (same filters required)',
          input: options.nextPageToken,
        },
      ]);
    }
  }
  const page = await client.workflowService.listWorkflowExecutions({
    namespace: client.options.namespace,
    query,
    pageSize: options.pageSize,
    nextPageToken: serverToken,
  });
  const executions = await Promise.all(
    // Summaries need no memo: left undecoded, so one run whose memo this API cannot decode (written by a worker with
    // another codec key) cannot fail the whole page.
    page.executions.map((raw) =>
      executionInfoFromRaw(withoutMemo(raw), client.options.loadedDataConverter, raw, client.options.namespace),
    ),
  );
  return {
    executions,
    nextPageToken: page.nextPageToken?.length ? pageTokens.seal(page.nextPageToken, query) : undefined,
  };
}

/** A payload this API cannot decode: encrypted with a codec key it lacks, or with an encoding it has no codec for. */
function undecodable(err: unknown): boolean {
  const message = err instanceof Error ? `${err.name} ${err.message} ${String(err.cause ?? '')}` : '';
  return /TEMPORAL_CODEC_KEYS|Unknown encoding|binary\/encrypted|PayloadConverterError/i.test(message);
}

/** A copy of a raw execution without its memo; protobuf messages keep field defaults on their prototype. */
function withoutMemo<T extends object>(raw: T): T {
  return Object.assign(Object.create(Object.getPrototypeOf(raw) as object) as T, raw, { memo: null });
}

/** A visibility clause `attribute = value`, or nothing when the filter is not set. */
export function equals(attribute: string, value: string | undefined): string[] {
  return value === undefined ? [] : [`${attribute} = ${visibilityLiteral(value)}`];
}

/** What ended a closed run, from the error its result() raised. */
export function describeFailure(err: unknown): Failure {
  let cause = err instanceof WorkflowFailedError ? err.cause : err;
  // Runs of the first release failed with the activity's failure: name the ApplicationFailure inside it.
  if (cause instanceof ActivityFailure && cause.cause instanceof ApplicationFailure) cause = cause.cause;
  if (cause instanceof ApplicationFailure) {
    return {
      type: cause.type ?? 'Error',
      message: cause.message,
      ...(cause.details?.length ? { details: [...cause.details] } : {}),
    };
  }
  if (cause instanceof CancelledFailure) return { type: 'Cancelled', message: cause.message };
  if (cause instanceof TerminatedFailure) return { type: 'Terminated', message: cause.message };
  if (cause instanceof TimeoutFailure) return { type: 'TimedOut', message: cause.message };
  if (cause instanceof TemporalFailure) return { type: cause.name, message: cause.message };
  throw err;
}
