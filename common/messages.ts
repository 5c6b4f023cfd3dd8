import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { DeviceConnectedEvent, PromotionStatus } from './promotion';

/**
 * Names shared by the API and the workers: workflow types, workflow-id prefixes, signals, queries.
 * The API imports this module (never workflow or activity code) and starts workflows by type name.
 */
export const WORKFLOW_TYPES = {
  checkConnectivity: 'checkConnectivity',
  promoteDevice: 'promoteDevice',
} as const;

export const WORKFLOW_ID_PREFIX = {
  connectivity: 'connectivity',
  promotion: 'promote',
} as const;

export const promotionWorkflowId = (registrationId: string) => `${WORKFLOW_ID_PREFIX.promotion}/${registrationId}`;

export const OPERATIONS = { promote: 'promote' } as const;

export const deviceConnectedSignal = defineSignal<[DeviceConnectedEvent]>('deviceConnected');
export const promotionStatusQuery = defineQuery<PromotionStatus>('status');
