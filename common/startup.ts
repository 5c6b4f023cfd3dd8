import type { Server } from 'node:http';
import { ConfigError } from './config';

/**
 * Start-up failures of the command-line processes (`npm run worker`, `npm run api`, `npm run emulator`,
 * `npm start`) said in one paragraph: what is wrong and which setting fixes it, instead of a transport stack.
 */

/** A failure already explained for the operator; printed as it is. */
export class StartupError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StartupError';
  }
}

/** Settings the process started with, by name (API_PORT: 3000, …): an error about a port is matched to its name. */
export type StartupSettings = Record<string, unknown>;

/**
 * Connects to Temporal (`connect` is e.g. `() => NativeConnection.connect({ address })`); a server that cannot be
 * reached becomes a StartupError that names TEMPORAL_ADDRESS.
 */
export async function connectToTemporal<T>(address: string, connect: () => Promise<T>): Promise<T> {
  try {
    return await connect();
  } catch (err) {
    throw new StartupError(
      `Cannot reach the Temporal server at ${address}: ${transportReason(err)}.\n` +
        'Start one (`npm start` runs a dev server), or set TEMPORAL_ADDRESS=host:port to the frontend of a ' +
        'running Temporal server (TEMPORAL_NAMESPACE names the namespace there).',
      { cause: err },
    );
  }
}

/** `server.listen(port, host)`, resolved once listening; a port in use etc. becomes an explained StartupError. */
export function listen(server: Server, port: number, host: string, settings: StartupSettings): Promise<Server> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(new StartupError(explainStartupFailure(err, settings), { cause: err }));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve(server);
    });
  });
}

/** The operator's explanation of a start-up failure; unknown failures keep their stack, which then helps. */
export function explainStartupFailure(err: unknown, settings: StartupSettings = {}): string {
  if (err instanceof StartupError || err instanceof ConfigError) return err.message;
  const e = err as NodeJS.ErrnoException & { port?: number; address?: string };
  const where = e?.address !== undefined && e.port !== undefined ? `${e.address}:${e.port}` : undefined;
  const portSetting = settingOf(settings, e?.port, /_PORT$/);
  const hostSetting = settingOf(settings, e?.address, /_HOST$/);
  switch (e?.code) {
    case 'EADDRINUSE':
      return (
        `Port ${e.port} (${where}) is already in use.\n` +
        `Stop the process that listens there, or set ${portSetting ?? 'the port setting'} to a free port.`
      );
    case 'EACCES':
      return `Not allowed to listen on ${where}: set ${portSetting ?? 'the port setting'} to a port of 1024 or more.`;
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
      return `Cannot listen on ${where ?? e.address}: it is no address of this machine; set ${hostSetting ?? 'the host setting'} (e.g. 127.0.0.1 or 0.0.0.0).`;
  }
  if (e?.name === 'NamespaceNotFoundError') {
    return `${e.message}: set TEMPORAL_NAMESPACE to a namespace of that server, or create it (temporal operator namespace create).`;
  }
  return err instanceof Error ? (err.stack ?? err.message) : String(err);
}

/** For `main().catch(…)`: prints the explanation to stderr and exits 1. */
export function exitOnStartupFailure(name: string, settings: () => StartupSettings = () => ({})) {
  return (err: unknown): never => {
    console.error(`${name} could not start.\n${explainStartupFailure(err, settings())}`);
    process.exit(1);
  };
}

/** The name of the setting whose value is `value` (and whose name matches `name`). */
function settingOf(settings: StartupSettings, value: unknown, name: RegExp): string | undefined {
  if (value === undefined) return undefined;
  return Object.entries(settings).find(([key, v]) => name.test(key) && String(v) === String(value))?.[0];
}

/** The transport's reason, said plainly (Temporal's Rust core puts it deep inside a debug string). */
function transportReason(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  if (/Connection refused|ECONNREFUSED/i.test(message)) return 'connection refused (nothing listens there)';
  if (/dns error|ENOTFOUND|lookup address/i.test(message)) return 'the host name does not resolve';
  if (/deadline|timed? ?out/i.test(message)) return 'no answer in time';
  if (/tls|certificate|handshake/i.test(message)) return `TLS failed (${message})`;
  return message;
}
