import type { AzureClients } from './azure-clients';
import { connectivityActivities } from './connectivity';
import { dpsActivities } from './dps';
import { heartbeating } from './heartbeat';
import { registryActivities } from './registry';

export interface ActivityDeps {
  azure: AzureClients;
}

/** Every activity the worker registers, with its Azure clients injected once. */
export function createActivities(deps: ActivityDeps) {
  return heartbeating({
    ...connectivityActivities(deps.azure),
    ...dpsActivities(deps.azure),
    ...registryActivities(deps.azure),
  });
}

export type Activities = ReturnType<typeof createActivities>;
