import { proxyActivities, setCurrentDetails } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { DeviceEventsRelayInput, DeviceEventsRelayResult } from '../common/device-events';
import { PERMANENT_FAILURES } from './policies';

/**
 * Fanning out one signal per event takes the dev server about a second per 400 events; Event Grid waits at most 30 s
 * for an answer and batches up to 5,000 events. So the webhook answers a large delivery after ONE durable write —
 * this workflow's start, carrying the delivery's DeviceConnected events — and this workflow signals each promotion.
 * The events are a hint to a promotion, which also polls: an hour of retries is plenty.
 */
const { signalDeviceConnectedEvents } = proxyActivities<Activities>({
  startToCloseTimeout: '2 minutes',
  heartbeatTimeout: '20 seconds',
  scheduleToCloseTimeout: '1 hour',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds', nonRetryableErrorTypes: PERMANENT_FAILURES },
});

export async function relayDeviceConnectedEvents(input: DeviceEventsRelayInput): Promise<DeviceEventsRelayResult> {
  // 1. Signal every event's promotion by its deterministic id.
  const result = await signalDeviceConnectedEvents({ events: input.events });
  // 2. Say in the UI what came of it.
  setCurrentDetails(
    `**${result.events} DeviceConnected events** received ${input.receivedAt}: ${result.signalled} signalled to a ` +
      `promotion, ${result.noRunningPromotion} for devices no running promotion waits for`,
  );
  return result;
}
