import {
  allHandlersFinished,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import { deviceConnectedSignal } from '../common/messages';

/**
 * Forwards `deviceConnected` signals to one promotion. Event Grid names devices, promotions are keyed by
 * registration id: when the two differ, the promotion starts this relay as a child under the deterministic id
 * `device-events/<deviceId>`, and the webhook signals it by that id instead of searching visibility. It lives as
 * long as its promotion (parent close policy TERMINATE) and keeps its own history short.
 */
export async function promotionEventRelay(input: { promotionWorkflowId: string; deviceId: string }): Promise<void> {
  const promotion = getExternalWorkflowHandle(input.promotionWorkflowId);
  setHandler(deviceConnectedSignal, async (event) => {
    if (event?.deviceId !== input.deviceId) return;
    await promotion.signal(deviceConnectedSignal, event);
  });
  await condition(() => workflowInfo().continueAsNewSuggested);
  await condition(allHandlersFinished);
  await continueAsNew<typeof promotionEventRelay>(input);
}
