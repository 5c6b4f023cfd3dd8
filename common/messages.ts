import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { AuditStatus } from './audit';
import type { CompensationReport, DeviceConnectedEvent, PromotionStatus } from './promotion';
import type { RevocationStatus } from './revocation';

/**
 * Names shared by the API and the workers: workflow types, workflow-id prefixes, signals, queries, updates.
 * The API imports this module (never workflow or activity code) and starts workflows by type name.
 */
export const WORKFLOW_TYPES = {
  checkConnectivity: 'checkConnectivity',
  promoteDevice: 'promoteDevice',
  promotionEventRelay: 'promotionEventRelay',
  revokeDevice: 'revokeDevice',
  revokeEnrollmentGroup: 'revokeEnrollmentGroup',
  reinstateDevice: 'reinstateDevice',
  reinstateEnrollmentGroup: 'reinstateEnrollmentGroup',
  auditFleet: 'auditFleet',
  auditFindings: 'auditFindings',
} as const;

export const WORKFLOW_ID_PREFIX = {
  connectivity: 'connectivity',
  promotion: 'promote',
  deviceEvents: 'device-events',
  revocation: 'revoke',
  groupRevocation: 'revoke-group',
  reinstatement: 'reinstate',
  groupReinstatement: 'reinstate-group',
  audit: 'audit',
} as const;

export const promotionWorkflowId = (registrationId: string) => `${WORKFLOW_ID_PREFIX.promotion}/${registrationId}`;

/**
 * A promotion whose device id differs from its registration id runs a small relay under this id, so that Event
 * Grid (which names devices, not registrations) reaches it by a deterministic id too.
 */
export const deviceEventsWorkflowId = (deviceId: string) => `${WORKFLOW_ID_PREFIX.deviceEvents}/${deviceId}`;

/** One revocation in flight per device, and per group; the same for reinstatements. */
export const revocationWorkflowId = (target: { registrationId?: string; enrollmentGroupId?: string }) =>
  target.registrationId
    ? `${WORKFLOW_ID_PREFIX.revocation}/${target.registrationId}`
    : `${WORKFLOW_ID_PREFIX.groupRevocation}/${target.enrollmentGroupId}`;
export const reinstatementWorkflowId = (target: { registrationId?: string; enrollmentGroupId?: string }) =>
  target.registrationId
    ? `${WORKFLOW_ID_PREFIX.reinstatement}/${target.registrationId}`
    : `${WORKFLOW_ID_PREFIX.groupReinstatement}/${target.enrollmentGroupId}`;

export const OPERATIONS = { promote: 'promote', revoke: 'revoke', reinstate: 'reinstate', audit: 'audit' } as const;

/** A revocation tells a running promotion of its device to stop at once, without restoring access. */
export interface RevocationRequestedEvent {
  revocationWorkflowId: string;
  reason: string;
  requestedBy?: string;
}

export const deviceConnectedSignal = defineSignal<[DeviceConnectedEvent]>('deviceConnected');
export const promotionStatusQuery = defineQuery<PromotionStatus>('status');
export const revocationRequestedSignal = defineSignal<[RevocationRequestedEvent]>('revocationRequested');
export const revocationStatusQuery = defineQuery<RevocationStatus>('status');
/** Runs the failed undo steps of a promotion in phase compensationFailed again; answers the new report. */
export const retryCompensationUpdate = defineUpdate<CompensationReport>('retryCompensation');
export const auditStatusQuery = defineQuery<AuditStatus>('status');
