/** The IoT hubs linked to the DPS (Azure: "Linked IoT hubs"), each with its iothubowner connection string. */
import { hubErrors } from '../hub/errors';
import type { EmulatorState, HubState } from '../state';

export interface LinkOptions {
  allocationWeight?: number;
  applyAllocationPolicy?: boolean;
  location?: string;
}

/** Links a hub to the DPS (idempotent: relinking updates weight/policy), with the hub's iothubowner string. */
export function linkHubToDps(state: EmulatorState, hub: HubState, options: LinkOptions = {}): void {
  const owner = hub.policies.find((p) => p.keyName === 'iothubowner');
  if (!owner) throw hubErrors.argument(`Hub ${hub.name} has no iothubowner policy`);
  const link = {
    hostName: hub.hostName,
    connectionString: `HostName=${hub.hostName};SharedAccessKeyName=${owner.keyName};SharedAccessKey=${owner.primaryKey}`,
    allocationWeight: options.allocationWeight ?? 1,
    applyAllocationPolicy: options.applyAllocationPolicy ?? true,
    location: options.location ?? 'emulator',
  };
  const existing = state.dps.linkedHubs.findIndex((l) => l.hostName === hub.hostName);
  if (existing >= 0) state.dps.linkedHubs[existing] = link;
  else state.dps.linkedHubs.push(link);
}

export function unlinkHubFromDps(state: EmulatorState, hostName: string): boolean {
  const before = state.dps.linkedHubs.length;
  state.dps.linkedHubs = state.dps.linkedHubs.filter((l) => l.hostName !== hostName.toLowerCase());
  return state.dps.linkedHubs.length !== before;
}
