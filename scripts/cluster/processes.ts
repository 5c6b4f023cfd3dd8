import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';

/**
 * The cluster's processes: each in a process group of its own (so Ctrl-C in the terminal reaches only the
 * orchestrator, which stops them in order, and a signal to the group reaches whatever the entry spawned), output
 * appended to `<dataDir>/logs/<name>.log`, and recorded in `<dataDir>/processes.json` so that a later start can
 * end what an orchestrator killed with -9 left behind.
 */
export interface ManagedProcess {
  name: string;
  pid: number;
  logFile: string;
  /** Resolves when the process has exited (code, or the signal's name). */
  exited: Promise<number | string>;
  isRunning(): boolean;
  /** Sends a signal to the whole process group. */
  signal(signal: NodeJS.Signals): void;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
  /** kill -9 of the group, as a crash; resolves once the process is gone. */
  kill(): Promise<void>;
}

export interface SpawnOptions {
  name: string;
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  cwd?: string;
}

interface Recorded {
  name: string;
  pid: number;
  /** /proc/<pid>/stat start time: tells our process from a later one that got the same pid. */
  startTime: string;
}

export class ProcessTable {
  private readonly processes = new Map<number, ManagedProcess & { startTime: string }>();
  private readonly tableFile: string;
  readonly logDir: string;

  constructor(dataDir: string) {
    this.logDir = path.join(dataDir, 'logs');
    this.tableFile = path.join(dataDir, 'processes.json');
    mkdirSync(this.logDir, { recursive: true });
  }

  spawn(options: SpawnOptions): ManagedProcess {
    const logFile = path.join(this.logDir, `${options.name}.log`);
    const out = openSync(logFile, 'a');
    // Values of secret-bearing flags (a simulator's --group-key) stay out of the log.
    const shown = options.args.map((a, i) => (/key|secret|password/i.test(options.args[i - 1] ?? '') ? '***' : a));
    writeSync(out, `---- ${new Date().toISOString()} ${options.command} ${shown.join(' ')}\n`);
    const child = spawn(options.command, options.args, {
      cwd: options.cwd,
      env: options.env,
      detached: true,
      stdio: ['ignore', out, out],
    });
    closeSync(out);
    if (child.pid === undefined) throw new Error(`could not start ${options.name} (${options.command})`);
    const pid = child.pid;
    const exited = new Promise<number | string>((resolve) => {
      child.once('exit', (code, signal) => resolve(code ?? signal ?? -1));
      child.once('error', () => resolve(-1));
    });
    let running = true;
    void exited.then(() => {
      running = false;
      this.processes.delete(pid);
      this.save();
    });
    const signal = (sig: NodeJS.Signals) => {
      if (running) signalGroup(pid, sig);
    };
    const managed = {
      name: options.name,
      pid,
      logFile,
      exited,
      startTime: processStartTime(pid) ?? '',
      isRunning: () => running,
      signal,
      async stop(graceMs = 15_000) {
        signal('SIGTERM');
        const timer = setTimeout(() => signal('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
        signalGroup(pid, 'SIGKILL'); // anything the entry left in its group (a pgid is not reused while in use)
      },
      async kill() {
        signal('SIGKILL');
        await exited;
      },
    };
    this.processes.set(pid, managed);
    this.save();
    return managed;
  }

  running(): ManagedProcess[] {
    return [...this.processes.values()];
  }

  /** Synchronous last resort (process 'exit'): SIGKILL every group still running. */
  killAllSync(): void {
    for (const p of this.processes.values()) p.signal('SIGKILL');
  }

  /** Ends process groups a previous orchestrator recorded and did not stop (it was killed with -9, say). */
  reapLeftovers(say: (line: string) => void): void {
    let recorded: Recorded[] = [];
    try {
      recorded = JSON.parse(readFileSync(this.tableFile, 'utf8')) as Recorded[];
    } catch {
      return;
    }
    for (const r of recorded) {
      if (r.startTime && processStartTime(r.pid) === r.startTime) {
        say(`ending ${r.name} (pid ${r.pid}) left running by an earlier run`);
        signalGroup(r.pid, 'SIGKILL');
      }
    }
    this.save();
  }

  private save(): void {
    const rows: Recorded[] = this.running().map((p) => ({
      name: p.name,
      pid: p.pid,
      startTime: (p as ManagedProcess & { startTime: string }).startTime,
    }));
    writeFileSync(this.tableFile, JSON.stringify(rows, null, 2));
  }
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

function processStartTime(pid: number): string | undefined {
  try {
    // Field 22 of /proc/<pid>/stat, counted after the parenthesised command name (which may hold spaces).
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Process ids whose command line mentions `needle` (for the "nothing left running" check). */
export function pgrep(needle: string): number[] {
  const result = spawnSync('pgrep', ['-f', needle], { encoding: 'utf8' });
  return result.stdout
    .split('\n')
    .filter(Boolean)
    .map(Number)
    .filter((pid) => pid !== process.pid);
}
