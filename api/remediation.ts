import type { Client } from '@temporalio/client';
import { isProblem } from './problems';
import { startIdempotently } from './idempotency';
import type { Finding, FindingType } from '../common/audit';
import { OPERATIONS, revocationWorkflowId, WORKFLOW_TYPES } from '../common/messages';
import { dpsId } from '../common/promotion';
import { RevocationRequest } from '../common/revocation';
import { SA } from '../common/search-attributes';

/**
 * Turning an audit's findings of one type into an operation. The target is the fleet-operations API
 * (`POST /v1/fleet-operations`, being built), whose request this module writes; until it is merged, an executor
 * that starts one revocation per device (the same workflows, ids and idempotency as `POST /v1/revocations`) carries
 * out the plans the contract can express. Swap `defaultExecutor` for a fleet-operations executor to change that.
 *
 * - revokedButActive → revoke with hubAction disable: the identities still enabled are disabled in every hub; an
 *   individual enrollment already disabled stays so.
 * - orphan → revoke with hubAction delete of the device id (DPS has nothing of it, so DPS is left alone and the
 *   identity is deleted in every hub). Ids that are not valid registration ids cannot be named in the contract.
 * - duplicate, wrongHub → a cleanup the contract cannot express: disable the identity only in the hubs DPS does not
 *   assign (keeping DPS and the assigned hub as they are). The plan proposes it; confirming answers 501.
 */

export const REMEDIABLE = ['revokedButActive', 'orphan', 'duplicate', 'wrongHub'] as const;
export type RemediableType = (typeof REMEDIABLE)[number];

/** The body of `POST /v1/fleet-operations` (the lead's contract). */
export interface FleetOperationRequest {
  operation: 'revoke' | 'reinstate' | 'promote';
  targets: { registrationIds: string[] };
  parameters: Record<string, unknown>;
  dryRun: boolean;
}

/** A hub-scoped disable, per device: what duplicate and wrong-hub findings need and the contract lacks. */
export interface HubScopedDisable {
  registrationId?: string;
  deviceId: string;
  keepIn?: string;
  disableIn: string[];
}

export interface RemediationPlan {
  findingType: RemediableType;
  findings: number;
  /** What the remediation does, in words. */
  action: string;
  /** The fleet operation that carries it out, when the contract can express it. */
  fleetOperation?: FleetOperationRequest;
  /** For duplicate and wrong hub: the hub-scoped cleanup proposed instead. */
  proposal?: { operation: 'disableInHubs'; devices: HubScopedDisable[] };
  /** Findings the plan leaves out, and why. */
  excluded: Array<{ deviceId: string; reason: string }>;
  /** Group members whose revocation needs more than the contract says (see `notes`). */
  notes: string[];
  expressible: boolean;
}

export interface StartedOperation {
  registrationId: string;
  workflowId: string;
  runId: string;
  statusUrl: string;
  replayed: boolean;
}

export interface RemediationStarted {
  executor: string;
  operations: StartedOperation[];
  failed: Array<{ registrationId: string; type: string; detail: string }>;
}

/** Carries out an expressible plan. */
export interface RemediationExecutor {
  readonly name: string;
  /** How many targets one call may carry. */
  readonly limit: number;
  execute(
    request: FleetOperationRequest,
    context: { enrollmentGroups: Map<string, string> },
  ): Promise<RemediationStarted>;
}

const dpsIdPattern = new RegExp(dpsId.source);

