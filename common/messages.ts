import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { AuditStatus } from './audit';
import type { CompensationReport, DeviceConnectedEvent, PromotionStatus } from './promotion';
import type { RevocationStatus } from './revocation';
import type { DeviceCounts, DeviceRecord, DeviceState, FleetStatus } from './fleet';
import type { ChangeRequest, OperatorAction } from './requested-by';

/**
 * Names shared by the API and the workers: workflow types, workflow-id prefixes, signals, queries, updates.
 * The API imports this module (never workflow or activity code) and starts workflows by type name.
 */
export const WORKFLOW_TYPES = {
  checkConnectivity: 'checkConnectivity',
  promoteDevice: 'promoteDevice',
  promotionEventRelay: 'promotionEventRelay',
  relayDeviceConnectedEvents: 'relayDeviceConnectedEvents',
  revokeDevice: 'revokeDevice',
  revokeEnrollmentGroup: 'revokeEnrollmentGroup',
  reinstateDevice: 'reinstateDevice',
  reinstateEnrollmentGroup: 'reinstateEnrollmentGroup',
  fleetOperation: 'fleetOperation',
  fleetChunk: 'fleetChunk',
  auditFleet: 'auditFleet',
  auditFindings: 'auditFindings',
} as const;

export const WORKFLOW_ID_PREFIX = {
  connectivity: 'connectivity',
  promotion: 'promote',
  deviceEvents: 'device-events',
  eventGridDelivery: 'eventgrid',
  revocation: 'revoke',
  groupRevocation: 'revoke-group',
  reinstatement: 'reinstate',
  groupReinstatement: 'reinstate-group',
  fleet: 'fleet',
  audit: 'audit',
} as const;

export const promotionWorkflowId = (registrationId: string) => `${WORKFLOW_ID_PREFIX.promotion}/${registrationId}`;

/**
 * A promotion whose device id differs from its registration id runs a small relay under this id, so that Event
 * Grid (which names devices, not registrations) reaches it by a deterministic id too.
 */
export const deviceEventsWorkflowId = (deviceId: string) => `${WORKFLOW_ID_PREFIX.deviceEvents}/${deviceId}`;

/**
 * A large Event Grid delivery's relay (workflows/device-events.ts), named by what it carries: the same events
 * delivered again (Event Grid retries a delivery it saw no answer to) find the same workflow.
 */
export const eventGridDeliveryWorkflowId = (digest: string) => `${WORKFLOW_ID_PREFIX.eventGridDelivery}/${digest}`;

/** One revocation in flight per device, and per group; the same for reinstatements. */
export const revocationWorkflowId = (target: { registrationId?: string; enrollmentGroupId?: string }) =>
  target.registrationId
    ? `${WORKFLOW_ID_PREFIX.revocation}/${target.registrationId}`
    : `${WORKFLOW_ID_PREFIX.groupRevocation}/${target.enrollmentGroupId}`;
export const reinstatementWorkflowId = (target: { registrationId?: string; enrollmentGroupId?: string }) =>
  target.registrationId
    ? `${WORKFLOW_ID_PREFIX.reinstatement}/${target.registrationId}`
    : `${WORKFLOW_ID_PREFIX.groupReinstatement}/${target.enrollmentGroupId}`;

export const OPERATIONS = {
  promote: 'promote',
  revoke: 'revoke',
  reinstate: 'reinstate',
  fleet: 'fleet',
  audit: 'audit',
} as const;

/** A fleet operation, and the chunks of its device snapshot (each a child holding up to 500 devices). */
export const fleetWorkflowId = (operationId: string) => `${WORKFLOW_ID_PREFIX.fleet}/${operationId}`;
export const fleetChunkWorkflowId = (operationWorkflowId: string, index: number) =>
  `${operationWorkflowId}/chunk-${String(index).padStart(5, '0')}`;

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
/**
 * Runs the failed undo steps of a promotion in phase compensationFailed again; answers the new report. Its argument
 * says who asked (recorded among the run's operator actions); runs of earlier releases were sent none.
 */
export const retryCompensationUpdate = defineUpdate<CompensationReport, [ChangeRequest]>('retryCompensation');
/**
 * Tells a running operation who is about to change it by other means than a message of its own (a cancellation
 * carries no arguments): the API sends it just before it cancels. The workflow records it with the run.
 */
export const operatorActionSignal = defineSignal<[OperatorAction]>('operatorAction');

// ---- Fleet operations ----

export const fleetStatusQuery = defineQuery<FleetStatus>('status');
/** A chunk's devices, filtered by state, a page at a time. */
export const fleetDevicesQuery = defineQuery<
  { devices: DeviceRecord[]; total: number },
  [{ state?: DeviceState; offset?: number; limit?: number }]
>('devices');
export const pauseFleetUpdate = defineUpdate<FleetStatus, [{ reason?: string } & ChangeRequest]>('pause');
export const resumeFleetUpdate = defineUpdate<FleetStatus, [ChangeRequest]>('resume');
/** Stops starting devices; `force` also cancels the devices in flight (promotions compensate as they would). */
export const cancelFleetUpdate = defineUpdate<FleetStatus, [{ force?: boolean; reason?: string } & ChangeRequest]>(
  'cancel',
);

/** Parent → chunk: this many more devices may start. */
export const grantSignal = defineSignal<[number]>('grant');
/** Parent → chunk: start no more devices (and with force, cancel those in flight). */
export const stopChunkSignal = defineSignal<[{ force: boolean }]>('stop');

export interface ChunkProgress {
  chunkIndex: number;
  /** Increases with every report of a chunk: signals may arrive out of order, the latest wins. */
  sequence: number;
  counts: DeviceCounts;
  /** Devices started so far, retries not counted again (AWS "notified"). */
  started: number;
  done: boolean;
}
/** Chunk → parent: its counts now. */
export const chunkProgressSignal = defineSignal<[ChunkProgress]>('chunkProgress');
export const auditStatusQuery = defineQuery<AuditStatus>('status');
