import { Router } from 'express';
import { z } from 'zod';
import { WorkflowNotFoundError, WorkflowUpdateFailedError, type WorkflowExecutionInfo } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { AppDeps } from '../app';
import { jsonBody } from '../body';
import { fleetStarter, fleetStatusUrl as statusUrl, FLEET_REQUEST_MEMO as REQUEST_MEMO } from '../fleet-starter';
import { IDEMPOTENCY_KEY_HEADER, IdempotencyHeaders, REPLAYED_HEADER } from '../idempotency';
import { registerRoute } from '../openapi';
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
import { PageTokens } from '../page-tokens';
import { problem, problemResponse } from '../problems';
import { temporalDeadline, withLongerTemporalDeadline } from '../temporal';
import { updateWithRetry } from '../updates';
import { validate, type Middleware } from '../validate';
import {
  cancelFleetUpdate,
  fleetChunkWorkflowId,
  fleetStatusQuery,
  fleetWorkflowId,
  pauseFleetUpdate,
  resumeFleetUpdate,
  WORKFLOW_TYPES,
} from '../../common/messages';
import {
  DEVICE_STATES,
  FleetErrors,
  FleetOperationRequest,
  type DeviceState,
  type FleetResult,
  type FleetStatus,
} from '../../common/fleet';
import { chunkDevicesPage } from '../../common/fleet-devices';
import { requestedByKeyword, type ChangeRequest } from '../../common/requested-by';
import { requestedBy } from '../auth/caller';
import { SA } from '../../common/search-attributes';

/**
 * Fleet operations over REST: start (202 + Location; a dry run answers its plan), the live status with counts by
 * state, rate and ETA, the per-device list filterable by state, pause, resume, cancel and retry-failed. What the
 * API can check up front it does: the environments named exist, and no rate asked for exceeds what the configured
 * Azure quotas allow.
 */

const OperationParams = z.object({ operationId: z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/, 'a fleet operation id') });
const Summary = z.object({
  operationId: z.string(),
  workflowId: z.string(),
  runId: z.string(),
  status: ExecutionStatus,
  phase: z.string().optional(),
  startTime: z.string(),
  closeTime: z.string().optional(),
  statusUrl: z.string(),
});
type Summary = z.infer<typeof Summary>;
const Detail = Summary.extend(RunDetail.shape).extend({
  fleet: z
    .record(z.string(), z.unknown())
    .optional()
    .describe('the live status (running) or the result (closed): phase, counts by state, rate, ETA, plan'),
});
const DeviceList = z.object({
  devices: z.array(
    z.object({
      registrationId: z.string(),
      deviceId: z.string().optional(),
      state: z.enum(DEVICE_STATES as [DeviceState, ...DeviceState[]]),
      attempts: z.number().int(),
      error: z.object({ type: z.string(), message: z.string() }).optional(),
      workflowId: z.string().optional(),
      finishedAt: z.string().optional(),
      note: z
        .string()
        .optional()
        .describe('what to know of a success, e.g. a revoked id that no enrollment and no hub knew'),
    }),
  ),
  nextPageToken: z.string().optional(),
});
const DeviceQuery = z.strictObject({
  state: z.enum(DEVICE_STATES as [DeviceState, ...DeviceState[]]).optional(),
  pageSize: z.coerce.number().int().min(1).max(500).default(100),
  nextPageToken: NextPageToken,
});
const ListQuery = z.strictObject({ status: StatusFilter.optional(), pageSize: PageSize, nextPageToken: NextPageToken });
const CancelBody = z.strictObject({ force: z.boolean().default(false), reason: z.string().max(500).optional() });
const PauseBody = z.strictObject({ reason: z.string().max(500).optional() });

const location = {
  Location: { schema: { type: 'string' }, required: true, description: '/v1/fleet-operations/<operationId>' },
} as const;

