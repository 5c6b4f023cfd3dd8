import { Router } from 'express';
import { z } from 'zod';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  WorkflowUpdateStage,
  type WorkflowExecutionInfo,
} from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { AppDeps } from '../app';
import { jsonBody } from '../body';
import { IDEMPOTENCY_KEY_HEADER, IdempotencyHeaders, REPLAYED_HEADER, startIdempotently } from '../idempotency';
import { registerRoute } from '../openapi';
import { PageTokens } from '../page-tokens';
import { problem, problemResponse } from '../problems';
import { temporalDeadline, withLongerTemporalDeadline } from '../temporal';
import { validate } from '../validate';
import {
  describeExecution,
  describeRun,
  equals,
  ExecutionStatus,
  json,
  listRuns,
  NextPageToken,
  PageSize,
  RunDetail,
  Started,
  STATUS_BY_NAME,
  STATUS_FILTERS,
  StatusFilter,
} from '../operations';
import {
  OPERATIONS,
  operatorActionSignal,
  promotionStatusQuery,
  promotionWorkflowId,
  retryCompensationUpdate,
  WORKFLOW_TYPES,
} from '../../common/messages';
import {
  environmentName,
  PROMOTION_PHASES,
  PromotionErrors,
  PromotionRequest,
  type CompensationReport,
  type PromotionReport,
} from '../../common/promotion';
import { requestedByKeyword, requestedByStartOptions } from '../../common/requested-by';
import { SA } from '../../common/search-attributes';
import { requestedBy } from '../auth/caller';
import { updateWithRetry } from '../updates';
import type { promoteDevice } from '../../workflows/promotion';

/** How long a compensation retry may take before the API answers 202 and lets the client poll instead. */
const RETRY_ANSWER_WAIT_MS = 20_000;

// ----- schemas (the single source of types, validation and OpenAPI) -----

const RegistrationParams = z.object({ registrationId: PromotionRequest.shape.registrationId });

