/**
 * The one setting that points the unchanged Azure SDK clients at another address, e.g. the emulator. It lives in
 * common/ because the worker (AZURE_ENDPOINT_ADDRESS) and the emulator's own tools both need it.
 *
 * Connections to `*.azure-devices.net` and `*.azure-devices-provisioning.net` go to the emulator's address while
 * TLS SNI and the `Host` header keep the real name (so hubs and DPS are told apart, and SAS `sr` values stay
 * Azure's), and the emulator CA is trusted in addition to the system roots. Every other host is untouched.
 *
 * It hooks `https.Agent.prototype.createConnection` rather than replacing `https.globalAgent`, because the SDK
 * clients do not all use the global agent: azure-iothub's Registry builds its own keep-alive `https.Agent`,
 * while azure-iot-http-base (DPS service and device clients) calls `https.request` with the global one. The hook
 * covers every https agent, existing or future.
 */
import https from 'node:https';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';

export interface AzureEndpointRouting {
  /** `host:port` of the emulator's HTTPS listener, e.g. `127.0.0.1:8443`. */
  address: string;
  /** PEM of the emulator CA; without it only the system roots (and NODE_EXTRA_CA_CERTS) are trusted. */
  caPem?: string;
}

const AZURE_HOST = /\.(azure-devices\.net|azure-devices-provisioning\.net)$/i;

export function isAzureIotHost(host: string | undefined | null): boolean {
  return !!host && AZURE_HOST.test(host);
}

function parseAddress(address: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(address);
  if (!m) throw new Error(`Emulator address must be host:port, got ${address}`);
  return { host: m[1], port: Number(m[2]) };
}

type CreateConnection = (this: https.Agent, options: tls.ConnectionOptions, callback?: unknown) => Duplex;

const agentPrototype = https.Agent.prototype as unknown as { createConnection: CreateConnection };
let installed: { original: CreateConnection } | undefined;

/**
 * Routes Azure IoT host names to the emulator for every https agent in this process. Returns a function that
 * removes the routing. Installing again replaces the previous routing.
 */
export function installAzureEndpointRouting(routing: AzureEndpointRouting): () => void {
  const target = parseAddress(routing.address);
  // One TLS context for every routed connection: building the system roots + emulator CA list per connection
  // costs ~20 ms of CPU and ~1 MiB each (measured by bench/mqtt.ts).
  const sharedContext = routing.caPem
    ? tls.createSecureContext({ ca: [...tls.rootCertificates, routing.caPem] })
    : undefined;
  const original = installed?.original ?? agentPrototype.createConnection;

  const routed: CreateConnection = function (this: https.Agent, options, callback) {
    const host = options.host ?? undefined;
    if (!isAzureIotHost(host)) return original.call(this, options, callback);
    const rerouted = { ...options, host: target.host, port: target.port, servername: options.servername || host };
    // A caller's own trust settings or client certificate (X.509 devices) need a context of their own.
    const ownTls = options.ca || options.cert || options.key || options.pfx || options.secureContext;
    if (sharedContext && !ownTls) return original.call(this, { ...rerouted, secureContext: sharedContext }, callback);
    const ca =
      routing.caPem && options.ca
        ? ([] as Array<string | Buffer>).concat(options.ca as string | Buffer | Array<string | Buffer>, routing.caPem)
        : (options.ca ?? (routing.caPem ? [...tls.rootCertificates, routing.caPem] : undefined));
    return original.call(this, { ...rerouted, ca }, callback);
  };

  agentPrototype.createConnection = routed;
  installed = { original };
  return () => {
    if (agentPrototype.createConnection === routed) {
      agentPrototype.createConnection = original;
      installed = undefined;
    }
  };
}
