import { readFileSync } from 'node:fs';
import type { Config } from '../common/config';
import { installAzureEndpointRouting } from '../common/azure-routing';

/**
 * Applies AZURE_ENDPOINT_ADDRESS / AZURE_CA_FILE: Azure host names keep their names (SNI, Host header, SAS `sr`)
 * but connect to the configured address. Unset for real Azure, where nothing is changed.
 */
export function configureAzureEndpoints(config: Pick<Config, 'AZURE_ENDPOINT_ADDRESS' | 'AZURE_CA_FILE'>): void {
  if (!config.AZURE_ENDPOINT_ADDRESS) return;
  const caPem = config.AZURE_CA_FILE ? readFileSync(config.AZURE_CA_FILE, 'utf8') : undefined;
  installAzureEndpointRouting({ address: config.AZURE_ENDPOINT_ADDRESS, caPem });
}
