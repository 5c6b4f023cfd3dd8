/**
 * The simulator's command line (emulator/simulator/main.ts), run as a process against an in-process emulator: help,
 * usage errors without stack traces, `enroll` through the emulated DPS, keys from a file or the environment,
 * never from the command line, and devices over MQTT or HTTPS.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { configureDps } from '../../emulator/dps/runtime';
import { startEmulator, type RunningEmulator } from '../../emulator';

const root = path.resolve(__dirname, '../..');
const tsx = path.join(root, 'node_modules/.bin/tsx');
const cli = path.join(root, 'emulator/simulator/main.ts');

let emulator: RunningEmulator;
let dir: string;
let caFile: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  emulator = await startEmulator();
  configureDps(emulator.state.dps, { retryAfterSeconds: 0 });
  dir = mkdtempSync(path.join(os.tmpdir(), 'simulator-cli-'));
  caFile = path.join(dir, 'ca.pem');
  writeFileSync(caFile, emulator.caPem);
});

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
});

afterAll(async () => {
  await emulator.stop();
  rmSync(dir, { recursive: true, force: true });
});

function start(args: string[], env: Record<string, string> = {}): ChildProcess {
  const child = spawn(tsx, [cli, ...args], { cwd: root, env: { ...process.env, ...env } });
  children.push(child);
  return child;
}

/** Runs the CLI to its end. */
function run(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = start(args, env);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr })));
}

/** Resolves with the output once a line matches; the process keeps running. */
function untilOutput(child: ChildProcess, pattern: RegExp, timeoutMs = 30_000): Promise<string> {
  let seen = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${pattern} in: ${seen}`)), timeoutMs);
    child.stdout!.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      if (pattern.test(seen)) {
        clearTimeout(timer);
        resolve(seen);
      }
    });
  });
}

function emulatorFlags(): string[] {
  return ['--emulator', emulator.address, '--mqtt', `127.0.0.1:${emulator.mqttPort}`, '--ca-file', caFile];
}

describe('simulator command line', () => {
  it('prints its usage with --help, how to enroll included', async () => {
    const { code, stdout, stderr } = await run(['--help']);
    expect(code).toBe(0);
    expect(stderr).toBe('');
    expect(stdout).toMatch(/^Usage:/m);
    expect(stdout).toMatch(/enroll --registration-id/);
    expect(stdout).toMatch(/SIMULATOR_SYMMETRIC_KEY/);
  });

  it('answers a bad command line with one line and exit code 2, refusing keys on the command line', async () => {
    for (const args of [
      ['--frobnicate'],
      ['--registration-id', 'x', '--symmetric-key', 'c2VjcmV0'],
      ['--count', '2'],
    ]) {
      const { code, stderr } = await run(args);
      expect(code).toBe(2);
      expect(stderr).toMatch(/^simulator: .+\nRun with --help for usage\.\n$/);
      expect(stderr).not.toMatch(/\n\s+at /);
    }
  });

  it('enrolls a device through the emulated DPS into a 0600 key file, and runs it with that file', async () => {
    const keyFile = path.join(dir, 'cli-1.key');
    const enrolled = await run(
      [
        'enroll',
        '--registration-id',
        'cli-1',
        '--symmetric-key-file',
        keyFile,
        '--control',
        emulator.controlUrl!,
        ...emulatorFlags(),
      ],
      { EMULATOR_CONTROL_TOKEN: emulator.controlToken },
    );
    expect(enrolled).toMatchObject({ code: 0, stderr: '' });
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    const stored = emulator.state.dps.enrollments.get('cli-1')!.attestation.symmetricKey!.primaryKey;
    expect(readFileSync(keyFile, 'utf8').trim()).toBe(stored);
    expect(enrolled.stdout).not.toContain(stored);
    expect(emulator.counters.get({ surface: 'dps', operation: 'enrollmentCreate', id: 'cli-1' })).toBe(1);

    const device = start(['--registration-id', 'cli-1', '--symmetric-key-file', keyFile, ...emulatorFlags()]);
    expect(device.spawnargs.join(' ')).not.toContain(stored);
    await untilOutput(device, /cli-1 connected/);
    const exited = new Promise<number | null>((resolve) => device.on('exit', (code) => resolve(code)));
    device.kill('SIGINT');
    expect(await exited).toBe(0);
  });

  it('runs a device over HTTPS with --hub-transport https, and refuses what HTTPS cannot do', async () => {
    const keyFile = path.join(dir, 'cli-https.key');
    const enrolled = await run(
      [
        'enroll',
        '--registration-id',
        'cli-https',
        '--symmetric-key-file',
        keyFile,
        '--control',
        emulator.controlUrl!,
        ...emulatorFlags(),
      ],
      { EMULATOR_CONTROL_TOKEN: emulator.controlToken },
    );
    expect(enrolled).toMatchObject({ code: 0, stderr: '' });

    const device = start([
      '--registration-id',
      'cli-https',
      '--symmetric-key-file',
      keyFile,
      '--hub-transport',
      'https',
      '--telemetry-interval',
      '200',
      ...emulatorFlags(),
    ]);
    await untilOutput(device, /cli-https active/);
    const onHub = emulator.state.hubs.get('test')!.devices.get('cli-https')!;
    expect(onHub.connectionState).toBe('Disconnected');
    expect(onHub.lastActivityTime).not.toBe('0001-01-01T00:00:00Z');
    const exited = new Promise<number | null>((resolve) => device.on('exit', (code) => resolve(code)));
    device.kill('SIGINT');
    expect(await exited).toBe(0);

    const env = { SIMULATOR_SYMMETRIC_KEY: 'a2V5' };
    const https = ['--registration-id', 'x', '--hub-transport', 'https'];
    const withTwin = await run([...https, '--report', '{"a":1}'], env);
    expect(withTwin.code).toBe(2);
    expect(withTwin.stderr).toMatch(/--report needs a twin/);
    const silent = await run([...https, '--telemetry-interval', '0'], env);
    expect(silent.code).toBe(2);
    expect(silent.stderr).toMatch(/--telemetry-interval above 0/);
  });

  it('enrolls a group, printing its key for the environment, and runs a fleet with SIMULATOR_GROUP_KEY', async () => {
    const enrolled = await run(
      ['enroll', '--group', 'cli-group', '--control', emulator.controlUrl!, ...emulatorFlags()],
      { EMULATOR_CONTROL_TOKEN: emulator.controlToken },
    );
    expect(enrolled.code).toBe(0);
    const groupKey = /SIMULATOR_GROUP_KEY=(\S+)/.exec(enrolled.stdout)![1];
    expect(groupKey).toBe(emulator.state.dps.enrollmentGroups.get('cli-group')!.attestation.symmetricKey!.primaryKey);

    const fleet = start(['--count', '2', '--prefix', 'cli-fleet', ...emulatorFlags()], {
      SIMULATOR_GROUP_KEY: groupKey,
    });
    await untilOutput(
      fleet,
      /cli-fleet-1 connected[\s\S]*cli-fleet-2 connected|cli-fleet-2 connected[\s\S]*cli-fleet-1 connected/,
    );
    const exited = new Promise<number | null>((resolve) => fleet.on('exit', (code) => resolve(code)));
    fleet.kill('SIGINT');
    expect(await exited).toBe(0);
  });
});
