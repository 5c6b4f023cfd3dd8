import type { DeviceConnectedEvent } from './promotion';

/**
 * A large Event Grid delivery, handed by the webhook to the `relayDeviceConnectedEvents` workflow in one durable
 * write (workflows/device-events.ts): the webhook answers once it is recorded, the workflow signals the promotions.
 */
export interface DeviceEventsRelayInput {
  events: DeviceConnectedEvent[];
  /** When the webhook received the delivery (ISO 8601). */
  receivedAt: string;
}

export interface DeviceEventsRelayResult {
  events: number;
  /** Events signalled to a waiting promotion (or its device-events relay). */
  signalled: number;
  /** Events for devices that no running promotion waits for. */
  noRunningPromotion: number;
  /** The first 100 of those devices. */
  devicesWithoutPromotion?: string[];
}
