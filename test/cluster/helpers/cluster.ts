import path from 'node:path';
import { Client } from '@temporalio/client';
import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import { Registry } from 'azure-iothub';
import { installAzureEndpointRouting } from '../../../common/azure-routing';
import { LocalCluster } from '../../../scripts/cluster/cluster';
import { defaultSettings, projectRoot, type ClusterSettings } from '../../../scripts/cluster/settings';

/**
 * The production topology for one drill file, started fresh (empty Temporal databases, emulator in memory) by the
 * same orchestrator as `npm run cluster`, plus what the test process needs to reach it: a Temporal client, and the
 * unchanged Azure SDK clients routed to the emulator process. CLUSTER_BUILD=source runs the TypeScript by tsx
 * instead of the compiled build; CLUSTER_TOPOLOGY=all-in-one runs one Temporal process.
 */
export interface DrillCluster {
  cluster: LocalCluster;
  client: Client;
  dps: ProvisioningServiceClient;
  registries: Record<'test' | 'production', Registry>;
  hosts: Record<'test' | 'production', string>;
  stop(): Promise<void>;
}

export function drillSettings(name: string, overrides: Partial<ClusterSettings> = {}): ClusterSettings {
  const base = defaultSettings();
  return {
    ...base,
    dataDir: path.join(projectRoot, '.data', 'cluster-drills', name),
    topology: process.env.CLUSTER_TOPOLOGY === 'all-in-one' ? 'all-in-one' : 'per-service',
    build: process.env.CLUSTER_BUILD === 'source' ? 'source' : 'dist',
    devices: 0,
    shutdownGraceSeconds: 5,
    postgres: {
      ...base.postgres,
      database: 'temporal_drill',
      visibilityDatabase: 'temporal_drill_visibility',
      fresh: true,
    },
    ...overrides,
  };
}

export async function startDrillCluster(name: string, overrides: Partial<ClusterSettings> = {}): Promise<DrillCluster> {
  const cluster = new LocalCluster(drillSettings(name, overrides), (line) =>
    process.stdout.write(`[cluster ${name}] ${line}\n`),
  );
  let uninstallRouting: (() => void) | undefined;
  const stop = async () => {
    uninstallRouting?.();
    await cluster.stop();
  };
  try {
    await cluster.start();
    const { emulator } = cluster;
    uninstallRouting = installAzureEndpointRouting({ address: emulator.address, caPem: emulator.caPem });
    // Devices re-register at once when a hub rejects them (Azure's retry-after would only slow the drill).
    const res = await cluster.controlFetch('/dps/settings', {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ retryAfterSeconds: 0 }),
    });
    if (!res.ok) throw new Error(`PUT /dps/settings: ${res.status}`);
    return {
      cluster,
      client: new Client({ connection: cluster.connection, namespace: cluster.settings.temporal.namespace }),
      dps: ProvisioningServiceClient.fromConnectionString(emulator.connectionStrings.dps),
      registries: {
        test: Registry.fromConnectionString(emulator.connectionStrings.hubs.test),
        production: Registry.fromConnectionString(emulator.connectionStrings.hubs.production),
      },
      hosts: { test: emulator.hosts.test, production: emulator.hosts.production },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Emulator fault settings (latency on every Azure call keeps activities in flight while the drill strikes). */
export async function setEmulatorFaults(drill: DrillCluster, faults: { latencyMs?: number }): Promise<void> {
  const res = await drill.cluster.controlFetch('/faults', {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(faults),
  });
  if (!res.ok) throw new Error(`PUT /faults: ${res.status}`);
}
