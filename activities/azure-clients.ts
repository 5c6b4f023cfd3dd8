import { Registry } from 'azure-iothub';
import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';

/**
 * The Azure service clients the activities use, built once per worker from configuration. Connection strings stay
 * here: workflows only ever see environment names and host names.
 */
export interface HubClient {
  environment: string;
  hostName: string;
  registry: Registry;
}

export interface AzureClients {
  dps?: { hostName: string; client: ProvisioningServiceClient };
  hubs: Map<string, HubClient>;
}

export interface AzureConnectionSettings {
  dpsConnectionString?: string;
  hubConnectionStrings?: Record<string, string>;
}

export function hostNameOf(connectionString: string): string {
  const match = /(?:^|;)HostName=([^;]+)/i.exec(connectionString);
  if (!match) throw new Error('connection string has no HostName');
  return match[1];
}

export function createAzureClients(settings: AzureConnectionSettings): AzureClients {
  const hubs = new Map<string, HubClient>();
  for (const [environment, cs] of Object.entries(settings.hubConnectionStrings ?? {})) {
    hubs.set(environment, { environment, hostName: hostNameOf(cs), registry: Registry.fromConnectionString(cs) });
  }
  const dps = settings.dpsConnectionString
    ? {
        hostName: hostNameOf(settings.dpsConnectionString),
        client: ProvisioningServiceClient.fromConnectionString(settings.dpsConnectionString),
      }
    : undefined;
  return { dps, hubs };
}
