import { Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { permanent } from './azure-errors';
import { signalDeviceConnected } from '../common/device-signals';
import type { DeviceConnectedEvent } from '../common/promotion';
import type { DeviceEventsRelayResult } from '../common/device-events';

/** Signals in flight while a large delivery is fanned out. */
const CONCURRENCY = 64;
/** Device ids without a running promotion named in the result (the count is always exact). */
const NAMED = 100;

export function deviceEventActivities(temporal?: Client) {
  return {
    /**
     * Signals each DeviceConnected event of a large Event Grid delivery to the promotion waiting for its device, by
     * its deterministic id (common/device-signals.ts), as the webhook does for a small one. A failure part-way (Temporal
     * unreachable) fails the attempt and the retry signals every event again: a promotion takes an event as a hint and
     * verifies it, so a repeat changes nothing.
     */
    async signalDeviceConnectedEvents(input: { events: DeviceConnectedEvent[] }): Promise<DeviceEventsRelayResult> {
      if (!temporal) throw permanent('TemporalClientNotConfigured', 'the worker has no Temporal client for activities');
      const client = temporal;
      let signalled = 0;
      const noRunningPromotion: string[] = [];
      let next = 0;
      const lane = async () => {
        while (next < input.events.length) {
          const event = input.events[next++];
          const workflowIds = await signalDeviceConnected(client, event);
          Context.current().heartbeat(); // throttled by the SDK
          if (workflowIds.length) signalled += 1;
          else noRunningPromotion.push(event.deviceId);
        }
      };
      await Promise.all(Array.from({ length: Math.min(CONCURRENCY, input.events.length) }, lane));
      return {
        events: input.events.length,
        signalled,
        noRunningPromotion: noRunningPromotion.length,
        ...(noRunningPromotion.length ? { devicesWithoutPromotion: noRunningPromotion.slice(0, NAMED) } : {}),
      };
    },
  };
}
