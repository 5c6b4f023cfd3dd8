import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { deviceConnectedSignal, deviceEventsWorkflowId, promotionWorkflowId } from './messages';
import type { DeviceConnectedEvent } from './promotion';

/**
 * Signals `deviceConnected` to the promotion that may wait for this device, by its deterministic id:
 * `promote/<deviceId>` (the registration id is the device id for most devices), else the relay a promotion runs
 * under `device-events/<deviceId>` when the two differ. No visibility query: it is eventually consistent and
 * rate-limited, and would miss a promotion started a moment ago. The workflow decides whether the event counts.
 * Answers the workflow signalled (none when nothing waits for this device). For the webhook and the activity that
 * fans a large delivery out (activities/device-events.ts); not for workflow code.
 */
export async function signalDeviceConnected(client: Client, event: DeviceConnectedEvent): Promise<string[]> {
  for (const workflowId of [promotionWorkflowId(event.deviceId), deviceEventsWorkflowId(event.deviceId)]) {
    try {
      await client.workflow.getHandle(workflowId).signal(deviceConnectedSignal, event);
      return [workflowId];
    } catch (err) {
      // No such workflow, or it has closed: nothing waits for this device there.
      if (!(err instanceof WorkflowNotFoundError)) throw err;
    }
  }
  return [];
}
