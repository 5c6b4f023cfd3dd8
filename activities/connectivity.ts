import { log } from '@temporalio/activity';
import type { AzureClients } from './azure-clients';
import { queryItems } from './dps';

export interface EndpointProbe {
  kind: 'dps' | 'hub';
  environment?: string;
  hostName: string;
  reachable: boolean;
  detail: string;
}

/** Activities that tell whether the worker can reach each configured Azure endpoint (no secrets returned). */
export function connectivityActivities(clients: AzureClients) {
  return {
    async listEndpoints(): Promise<{ dps?: string; hubs: Record<string, string> }> {
      return {
        dps: clients.dps?.hostName,
        hubs: Object.fromEntries([...clients.hubs].map(([env, hub]) => [env, hub.hostName])),
      };
    },

    async probeDps(): Promise<EndpointProbe> {
      return logged(await probeDps());
    },

    async probeHub(environment: string): Promise<EndpointProbe> {
      return logged(await probeHub(environment));
    },
  };

  async function probeDps(): Promise<EndpointProbe> {
    if (!clients.dps) return { kind: 'dps', hostName: '', reachable: false, detail: 'DPS is not configured' };
    const { hostName, client } = clients.dps;
    try {
      const query = client.createIndividualEnrollmentQuery({ query: '*' }, 1);
      const { responseBody } = await query.next();
      return {
        kind: 'dps',
        hostName,
        reachable: true,
        detail: `enrollment query answered (${queryItems(responseBody).length} item(s))`,
      };
    } catch (err) {
      return { kind: 'dps', hostName, reachable: false, detail: describeError(err) };
    }
  }

  async function probeHub(environment: string): Promise<EndpointProbe> {
    const hub = clients.hubs.get(environment);
    if (!hub) return { kind: 'hub', environment, hostName: '', reachable: false, detail: 'not configured' };
    try {
      const { responseBody } = await hub.registry.getRegistryStatistics();
      return {
        kind: 'hub',
        environment,
        hostName: hub.hostName,
        reachable: true,
        detail: `${responseBody.totalDeviceCount ?? 0} devices`,
      };
    } catch (err) {
      return { kind: 'hub', environment, hostName: hub.hostName, reachable: false, detail: describeError(err) };
    }
  }
}

/** What an operator's check found, in the worker's log too (with the check's trace when traced). */
function logged(probe: EndpointProbe): EndpointProbe {
  log.info('endpoint probed', { ...probe });
  return probe;
}

function describeError(err: unknown): string {
  const e = err as { name?: string; message?: string };
  return `${e.name ?? 'Error'}: ${e.message ?? String(err)}`;
}