/** Azure device ids: up to 128 of ASCII letters, digits and - . % _ * ? ! ( ) , : = @ $ ' + #. */
const deviceId = z.string().regex(/^[A-Za-z0-9\-.%_*?!(),:=@$'+#]{1,128}$/, 'an Azure IoT device id');

const ListQuery = z.strictObject({
  status: StatusFilter.optional(),
  sourceEnvironment: environmentName.optional(),
  targetEnvironment: environmentName.optional(),
  registrationId: PromotionRequest.shape.registrationId.optional(),
  deviceId: deviceId.optional(),
  phase: z.enum(PROMOTION_PHASES).optional(),
  pageSize: PageSize,
  nextPageToken: NextPageToken,
});

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

const PromotionDetail = PromotionSummary.extend(RunDetail.shape).extend({
  outcome: z
    .enum(['promoted', 'rolledBack', 'parked', 'compensationFailed', 'failed', 'cancelled', 'stoppedForRevocation'])
    .optional()
    .describe('closed: what the run left behind (from its report)'),
});

const PromotionList = z.object({ promotions: z.array(PromotionSummary), nextPageToken: z.string().optional() });

const location = {
  Location: { schema: { type: 'string' }, required: true, description: '/v1/promotions/<registrationId>' },
} as const;

registerRoute({
  method: 'post',
  path: '/v1/promotions',
  operationId: 'startPromotion',
  auth: 'operator',
  summary: 'Start promoting a device from its source environment (test) to its target environment (production)',
  description:
    'Idempotent: while a promotion of the device runs, the same request (defaults applied) answers that ' +
    `promotion again (202, ${REPLAYED_HEADER}: true) instead of 409. An ${IDEMPOTENCY_KEY_HEADER} is remembered ` +
    'in the workflow memo with the request: the same key and request answer the same promotion even after it ' +
    'closed; the same key with another request is 422. A different request while one runs is 409.',
  temporal: true,
  request: {
    headers: IdempotencyHeaders,
    body: { required: true, content: json(PromotionRequest) },
  },
  responses: {
    202: {
      description: 'started, or the same request answered again; poll the Location',
      headers: {
        ...location,
        [REPLAYED_HEADER]: {
          schema: { type: 'string', enum: ['true'] },
          description: 'present when an earlier start by the same request is answered',
        },
      },
      content: json(Started),
      links: {
        GetPromotion: {
          operationId: 'getPromotion',
          parameters: { registrationId: '$request.body#/registrationId' },
          description: 'the promotion just started',
        },
        CancelPromotion: {
          operationId: 'cancelPromotion',
          parameters: { registrationId: '$request.body#/registrationId' },
        },
      },
    },
    400: problemResponse(
      400,
      ['validation', 'malformedRequest'],
      'invalid request or unknown environment (issues say which); nothing started',
    ),
    409: problemResponse(409, ['alreadyStarted'], 'a different promotion of this device is in flight (workflowId)'),
    422: problemResponse(422, ['idempotencyKeyReused']),
  },
});
registerRoute({
  method: 'get',
  path: '/v1/promotions/{registrationId}',
  operationId: 'getPromotion',
  auth: 'viewer',
  summary: 'A promotion: live status while running, the result or failure once closed',
  temporal: true,
  request: { params: RegistrationParams },
  responses: {
    200: { description: 'the latest promotion of this device', content: json(PromotionDetail) },
    404: problemResponse(404, ['workflowNotFound'], 'no promotion of this device'),
  },
});
registerRoute({
  method: 'get',
  path: '/v1/promotions',
  operationId: 'listPromotions',
  auth: 'viewer',
  summary: 'List promotions, newest first, filtered by status, environments, registration id, device id or phase',
  temporal: true,
  request: { query: ListQuery },
  responses: { 200: { description: 'one page; pass nextPageToken for the next', content: json(PromotionList) } },
});
registerRoute({
  method: 'post',
  path: '/v1/promotions/{registrationId}/cancel',
  operationId: 'cancelPromotion',
  auth: 'operator',
  summary: 'Ask a running promotion to stop; it compensates as its request says (rollback or park)',
  temporal: true,
  request: { params: RegistrationParams },
  responses: {
    202: { description: 'cancellation requested; poll the Location', headers: location, content: json(Started) },
    404: problemResponse(404, ['workflowNotFound'], 'this device was never promoted'),
    409: problemResponse(409, ['notRunning'], 'its latest promotion has closed (executionStatus says how)'),
  },
});

const UndoReport = z.object({
  step: z.string(),
  status: z.enum(['pending', 'undone', 'failed']),
  detail: z.string().optional(),
  error: z.object({ type: z.string(), message: z.string() }).optional(),
});
const CompensationRetried = z.object({
  workflowId: z.string(),
  runId: z.string(),
  compensation: z.object({
    attempts: z.number().int(),
    steps: z.array(UndoReport),
    leftovers: z.array(UndoReport).describe('undo steps that still failed; empty when everything was put back'),
  }),
});

registerRoute({
  method: 'post',
  path: '/v1/promotions/{registrationId}/retry-compensation',
  operationId: 'retryPromotionCompensation',
  auth: 'operator',
  summary: 'Run again the undo steps a promotion could not complete (phase compensationFailed)',
  temporal: true,
  request: { params: RegistrationParams },
  responses: {
    200: {
      description: 'the retry ran: the compensation report, with what is left',
      content: json(CompensationRetried),
    },
    202: {
      description: 'the retry is running (undo steps retry Azure faults); poll the Location',
      headers: location,
      content: json(Started),
    },
    404: problemResponse(404, ['workflowNotFound'], 'this device was never promoted'),
    409: problemResponse(409, ['notRunning', 'nothingToRetry'], 'closed, or not waiting for a compensation retry'),
  },
});

// ----- routes -----

export function promotionRoutes(deps: AppDeps): Router {
  const { client, taskQueue, log, environments = {} } = deps;
  const router = Router();
  const temporal = temporalDeadline(deps);
  const pageTokens = new PageTokens(deps.pageTokenSecret);
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

  const startValidation = validate({ headers: IdempotencyHeaders, body: StartRequest });
  router.post('/promotions', jsonBody(), startValidation, temporal, async (req, res) => {
    const request = req.body;
    const sourceHub = hubOf(request.sourceEnvironment)!;
    const targetHub = hubOf(request.targetEnvironment)!;
    const by = requestedBy(res);
    const recorded = requestedByStartOptions(by);
    const started = await startIdempotently(client, {
      workflowId: promotionWorkflowId(request.registrationId),
      request,
      idempotencyKey: req.get(IDEMPOTENCY_KEY_HEADER),
      start: (memo) =>
        client.workflow.start<typeof promoteDevice>(WORKFLOW_TYPES.promoteDevice, {
          taskQueue,
          workflowId: promotionWorkflowId(request.registrationId),
          args: [request, { requestedBy: by }],
          memo: { ...memo, ...recorded.memo },
          // One promotion in flight per device; a new one may start once the previous one closed, however it ended.
          workflowIdConflictPolicy: 'FAIL',
          workflowIdReusePolicy: 'ALLOW_DUPLICATE',
          typedSearchAttributes: [
            { key: SA.registrationId, value: request.registrationId },
            { key: SA.operation, value: OPERATIONS.promote },
            { key: SA.sourceHub, value: sourceHub },
            { key: SA.targetHub, value: targetHub },
            { key: SA.phase, value: 'validating' },
            recorded.searchAttribute,
          ],
          staticSummary: `Promote ${request.registrationId}: ${request.sourceEnvironment} → ${request.targetEnvironment}`,
        }),
    });
    const url = statusUrl(request.registrationId);
    const { workflowId, runId, replayed } = started;
    log.info(
      { workflowId, runId, sourceHub, targetHub, replayed, requestedBy: requestedByKeyword(by) },
      replayed ? 'promotion start replayed' : 'promotion started',
    );
    if (replayed) res.set(REPLAYED_HEADER, 'true');
    res.status(202).location(url).json({ workflowId, runId, statusUrl: url });
  });

  router.get('/promotions', validate({ query: ListFilters }), temporal, async (req, res) => {
    const filters = req.query;
    const page = await listRuns(client, pageTokens, {
      clauses: [
        ...equals('WorkflowType', WORKFLOW_TYPES.promoteDevice),
        ...equals(SA.sourceHub.name, filters.sourceEnvironment && hubOf(filters.sourceEnvironment)),
        ...equals(SA.targetHub.name, filters.targetEnvironment && hubOf(filters.targetEnvironment)),
        ...equals('ExecutionStatus', filters.status && STATUS_FILTERS[filters.status]),
        ...equals(SA.registrationId.name, filters.registrationId),
        ...equals(SA.deviceId.name, filters.deviceId),
        ...equals(SA.phase.name, filters.phase),
      ],
      pageSize: filters.pageSize,
      nextPageToken: filters.nextPageToken,
    });
    res.json({ promotions: page.executions.map(summarize), nextPageToken: page.nextPageToken });
  });

  router.get('/promotions/:registrationId', validate({ params: RegistrationParams }), temporal, async (req, res) => {
    const workflowId = promotionWorkflowId(req.params.registrationId);
    const run = await describeRun(client, log, workflowId, promotionStatusQuery);
    const report = run.detail.report as PromotionReport | undefined;
    const detail: z.infer<typeof PromotionDetail> = {
      ...summarize(run.description),
      ...run.detail,
      ...(report ? { outcome: report.outcome } : {}),
    };
    res.json(detail);
  });

  const cancelValidation = validate({ params: RegistrationParams });
  router.post('/promotions/:registrationId/cancel', cancelValidation, temporal, async (req, res) => {
    const workflowId = promotionWorkflowId(req.params.registrationId);
    const description = await describeExecution(client, workflowId);
    if (description.status.name !== 'RUNNING') {
      const status = STATUS_BY_NAME[description.status.name] ?? 'unknown';
      throw problem('notRunning', `no promotion of this device is running (the latest is ${status})`, {
        extensions: { workflowId, executionStatus: status },
      });
    }
    const by = requestedBy(res);
    const handle = client.workflow.getHandle(workflowId, description.runId);
    try {
      // A cancellation carries no arguments: who asked reaches the run just before it, as a signal it records.
      await handle.signal(operatorActionSignal, { action: 'cancel', requestedBy: by });
      await handle.cancel();
    } catch (err) {
      // The run closed between the describe and these calls (e.g. it failed at once): 409, as for a closed run.
      if (!(err instanceof WorkflowNotFoundError)) throw err;
      const closed = await describeExecution(client, workflowId, description.runId);
      const status = STATUS_BY_NAME[closed.status.name] ?? 'unknown';
      throw problem('notRunning', `the promotion closed (${status}) before it could be cancelled`, {
        extensions: { workflowId, executionStatus: status },
      });
    }
    const url = statusUrl(req.params.registrationId);
    log.info(
      { workflowId, runId: description.runId, requestedBy: requestedByKeyword(by) },
      'promotion cancellation requested',
    );
    res.status(202).location(url).json({ workflowId, runId: description.runId, statusUrl: url });
  });

  const retryValidation = validate({ params: RegistrationParams });
  router.post('/promotions/:registrationId/retry-compensation', retryValidation, temporal, async (req, res) => {
    const workflowId = promotionWorkflowId(req.params.registrationId);
    const description = await describeExecution(client, workflowId);
    if (description.status.name !== 'RUNNING') {
      const status = STATUS_BY_NAME[description.status.name] ?? 'unknown';
      throw problem('notRunning', `no promotion of this device is running (the latest is ${status})`, {
        extensions: { workflowId, executionStatus: status },
      });
    }
    const handle = client.workflow.getHandle(workflowId, description.runId);
    const url = statusUrl(req.params.registrationId);
    let compensation: CompensationReport | undefined;
    try {
      const by = requestedBy(res);
      const update = await updateWithRetry((updateId) =>
        handle.startUpdate(retryCompensationUpdate, {
          args: [{ requestedBy: by }],
          updateId,
          waitForStage: WorkflowUpdateStage.ACCEPTED,
        }),
      );
      log.info(
        { workflowId, runId: description.runId, requestedBy: requestedByKeyword(by) },
        'compensation retry requested',
      );
      // Undo steps retry Azure's transient faults for up to two hours: answer with the report if it comes soon,
      // otherwise 202 and the status URL, where the phase and the compensation report show how it goes.
      compensation = await withLongerTemporalDeadline(res, RETRY_ANSWER_WAIT_MS + 5_000, () =>
        Promise.race([update.result(), sleep(RETRY_ANSWER_WAIT_MS).then(() => undefined)]),
      );
    } catch (err) {
      const cause = err instanceof WorkflowUpdateFailedError ? err.cause : undefined;
      if (cause instanceof ApplicationFailure && cause.type === PromotionErrors.nothingToRetry) {
        throw problem('nothingToRetry', cause.message, { extensions: { workflowId } });
      }
      // The run closed between the describe and the update.
      if (err instanceof WorkflowNotFoundError || err instanceof WorkflowUpdateFailedError) {
        const closed = await describeExecution(client, workflowId, description.runId);
        if (closed.status.name !== 'RUNNING') {
          const status = STATUS_BY_NAME[closed.status.name] ?? 'unknown';
          throw problem('notRunning', `the promotion closed (${status}) before the retry could run`, {
            extensions: { workflowId, executionStatus: status },
          });
        }
      }
      throw err;
    }
    if (!compensation) {
      res.status(202).location(url).json({ workflowId, runId: description.runId, statusUrl: url });
      return;
    }
    res.json({ workflowId, runId: description.runId, compensation });
  });

  return router;
}

function statusUrl(registrationId: string): string {
  return `/v1/promotions/${encodeURIComponent(registrationId)}`;
}
