import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Response } from 'express';
import type { z } from 'zod';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { AppDeps } from './app';
import { startIdempotently, type StartedRun } from './idempotency';
import { problem } from './problems';
import { withLongerTemporalDeadline } from './temporal';
import { callerOf, requestedBy, requireRole } from './auth/caller';
import { grants } from './auth/roles';
import { fleetWorkflowId, WORKFLOW_TYPES } from '../common/messages';
import {
  DEFAULT_FLEET_OPERATOR_MAX_DEVICES,
  FleetOperationRequest,
  type FleetContext,
  type FleetPlan,
  type FleetResult,
} from '../common/fleet';
import { fleetQuota, QuotasConfig } from '../common/quotas';
import { requestedByStartOptions } from '../common/requested-by';
import { SA } from '../common/search-attributes';

/**
 * Starting a fleet operation, the one way every caller does it: `POST /v1/fleet-operations`, its retry-failed, and an
 * audit's remediation (api/routes/audits.ts) all check the request, the caller's role and the size it may change,
 * and start the workflow with the same id scheme, memo and search attributes.
 */

/** The memo key holding the request without its targets: what retry-failed starts again. */
export const FLEET_REQUEST_MEMO = 'fleetRequest';
/** How long a dry run may take before the API answers 202 and lets the client poll for the plan. */
const DRY_RUN_WAIT_MS = 20_000;

export const fleetStatusUrl = (operationId: string) => `/v1/fleet-operations/${encodeURIComponent(operationId)}`;

export interface StartedFleetOperation extends StartedRun {
  operationId: string;
}

export interface FleetStarter {
  /** The request schema with what can be checked before starting: the environments exist, the rates fit the quotas. */
  readonly schema: z.ZodType<FleetOperationRequest, z.input<typeof FleetOperationRequest>>;
  /** The most devices a caller below admin may change in one operation (FLEET_OPERATOR_MAX_DEVICES). */
  readonly maxForOperators: number;
  /**
   * The context the operation starts with: who asked, and (below admin) how many devices they may change. What the
   * request itself shows is checked here: reinstating needs admin, and so does a list longer than the operator's
   * limit (403).
   */
  contextFor(res: Response, request: FleetOperationRequest): FleetContext;
  start(request: FleetOperationRequest, context: FleetContext, idempotencyKey?: string): Promise<StartedFleetOperation>;
  /**
   * A started dry run's plan, waited for up to DRY_RUN_WAIT_MS (undefined: not ready yet, poll the operation). The
   * plan's own refusals (too many devices, no such group…) are answered as `planRefused`.
   */
  dryRunPlan(res: Response, started: StartedFleetOperation): Promise<FleetPlan | undefined>;
}

export function fleetStarter(deps: AppDeps): FleetStarter {
  const { client, taskQueue, environments = {} } = deps;
  const quotas = deps.quotas ?? QuotasConfig.parse(undefined);
  const known = Object.keys(environments);
  const maxForOperators = deps.fleetOperatorMaxDevices ?? DEFAULT_FLEET_OPERATOR_MAX_DEVICES;

  const schema = FleetOperationRequest.superRefine((request, ctx) => {
    const named =
      request.operation === 'promote'
        ? [request.parameters.sourceEnvironment, request.parameters.targetEnvironment]
        : 'query' in request.targets
          ? [request.targets.query.environment]
          : [];
    if ('query' in request.targets && request.operation === 'promote') named.push(request.targets.query.environment);
    for (const environment of new Set(named)) {
      if (!known.includes(environment)) {
        ctx.addIssue({
          code: 'custom',
          path: ['parameters'],
          message: `unknown environment "${environment}"; configured: ${known.join(', ') || '(none)'}`,
        });
      }
    }
    const involved = request.operation === 'promote' ? named : known;
    const quota = fleetQuota(quotas, request.operation, involved);
    const asked = [request.rollout.maximumPerMinute, request.rollout.exponentialRate?.baseRatePerMinute];
    for (const rate of asked) {
      if (rate !== undefined && rate > quota.devicesPerMinute) {
        ctx.addIssue({
          code: 'custom',
          path: ['rollout'],
          message: `${rate} devices/min exceeds what the Azure quotas allow for a ${request.operation}: ${quota.devicesPerMinute}/min (${quota.binding})`,
        });
      }
    }
  });

  return {
    schema,
    maxForOperators,

    contextFor(res, request) {
      if (request.operation === 'reinstate') requireRole(res, 'admin', 'reinstating devices');
      const listed = 'registrationIds' in request.targets ? request.targets.registrationIds.length : 0;
      if (listed > maxForOperators) {
        requireRole(res, 'admin', `a fleet operation over more than ${maxForOperators} devices (${listed} listed)`);
      }
      const admin = grants(callerOf(res)?.roles ?? [], 'admin');
      return { requestedBy: requestedBy(res), ...(admin ? {} : { maxDevices: maxForOperators }) };
    },

    async start(request, context, idempotencyKey) {
      // A key names the operation, so that a retried request finds the one it started.
      const operationId = idempotencyKey
        ? `k-${createHash('sha256').update(idempotencyKey).digest('base64url').slice(0, 32)}`
        : randomUUID();
      const workflowId = fleetWorkflowId(operationId);
      const { targets: _targets, ...withoutTargets } = request;
      const recorded = requestedByStartOptions(context.requestedBy!);
      const started = await startIdempotently(client, {
        workflowId,
        request,
        idempotencyKey,
        start: (memo) =>
          client.workflow.start(WORKFLOW_TYPES.fleetOperation, {
            taskQueue,
            workflowId,
            args: [request, undefined, context],
            memo: { ...memo, ...recorded.memo, [FLEET_REQUEST_MEMO]: withoutTargets },
            workflowIdConflictPolicy: 'FAIL',
            typedSearchAttributes: [
              { key: SA.operation, value: 'fleet' },
              { key: SA.phase, value: 'planning' },
              recorded.searchAttribute,
            ],
            staticSummary: `Fleet ${request.operation}${request.dryRun ? ' (dry run)' : ''}${request.description ? `: ${request.description}` : ''}`,
          }),
      });
      return { ...started, operationId };
    },

    async dryRunPlan(res, started) {
      const handle = client.workflow.getHandle(started.workflowId, started.runId);
      const result = await withLongerTemporalDeadline(res, DRY_RUN_WAIT_MS + 5_000, () =>
        Promise.race([
          (handle.result() as Promise<FleetResult>).catch((err: unknown) => {
            const cause = err instanceof WorkflowFailedError ? err.cause : undefined;
            if (cause instanceof ApplicationFailure && cause.nonRetryable) {
              throw problem('planRefused', cause.message ?? cause.type ?? 'refused', {
                extensions: { workflowId: started.workflowId, failureType: cause.type },
              });
            }
            throw err;
          }),
          sleep(DRY_RUN_WAIT_MS).then(() => undefined),
        ]),
      );
      return result?.plan;
    },
  };
}
