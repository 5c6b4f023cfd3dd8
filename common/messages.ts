/**
 * Names shared by the API and the workers: task queues default, workflow types, signals, queries.
 * The API imports this module (never workflow or activity code) and starts workflows by type name.
 */
export const WORKFLOW_TYPES = {
  checkConnectivity: 'checkConnectivity',
} as const;

export const WORKFLOW_ID_PREFIX = {
  connectivity: 'connectivity',
} as const;
