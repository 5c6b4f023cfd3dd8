import { spawn, spawnSync } from 'node:child_process';
import { closeSync, cpSync, existsSync, mkdirSync, openSync, rmSync } from 'node:fs';
import path from 'node:path';
import { projectRoot } from './settings';

/**
 * The Temporal server and its SQL schema tool, built from source with `go install` at a pinned version into
 * `.tools/temporal-server/v<version>/` (no Docker, no download site needed: only the Go module proxy). The server
 * needs a newer Go than most machines have; the go command fetches that approved toolchain itself (GOTOOLCHAIN).
 * Go's module and build caches are the machine's own (`go env GOMODCACHE GOCACHE`), so a second clone on the same
 * machine builds in about a minute; the first build on a new machine takes several minutes.
 */
export const GO_TOOLCHAIN = 'go1.27.3';

export interface TemporalBinaries {
  version: string;
  server: string;
  sqlTool: string;
  /** schema/postgresql/v12 of the same server version, copied next to the binaries. */
  schemaDir: string;
}

export function temporalToolsDir(version: string): string {
  return path.join(projectRoot, '.tools', 'temporal-server', `v${version}`);
}

export function installedTemporalBinaries(version: string): TemporalBinaries | undefined {
  const dir = temporalToolsDir(version);
  const binaries = {
    version,
    server: path.join(dir, 'server'),
    sqlTool: path.join(dir, 'sql'),
    schemaDir: path.join(dir, 'schema', 'postgresql', 'v12'),
  };
  const complete = [binaries.server, binaries.sqlTool, binaries.schemaDir].every((p) => existsSync(p));
  return complete ? binaries : undefined;
}

/** Reuses the pinned build under .tools/, or builds it (printing why it takes a while). */
export async function ensureTemporalBinaries(
  version: string,
  say: (line: string) => void = console.log,
): Promise<TemporalBinaries> {
  const installed = installedTemporalBinaries(version);
  if (installed) return installed;

  const go = spawnSync('go', ['version'], { encoding: 'utf8' });
  if (go.status !== 0) {
    throw new Error('Go is needed to build the Temporal server (https://go.dev/dl/, any version from 1.21 on)');
  }
  const dir = temporalToolsDir(version);
  mkdirSync(dir, { recursive: true });
  say(
    `Building Temporal server v${version} and its SQL tool from source into ${path.relative(projectRoot, dir)} ` +
      `(${go.stdout.trim()}, toolchain ${GO_TOOLCHAIN} fetched by go). The first build on a machine takes several ` +
      'minutes (7.5 min measured on 2 shared cores); later ones reuse Go’s caches. Output: ' +
      path.relative(projectRoot, path.join(dir, 'build.log')),
  );
  const started = Date.now();
  const env = { ...process.env, GOTOOLCHAIN: GO_TOOLCHAIN, GOBIN: dir };
  const packages = ['cmd/server', 'cmd/tools/sql'].map((p) => `go.temporal.io/server/${p}@v${version}`);
  await run('go', ['install', ...packages], env, path.join(dir, 'build.log'));

  // The schema files ship in the module; keep the ones of this version beside the binaries.
  const modCache = spawnSync('go', ['env', 'GOMODCACHE'], { encoding: 'utf8', env }).stdout.trim();
  const moduleSchema = path.join(modCache, `go.temporal.io/server@v${version}`, 'schema', 'postgresql', 'v12');
  const schemaDir = path.join(dir, 'schema', 'postgresql', 'v12');
  rmSync(schemaDir, { recursive: true, force: true });
  cpSync(moduleSchema, schemaDir, { recursive: true });
  say(`Built Temporal server v${version} in ${Math.round((Date.now() - started) / 1000)} s`);

  const built = installedTemporalBinaries(version);
  if (!built) throw new Error(`the build finished but ${dir} is incomplete`);
  return built;
}

async function run(command: string, args: string[], env: NodeJS.ProcessEnv, logFile: string): Promise<void> {
  const out = openSync(logFile, 'w');
  try {
    const child = spawn(command, args, { env, stdio: ['ignore', out, out] });
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (c) => resolve(c));
    });
    if (code !== 0) throw new Error(`${command} ${args.join(' ')} failed (exit ${code}); see ${logFile}`);
  } finally {
    closeSync(out);
  }
}
