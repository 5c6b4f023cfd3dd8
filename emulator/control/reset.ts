import { resetDpsRuntime } from '../dps/runtime';
import { closeEventGrid } from '../eventgrid/event-grid';
import { deleteDevice } from '../hub/registry';
import { resetLimits } from '../limits/decide';
import { deviceBroker } from '../mqtt/listener';
import type { EmulatorState } from '../state';

/**
 * Returns the emulator to how it started: hubs, DPS links and policy keys stay; devices, enrollments, groups,
 * registrations, DPS operations, CA certificates, Event Grid subscriptions (with their counters and dead letters),
 * device connections, quotas, faults and write counters go, and settings (DPS, Event Grid, quotas) are back to
 * their defaults. The state changes all at once (no await in between); only closing the old connections' brokers is
 * awaited.
 */
export async function resetEmulator(state: EmulatorState): Promise<void> {
  // Event Grid first, so that nothing the reset does is delivered; a fresh one starts on next use.
  closeEventGrid(state);
  // Connections next, without disconnect events: their devices go below.
  const connectionsDropped = deviceBroker(state)?.reset();
  for (const hub of state.hubs.values()) {
    // Through deleteDevice so that state listeners hear about it.
    for (const deviceId of [...hub.devices.keys()]) deleteDevice(hub, deviceId);
  }
  state.dps.enrollments.clear();
  state.dps.enrollmentGroups.clear();
  state.dps.registrations.clear();
  resetDpsRuntime(state.dps);
  resetLimits(state.limits);
  state.counters.reset();
  await connectionsDropped;
}
