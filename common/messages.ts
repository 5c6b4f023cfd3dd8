import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { CompensationReport, DeviceConnectedEvent, PromotionStatus } from './promotion';
import type { ChangeRequest, OperatorAction } from './requested-by';

/**
 * Names shared by the API and the workers: workflow types, workflow-id prefixes, signals, queries, updates.
 * The API imports this module (never workflow or activity code) and starts workflows by type name.
 */
export const WORKFLOW_TYPES = {
  checkConnectivity: 'checkConnectivity',
  promoteDevice: 'promoteDevice',
  promotionEventRelay: 'promotionEventRelay',
} as const;

export const WORKFLOW_ID_PREFIX = {
  connectivity: 'connectivity',
  promotion: 'promote',
  deviceEvents: 'device-events',
} as const;

export const promotionWorkflowId = (registrationId: string) => `${WORKFLOW_ID_PREFIX.promotion}/${registrationId}`;

/**
 * A promotion whose device id differs from its registration id runs a small relay under this id, so that Event
 * Grid (which names devices, not registrations) reaches it by a deterministic id too.
 */
export const deviceEventsWorkflowId = (deviceId: string) => `${WORKFLOW_ID_PREFIX.deviceEvents}/${deviceId}`;

export const OPERATIONS = { promote: 'promote' } as const;

export const deviceConnectedSignal = defineSignal<[DeviceConnectedEvent]>('deviceConnected');
export const promotionStatusQuery = defineQuery<PromotionStatus>('status');
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
