/**
 * `npm start` stops cleanly on Ctrl-C in every phase. A terminal's Ctrl-C sends SIGINT to the whole foreground
 * process group (npm, sh, node; the Temporal server runs in its own group), so the test starts `npm start` as a
 * group of its own and signals the group, then looks for any process left: the group's, and the Temporal server's.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../common/temporal-server';

jest.setTimeout(180_000);

const root = path.join(__dirname, '..', '..');

interface Started {
  child: ChildProcess;
  pgid: number;
  dataDir: string;
  apiUrl: string;
  output: () => string;
}

async function npmStart(): Promise<Started> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'iot-start-'));
  const ports = {
    API_PORT: await freePort(),
    TEMPORAL_PORT: await freePort(),
    TEMPORAL_UI_PORT: await freePort(),
    EMULATOR_HTTPS_PORT: await freePort(),
    EMULATOR_MQTT_PORT: await freePort(),
    EMULATOR_CONTROL_PORT: await freePort(),
  };
  const child = spawn('npm', ['start'], {
    cwd: root,
    detached: true, // its own process group, as a terminal's foreground job
    env: {
      ...process.env,
      ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])),
      DATA_DIR: dataDir,
      LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return {
    child,
    pgid: child.pid!,
    dataDir,
    apiUrl: `http://127.0.0.1:${ports.API_PORT}`,
    output: () => output,
  };
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Processes of the group, and any process whose command line names the run's data dir (the Temporal server). */
function leftovers(started: Started): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const pgid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (pgid === started.pgid || cmdline.includes(started.dataDir)) found.push(`${pid}: ${cmdline.trim()}`);
    } catch {
      // Gone while looking.
    }
  }
  return found;
}

async function expectAllGoneWithin(started: Started, ms: number): Promise<number> {
  const t0 = Date.now();
  await until('every process to exit', () => leftovers(started).length === 0, ms).catch(() => {
    throw new Error(
      `left after ${ms} ms:\n${leftovers(started).join('\n')}\n--- output ---\n${started.output().slice(-3000)}`,
    );
  });
  return Date.now() - t0;
}

/** The operator key npm start made for this run's data dir. */
function localOperatorKey(started: Started): string {
  const file = path.join(started.dataDir, 'local-operator.key');
  expect(statSync(file).mode & 0o777).toBe(0o600);
  return readFileSync(file, 'utf8').trim();
}

/** The sum of every counter and histogram count of the Temporal SDK (`temporal_*`) in a Prometheus text. */
function temporalCounts(text: string): number {
  return [...text.matchAll(/^temporal_\w*(?:_total|_count)(?:\{[^}]*\})? (\d+(?:\.\d+)?)$/gm)].reduce(
    (sum, m) => sum + Number(m[1]),
    0,
  );
}

/** The first value a Prometheus text has for `pattern` (its group 1), or 0. */
function sample(text: string, pattern: RegExp): number {
  return Number(pattern.exec(text)?.[1] ?? 0);
}

const ready = (started: Started) =>
  until('npm start to be ready', () => started.output().includes('Press Ctrl-C to stop.'), 90_000);
const sigint = (started: Started) => process.kill(-started.pgid, 'SIGINT');

const runs: Started[] = [];
afterEach(() => {
  for (const run of runs.splice(0)) {
    run.child.stdout?.destroy();
    run.child.stderr?.destroy();
    for (const line of leftovers(run)) process.kill(Number(line.split(':')[0]), 'SIGKILL');
    rmSync(run.dataDir, { recursive: true, force: true });
  }
});

