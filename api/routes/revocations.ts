import { Router } from 'express';
import { z } from 'zod';
import type { WorkflowExecutionInfo } from '@temporalio/client';
import type { AppDeps } from '../app';
import { jsonBody } from '../body';
import { IDEMPOTENCY_KEY_HEADER, IdempotencyHeaders, REPLAYED_HEADER, startIdempotently } from '../idempotency';
import { registerRoute } from '../openapi';
import {
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
import { problemResponse } from '../problems';
import { temporalDeadline } from '../temporal';
import { validate } from '../validate';
import {
  OPERATIONS,
  reinstatementWorkflowId,
  revocationStatusQuery,
  revocationWorkflowId,
  WORKFLOW_TYPES,
} from '../../common/messages';
import { dpsId, environmentName } from '../../common/promotion';
import {
  REINSTATEMENT_PHASES,
  ReinstatementRequest,
  REVOCATION_PHASES,
  RevocationRequest,
} from '../../common/revocation';
import { requestedByKeyword, requestedByStartOptions, type OperationContext } from '../../common/requested-by';
import { SA } from '../../common/search-attributes';
import { requestedBy } from '../auth/caller';

/**
 * Revocations and reinstatements, in the promotions' style: a POST starts the device's (or group's) workflow and
 * answers 202 with a Location; GET on it gives the live status, then the result with the per-device proof; a list
 * filters by status, device, group, phase and hub ("every revocation of hub X this week" also works in the Temporal
 * UI: `IotOperation = 'revoke' AND IotHubs = '<hub host>' AND StartTime > …`).
 */

interface OperationKind {
  /** Path segment and list key: revocations | reinstatements. */
  plural: 'revocations' | 'reinstatements';
  operation: string;
  request: typeof RevocationRequest | typeof ReinstatementRequest;
  workflowTypes: { device: string; group: string };
  workflowId: (target: { registrationId?: string; enrollmentGroupId?: string }) => string;
  phases: readonly string[];
  verb: string;
  /** The singular noun in operation ids (getRevocationOfDevice, listRevocations). */
  noun: string;
}

const KINDS: OperationKind[] = [
  {
    plural: 'revocations',
    operation: OPERATIONS.revoke,
    request: RevocationRequest,
    workflowTypes: { device: WORKFLOW_TYPES.revokeDevice, group: WORKFLOW_TYPES.revokeEnrollmentGroup },
    workflowId: revocationWorkflowId,
    phases: REVOCATION_PHASES,
    verb: 'Revoke',
    noun: 'Revocation',
  },
  {
    plural: 'reinstatements',
    operation: OPERATIONS.reinstate,
    request: ReinstatementRequest,
    workflowTypes: { device: WORKFLOW_TYPES.reinstateDevice, group: WORKFLOW_TYPES.reinstateEnrollmentGroup },
    workflowId: reinstatementWorkflowId,
    phases: REINSTATEMENT_PHASES,
    verb: 'Reinstate',
    noun: 'Reinstatement',
  },
];

const DeviceParams = z.object({ registrationId: z.string().regex(dpsId, 'a DPS registration id') });
const GroupParams = z.object({ enrollmentGroupId: z.string().regex(dpsId, 'an enrollment group id') });

const Summary = z.object({
  workflowId: z.string(),
  runId: z.string(),
  status: ExecutionStatus,
  registrationId: z.string().optional(),
  enrollmentGroupId: z.string().optional(),
  deviceId: z.string().optional(),
  hubs: z.array(z.string()).optional().describe('hubs the device(s) were found in'),
  phase: z.string().optional(),
  startTime: z.string(),
  closeTime: z.string().optional(),
  statusUrl: z.string(),
});
type Summary = z.infer<typeof Summary>;
const Detail = Summary.extend(RunDetail.shape).extend({
  outcome: z.string().optional().describe('closed: revoked, partiallyRevoked, reinstated, partiallyReinstated, failed'),
});

const statusUrl = (kind: OperationKind, target: { registrationId?: string; enrollmentGroupId?: string }) =>
  target.registrationId
    ? `/v1/${kind.plural}/devices/${encodeURIComponent(target.registrationId)}`
    : `/v1/${kind.plural}/groups/${encodeURIComponent(target.enrollmentGroupId!)}`;

function listQuery(kind: OperationKind) {
  return z.strictObject({
    status: StatusFilter.optional(),
    registrationId: DeviceParams.shape.registrationId.optional(),
    enrollmentGroupId: GroupParams.shape.enrollmentGroupId.optional(),
    hub: environmentName.optional().describe('a configured environment: the operations that found devices in its hub'),
    phase: z.enum(kind.phases as [string, ...string[]]).optional(),
    pageSize: PageSize,
    nextPageToken: NextPageToken,
  });
}

for (const kind of KINDS) {
  const location = {
    Location: {
      schema: { type: 'string' },
      required: true,
      description: `/v1/${kind.plural}/devices/<registrationId> or /v1/${kind.plural}/groups/<enrollmentGroupId>`,
    },
  } as const;
  registerRoute({
    method: 'post',
    path: `/v1/${kind.plural}`,
    operationId: kind.plural === 'revocations' ? 'startRevocation' : 'startReinstatement',
    // Undoing a revocation lets a device back in: a stronger right than revoking it.
    auth: kind.plural === 'revocations' ? 'operator' : 'admin',
    summary:
      kind.plural === 'revocations'
        ? 'Revoke a device or a whole enrollment group: disabled in DPS and disabled or deleted in every configured hub, with proof'
        : 'Reinstate a device or group: undo exactly what its revocation did',
    description:
      `One ${kind.operation} in flight per device and per group. Idempotent like promotions: the same request (or ` +
      `${IDEMPOTENCY_KEY_HEADER}) answers the running workflow again (202, ${REPLAYED_HEADER}: true); a different ` +
      'request while one runs is 409.',
    temporal: true,
    request: { headers: IdempotencyHeaders, body: { required: true, content: json(kind.request) } },
    responses: {
      202: {
        description: 'started (or the same request answered again); poll the Location',
        headers: location,
        content: json(Started),
      },
      409: problemResponse(409, ['alreadyStarted'], `a different ${kind.operation} of this device or group runs`),
      422: problemResponse(422, ['idempotencyKeyReused']),
    },
  });
  for (const [target, params] of [
    ['devices', DeviceParams],
    ['groups', GroupParams],
  ] as const) {
    registerRoute({
      method: 'get',
      path: `/v1/${kind.plural}/${target}/{${target === 'devices' ? 'registrationId' : 'enrollmentGroupId'}}`,
      operationId: `get${kind.noun}${target === 'devices' ? 'OfDevice' : 'OfGroup'}`,
      auth: 'viewer',
      summary: `The latest ${kind.operation} of a ${target === 'devices' ? 'device' : 'group'}: live status, then the result with per-device proof`,
      temporal: true,
      request: { params },
      responses: {
        200: { description: `the latest ${kind.operation}`, content: json(Detail) },
        404: problemResponse(404, ['workflowNotFound'], `no ${kind.operation} of it`),
      },
    });
  }
  registerRoute({
    method: 'get',
    path: `/v1/${kind.plural}`,
    operationId: `list${kind.noun}s`,
    auth: 'viewer',
    summary: `List ${kind.plural}, newest first, filtered by status, device, group, hub or phase`,
    temporal: true,
    request: { query: listQuery(kind) },
    responses: {
      200: {
        description: 'one page; pass nextPageToken for the next',
        content: json(z.object({ [kind.plural]: z.array(Summary), nextPageToken: z.string().optional() })),
      },
    },
  });
}

export function revocationRoutes(deps: AppDeps): Router {
  const { client, taskQueue, log, environments = {} } = deps;
  const router = Router();
  const temporal = temporalDeadline(deps);
  const pageTokens = new PageTokens(deps.pageTokenSecret);
  const hubOf = (environment: string) =>
    Object.hasOwn(environments, environment) ? environments[environment] : undefined;

  for (const kind of KINDS) {
    const summarize = (info: Omit<WorkflowExecutionInfo, 'raw'>): Summary => {
      const attributes = info.typedSearchAttributes;
      const registrationId = attributes.get(SA.registrationId);
      const enrollmentGroupId = attributes.get(SA.enrollmentGroupId);
      return {
        workflowId: info.workflowId,
        runId: info.runId,
        status: STATUS_BY_NAME[info.status.name] ?? 'unknown',
        registrationId,
        enrollmentGroupId,
        deviceId: attributes.get(SA.deviceId),
        hubs: attributes.get(SA.hubs),
        phase: attributes.get(SA.phase),
        startTime: info.startTime.toISOString(),
        closeTime: info.closeTime?.toISOString(),
        statusUrl: statusUrl(kind, registrationId ? { registrationId } : { enrollmentGroupId }),
      };
    };

    const startValidation = validate({ headers: IdempotencyHeaders, body: kind.request });
    router.post(`/${kind.plural}`, jsonBody(), startValidation, temporal, async (req, res) => {
      const request = req.body as z.output<typeof kind.request>;
      const target = request.registrationId
        ? { registrationId: request.registrationId, enrollmentGroupId: request.enrollmentGroupId }
        : { enrollmentGroupId: request.enrollmentGroupId! };
      const workflowId = kind.workflowId(target);
      const workflowType = request.registrationId ? kind.workflowTypes.device : kind.workflowTypes.group;
      const by = requestedBy(res);
      const recorded = requestedByStartOptions(by);
      const context: OperationContext = { requestedBy: by };
      const started = await startIdempotently(client, {
        workflowId,
        request,
        idempotencyKey: req.get(IDEMPOTENCY_KEY_HEADER),
        start: (memo) =>
          client.workflow.start(workflowType, {
            taskQueue,
            workflowId,
            // A group's workflow takes its continue-as-new carry second.
            args: request.registrationId ? [request, context] : [request, undefined, context],
            memo: { ...memo, ...recorded.memo },
            workflowIdConflictPolicy: 'FAIL',
            workflowIdReusePolicy: 'ALLOW_DUPLICATE',
            typedSearchAttributes: [
              { key: SA.operation, value: kind.operation },
              { key: SA.phase, value: 'validating' },
              ...(request.registrationId ? [{ key: SA.registrationId, value: request.registrationId }] : []),
              ...(request.enrollmentGroupId ? [{ key: SA.enrollmentGroupId, value: request.enrollmentGroupId }] : []),
              recorded.searchAttribute,
            ],
            staticSummary: `${kind.verb} ${request.registrationId ?? `group ${request.enrollmentGroupId}`}: ${request.reason}`,
          }),
      });
      const url = statusUrl(kind, target);
      log.info(
        {
          workflowId: started.workflowId,
          runId: started.runId,
          replayed: started.replayed,
          requestedBy: requestedByKeyword(by),
        },
        `${kind.operation} started`,
      );
      if (started.replayed) res.set(REPLAYED_HEADER, 'true');
      res.status(202).location(url).json({ workflowId: started.workflowId, runId: started.runId, statusUrl: url });
    });

    const detail = async (workflowId: string) => {
      const run = await describeRun(client, log, workflowId, revocationStatusQuery);
      const outcome = (run.detail.report as { outcome?: string } | undefined)?.outcome;
      return { ...summarize(run.description), ...run.detail, ...(outcome ? { outcome } : {}) };
    };
    router.get(
      `/${kind.plural}/devices/:registrationId`,
      validate({ params: DeviceParams }),
      temporal,
      async (req, res) => {
        res.json(await detail(kind.workflowId({ registrationId: req.params.registrationId })));
      },
    );
    router.get(
      `/${kind.plural}/groups/:enrollmentGroupId`,
      validate({ params: GroupParams }),
      temporal,
      async (req, res) => {
        res.json(await detail(kind.workflowId({ enrollmentGroupId: req.params.enrollmentGroupId })));
      },
    );

    const ListFilters = listQuery(kind).superRefine((value, ctx) => {
      if (value.hub !== undefined && hubOf(value.hub) === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['hub'],
          message: `unknown environment "${value.hub}"; configured: ${Object.keys(environments).join(', ') || '(none)'}`,
        });
      }
    });
    router.get(`/${kind.plural}`, validate({ query: ListFilters }), temporal, async (req, res) => {
      const filters = req.query as z.output<typeof ListFilters>;
      const types = [kind.workflowTypes.device, kind.workflowTypes.group].map((t) => `'${t}'`).join(', ');
      const page = await listRuns(client, pageTokens, {
        clauses: [
          `WorkflowType IN (${types})`,
          ...equals('ExecutionStatus', filters.status && STATUS_FILTERS[filters.status]),
          ...equals(SA.registrationId.name, filters.registrationId),
          ...equals(SA.enrollmentGroupId.name, filters.enrollmentGroupId),
          ...equals(SA.hubs.name, filters.hub && hubOf(filters.hub)),
          ...equals(SA.phase.name, filters.phase),
        ],
        pageSize: filters.pageSize,
        nextPageToken: filters.nextPageToken,
      });
      res.json({ [kind.plural]: page.executions.map(summarize), nextPageToken: page.nextPageToken });
    });
  }
  return router;
}
