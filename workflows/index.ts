// The worker's workflowsPath: re-exports every workflow.
export * from './connectivity';
export * from './promotion';
