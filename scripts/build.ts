/**
 * `npm run build`: the production build, run with `node`, not tsx.
 *
 *   dist/                     tsc output of tsconfig.build.json (worker, api, emulator, common, …)
 *   dist/workflow-bundle.js   the workflows bundled once, here, as the worker loads them ({ codePath })
 *
 * `--out-dir <dir>` builds elsewhere (the upgrade drill deploys a second build beside the first). The bundle is
 * made from the same sources tsc compiled, so a worker never runs workflow code other than what was built.
 */
import { spawnSync } from 'node:child_process';
import { rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { bundleWorkflowCode } from '@temporalio/worker';

const root = path.resolve(__dirname, '..');

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'out-dir': { type: 'string' } }, strict: true });
  const outDir = path.resolve(values['out-dir'] ?? path.join(root, 'dist'));
  const started = Date.now();

  rmSync(outDir, { recursive: true, force: true });
  const tsc = spawnSync(
    process.execPath,
    [require.resolve('typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.build.json'), '--outDir', outDir],
    { stdio: 'inherit' },
  );
  if (tsc.status !== 0) throw new Error(`tsc failed (exit ${tsc.status ?? tsc.signal})`);

  const { code } = await bundleWorkflowCode({
    workflowsPath: require.resolve(path.join(root, 'workflows')),
    workflowInterceptorModules: [require.resolve(path.join(root, 'workflows', 'tracing'))],
    logger: { log: noop, trace: noop, debug: noop, info: noop, warn: console.warn, error: console.error },
  });
  const bundlePath = path.join(outDir, 'workflow-bundle.js');
  writeFileSync(bundlePath, code);

  const kib = Math.round(statSync(bundlePath).size / 1024);
  console.log(
    `built ${path.relative(process.cwd(), outDir) || '.'} (workflow bundle ${kib} KiB) in ${elapsed(started)}`,
  );
}

const noop = () => undefined;
const elapsed = (since: number) => `${((Date.now() - since) / 1000).toFixed(1)} s`;

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