registerRoute({
  method: 'post',
  path: '/v1/fleet-operations',
  operationId: 'startFleetOperation',
  auth: 'operator',
  summary: 'Start a fleet operation: promote, revoke or reinstate many devices as one throttled rollout',
  description:
    `A dry run answers its plan (200) instead of starting. With an ${IDEMPOTENCY_KEY_HEADER}, a retried request ` +
    'answers the same operation (the operation id is derived from the key). Reinstating needs the admin role, as ' +
    'does changing more devices than FLEET_OPERATOR_MAX_DEVICES (1,000 by default) in one operation: a list is ' +
    'counted here (403), a group or query while planning (the operation fails with FleetOperationNeedsAdmin; a dry ' +
    'run answers 422).',
  temporal: true,
  request: { headers: IdempotencyHeaders, body: { required: true, content: json(FleetOperationRequest) } },
  responses: {
    200: {
      description: 'dry run: the plan (devices, hubs, the quota-bound rate and duration); nothing changed',
      content: json(
        z.object({ operationId: z.string(), workflowId: z.string(), plan: z.record(z.string(), z.unknown()) }),
      ),
    },
    202: {
      description: 'started; poll the Location',
      headers: location,
      content: json(Started.extend({ operationId: z.string() })),
    },
    409: problemResponse(409, ['alreadyStarted']),
    422: problemResponse(422, ['idempotencyKeyReused', 'planRefused']),
  },
});
registerRoute({
  method: 'get',
  path: '/v1/fleet-operations',
  operationId: 'listFleetOperations',
  auth: 'viewer',
  summary: 'List fleet operations, newest first',
  temporal: true,
  request: { query: ListQuery },
  responses: {
    200: {
      description: 'one page',
      content: json(z.object({ operations: z.array(Summary), nextPageToken: z.string().optional() })),
    },
  },
});
registerRoute({
  method: 'get',
  path: '/v1/fleet-operations/{operationId}',
  operationId: 'getFleetOperation',
  auth: 'viewer',
  summary: 'A fleet operation: phase, counts by state, rate, ETA, the plan; the result once closed',
  temporal: true,
  request: { params: OperationParams },
  responses: {
    200: { description: 'the operation', content: json(Detail) },
    404: problemResponse(404, ['workflowNotFound']),
  },
});
registerRoute({
  method: 'get',
  path: '/v1/fleet-operations/{operationId}/devices',
  operationId: 'listFleetOperationDevices',
  auth: 'viewer',
  summary: 'The devices of a fleet operation and their state, a page at a time, filtered by state',
  temporal: true,
  request: { params: OperationParams, query: DeviceQuery },
  responses: {
    200: { description: 'one page', content: json(DeviceList) },
    404: problemResponse(404, ['workflowNotFound']),
  },
});
for (const [action, body, summary] of [
  ['pause', PauseBody, 'Pause: no device starts until resumed (those in flight finish)'],
  ['resume', undefined, 'Resume a paused fleet operation'],
  ['cancel', CancelBody, 'Cancel: no device starts any more; with force, those in flight are cancelled too'],
] as const) {
  registerRoute({
    method: 'post',
    path: `/v1/fleet-operations/{operationId}/${action}`,
    operationId: `${action}FleetOperation`,
    auth: 'operator',
    summary,
    temporal: true,
    request: { params: OperationParams, ...(body ? { body: { content: json(body) } } : {}) },
    responses: {
      200: { description: 'the status after it', content: json(z.record(z.string(), z.unknown())) },
      404: problemResponse(404, ['workflowNotFound']),
      409: problemResponse(409, ['notRunning', 'wrongState'], 'closed, or not in a state for this action'),
    },
  });
}
registerRoute({
  method: 'post',
  path: '/v1/fleet-operations/{operationId}/retry-failed',
  operationId: 'retryFailedFleetOperation',
  auth: 'operator',
  summary: 'Start a new fleet operation over exactly the failed and timed-out devices of this one',
  temporal: true,
  request: { params: OperationParams },
  responses: {
    202: {
      description: 'started; poll the Location',
      headers: location,
      content: json(Started.extend({ operationId: z.string() })),
    },
    404: problemResponse(404, ['workflowNotFound']),
    409: problemResponse(
      409,
      ['notRunning', 'wrongState'],
      'the operation is still running, or its recorded request cannot be read (a payload codec key this API lacks)',
    ),
  },
});

/** How long a GET waits for the operation's and its chunks' queries (a busy worker runs them late). */
const QUERY_DEADLINE_MS = 20_000;