export function planRemediation(
  auditId: string,
  type: RemediableType,
  findings: Finding[],
  reason?: string,
): RemediationPlan {
  const excluded: RemediationPlan['excluded'] = [];
  const notes: string[] = [];
  const why = (reason ?? `remediation of ${type} found by audit ${auditId}`).slice(0, 500);
  switch (type) {
    case 'revokedButActive': {
      const ids = findings.map((f) => f.registrationId!).filter(Boolean);
      const groupDisabled = findings.filter((f) => f.enrollment?.kind === 'group');
      if (groupDisabled.length) {
        notes.push(
          `${groupDisabled.length} device(s) are refused by their disabled group: a per-device revocation adds a disabled ` +
            'individual enrollment for each (an X.509 member needs its certificate and is refused without it); the ' +
            'fleet operation should leave DPS as it is where DPS already refuses the device.',
        );
      }
      return {
        findingType: type,
        findings: findings.length,
        action: 'revoke, disabling every identity still enabled in every hub; DPS already refuses these devices',
        fleetOperation: {
          operation: 'revoke',
          targets: { registrationIds: ids },
          parameters: { hubAction: 'disable', reason: why },
          dryRun: false,
        },
        excluded,
        notes,
        expressible: true,
      };
    }
    case 'orphan': {
      const ids: string[] = [];
      for (const f of findings) {
        if (dpsIdPattern.test(f.deviceId)) ids.push(f.deviceId);
        else
          excluded.push({
            deviceId: f.deviceId,
            reason: 'not a valid DPS registration id: delete it in the hub by hand',
          });
      }
      return {
        findingType: type,
        findings: findings.length,
        action: 'revoke with hubAction delete: no enrollment covers these identities, so each is deleted in every hub',
        fleetOperation: {
          operation: 'revoke',
          targets: { registrationIds: ids },
          parameters: { hubAction: 'delete', reason: why },
          dryRun: false,
        },
        excluded,
        notes,
        expressible: true,
      };
    }
    case 'duplicate':
    case 'wrongHub': {
      const devices: HubScopedDisable[] = [];
      for (const f of findings) {
        const enabled = f.hubs.filter((h) => h.status === 'enabled');
        const keep = enabled.find((h) => h.hubHost === f.assignedHub);
        if (!f.assignedHub) {
          excluded.push({ deviceId: f.deviceId, reason: 'DPS names no hub for it: which copy to keep is a decision' });
          continue;
        }
        devices.push({
          ...(f.registrationId ? { registrationId: f.registrationId } : {}),
          deviceId: f.deviceId,
          ...(keep ? { keepIn: keep.environment } : {}),
          disableIn: enabled.filter((h) => h !== keep).map((h) => h.environment),
        });
      }
      return {
        findingType: type,
        findings: findings.length,
        action:
          type === 'duplicate'
            ? 'disable the identity in every hub except the one DPS assigns'
            : 'disable the identity in the hubs DPS does not assign; the device, refused there, registers again and DPS puts it in its hub',
        proposal: { operation: 'disableInHubs', devices },
        excluded,
        notes: [
          'The fleet-operations contract revokes in DPS and every hub; it cannot disable in some hubs only. This needs ' +
            'a hub-scoped operation, e.g. { "operation": "revoke", "parameters": { "hubAction": "disable", "hubs": [...], "dps": "leave" } }.',
        ],
        expressible: false,
      };
    }
  }
}

/** Until the fleet-operations API is merged: one revocation per device, as `POST /v1/revocations` starts it. */
export function perDeviceRevocations(deps: { client: Client; taskQueue: string }): RemediationExecutor {
  const { client, taskQueue } = deps;
  return {
    name: 'revocations',
    limit: 500,
    async execute(request, context) {
      if (request.operation !== 'revoke') throw new Error(`the revocations executor cannot ${request.operation}`);
      const started: RemediationStarted = { executor: 'revocations', operations: [], failed: [] };
      const ids = [...request.targets.registrationIds];
      const startOne = async (registrationId: string) => {
        const enrollmentGroupId = context.enrollmentGroups.get(registrationId);
        const revocation = RevocationRequest.parse({
          registrationId,
          ...(enrollmentGroupId ? { enrollmentGroupId } : {}),
          ...request.parameters,
        });
        const workflowId = revocationWorkflowId({ registrationId });
        try {
          const run = await startIdempotently(client, {
            workflowId,
            request: revocation,
            start: (memo) =>
              client.workflow.start(WORKFLOW_TYPES.revokeDevice, {
                taskQueue,
                workflowId,
                args: [revocation],
                memo,
                workflowIdConflictPolicy: 'FAIL',
                workflowIdReusePolicy: 'ALLOW_DUPLICATE',
                typedSearchAttributes: [
                  { key: SA.operation, value: OPERATIONS.revoke },
                  { key: SA.phase, value: 'validating' },
                  { key: SA.registrationId, value: registrationId },
                  ...(enrollmentGroupId ? [{ key: SA.enrollmentGroupId, value: enrollmentGroupId }] : []),
                ],
                staticSummary: `Revoke ${registrationId}: ${revocation.reason}`,
              }),
          });
          started.operations.push({
            registrationId,
            workflowId: run.workflowId,
            runId: run.runId,
            statusUrl: `/v1/revocations/devices/${encodeURIComponent(registrationId)}`,
            replayed: run.replayed,
          });
        } catch (err) {
          if (!isProblem(err)) throw err;
          started.failed.push({ registrationId, type: err.problem, detail: err.message });
        }
      };
      // A few starts at a time: each is one or two Temporal calls.
      for (let i = 0; i < ids.length; i += 8) await Promise.all(ids.slice(i, i + 8).map(startOne));
      return started;
    },
  };
}

/** The group (if any) each target registered through: a per-device revocation names it instead of searching. */
export function enrollmentGroupsOf(findings: Finding[]): Map<string, string> {
  const groups = new Map<string, string>();
  for (const f of findings) {
    const group = f.enrollment?.kind === 'group' ? f.enrollment.id : f.enrollment?.enrollmentGroupId;
    if (f.registrationId && group) groups.set(f.registrationId, group);
  }
  return groups;
}

export const isRemediable = (type: FindingType): type is RemediableType =>
  (REMEDIABLE as readonly string[]).includes(type);
