/**
 * The fleet CLI as an operator runs it: a child process talking to the real stack's listening API (→ Temporal →
 * worker → emulator), judged by its output, its exit code and what changed in the hubs.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { FleetStatus } from '../../common/fleet';
import { enrollSymmetricKeyDevice } from '../../emulator/simulator/enroll';
import type { SimulatedDevice } from '../../emulator/simulator/device';
import { authed, TEST_KEYS } from '../helpers/credentials';
import { connectedTo, simulate, startStack, uniqueId, type Stack } from '../helpers/stack';

jest.setTimeout(180_000);

const root = path.resolve(__dirname, '../..');
/** No npm start key file in here: without a key, the CLI sends none. */
const emptyDataDir = mkdtempSync(path.join(tmpdir(), 'cli-test-'));

let stack: Stack;
const running: SimulatedDevice[] = [];

beforeAll(async () => {
  stack = await startStack();
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((d) => d.stop()));
});
afterAll(async () => {
  await stack?.stop();
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `npm run cli -- …` the way npm does (tsx), against the stack's API, with the operator's key by default. */
function cli(
  args: string[],
  options: {
    key?: string | null;
    stdin?: string;
    onStdout?: (text: string, child: ReturnType<typeof spawn>) => void;
  } = {},
): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, IOT_LIFECYCLE_API: stack.apiUrl, DATA_DIR: emptyDataDir };
  delete env.IOT_LIFECYCLE_API_KEY;
  delete env.IOT_LIFECYCLE_TOKEN;
  const key = options.key === undefined ? TEST_KEYS.operator : options.key;
  if (key) env.IOT_LIFECYCLE_API_KEY = key;
  const child = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', ...args], { cwd: root, env });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    options.onStdout?.(stdout, child);
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin.end(options.stdin ?? '');
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

/** `n` devices enrolled individually and provisioned to the test hub (then offline unless `online`). */
async function fleetOf(n: number, options: { online?: boolean } = {}): Promise<string[]> {
  const prefix = uniqueId('cli');
  const ids = Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
  const devices: SimulatedDevice[] = [];
  for (const registrationId of ids) {
    const key = await enrollSymmetricKeyDevice(stack.dps, {
      registrationId,
      hubHostName: stack.hosts.test,
      initialTwin: { tags: { stage: 'test' }, properties: { desired: {} } },
    });
    devices.push(
      simulate(stack, {
        registrationId,
        kind: 'symmetricKey',
        attestation: { type: 'symmetricKey', key },
        secret: key,
      }),
    );
  }
  running.push(...devices);
  await Promise.all(devices.map((d) => connectedTo(d, stack.hosts.test)));
  if (!options.online) await Promise.all(devices.map((d) => d.stop()));
  return ids;
}

const statusOf = async (id: string) =>
  (await authed(stack.app, 'viewer').get(`/v1/fleet-operations/${id}`).expect(200)).body as {
    status: string;
    fleet: FleetStatus;
  };

async function until(what: string, probe: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('fleet CLI', () => {
  it('prints a dry run’s plan and exits 0, changing nothing', async () => {
    const ids = await fleetOf(3);
    const before = stack.emulator.counters.snapshot();
    const run = await cli(['fleet', 'start', 'revoke', '--ids', ids.join(','), '--dry-run', '--max-per-minute', '600']);
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(run.stdout).toMatch(/dry run, nothing changed/);
    expect(run.stdout).toMatch(/Devices: +3 \(/);
    expect(run.stdout).toMatch(/Rate: +600 devices\/min/);
    expect(run.stdout).toMatch(/bound by \S+/);
    expect(run.stdout).toMatch(/Duration: +about \d+s/);
    expect(stack.emulator.counters.diff(before)).toEqual([]);
  });

  it('revokes a list read from stdin, shows its progress in log lines, and exits 0 with every device disabled', async () => {
    const ids = await fleetOf(3);
    const run = await cli(
      ['fleet', 'start', 'revoke', '--ids-file', '-', '--reason', 'cli test', '--interval', '0.3'],
      {
        stdin: `# line 3\n${ids.join('\n')}\n\n`,
      },
    );
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^Started fleet revoke \S+; watching/);
    // Not a TTY: plain lines, no bar and no carriage returns.
    expect(run.stdout).not.toMatch(/\r|\[#/);
    expect(run.stdout).toMatch(/3\/3 \(100%\) {2}succeeded 3 {2}failed 0 {2}timed out 0 {2}in flight 0/);
    expect(run.stdout).toMatch(/completed in \d+s: 3 devices, 3 succeeded, 0 failed, 0 timed out, 0 cancelled\n$/);
    for (const deviceId of ids) {
      expect((await stack.registries.test.get(deviceId)).responseBody).toMatchObject({ status: 'disabled' });
    }
  });

  it('exits 2 when a device fails, and lists it with its error', async () => {
    // A promotion of a device DPS has never heard of fails at once (EnrollmentNotFound); the online one moves.
    const [good] = await fleetOf(1, { online: true });
    const missing = uniqueId('no-such-device');
    const run = await cli([
      'fleet',
      'start',
      'promote',
      '--ids',
      `${good},${missing}`,
      '--poll-interval',
      '1s',
      '--interval',
      '0.3',
    ]);
    expect(run.stderr).toBe('');
    expect(run.stdout).toMatch(/completed with failures in \d+s: 2 devices, 1 succeeded, 1 failed/);
    expect(run.stdout).toMatch(new RegExp(`Failed devices:\\n  ${missing}  failed  \\d attempt\\(s\\)  \\w+: .+\\n$`));
    expect(run.code).toBe(2);

    // Retrying the failed devices starts a new operation over exactly the missing one, which fails again.
    const id = /^Started fleet promote (\S+);/.exec(run.stdout)![1];
    const retry = await cli(['fleet', 'retry-failed', id, '--interval', '0.3']);
    expect(retry.stdout).toMatch(new RegExp(`^Started fleet operation \\S+ over the failed devices of ${id}`));
    expect(retry.stdout).toMatch(/completed with failures in \d+s: 1 device, 0 succeeded, 1 failed/);
    expect(retry.code).toBe(2);
  });

  it('pauses, resumes and cancels an operation; Ctrl-C stops only the watching; a cancelled one watches to exit 4', async () => {
    // Offline devices never reconnect: their promotions stay in flight until cancelled.
    const ids = await fleetOf(2);
    const started = await cli([
      'fleet',
      'start',
      'promote',
      '--ids',
      ids.join(','),
      '--device-timeout',
      '10m',
      '--detach',
    ]);
    expect(started.code).toBe(0);
    const id = started.stdout.trim();
    expect(id).toMatch(/^[A-Za-z0-9._:-]+$/);
    expect(started.stderr).toMatch(new RegExp(`Started fleet promote ${id}`));
    await until('in flight', async () => (await statusOf(id)).fleet?.counts.inProgress === 2);

    const watched = await cli(['fleet', 'watch', id, '--interval', '0.3'], {
      onStdout: (text, child) => {
        if (/in flight 2/.test(text) && !child.killed) child.kill('SIGINT');
      },
    });
    expect(watched.code).toBe(130);
    expect(watched.stdout).toMatch(
      new RegExp(`Stopped watching; fleet operation ${id} goes on.\\nWatch it again: .* fleet watch ${id}`),
    );
    expect((await statusOf(id)).status).toBe('running');

    const paused = await cli(['fleet', 'pause', id, '--reason', 'line 3 check']);
    expect(paused).toMatchObject({ code: 0, stderr: '' });
    expect(paused.stdout).toMatch(/^Paused fleet operation .*PAUSED \(line 3 check\)/);
    expect((await statusOf(id)).fleet).toMatchObject({ phase: 'paused', pausedBecause: 'line 3 check' });

    const resumed = await cli(['fleet', 'resume', id]);
    expect(resumed.code).toBe(0);
    expect((await statusOf(id)).fleet.phase).toBe('running');
    // Resuming what is not paused is the operator's mistake (409): exit 1, saying why.
    const again = await cli(['fleet', 'resume', id]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/409 .*\n.*not paused/);

    const cancelled = await cli(['fleet', 'cancel', id, '--force', '--reason', 'changed our minds']);
    expect(cancelled.code).toBe(0);
    expect(cancelled.stdout).toMatch(/^Cancelling fleet operation/);
    const end = await cli(['fleet', 'watch', id, '--interval', '0.3']);
    expect(end.stdout).toMatch(new RegExp(`Fleet promote ${id} cancelled in \\d+s: 2 devices`));
    expect(end.code).toBe(4);
    const status = await cli(['fleet', 'status', id]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`^Fleet operation ${id}: completed, phase cancelled`));
    const list = await cli(['fleet', 'list', '--page-size', '50']);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`^${id}  completed  cancelled`, 'm'));
  });

  it('refuses bad flags with exit 1 and says which flag, before calling the API', async () => {
    const ids = 'dev-1,dev-2';
    const cases: Array<[string[], RegExp]> = [
      [['fleet', 'start', 'revoke', '--ids', ids, '--max-per-minute', 'fast'], /--max-per-minute: .*"fast"/],
      [['fleet', 'start', 'revoke', '--ids', ids, '--bogus'], /Unknown option '--bogus'/],
      [
        ['fleet', 'start', 'promote', '--ids', ids, '--hub-action', 'delete'],
        /--hub-action: not an option of a promote/,
      ],
      [['fleet', 'start', 'revoke'], /name the devices: --ids/],
      [['fleet', 'start', 'revoke', '--ids', ids, '--group', 'g'], /name the devices one way/],
      [['fleet', 'start', 'revoke', '--ids', ids, '--abort-threshold', '10'], /--abort-threshold .* and --abort-min/],
      [['fleet', 'start', 'revoke', '--ids', ids, '--device-timeout', 'soon'], /--device-timeout: a duration/],
      [['fleet', 'watch'], /fleet watch takes one operation id/],
      [['fleet', 'pause', 'x', '--force'], /not an option of fleet pause: --force/],
      [['fleet', 'explode'], /unknown command "explode"/],
    ];
    const runs = await Promise.all(cases.map(([args]) => cli(args, { key: 'not-a-key' })));
    runs.forEach((run, i) => {
      expect({ args: cases[i][0], code: run.code }).toEqual({ args: cases[i][0], code: 1 });
      expect(run.stderr).toMatch(cases[i][1]);
    });
  });

  it('exits 1 with the API’s own issues when it refuses the request (400)', async () => {
    const run = await cli([
      'fleet',
      'start',
      'revoke',
      '--query',
      "SELECT * FROM devices WHERE tags.line = 'L3'",
      '--environment',
      'nowhere',
    ]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      /POST \/v1\/fleet-operations: 400 The request is invalid\n {2}- body\.parameters: unknown environment "nowhere"/,
    );
  });

  it('exits 5 naming the 401 when it has no key, and when the API is unreachable', async () => {
    const run = await cli(['fleet', 'list'], { key: null });
    expect(run.code).toBe(5);
    expect(run.stderr).toMatch(/GET \/v1\/fleet-operations: 401 Authentication is required/);
    expect(run.stderr).toMatch(/credentials used: none/);
    // A port that was free a moment ago: nothing listens there.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const unreachable = await cli(['fleet', 'list', '--api', `http://127.0.0.1:${port}`]);
    expect(unreachable.code).toBe(5);
    expect(unreachable.stderr).toMatch(`cannot reach the API at http://127.0.0.1:${port} (ECONNREFUSED)`);
  });
});