export function fleetRoutes(deps: AppDeps): Router {
  const { client, log } = deps;
  const router = Router();
  const temporal = temporalDeadline(deps);
  const pageTokens = new PageTokens(deps.pageTokenSecret);
  const starter = fleetStarter(deps);
  const { contextFor, start } = starter;

  const summarize = (info: Omit<WorkflowExecutionInfo, 'raw'>): Summary => {
    const operationId = info.workflowId.slice(info.workflowId.indexOf('/') + 1);
    return {
      operationId,
      workflowId: info.workflowId,
      runId: info.runId,
      status: STATUS_BY_NAME[info.status.name] ?? 'unknown',
      phase: info.typedSearchAttributes.get(SA.phase),
      startTime: info.startTime.toISOString(),
      closeTime: info.closeTime?.toISOString(),
      statusUrl: statusUrl(operationId),
    };
  };

  const startValidation = validate({ headers: IdempotencyHeaders, body: starter.schema });
  router.post('/fleet-operations', jsonBody(), startValidation, temporal, async (req, res) => {
    const request = req.body as z.output<typeof FleetOperationRequest>;
    const context = contextFor(res, request);
    const started = await start(request, context, req.get(IDEMPOTENCY_KEY_HEADER));
    const url = statusUrl(started.operationId);
    log.info(
      {
        workflowId: started.workflowId,
        operation: request.operation,
        dryRun: request.dryRun,
        requestedBy: requestedByKeyword(context.requestedBy!),
      },
      'fleet operation started',
    );
    if (started.replayed) res.set(REPLAYED_HEADER, 'true');
    if (request.dryRun) {
      const plan = await starter.dryRunPlan(res, started);
      if (plan) {
        res.json({ operationId: started.operationId, workflowId: started.workflowId, plan });
        return;
      }
    }
    res
      .status(202)
      .location(url)
      .json({ operationId: started.operationId, workflowId: started.workflowId, runId: started.runId, statusUrl: url });
  });

  router.get('/fleet-operations', validate({ query: ListQuery }), temporal, async (req, res) => {
    const filters = req.query as z.output<typeof ListQuery>;
    const page = await listRuns(client, pageTokens, {
      clauses: [
        ...equals('WorkflowType', WORKFLOW_TYPES.fleetOperation),
        ...equals('ExecutionStatus', filters.status && STATUS_FILTERS[filters.status]),
      ],
      pageSize: filters.pageSize,
      nextPageToken: filters.nextPageToken,
    });
    res.json({ operations: page.executions.map(summarize), nextPageToken: page.nextPageToken });
  });

  router.get('/fleet-operations/:operationId', validate({ params: OperationParams }), temporal, async (req, res) => {
    const run = await describeRun(client, log, fleetWorkflowId(req.params.operationId), fleetStatusQuery);
    const fleet = run.detail.progress ?? run.detail.result;
    res.json({ ...summarize(run.description), ...run.detail, ...(fleet ? { fleet } : {}) });
  });

  router.get(
    '/fleet-operations/:operationId/devices',
    validate({ params: OperationParams, query: DeviceQuery }),
    temporal,
    async (req, res) => {
      const query = req.query as z.output<typeof DeviceQuery>;
      const workflowId = fleetWorkflowId(req.params.operationId);
      // Queries wait for a worker to run them: behind a busy task queue (thousands of devices starting), longer
      // than the default deadline of a Temporal call. One deadline for the whole page, however many calls it takes.
      const until = Date.now() + QUERY_DEADLINE_MS;
      const left = () => Math.max(1, until - Date.now());
      const status = await withLongerTemporalDeadline(res, left(), () => currentStatus(workflowId));
      const chunks = status.plan?.chunks ?? 0;
      const scope = `${workflowId}|${query.state ?? ''}`;
      let cursor = { chunk: 0, offset: 0 };
      if (query.nextPageToken) {
        const opened = pageTokens.open(query.nextPageToken, scope);
        if (!opened) throw pageTokenIssue(query.nextPageToken);
        cursor = JSON.parse(opened.toString('utf8')) as typeof cursor;
      }
      const devices: z.infer<typeof DeviceList>['devices'] = [];
      while (cursor.chunk < chunks && devices.length < query.pageSize) {
        const chunkId = fleetChunkWorkflowId(workflowId, cursor.chunk);
        const page = await withLongerTemporalDeadline(res, left(), () =>
          chunkDevicesPage(client, chunkId, {
            state: query.state,
            offset: cursor.offset,
            limit: query.pageSize - devices.length,
          }).catch((err: unknown) => {
            // A chunk planned but never started (a dry run; a cancel while planning) ran no device.
            if (err instanceof WorkflowNotFoundError) return { devices: [], total: 0 };
            throw err;
          }),
        );
        devices.push(...page.devices);
        cursor =
          cursor.offset + page.devices.length < page.total
            ? { chunk: cursor.chunk, offset: cursor.offset + page.devices.length }
            : { chunk: cursor.chunk + 1, offset: 0 };
      }
      const more = cursor.chunk < chunks;
      res.json({
        devices,
        ...(more ? { nextPageToken: pageTokens.seal(Buffer.from(JSON.stringify(cursor)), scope) } : {}),
      });
    },
  );

  const control = (
    action: 'pause' | 'resume' | 'cancel',
    body: z.ZodType | undefined,
    run: (workflowId: string, input: Record<string, unknown> & ChangeRequest, updateId: string) => Promise<FleetStatus>,
  ) => {
    const validation = validate({ params: OperationParams, ...(body ? { body } : {}) });
    // The body is optional (the OpenAPI says so): none at all means every field takes its default.
    const noBodyIsEmpty: Middleware = (req, _res, next) => {
      (req as { body?: unknown }).body ??= {};
      next();
    };
    router.post(
      `/fleet-operations/:operationId/${action}`,
      jsonBody(),
      noBodyIsEmpty,
      validation,
      temporal,
      async (req, res) => {
        const workflowId = fleetWorkflowId(req.params.operationId);
        const by = requestedBy(res);
        const description = await describeExecution(client, workflowId);
        if (description.status.name !== 'RUNNING') {
          const status = STATUS_BY_NAME[description.status.name] ?? 'unknown';
          throw problem('notRunning', `the fleet operation has closed (${status})`, {
            extensions: { workflowId, executionStatus: status },
          });
        }
        try {
          const input = { ...((req.body ?? {}) as Record<string, unknown>), requestedBy: by };
          res.json(await updateWithRetry((updateId) => run(workflowId, input, updateId)));
        } catch (err) {
          const cause = err instanceof WorkflowUpdateFailedError ? err.cause : undefined;
          if (cause instanceof ApplicationFailure && Object.values(FleetErrors).includes(cause.type as never)) {
            throw problem('wrongState', cause.message, { extensions: { workflowId, failureType: cause.type } });
          }
          // Its controls exist from its first workflow task on (planning included): a run of an earlier release,
          // or one whose first task has not run yet (no worker polling), has none yet.
          const why = `${(err as Error).message} ${String((cause as Error | undefined)?.message ?? '')}`;
          if (err instanceof WorkflowUpdateFailedError && /no registered handler/i.test(why)) {
            throw problem('wrongState', `the fleet operation has not taken controls yet: ${action} it in a moment`, {
              extensions: { workflowId, phase: 'planning' },
            });
          }
          // The operation closed between the describe and the update (Temporal: NotFound, "workflow execution
          // already completed" or "aborted by closing workflow").
          if (err instanceof WorkflowNotFoundError) {
            const closed = await describeExecution(client, workflowId);
            if (closed.status.name !== 'RUNNING') {
              const status = STATUS_BY_NAME[closed.status.name] ?? 'unknown';
              throw problem('notRunning', `the fleet operation has closed (${status})`, {
                extensions: { workflowId, executionStatus: status },
              });
            }
          }
          throw err;
        }
        log.info({ workflowId, action, requestedBy: requestedByKeyword(by) }, `fleet operation ${action}`);
      },
    );
  };
  control('pause', PauseBody, (id, body, updateId) =>
    client.workflow.getHandle(id).executeUpdate(pauseFleetUpdate, { args: [body], updateId }),
  );
  control('resume', undefined, (id, change, updateId) =>
    client.workflow
      .getHandle(id)
      .executeUpdate(resumeFleetUpdate, { args: [{ requestedBy: change.requestedBy }], updateId }),
  );
  control('cancel', CancelBody, (id, body, updateId) =>
    client.workflow.getHandle(id).executeUpdate(cancelFleetUpdate, { args: [body], updateId }),
  );

  router.post(
    '/fleet-operations/:operationId/retry-failed',
    validate({ params: OperationParams }),
    temporal,
    async (req, res) => {
      const workflowId = fleetWorkflowId(req.params.operationId);
      const description = await describeExecution(client, workflowId);
      if (description.status.name === 'RUNNING') {
        throw problem(
          'notRunning',
          'the fleet operation is still running: retry its failed devices once it has closed',
          {
            extensions: { workflowId, executionStatus: 'running' },
          },
        );
      }
      // Its request is in its memo; one written with a codec key this API lacks cannot be repeated from here.
      if (description.undecodable) {
        throw problem('wrongState', `the fleet operation's request cannot be read here: ${description.undecodable}`, {
          extensions: { workflowId },
        });
      }
      const original = description.memo?.[REQUEST_MEMO] as Omit<z.input<typeof FleetOperationRequest>, 'targets'>;
      const request = FleetOperationRequest.parse({
        ...original,
        dryRun: false,
        targets: { retryOf: req.params.operationId },
      });
      const started = await start(request, contextFor(res, request));
      const url = statusUrl(started.operationId);
      res.status(202).location(url).json({
        operationId: started.operationId,
        workflowId: started.workflowId,
        runId: started.runId,
        statusUrl: url,
      });
    },
  );

  async function currentStatus(workflowId: string): Promise<FleetStatus> {
    const description = await describeExecution(client, workflowId);
    const handle = client.workflow.getHandle(workflowId, description.runId);
    if (description.status.name === 'COMPLETED') return (await handle.result()) as FleetResult;
    return handle.query(fleetStatusQuery);
  }

  return router;
}

function pageTokenIssue(token: string): z.ZodError {
  return new z.ZodError([
    { code: 'custom', path: ['query', 'nextPageToken'], message: 'not a nextPageToken of this listing', input: token },
  ]);
}
