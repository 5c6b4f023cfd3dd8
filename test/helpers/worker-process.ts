import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { entryArgs } from './build';
import { STACK_QUOTAS, type Stack } from './stack';
import { harnessAddress } from './temporal';

/**
 * The project's worker as a process of its own (the build under test), on the stack's task queue and emulator: what
 * a test kills with SIGKILL to prove nothing is lost or repeated.
 */
export async function startWorkerProcess(stack: Stack): Promise<ChildProcess> {
  const dir = await mkdtemp(path.join(tmpdir(), 'iot-lifecycle-'));
  const caFile = path.join(dir, 'ca.pem');
  await writeFile(caFile, stack.emulator.caPem);
  return spawn(process.execPath, entryArgs('worker'), {
    env: {
      PATH: process.env.PATH,
      TEMPORAL_ADDRESS: harnessAddress(),
      TASK_QUEUE: stack.taskQueue,
      AZURE_DPS_CONNECTION_STRING: stack.emulator.connectionStrings.dps,
      AZURE_HUB_CONNECTION_STRINGS: JSON.stringify(stack.emulator.connectionStrings.hubs),
      AZURE_ENDPOINT_ADDRESS: stack.emulator.address,
      AZURE_CA_FILE: caFile,
      // The quotas the in-process worker plans fleet operations with.
      AZURE_QUOTAS: JSON.stringify(STACK_QUOTAS),
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

export async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}
