import type { Finding, FindingType } from '../common/audit';
import { dpsId } from '../common/promotion';

/**
 * Turning an audit's findings of one type into an operation: the request of one fleet operation
 * (`POST /v1/fleet-operations`), which api/routes/audits.ts dry-runs for the plan and starts on confirm.
 *
 * - revokedButActive → revoke with hubAction disable: the identities still enabled are disabled in every hub; an
 *   individual enrollment already disabled stays so.
 * - orphan → revoke with hubAction delete of the device id (DPS has nothing of it, so DPS is left alone and the
 *   identity is deleted in every hub). Ids that are not valid registration ids cannot be named in the contract.
 * - duplicate, wrongHub → a cleanup the contract cannot express: disable the identity only in the hubs DPS does not
 *   assign (keeping DPS and the assigned hub as they are). The plan proposes it; confirming answers 422.
 */

export const REMEDIABLE = ['revokedButActive', 'orphan', 'duplicate', 'wrongHub'] as const;
export type RemediableType = (typeof REMEDIABLE)[number];

/** The body of `POST /v1/fleet-operations` that carries a plan out (a list of devices, revoked). */
export interface RemediationFleetRequest {
  operation: 'revoke';
  targets: { registrationIds: string[] };
  parameters: { hubAction: 'disable' | 'delete'; reason: string };
  description: string;
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
  fleetOperation?: RemediationFleetRequest;
  /** For duplicate and wrong hub: the hub-scoped cleanup proposed instead. */
  proposal?: { operation: 'disableInHubs'; devices: HubScopedDisable[] };
  /** Findings the plan leaves out, and why. */
  excluded: Array<{ deviceId: string; reason: string }>;
  /** Group members whose revocation needs more than the contract says (see `notes`). */
  notes: string[];
  expressible: boolean;
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
          `${groupDisabled.length} device(s) are refused by their disabled group: the revocation adds a disabled ` +
            'individual enrollment for each (an X.509 member needs its certificate, so it fails without it).',
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
          description: `remediation of revokedButActive found by audit ${auditId}`,
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
          description: `remediation of orphan found by audit ${auditId}`,
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

export const isRemediable = (type: FindingType): type is RemediableType =>
  (REMEDIABLE as readonly string[]).includes(type);
