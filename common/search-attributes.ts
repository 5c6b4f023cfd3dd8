import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/** Custom search attributes, registered on the dev server by common/temporal-server.ts and set by workflows. */
export const SA = {
  deviceId: defineSearchAttributeKey('IotDeviceId', SearchAttributeType.KEYWORD),
  registrationId: defineSearchAttributeKey('IotRegistrationId', SearchAttributeType.KEYWORD),
  sourceHub: defineSearchAttributeKey('IotSourceHub', SearchAttributeType.KEYWORD),
  targetHub: defineSearchAttributeKey('IotTargetHub', SearchAttributeType.KEYWORD),
  operation: defineSearchAttributeKey('IotOperation', SearchAttributeType.KEYWORD),
  phase: defineSearchAttributeKey('IotPhase', SearchAttributeType.KEYWORD),
  enrollmentGroupId: defineSearchAttributeKey('IotEnrollmentGroupId', SearchAttributeType.KEYWORD),
  /** The hubs an operation found the device(s) in: "every revocation of hub X" is `IotHubs = 'x…'`. */
  hubs: defineSearchAttributeKey('IotHubs', SearchAttributeType.KEYWORD_LIST),
  /** Who started the operation: `<authMethod>:<subject>` (common/requested-by.ts). */
  requestedBy: defineSearchAttributeKey('IotRequestedBy', SearchAttributeType.KEYWORD),
} as const;

export const searchAttributeKeys = Object.values(SA);
