import { auditActivities } from './audit';
import type { AzureClients } from './azure-clients';
import { connectivityActivities } from './connectivity';
import { deviceEventActivities } from './device-events';
import { dpsActivities } from './dps';
import { fleetActivities } from './fleet';
import { heartbeating } from './heartbeat';
import { registryActivities } from './registry';
import { revocationActivities } from './revocation';
import type { Client } from '@temporalio/client';
import { QuotasConfig } from '../common/quotas';

export interface ActivityDeps {
  azure: AzureClients;
  /** A Temporal client, for activities that act on other workflows (a revocation stopping promotions). */
  temporal?: Client;
  /** The Azure quotas fleet operations plan within (AZURE_QUOTAS); S1 with one unit per hub when not given. */
  quotas?: QuotasConfig;
}

/** Every activity the worker registers, with its Azure clients injected once. */
export function createActivities(deps: ActivityDeps) {
  return heartbeating({
    ...connectivityActivities(deps.azure),
    ...dpsActivities(deps.azure),
    ...registryActivities(deps.azure),
    ...revocationActivities(deps.azure, deps.temporal),
    ...fleetActivities(deps.azure, deps.quotas ?? QuotasConfig.parse(undefined), deps.temporal),
    ...auditActivities(deps.azure, deps.temporal),
    ...deviceEventActivities(deps.temporal),
  });
}

export type Activities = ReturnType<typeof createActivities>;
