import { createHash } from 'node:crypto';
import { Router } from 'express';
import { z } from 'zod';
import {
  WorkflowFailedError,
  WorkflowUpdateFailedError,
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
import type { AppDeps } from '../app';
import { HttpError } from '../errors';
import { registry } from '../openapi';
import { validate } from '../validate';
import { visibilityLiteral } from '../visibility';
import {
  OPERATIONS,
  promotionStatusQuery,
  promotionWorkflowId,
  retryCompensationUpdate,
  WORKFLOW_TYPES,
} from '../../common/messages';
import {
  environmentName,
  PROMOTION_PHASES,
  PROMOTION_REPORT_MEMO,
  PromotionErrors,
  PromotionRequest,
  type PromotionReport,
} from '../../common/promotion';
import { SA } from '../../common/search-attributes';
import type { promoteDevice } from '../../workflows/promotion';

/** How long GET waits for the live status query before answering from search attributes alone. */
const STATUS_QUERY_TIMEOUT_MS = 3_000;

// ----- schemas (the single source of types, validation and OpenAPI) -----

const RegistrationParams = z.object({ registrationId: PromotionRequest.shape.registrationId });

/** Execution statuses as the API names them → the visibility ExecutionStatus value. */
const STATUS_FILTERS = {
  running: 'Running',
  completed: 'Completed',
  failed: 'Failed',
  cancelled: 'Canceled',
  terminated: 'Terminated',
  timedOut: 'TimedOut',
  continuedAsNew: 'ContinuedAsNew',
} as const;
const ExecutionStatus = z.enum([...(Object.keys(STATUS_FILTERS) as Array<keyof typeof STATUS_FILTERS>), 'unknown']);
type ExecutionStatus = z.infer<typeof ExecutionStatus>;

const STATUS_BY_NAME: Partial<Record<WorkflowExecutionStatusName, ExecutionStatus>> = {
  RUNNING: 'running',
  COMPLETED: 'completed',
  FAILED: 'failed',
  CANCELLED: 'cancelled',
  TERMINATED: 'terminated',
  TIMED_OUT: 'timedOut',
  CONTINUED_AS_NEW: 'continuedAsNew',
};

/** Azure device ids: up to 128 of ASCII letters, digits and - . % _ * ? ! ( ) , : = @ $ ' + #. */
const deviceId = z.string().regex(/^[A-Za-z0-9\-.%_*?!(),:=@$'+#]{1,128}$/, 'an Azure IoT device id');

const ListQuery = z.object({
  status: z.enum(Object.keys(STATUS_FILTERS) as Array<keyof typeof STATUS_FILTERS>).optional(),
  sourceEnvironment: environmentName.optional(),
  targetEnvironment: environmentName.optional(),
  registrationId: PromotionRequest.shape.registrationId.optional(),
  deviceId: deviceId.optional(),
  phase: z.enum(PROMOTION_PHASES).optional(),
  pageSize: z.coerce.number().int().min(1).max(1000).default(50),
  nextPageToken: z
    .string()
    .regex(/^[A-Za-z0-9_-]+$/, 'the nextPageToken of a previous page')
    .optional(),
});

const Started = z.object({ workflowId: z.string(), runId: z.string(), statusUrl: z.string() });

const PromotionSummary = z.object({
  workflowId: z.string(),
  runId: z.string(),
  status: ExecutionStatus,
  registrationId: z.string().optional(),
  deviceId: z.string().optional(),
  sourceHub: z.string().optional(),
  targetHub: z.string().optional(),
  sourceEnvironment: z.string().optional(),
  targetEnvironment: z.string().optional(),
  phase: z.string().optional(),
  startTime: z.string(),
  closeTime: z.string().optional(),
  statusUrl: z.string(),
});
type PromotionSummary = z.infer<typeof PromotionSummary>;

const Failure = z.object({
  type: z.string().describe('ApplicationFailure type (see PromotionErrors), or Cancelled / Terminated / TimedOut'),
  message: z.string(),
  details: z.array(z.unknown()).optional(),
});
type Failure = z.infer<typeof Failure>;

const PromotionDetail = PromotionSummary.extend({
  progress: z
    .record(z.string(), z.unknown())
    .optional()
    .describe('running: the live PromotionStatus from the workflow’s status query'),
  progressUnavailable: z.string().optional().describe('running, but the status query did not answer: why'),
  result: z.record(z.string(), z.unknown()).optional().describe('completed: the PromotionResult'),
  failure: Failure.optional().describe('failed, cancelled, terminated or timed out: what ended it'),
  outcome: z
    .enum(['promoted', 'rolledBack', 'parked', 'compensationFailed', 'failed', 'cancelled'])
    .optional()
    .describe('closed: what the run left behind (from its report)'),
  report: z
    .record(z.string(), z.unknown())
    .optional()
    .describe('closed: how the run ended — outcome, reason, terminal phase, failure type, undo steps left'),
});

const PromotionList = z.object({ promotions: z.array(PromotionSummary), nextPageToken: z.string().optional() });

const ErrorBody = z.object({
  error: z.string(),
  message: z.string(),
  issues: z.array(z.unknown()).optional(),
  workflowId: z.string().optional(),
});
const json = <T extends z.ZodType>(schema: T) => ({ 'application/json': { schema } });

registry.registerPath({
  method: 'post',
  path: '/v1/promotions',
  summary: 'Start promoting a device from its source environment (test) to its target environment (production)',
  request: { body: { content: json(PromotionRequest) } },
  responses: {
    202: {
      description: 'started; poll the Location',
      headers: { Location: { schema: { type: 'string' }, description: '/v1/promotions/<registrationId>' } },
      content: json(Started),
    },
    400: {
      description: 'invalid request or unknown environment (issues say which); nothing started',
      content: json(ErrorBody),
    },
    409: { description: 'a promotion of this device is already in flight (workflowId)', content: json(ErrorBody) },
  },
});
registry.registerPath({
  method: 'get',
  path: '/v1/promotions/{registrationId}',
  summary: 'A promotion: live status while running, the result or failure once closed',
  request: { params: RegistrationParams },
  responses: {
    200: { description: 'the latest promotion of this device', content: json(PromotionDetail) },
    404: { description: 'no promotion of this device', content: json(ErrorBody) },
  },
});
registry.registerPath({
  method: 'get',
  path: '/v1/promotions',
  summary: 'List promotions, newest first, filtered by status, environments, registration id, device id or phase',
  request: { query: ListQuery },
  responses: { 200: { description: 'one page; pass nextPageToken for the next', content: json(PromotionList) } },
});
registry.registerPath({
  method: 'post',
  path: '/v1/promotions/{registrationId}/cancel',
  summary: 'Ask a running promotion to stop; it compensates as its request says (rollback or park)',
  request: { params: RegistrationParams },
  responses: {
    202: { description: 'cancellation requested; poll the Location', content: json(Started) },
    404: { description: 'no promotion of this device is running', content: json(ErrorBody) },
  },
});

registry.registerPath({
  method: 'post',
  path: '/v1/promotions/{registrationId}/retry-compensation',
  summary: 'Run the undo steps a promotion could not complete again (phase compensationFailed); answers what is left',
  request: { params: RegistrationParams },
  responses: {
    200: { description: 'the compensation report after the retry', content: json(z.record(z.string(), z.unknown())) },
    404: { description: 'no promotion of this device is running', content: json(ErrorBody) },
    409: { description: 'the promotion is not in phase compensationFailed (NothingToRetry)', content: json(ErrorBody) },
  },
});

// ----- routes -----

export function promotionRoutes({ client, taskQueue, log, environments = {} }: AppDeps): Router {
  const router = Router();
  const hubOf = (environment: string) =>
    Object.hasOwn(environments, environment) ? environments[environment] : undefined;
  const environmentOf = (hub?: string) => Object.entries(environments).find(([, host]) => host === hub)?.[0];
  const known = Object.keys(environments).join(', ') || '(none configured)';

  // Environments are app configuration, so they are checked beside the schemas' own rules: one 400 with issues.
  const knownEnvironments = (
    value: { sourceEnvironment?: string; targetEnvironment?: string },
    ctx: z.RefinementCtx,
  ) => {
    for (const field of ['sourceEnvironment', 'targetEnvironment'] as const) {
      const environment = value[field];
      if (environment === undefined || hubOf(environment) !== undefined) continue;
      ctx.addIssue({
        code: 'custom',
        path: [field],
        message: `unknown environment "${environment}"; configured: ${known}`,
        params: { type: PromotionErrors.unknownEnvironment },
      });
    }
  };
  const StartRequest = PromotionRequest.superRefine(knownEnvironments);
  const ListFilters = ListQuery.superRefine(knownEnvironments);

  const summarize = (info: Omit<WorkflowExecutionInfo, 'raw'>): PromotionSummary => {
    const attributes = info.typedSearchAttributes;
    const sourceHub = attributes.get(SA.sourceHub);
    const targetHub = attributes.get(SA.targetHub);
    const registrationId = attributes.get(SA.registrationId);
    return {
      workflowId: info.workflowId,
      runId: info.runId,
      status: STATUS_BY_NAME[info.status.name] ?? 'unknown',
      registrationId,
      deviceId: attributes.get(SA.deviceId),
      sourceHub,
      targetHub,
      sourceEnvironment: environmentOf(sourceHub),
      targetEnvironment: environmentOf(targetHub),
      phase: attributes.get(SA.phase),
      startTime: info.startTime.toISOString(),
      closeTime: info.closeTime?.toISOString(),
      statusUrl: statusUrl(registrationId ?? info.workflowId.slice(info.workflowId.indexOf('/') + 1)),
    };
  };

  router.post('/promotions', validate({ body: StartRequest }), async (req, res) => {
    const request = req.body;
    const sourceHub = hubOf(request.sourceEnvironment)!;
    const targetHub = hubOf(request.targetEnvironment)!;
    const handle = await client.workflow.start<typeof promoteDevice>(WORKFLOW_TYPES.promoteDevice, {
      taskQueue,
      workflowId: promotionWorkflowId(request.registrationId),
      args: [request],
      // One promotion in flight per device; a new one may start once the previous one closed, however it ended.
      workflowIdConflictPolicy: 'FAIL',
      workflowIdReusePolicy: 'ALLOW_DUPLICATE',
      typedSearchAttributes: [
        { key: SA.registrationId, value: request.registrationId },
        { key: SA.operation, value: OPERATIONS.promote },
        { key: SA.sourceHub, value: sourceHub },
        { key: SA.targetHub, value: targetHub },
        { key: SA.phase, value: 'validating' },
      ],
      staticSummary: `Promote ${request.registrationId}: ${request.sourceEnvironment} → ${request.targetEnvironment}`,
    });
    const url = statusUrl(request.registrationId);
    log.info(
      { workflowId: handle.workflowId, runId: handle.firstExecutionRunId, sourceHub, targetHub },
      'promotion started',
    );
    res
      .status(202)
      .location(url)
      .json({ workflowId: handle.workflowId, runId: handle.firstExecutionRunId, statusUrl: url });
  });

  router.get('/promotions', validate({ query: ListFilters }), async (req, res) => {
    const filters = req.query;
    const clauses = [`WorkflowType = ${visibilityLiteral(WORKFLOW_TYPES.promoteDevice)}`];
    const equals = (attribute: string, value: string | undefined) => {
      if (value !== undefined) clauses.push(`${attribute} = ${visibilityLiteral(value)}`);
    };
    equals(SA.sourceHub.name, filters.sourceEnvironment && hubOf(filters.sourceEnvironment));
    equals(SA.targetHub.name, filters.targetEnvironment && hubOf(filters.targetEnvironment));
    equals('ExecutionStatus', filters.status && STATUS_FILTERS[filters.status]);
    equals(SA.registrationId.name, filters.registrationId);
    equals(SA.deviceId.name, filters.deviceId);
    equals(SA.phase.name, filters.phase);

    const query = clauses.join(' AND ');
    const page = await client.workflowService.listWorkflowExecutions({
      namespace: client.options.namespace,
      query,
      pageSize: filters.pageSize,
      nextPageToken: filters.nextPageToken ? openPageToken(filters.nextPageToken, query) : undefined,
    });
    const executions = await Promise.all(
      page.executions.map((raw) =>
        executionInfoFromRaw(raw, client.options.loadedDataConverter, raw, client.options.namespace),
      ),
    );
    res.json({
      promotions: executions.map(summarize),
      nextPageToken: page.nextPageToken?.length ? sealPageToken(page.nextPageToken, query) : undefined,
    });
  });

  router.get('/promotions/:registrationId', validate({ params: RegistrationParams }), async (req, res) => {
    const workflowId = promotionWorkflowId(req.params.registrationId);
    // The latest run; then everything else about exactly that run, even if a new promotion starts meanwhile.
    const description = await client.workflow.getHandle(workflowId).describe();
    const handle = client.workflow.getHandle<typeof promoteDevice>(workflowId, description.runId, {
      followRuns: false,
    });
    const detail: z.infer<typeof PromotionDetail> = summarize(description);
    const report = description.memo?.[PROMOTION_REPORT_MEMO] as PromotionReport | undefined;
    if (report && detail.status !== 'running') {
      detail.report = report as unknown as Record<string, unknown>;
      detail.outcome = report.outcome;
    }
    if (detail.status === 'running') {
      try {
        const progress = await client.withDeadline(Date.now() + STATUS_QUERY_TIMEOUT_MS, () =>
          handle.query(promotionStatusQuery),
        );
        detail.progress = progress as unknown as Record<string, unknown>;
      } catch (err) {
        // No worker polling, or the query failed: the search attributes above still say the phase.
        detail.progressUnavailable = (err as Error).message;
        log.warn({ workflowId, err }, 'status query did not answer');
      }
    } else if (detail.status === 'completed') {
      detail.result = (await handle.result()) as unknown as Record<string, unknown>;
    } else if (detail.status !== 'continuedAsNew' && detail.status !== 'unknown') {
      detail.failure = await handle.result().then(
        () => undefined,
        (err: unknown) => describeFailure(err),
      );
    }
    res.json(detail);
  });

  router.post('/promotions/:registrationId/cancel', validate({ params: RegistrationParams }), async (req, res) => {
    const workflowId = promotionWorkflowId(req.params.registrationId);
    const description = await client.workflow.getHandle(workflowId).describe();
    if (description.status.name !== 'RUNNING') {
      throw new HttpError(404, 'NotRunning', 'no promotion of this device is running', {
        workflowId,
        status: STATUS_BY_NAME[description.status.name] ?? 'unknown',
      });
    }
    await client.workflow.getHandle(workflowId, description.runId).cancel();
    const url = statusUrl(req.params.registrationId);
    log.info({ workflowId, runId: description.runId }, 'promotion cancellation requested');
    res.status(202).location(url).json({ workflowId, runId: description.runId, statusUrl: url });
  });

  router.post(
    '/promotions/:registrationId/retry-compensation',
    validate({ params: RegistrationParams }),
    async (req, res) => {
      const workflowId = promotionWorkflowId(req.params.registrationId);
      const description = await client.workflow.getHandle(workflowId).describe();
      if (description.status.name !== 'RUNNING') {
        throw new HttpError(404, 'NotRunning', 'no promotion of this device is running', { workflowId });
      }
      try {
        const compensation = await client.workflow
          .getHandle(workflowId, description.runId)
          .executeUpdate(retryCompensationUpdate);
        log.info({ workflowId, leftovers: compensation.leftovers.length }, 'compensation retried');
        res.json({ workflowId, runId: description.runId, compensation });
      } catch (err) {
        const cause = err instanceof WorkflowUpdateFailedError ? err.cause : undefined;
        if (cause instanceof ApplicationFailure && cause.type === PromotionErrors.nothingToRetry) {
          throw new HttpError(409, PromotionErrors.nothingToRetry, cause.message, { workflowId });
        }
        throw err;
      }
    },
  );

  return router;
}

/**
 * Page tokens carry the server's token and a fingerprint of the query it belongs to: the server answers a foreign
 * or mangled token with a generic error, so the API recognises those itself and answers 400.
 */
function sealPageToken(serverToken: Uint8Array, query: string): string {
  return Buffer.from(
    JSON.stringify({ q: fingerprint(query), t: Buffer.from(serverToken).toString('base64') }),
  ).toString('base64url');
}

function openPageToken(token: string, query: string): Buffer {
  let envelope: { q?: unknown; t?: unknown } | undefined;
  try {
    envelope = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as typeof envelope;
  } catch {
    envelope = undefined;
  }
  if (envelope?.q !== fingerprint(query) || typeof envelope.t !== 'string') {
    throw new z.ZodError([
      {
        code: 'custom',
        path: ['query', 'nextPageToken'],
        message: 'not a nextPageToken of this listing (same filters required)',
        input: token,
      },
    ]);
  }
  return Buffer.from(envelope.t, 'base64');
}

function fingerprint(query: string): string {
  return createHash('sha256').update(query).digest('base64url').slice(0, 22);
}

function statusUrl(registrationId: string): string {
  return `/v1/promotions/${encodeURIComponent(registrationId)}`;
}

/** What ended a closed run, from the error its result() raised. */
function describeFailure(err: unknown): Failure {
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
