import { createHash, randomBytes } from 'node:crypto';
import { Router } from 'express';
import { z } from 'zod';
import {
  ScheduleAlreadyRunning,
  ScheduleNotFoundError,
  type Client,
  type ScheduleOptionsStartWorkflowAction,
  type WorkflowExecutionInfo,
} from '@temporalio/client';
import type { AppDeps } from '../app';
import { allFindings, describeAudit, readFindings, type FindingsCursor } from '../audit-findings';
import { jsonBody } from '../body';
import { IDEMPOTENCY_KEY_HEADER, IdempotencyHeaders, REPLAYED_HEADER, startIdempotently } from '../idempotency';
import { registerRoute } from '../openapi';
import {
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
import { fleetStarter, fleetStatusUrl } from '../fleet-starter';
import { planRemediation, REMEDIABLE } from '../remediation';
import { temporalDeadline, withLongerTemporalDeadline } from '../temporal';
import { validate } from '../validate';
import { requestedBy } from '../auth/caller';
import {
  AUDIT_PHASES,
  auditIdPattern,
  AuditRequest,
  AuditScheduleRequest,
  FINDING_TYPES,
  FindingType,
  type AuditStatus,
  type Finding,
} from '../../common/audit';
import { OPERATIONS, WORKFLOW_TYPES } from '../../common/messages';
import { MAX_LISTED_DEVICES } from '../../common/fleet';
import { durationMs } from '../../common/promotion';
import { requestedByKeyword, requestedByStartOptions } from '../../common/requested-by';
import { Reason } from '../../common/revocation';
import { SA } from '../../common/search-attributes';

/**
 * Fleet drift audits: start one (`POST /v1/audits`), follow it, page through its findings, turn a finding type into
 * an operation (dry run first), and keep a Temporal Schedule that audits every interval, skipping a run while the
 * previous one still runs.
 */

// ----- schemas -----

const AuditIdParams = z.object({ id: z.string().regex(auditIdPattern, 'an audit id (audit-…)') });
const Counts = z.object(
  Object.fromEntries(FINDING_TYPES.map((t) => [t, z.number().int()])) as Record<string, z.ZodNumber>,
);

const AuditSummary = z.object({
  auditId: z.string(),
  runId: z.string(),
  status: ExecutionStatus,
  phase: z.string().optional(),
  startTime: z.string(),
  closeTime: z.string().optional(),
  statusUrl: z.string(),
  findingsUrl: z.string(),
  reportUrl: z.string(),
});
type AuditSummary = z.infer<typeof AuditSummary>;

const AuditDetail = AuditSummary.extend(RunDetail.shape).extend({
  outcome: z.string().optional().describe('closed: clean, findings or failed'),
  counts: Counts.optional().describe('findings by type so far'),
  buckets: z.object({ total: z.number().int(), done: z.number().int() }).optional(),
});

const ListQuery = z.strictObject({
  status: StatusFilter.optional(),
  phase: z.enum(AUDIT_PHASES).optional(),
  pageSize: PageSize,
  nextPageToken: NextPageToken,
});

const HubIdentitySchema = z.object({
  environment: z.string(),
  hubHost: z.string(),
  status: z.enum(['enabled', 'disabled']),
  statusReason: z.string().optional(),
  authType: z.string(),
  thumbprints: z.array(z.string()).optional(),
  connectionState: z.string().optional(),
  lastActivityTime: z.string().optional(),
});
const FindingSchema = z.object({
  type: FindingType,
  deviceId: z.string(),
  registrationId: z.string().optional(),
  enrollment: z
    .object({
      kind: z.enum(['individual', 'group']),
      id: z.string(),
      status: z.enum(['enabled', 'disabled']),
      attestation: z.string(),
      enrollmentGroupId: z.string().optional(),
    })
    .optional(),
  assignedHub: z.string().optional(),
  hubs: z.array(HubIdentitySchema),
  detail: z.string(),
});

const FindingsQuery = z.strictObject({
  type: FindingType.optional(),
  pageSize: z.coerce.number().int().min(1).max(500).default(100),
  nextPageToken: NextPageToken,
});
const FindingsPage = z.object({
  auditId: z.string(),
  type: FindingType.optional(),
  findings: z.array(FindingSchema),
  nextPageToken: z.string().optional(),
  complete: z.boolean().describe('false while the audit runs: later buckets add findings'),
});

const RemediateBody = z
  .object({
    findingType: z
      .enum(REMEDIABLE)
      .describe('stale and authMismatch need a decision per device and are not remediated in one call'),
    confirm: z.boolean().default(false).describe('false (default): answer the plan only; true: carry it out'),
    reason: Reason.optional(),
  })
  .strict();

const Plan = z
  .object({
    auditId: z.string(),
    findingType: z.enum(REMEDIABLE),
    findings: z.number().int(),
    action: z.string(),
    fleetOperation: z.record(z.string(), z.unknown()).optional().describe('the POST /v1/fleet-operations request'),
    proposal: z.record(z.string(), z.unknown()).optional().describe('a hub-scoped cleanup the contract cannot express'),
    excluded: z.array(z.object({ deviceId: z.string(), reason: z.string() })),
    notes: z.array(z.string()),
    expressible: z.boolean(),
    fleetDryRun: z
      .object({
        operationId: z.string(),
        workflowId: z.string(),
        statusUrl: z.string(),
        plan: z.record(z.string(), z.unknown()).optional().describe('absent while the dry run still plans'),
      })
      .optional()
      .describe('the fleet operation’s own dry run of the request: devices, hubs, the quota-bound rate and duration'),
    confirmRole: z
      .enum(['operator', 'admin'])
      .optional()
      .describe('the role confirming needs: admin above FLEET_OPERATOR_MAX_DEVICES devices'),
    dryRun: z.literal(true),
  })
  .passthrough();
const RemediationStarted = z.object({
  auditId: z.string(),
  findingType: z.enum(REMEDIABLE),
  operationId: z.string(),
  workflowId: z.string(),
  runId: z.string(),
  statusUrl: z.string().describe('/v1/fleet-operations/<operationId>'),
});

const ScheduleView = z.object({
  scheduleId: z.string(),
  interval: z.string(),
  offset: z.string().optional(),
  overlap: z.literal('skip'),
  paused: z.boolean(),
  audit: z.record(z.string(), z.unknown()),
  actionsTaken: z.number().int(),
  skippedOverlaps: z.number().int().describe('runs skipped because an audit was still running'),
  nextRuns: z.array(z.string()),
  recentAudits: z.array(z.object({ auditId: z.string(), scheduledAt: z.string(), startedAt: z.string() })),
  runningAudits: z.array(z.string()),
});

// ----- OpenAPI (the schedule's paths first: /v1/audits/schedule must not read as an audit id) -----

registerRoute({
  method: 'post',
  path: '/v1/audits/schedule',
  operationId: 'setAuditSchedule',
  auth: 'admin',
  summary: 'Create or replace the audit schedule: an audit every interval, skipped while one still runs',
  temporal: true,
  request: { body: { required: true, content: json(AuditScheduleRequest) } },
  responses: { 200: { description: 'the schedule as it now is', content: json(ScheduleView) } },
});
registerRoute({
  method: 'get',
  path: '/v1/audits/schedule',
  operationId: 'getAuditSchedule',
  auth: 'viewer',
  summary: 'The audit schedule: interval, next runs, recent and running audits, overlaps skipped',
  temporal: true,
  responses: {
    200: { description: 'the schedule', content: json(ScheduleView) },
    404: problemResponse(404, ['scheduleNotFound']),
  },
});
registerRoute({
  method: 'delete',
  path: '/v1/audits/schedule',
  operationId: 'deleteAuditSchedule',
  auth: 'admin',
  summary: 'Delete the audit schedule (a running audit goes on)',
  temporal: true,
  responses: { 204: { description: 'deleted' }, 404: problemResponse(404, ['scheduleNotFound']) },
});
registerRoute({
  method: 'post',
  path: '/v1/audits',
  operationId: 'startAudit',
  auth: 'operator',
  summary: 'Audit the fleet for drift between DPS and the hubs',
  description:
    `Every audit has its own id. With ${IDEMPOTENCY_KEY_HEADER}, the same key and request answer the same audit ` +
    `(202, ${REPLAYED_HEADER}: true); the same key with a different request is 422.`,
  temporal: true,
  request: { headers: IdempotencyHeaders, body: { required: true, content: json(AuditRequest) } },
  responses: {
    202: {
      description: 'started; poll the Location',
      headers: { Location: { schema: { type: 'string' }, required: true, description: '/v1/audits/<auditId>' } },
      content: json(Started),
    },
    409: problemResponse(409, ['alreadyStarted'], 'the key’s audit runs with a different request'),
    422: problemResponse(422, ['idempotencyKeyReused']),
  },
});
registerRoute({
  method: 'get',
  path: '/v1/audits',
  operationId: 'listAudits',
  auth: 'viewer',
  summary: 'List audits, newest first, by status or phase',
  temporal: true,
  request: { query: ListQuery },
  responses: {
    200: {
      description: 'one page; pass nextPageToken for the next',
      content: json(z.object({ audits: z.array(AuditSummary), nextPageToken: z.string().optional() })),
    },
  },
});
registerRoute({
  method: 'get',
  path: '/v1/audits/{id}',
  operationId: 'getAudit',
  auth: 'viewer',
  summary: 'An audit: progress and counts by finding type while it runs, then its result',
  temporal: true,
  request: { params: AuditIdParams },
  responses: {
    200: { description: 'the audit', content: json(AuditDetail) },
    404: problemResponse(404, ['workflowNotFound'], 'no such audit'),
  },
});
registerRoute({
  method: 'get',
  path: '/v1/audits/{id}/findings',
  operationId: 'listAuditFindings',
  auth: 'viewer',
  summary: 'An audit’s findings, one type or all, page by page',
  temporal: true,
  request: { params: AuditIdParams, query: FindingsQuery },
  responses: {
    200: { description: 'one page; pass nextPageToken for the next', content: json(FindingsPage) },
    404: problemResponse(404, ['workflowNotFound'], 'no such audit'),
  },
});
registerRoute({
  method: 'post',
  path: '/v1/audits/{id}/remediate',
  operationId: 'remediateAuditFindings',
  auth: 'operator',
  summary:
    'Turn an audit’s findings of one type into a fleet operation: the plan (dry run), or with confirm, the operation',
  description:
    'Without confirm, answers the plan with the fleet operation’s own dry run (operator). With confirm, starts one ' +
    'fleet operation over the devices found; over FLEET_OPERATOR_MAX_DEVICES (1,000 by default) devices that needs ' +
    'the admin role. Confirming the same audit and finding type again answers the same fleet operation.',
  temporal: true,
  request: { params: AuditIdParams, body: { required: true, content: json(RemediateBody) } },
  responses: {
    200: { description: 'the plan (nothing changed)', content: json(Plan) },
    202: {
      description: 'the fleet operation started; poll the Location',
      headers: {
        Location: { schema: { type: 'string' }, required: true, description: '/v1/fleet-operations/<operationId>' },
      },
      content: json(RemediationStarted),
    },
    404: problemResponse(404, ['workflowNotFound'], 'no such audit'),
    409: problemResponse(409, ['auditNotCompleted', 'alreadyStarted']),
    422: problemResponse(422, [
      'notExpressible',
      'tooManyTargets',
      'nothingToRemediate',
      'idempotencyKeyReused',
      'planRefused',
    ]),
  },
});

// ----- routes -----

const auditUrls = (auditId: string) => {
  const base = `/v1/audits/${encodeURIComponent(auditId)}`;
  return {
    statusUrl: base,
    findingsUrl: `${base}/findings`,
    reportUrl: `/v1/reports/audits/${encodeURIComponent(auditId)}`,
  };
};

/** The schedule of this deployment (its task queue), and the prefix of the audits it starts. */
export const auditScheduleId = (taskQueue: string) => `${taskQueue}-audit`;
const scheduledAuditId = (taskQueue: string) => `audit-scheduled.${taskQueue}`;

export function auditRoutes(deps: AppDeps): Router {
  const { client, taskQueue, log } = deps;
  const fleet = fleetStarter(deps);
  const router = Router();
  const temporal = temporalDeadline(deps);
  const pageTokens = new PageTokens(deps.pageTokenSecret);
  const scheduleId = auditScheduleId(taskQueue);

  const summarize = (info: Omit<WorkflowExecutionInfo, 'raw'>): AuditSummary => ({
    auditId: info.workflowId,
    runId: info.runId,
    status: STATUS_BY_NAME[info.status.name] ?? 'unknown',
    phase: info.typedSearchAttributes.get(SA.phase),
    startTime: info.startTime.toISOString(),
    closeTime: info.closeTime?.toISOString(),
    ...auditUrls(info.workflowId),
  });

  // --- the schedule ---

  router.post('/audits/schedule', jsonBody(), validate({ body: AuditScheduleRequest }), temporal, async (req, res) => {
    const body = req.body as AuditScheduleRequest;
    // The audits it starts record who set the schedule up.
    const by = requestedBy(res);
    const recorded = requestedByStartOptions(by);
    const action: ScheduleOptionsStartWorkflowAction<never> = {
      type: 'startWorkflow',
      workflowType: WORKFLOW_TYPES.auditFleet,
      workflowId: scheduledAuditId(taskQueue),
      taskQueue,
      args: [body.audit, { requestedBy: by }] as never,
      memo: recorded.memo,
      typedSearchAttributes: [
        { key: SA.operation, value: OPERATIONS.audit },
        { key: SA.phase, value: 'planning' },
        recorded.searchAttribute,
      ],
      staticSummary: `Scheduled fleet audit (every ${body.interval})`,
    };
    const spec = {
      intervals: [{ every: durationMs(body.interval), ...(body.offset ? { offset: durationMs(body.offset) } : {}) }],
    };
    const policies = { overlap: 'SKIP' as const, catchupWindow: 60_000 };
    try {
      await client.schedule.create({ scheduleId, spec, action, policies, state: { paused: body.paused } });
      log.info({ scheduleId, interval: body.interval, requestedBy: requestedByKeyword(by) }, 'audit schedule created');
    } catch (err) {
      if (!(err instanceof ScheduleAlreadyRunning)) throw err;
      await client.schedule.getHandle(scheduleId).update((previous) => ({
        ...previous,
        spec,
        action,
        policies,
        state: { ...previous.state, paused: body.paused },
      }));
      log.info({ scheduleId, interval: body.interval, requestedBy: requestedByKeyword(by) }, 'audit schedule updated');
    }
    res.json(await scheduleView(client, scheduleId));
  });

  router.get('/audits/schedule', temporal, async (_req, res) => {
    res.json(await scheduleView(client, scheduleId));
  });

  router.delete('/audits/schedule', temporal, async (_req, res) => {
    try {
      await client.schedule.getHandle(scheduleId).delete();
    } catch (err) {
      if (err instanceof ScheduleNotFoundError) throw problem('scheduleNotFound', `no audit schedule ${scheduleId}`);
      throw err;
    }
    log.info({ scheduleId, requestedBy: requestedByKeyword(requestedBy(res)) }, 'audit schedule deleted');
    res.status(204).end();
  });

  // --- audits ---

  router.post(
    '/audits',
    jsonBody(),
    validate({ headers: IdempotencyHeaders, body: AuditRequest }),
    temporal,
    async (req, res) => {
      const request = req.body as AuditRequest;
      const idempotencyKey = req.get(IDEMPOTENCY_KEY_HEADER);
      // A key names its audit (so the same key finds it again); otherwise every audit gets its own id.
      const workflowId = idempotencyKey
        ? `audit-k${createHash('sha256').update(idempotencyKey).digest('base64url').slice(0, 22)}`
        : `audit-${new Date().toISOString().replace(/[-:.]/g, '')}-${randomBytes(3).toString('hex')}`;
      const by = requestedBy(res);
      const recorded = requestedByStartOptions(by);
      const started = await startIdempotently(client, {
        workflowId,
        request,
        idempotencyKey,
        start: (memo) =>
          client.workflow.start(WORKFLOW_TYPES.auditFleet, {
            taskQueue,
            workflowId,
            args: [request, { requestedBy: by }],
            memo: { ...memo, ...recorded.memo },
            workflowIdConflictPolicy: 'FAIL',
            workflowIdReusePolicy: 'ALLOW_DUPLICATE',
            typedSearchAttributes: [
              { key: SA.operation, value: OPERATIONS.audit },
              { key: SA.phase, value: 'planning' },
              recorded.searchAttribute,
            ],
            staticSummary: `Fleet audit (stale after ${request.staleAfterDays} days)`,
          }),
      });
      const { statusUrl } = auditUrls(started.workflowId);
      log.info(
        { workflowId: started.workflowId, replayed: started.replayed, requestedBy: requestedByKeyword(by) },
        'audit started',
      );
      if (started.replayed) res.set(REPLAYED_HEADER, 'true');
      res.status(202).location(statusUrl).json({ workflowId: started.workflowId, runId: started.runId, statusUrl });
    },
  );

  router.get('/audits', validate({ query: ListQuery }), temporal, async (req, res) => {
    const filters = req.query as z.output<typeof ListQuery>;
    const page = await listRuns(client, pageTokens, {
      clauses: [
        `WorkflowType = '${WORKFLOW_TYPES.auditFleet}'`,
        ...equals('ExecutionStatus', filters.status && STATUS_FILTERS[filters.status]),
        ...equals(SA.phase.name, filters.phase),
      ],
      pageSize: filters.pageSize,
      nextPageToken: filters.nextPageToken,
    });
    res.json({ audits: page.executions.map(summarize), nextPageToken: page.nextPageToken });
  });

  router.get('/audits/:id', validate({ params: AuditIdParams }), temporal, async (req, res) => {
    const run = await describeAudit(client, log, req.params.id);
    const report = run.detail.report as { outcome?: string } | undefined;
    res.json({
      ...summarize(run.description),
      ...run.detail,
      ...(report?.outcome ? { outcome: report.outcome } : {}),
      ...(run.audit ? { counts: run.audit.counts, buckets: run.audit.buckets } : {}),
    });
  });

  router.get(
    '/audits/:id/findings',
    validate({ params: AuditIdParams, query: FindingsQuery }),
    temporal,
    async (req, res) => {
      const auditId = req.params.id;
      const query = req.query as z.output<typeof FindingsQuery>;
      const run = await describeAudit(client, log, auditId);
      const tokenScope = `findings ${auditId} ${query.type ?? '*'}`;
      let cursor: FindingsCursor | undefined;
      if (query.nextPageToken) {
        const opened = pageTokens.open(query.nextPageToken, tokenScope);
        cursor = opened ? (JSON.parse(opened.toString('utf8')) as FindingsCursor) : undefined;
        if (!cursor) {
          throw new z.ZodError([
            {
              code: 'custom',
              path: ['query', 'nextPageToken'],
              message: 'not a nextPageToken of these findings (same audit and type required)',
              input: query.nextPageToken,
            },
          ]);
        }
      }
      const page = run.audit
        ? await withLongerTemporalDeadline(res, 20_000, () =>
            readFindings(client, run.audit!, {
              types: query.type ? [query.type] : FINDING_TYPES,
              limit: query.pageSize,
              cursor,
            }),
          )
        : { findings: [] };
      res.json({
        auditId,
        ...(query.type ? { type: query.type } : {}),
        findings: page.findings,
        ...(page.next ? { nextPageToken: pageTokens.seal(Buffer.from(JSON.stringify(page.next)), tokenScope) } : {}),
        complete: run.status === 'completed',
      });
    },
  );

  router.post(
    '/audits/:id/remediate',
    jsonBody(),
    validate({ params: AuditIdParams, body: RemediateBody }),
    temporal,
    async (req, res) => {
      const auditId = req.params.id;
      const body = req.body as z.output<typeof RemediateBody>;
      const run = await describeAudit(client, log, auditId);
      if (run.status !== 'completed' || !run.audit) {
        throw problem('auditNotCompleted', `audit ${auditId} is ${run.status}; remediate a completed audit`, {
          extensions: { workflowId: auditId, executionStatus: run.status },
        });
      }
      const audit: AuditStatus = run.audit;
      const findings = await withLongerTemporalDeadline(res, 60_000, async () => {
        const list: Finding[] = [];
        for await (const f of allFindings(client, audit, [body.findingType])) list.push(f);
        return list;
      });
      const plan = { auditId, ...planRemediation(auditId, body.findingType, findings, body.reason) };
      const fleetRequest = plan.fleetOperation;
      const targets = fleetRequest?.targets.registrationIds.length ?? 0;
      if (targets > MAX_LISTED_DEVICES) {
        throw problem('tooManyTargets', `${targets} devices; one fleet operation lists at most ${MAX_LISTED_DEVICES}`, {
          extensions: { limit: MAX_LISTED_DEVICES },
        });
      }
      const confirmRole = targets > fleet.maxForOperators ? ('admin' as const) : ('operator' as const);

      if (!body.confirm) {
        // The fleet operation's own dry run: it changes nothing, so an operator may see the plan of any size.
        let fleetDryRun;
        if (fleetRequest && targets > 0) {
          const request = fleet.schema.parse({ ...fleetRequest, dryRun: true });
          const started = await fleet.start(request, { requestedBy: requestedBy(res) });
          const planned = await fleet.dryRunPlan(res, started);
          fleetDryRun = {
            operationId: started.operationId,
            workflowId: started.workflowId,
            statusUrl: fleetStatusUrl(started.operationId),
            ...(planned ? { plan: planned } : {}),
          };
        }
        res.json({
          ...plan,
          ...(fleetDryRun ? { fleetDryRun } : {}),
          ...(plan.expressible && targets > 0 ? { confirmRole } : {}),
          dryRun: true,
        });
        return;
      }
      if (!plan.expressible || !fleetRequest) {
        throw problem(
          'notExpressible',
          `${body.findingType} needs a hub-scoped operation that the API does not have yet`,
          {
            extensions: { plan: { ...plan, dryRun: true } },
          },
        );
      }
      if (targets === 0) {
        throw problem(
          'nothingToRemediate',
          `audit ${auditId} found no ${body.findingType} device that a fleet operation can name`,
          {
            extensions: { plan: { ...plan, dryRun: true } },
          },
        );
      }
      const request = fleet.schema.parse({ ...fleetRequest, dryRun: false });
      // Above the operator's limit, admin (403 otherwise), exactly as POST /v1/fleet-operations decides.
      const context = fleet.contextFor(res, request);
      // One remediation per audit and finding type: confirming again answers the operation already started.
      const started = await fleet.start(request, context, `audit-remediation/${auditId}/${body.findingType}`);
      const statusUrl = fleetStatusUrl(started.operationId);
      log.info(
        {
          auditId,
          findingType: body.findingType,
          devices: targets,
          fleetOperation: started.workflowId,
          replayed: started.replayed,
          requestedBy: requestedByKeyword(context.requestedBy!),
        },
        'audit remediation started',
      );
      if (started.replayed) res.set(REPLAYED_HEADER, 'true');
      res.status(202).location(statusUrl).json({
        auditId,
        findingType: body.findingType,
        operationId: started.operationId,
        workflowId: started.workflowId,
        runId: started.runId,
        statusUrl,
      });
    },
  );

  return router;
}

async function scheduleView(client: Client, scheduleId: string) {
  let description;
  try {
    description = await client.schedule.getHandle(scheduleId).describe();
  } catch (err) {
    if (err instanceof ScheduleNotFoundError) throw problem('scheduleNotFound', `no audit schedule ${scheduleId}`);
    throw err;
  }
  const interval = description.spec.intervals?.[0];
  const action = description.action as { args?: unknown[] };
  return {
    scheduleId,
    interval: interval ? durationText(interval.every) : '',
    ...(interval?.offset ? { offset: durationText(interval.offset) } : {}),
    overlap: 'skip' as const,
    paused: description.state.paused,
    audit: (action.args?.[0] ?? {}) as Record<string, unknown>,
    actionsTaken: description.info.numActionsTaken,
    skippedOverlaps: description.info.numActionsSkippedOverlap,
    nextRuns: description.info.nextActionTimes.map((t) => t.toISOString()),
    recentAudits: description.info.recentActions.map((a) => ({
      auditId: a.action.workflow.workflowId,
      scheduledAt: a.scheduledAt.toISOString(),
      startedAt: a.takenAt.toISOString(),
    })),
    runningAudits: description.info.runningActions.map((a) => a.workflow.workflowId),
  };
}

/** A schedule's interval (milliseconds, as the SDK describes it) in the request's notation. */
function durationText(value: unknown): string {
  const ms = Number(value);
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1_000],
  ] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