describe('npm start and Ctrl-C', () => {
  it('stops within 10 s when interrupted while starting', async () => {
    const started = await npmStart();
    runs.push(started);
    // The dev server is up and the rest is still starting (bundling, emulator, devices).
    await until('the dev server to start', () => leftovers(started).some((l) => l.includes('start-dev')), 60_000);
    sigint(started);
    expect(await expectAllGoneWithin(started, 10_000)).toBeLessThan(10_000);
    expect(started.output()).not.toMatch(/Press Ctrl-C to stop/);
  });

  it('stops within 10 s when idle, in order, with the Temporal server last', async () => {
    const started = await npmStart();
    runs.push(started);
    await ready(started);
    await new Promise((r) => setTimeout(r, 3_000));
    sigint(started);
    await expectAllGoneWithin(started, 10_000);
    const out = started.output();
    expect(out).toMatch(/"msg":"stopped"/); // the graceful path, not the watchdog
    expect(out).not.toMatch(/second signal/);
    expect(out).not.toMatch(/DEADLINE_EXCEEDED|error while stopping/i);
    // No simulated device re-provisions once stopping has begun.
    const afterStop = out.slice(out.indexOf('"msg":"stopping'));
    expect(afterStop).not.toMatch(/"type":"provisioned"/);
  });

  it('stops within 10 s while a promotion is in flight', async () => {
    const started = await npmStart();
    runs.push(started);
    await ready(started);
    const device = /^ {4}(demo-device-\d): test$/m.exec(started.output())?.[1];
    expect(device).toBeDefined();
    const res = await fetch(`${started.apiUrl}/v1/promotions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': localOperatorKey(started) },
      body: JSON.stringify({ registrationId: device }),
    });
    expect(res.status).toBe(202);
    await new Promise((r) => setTimeout(r, 500));
    sigint(started);
    await expectAllGoneWithin(started, 10_000);
  });

  it('exits at once on a second Ctrl-C, killing the Temporal server too', async () => {
    const started = await npmStart();
    runs.push(started);
    await ready(started);
    sigint(started);
    await new Promise((r) => setTimeout(r, 700));
    sigint(started);
    await expectAllGoneWithin(started, 3_000);
  });
});

describe('the quick start', () => {
  it('prints curls that work with the local operator key, guards the control API with its token, logs no secret', async () => {
    const started = await npmStart();
    runs.push(started);
    await ready(started);
    const out = started.output();
    const banner = out.slice(out.lastIndexOf('iot-lifecycle is running'));

    // The printed curls, run as a person would paste them (they read the key from its 0600 file).
    const curls = banner
      .split('\n')
      .join('\n')
      .replace(/\\\n\s*/g, ' ')
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line.startsWith('curl '));
    expect(curls.length).toBeGreaterThanOrEqual(2);
    const [post, get] = curls;
    const shell = (command: string) => spawnSync('sh', ['-c', command], { encoding: 'utf8', timeout: 30_000 });
    const metrics = async () => {
      const res = await fetch(`${started.apiUrl}/metrics`, { headers: { 'x-api-key': localOperatorKey(started) } });
      expect(res.status).toBe(200);
      return res.text();
    };
    const before = await metrics();
    expect(shell(post).stdout).toMatch(/^HTTP\/1\.1 202/);
    const status = JSON.parse(shell(get).stdout) as { workflowId: string; status: string };
    expect(status).toMatchObject({ workflowId: expect.stringMatching(/^promote\/demo-device-\d$/) });

    // /metrics: the API's own and the worker's Temporal metrics, moving as the promotion runs.
    expect((await fetch(`${started.apiUrl}/metrics`)).status).toBe(401);
    const started202 = (text: string) =>
      sample(text, /^iot_lifecycle_http_requests_total\{method="POST",route="\/v1\/promotions",status="202"\} (\d+)/m);
    expect(started202(before)).toBe(0);
    let after = '';
    await until(
      'the promotion to show in the Temporal metrics',
      async () => {
        after = await metrics();
        return (
          sample(after, /^iot_lifecycle_operations_started_total\{[^}]*kind="promote"[^}]*\} (\d+)/m) >= 1 &&
          sample(after, /^iot_lifecycle_azure_calls_total\{[^}]*\} (\d+)/m) >= 1
        );
      },
      30_000,
    );
    expect(started202(after)).toBe(1);
    // The SDK's own counters (polls, tasks, activities, requests) moved too.
    expect(temporalCounts(after)).toBeGreaterThan(temporalCounts(before));
    expect(sample(after, /^iot_lifecycle_azure_calls_total\{[^}]*\} (\d+)/m)).toBeGreaterThan(0);
    // Without the key: 401.
    expect((await fetch(`${started.apiUrl}/v1/promotions`)).status).toBe(401);

    // The control API: its token (printed as a header to paste) or nothing.
    const controlUrl = /Emulator control API: (\S+)/.exec(banner)![1];
    const controlHeader = /Emulator control API: \S+ {2}\(-H "(Authorization: Bearer \$\(cat [^)]+\))"\)/.exec(
      banner,
    )![1];
    expect((await fetch(`${controlUrl}/dps`)).status).toBe(401);
    expect(shell(`curl -s -o /dev/null -w '%{http_code}' -H "${controlHeader}" ${controlUrl}/dps`).stdout).toBe('200');

    // No secret in anything npm start printed: the key, the token, the emulator's policy keys.
    const key = localOperatorKey(started);
    const token = readFileSync(path.join(started.dataDir, 'emulator', 'control-token'), 'utf8').trim();
    const state = readFileSync(path.join(started.dataDir, 'emulator', 'state.json'), 'utf8');
    const policyKeys = [...state.matchAll(/"primaryKey":\s*"([^"]+)"/g)].map((m) => m[1]);
    expect(policyKeys.length).toBeGreaterThan(0);
    const printed = started.output();
    for (const secret of [key, token, ...policyKeys]) expect(printed).not.toContain(secret);
  });
});
