/**
 * Failure types no workflow retries: Azure's permanent answers (activities/azure-errors.ts) and configuration that
 * cannot change while a workflow runs. Each workflow module adds its own named failures to these in its profiles.
 */
export const PERMANENT_FAILURES: string[] = [
  'AzureBadRequest',
  'AzureUnauthorized',
  'AzureForbidden',
  'AzureNotFound',
  'AzureConflict',
  'AzurePreconditionFailed',
  'UnknownEnvironment',
  'DpsNotConfigured',
  'TemporalClientNotConfigured',
];
