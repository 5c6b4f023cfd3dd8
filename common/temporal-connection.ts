import { readFileSync } from 'node:fs';
import type { TLSConfig } from '@temporalio/client';
import type { Config } from './config';
import { StartupError } from './startup';

/**
 * How the worker and the API reach Temporal: plain on loopback (the dev server), or TLS to a secured self-hosted
 * cluster (server CA, mTLS client certificate, SNI override) or to Temporal Cloud (an API key, TLS with the system's
 * roots). One function gives both the client's `Connection` and the worker's `NativeConnection` the same options.
 */
export interface TemporalConnectionOptions {
  address: string;
  tls?: TLSConfig | boolean;
  apiKey?: string;
}

export type TemporalConnectionConfig = Pick<
  Config,
  | 'TEMPORAL_TLS'
  | 'TEMPORAL_TLS_CA_FILE'
  | 'TEMPORAL_TLS_CERT_FILE'
  | 'TEMPORAL_TLS_KEY_FILE'
  | 'TEMPORAL_TLS_SERVER_NAME'
  | 'TEMPORAL_API_KEY'
>;

/** The options for `address` from the configuration; files are read now, so a missing one stops the start. */
export function temporalConnectionOptions(
  config: TemporalConnectionConfig,
  address: string,
): TemporalConnectionOptions {
  const files = config.TEMPORAL_TLS_CA_FILE || config.TEMPORAL_TLS_CERT_FILE || config.TEMPORAL_TLS_SERVER_NAME;
  // TLS when asked for, or implied: a CA, a client certificate or an API key (Temporal Cloud takes keys over TLS only).
  const useTls = config.TEMPORAL_TLS ?? Boolean(files || config.TEMPORAL_API_KEY);
  if (!useTls) {
    if (config.TEMPORAL_API_KEY) {
      throw new StartupError('TEMPORAL_API_KEY is sent over TLS only: unset TEMPORAL_TLS=false');
    }
    return { address };
  }
  const tls: TLSConfig = {};
  if (config.TEMPORAL_TLS_SERVER_NAME) tls.serverNameOverride = config.TEMPORAL_TLS_SERVER_NAME;
  if (config.TEMPORAL_TLS_CA_FILE)
    tls.serverRootCACertificate = read('TEMPORAL_TLS_CA_FILE', config.TEMPORAL_TLS_CA_FILE);
  if (config.TEMPORAL_TLS_CERT_FILE && config.TEMPORAL_TLS_KEY_FILE) {
    tls.clientCertPair = {
      crt: read('TEMPORAL_TLS_CERT_FILE', config.TEMPORAL_TLS_CERT_FILE),
      key: read('TEMPORAL_TLS_KEY_FILE', config.TEMPORAL_TLS_KEY_FILE),
    };
  }
  return { address, tls, ...(config.TEMPORAL_API_KEY ? { apiKey: config.TEMPORAL_API_KEY } : {}) };
}

function read(setting: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new StartupError(`${setting}=${file} cannot be read: ${(err as Error).message}`, { cause: err });
  }
}
