import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { EndpointProbe } from '../activities/connectivity';

const { listEndpoints, probeDps, probeHub } = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 2 },
});

export interface ConnectivityReport {
  allReachable: boolean;
  endpoints: EndpointProbe[];
}

/** Asks the worker to reach DPS and every configured hub: the end-to-end readiness check an operator runs first. */
export async function checkConnectivity(): Promise<ConnectivityReport> {
  // 1. Which endpoints does the worker know?
  const { hubs } = await listEndpoints();
  // 2. Probe them all at once.
  const endpoints = await Promise.all([probeDps(), ...Object.keys(hubs).map((env) => probeHub(env))]);
  // 3. Report.
  return { allReachable: endpoints.every((e) => e.reachable), endpoints };
}
