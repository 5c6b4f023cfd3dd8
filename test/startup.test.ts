import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { ConfigError } from '../common/config';
import { freePort } from '../common/temporal-server';
import { explainStartupFailure, StartupError } from '../common/startup';

const root = path.resolve(__dirname, '..');
const tsx = path.join(root, 'node_modules', '.bin', 'tsx');

/** Runs an entry point as `npm run …` would, with only the given settings, and collects how it ends. */
function run(entry: string, env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(tsx, [entry], {
      cwd: root,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'silent', ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

describe('start-up failures say what is wrong and which setting fixes it', () => {
  it('npm run worker without a reachable Temporal server names TEMPORAL_ADDRESS, without a transport stack', async () => {
    const port = await freePort();
    const { code, stderr } = await run('worker/main.ts', { TEMPORAL_PORT: String(port) });
    expect(code).toBe(1);
    expect(stderr).toContain(`Cannot reach the Temporal server at 127.0.0.1:${port}: connection refused`);
    expect(stderr).toContain('set TEMPORAL_ADDRESS=host:port');
    expect(stderr).not.toMatch(/TransportError|tonic|^\s+at /m);
  });

  it('npm run api on a port in use names API_PORT', async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const { port } = taken.address() as net.AddressInfo;
    try {
      const { code, stderr } = await run('api/main.ts', { API_PORT: String(port) });
      expect(code).toBe(1);
      expect(stderr).toContain(`Port ${port} (127.0.0.1:${port}) is already in use`);
      expect(stderr).toContain('set API_PORT to a free port');
      expect(stderr).not.toMatch(/^\s+at /m);
    } finally {
      taken.close();
    }
  });

  it('names the setting of any process by the port or host it failed on', () => {
    const inUse = Object.assign(new Error('listen EADDRINUSE'), { code: 'EADDRINUSE', port: 8443, address: '0.0.0.0' });
    const settings = { EMULATOR_HTTPS_PORT: 8443, EMULATOR_MQTT_PORT: 8883, EMULATOR_HOST: '10.9.9.9' };
    expect(explainStartupFailure(inUse, settings)).toContain('set EMULATOR_HTTPS_PORT to a free port');
    const noAddress = Object.assign(new Error('listen EADDRNOTAVAIL'), {
      code: 'EADDRNOTAVAIL',
      port: 8883,
      address: '10.9.9.9',
    });
    expect(explainStartupFailure(noAddress, settings)).toContain('set EMULATOR_HOST');
    expect(explainStartupFailure(new ConfigError(['API_PORT: too big']), settings)).toContain('API_PORT: too big');
    expect(explainStartupFailure(new StartupError('said plainly'))).toBe('said plainly');
  });
});
