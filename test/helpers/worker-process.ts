import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { entryArgs } from './build';
import { STACK_QUOTAS, type Stack } from './stack';
import { harnessAddress } from './temporal';

/** The environment of a worker process on the stack's task queue and emulator (its CA written to a file). */
export async function workerEnv(stack: Stack): Promise<Record<string, string>> {
  const dir = await mkdtemp(path.join(tmpdir(), 'iot-lifecycle-'));
  const caFile = path.join(dir, 'ca.pem');
  await writeFile(caFile, stack.emulator.caPem);
  return {
    PATH: process.env.PATH ?? '',
    TEMPORAL_ADDRESS: harnessAddress(),
    TASK_QUEUE: stack.taskQueue,
    AZURE_DPS_CONNECTION_STRING: stack.emulator.connectionStrings.dps,
    AZURE_HUB_CONNECTION_STRINGS: JSON.stringify(stack.emulator.connectionStrings.hubs),
    AZURE_ENDPOINT_ADDRESS: stack.emulator.address,
    AZURE_CA_FILE: caFile,
    // The quotas the in-process worker plans fleet operations with.
    AZURE_QUOTAS: JSON.stringify(STACK_QUOTAS),
    LOG_LEVEL: 'warn',
  };
}

/**
 * The project's worker as a process of its own (the build under test), on the stack's task queue and emulator: what
 * a test kills with SIGKILL to prove nothing is lost or repeated.
 */
export async function startWorkerProcess(stack: Stack): Promise<ChildProcess> {
  return spawn(process.execPath, entryArgs('worker'), {
    env: await workerEnv(stack),
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

/** A product entry (the build under test) whose every output line, stdout and stderr, the test reads. */
export interface LoggedProcess {
  child: ChildProcess;
  /** Every line written so far, in order. */
  lines: string[];
  /** Resolves with the first line (already written or to come) that `match`es. */
  waitForLine(match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
}

export function startLoggedProcess(entry: 'worker' | 'api', env: Record<string, string>): LoggedProcess {
  const child = spawn(process.execPath, entryArgs(entry), { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const waiters = new Set<(line: string) => void>();
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => {
      lines.push(line);
      for (const waiter of waiters) waiter(line);
    });
  }
  return {
    child,
    lines,
    waitForLine(match, timeoutMs = 60_000) {
      const seen = lines.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`${entry}: no matching line within ${timeoutMs} ms; output:\n${lines.join('\n')}`));
        }, timeoutMs);
        const waiter = (line: string) => {
          if (!match(line)) return;
          clearTimeout(timer);
          waiters.delete(waiter);
          resolve(line);
        };
        waiters.add(waiter);
        child.once('exit', (code, signal) => {
          if (!waiters.has(waiter)) return;
          clearTimeout(timer);
          waiters.delete(waiter);
          reject(new Error(`${entry} exited (${code ?? signal}) before a matching line; output:\n${lines.join('\n')}`));
        });
      });
    },
  };
}

/** SIGTERM, so that the process drains and flushes (its traces), then SIGKILL if it has not exited in `graceMs`. */
export async function stopGracefully(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

export async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}
