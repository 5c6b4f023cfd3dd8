// The worker's workflowsPath: every workflow type, and nothing else (each export becomes a workflow type).
export { auditFindings, auditFleet } from './audit';
export { checkConnectivity } from './connectivity';
export { promotionEventRelay } from './device-event-relay';
export { relayDeviceConnectedEvents } from './device-events';
export { fleetChunk, fleetOperation } from './fleet';
export { promoteDevice } from './promotion';
export { reinstateDevice, reinstateEnrollmentGroup } from './reinstatement';
export { revokeDevice, revokeEnrollmentGroup } from './revocation';
