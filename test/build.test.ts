import { existsSync } from 'node:fs';
import path from 'node:path';
import { createApp } from '../api/app';
import { prebuiltWorkflowBundle } from '../worker/worker';
import { entryArgs, testsCompiledBuild } from './helpers/build';
import { HARNESS_ENV } from './helpers/harness-env';

const compiled = process.env[HARNESS_ENV.build] === 'dist';
const dist = path.join(__dirname, '..', 'dist') + path.sep;

describe(compiled ? 'the compiled build under test' : 'the TypeScript sources under test', () => {
  it('loads the product modules the run claims to test', () => {
    for (const modulePath of [require.resolve('../worker/worker'), require.resolve('../api/app')]) {
      expect(modulePath.startsWith(dist)).toBe(compiled);
      expect(modulePath.endsWith(compiled ? '.js' : '.ts')).toBe(true);
    }
    expect(typeof createApp).toBe('function');
  });

  it(compiled ? 'gives the worker the prebuilt workflow bundle' : 'bundles the workflows at worker start', () => {
    expect(testsCompiledBuild()).toBe(compiled);
    const bundle = prebuiltWorkflowBundle();
    if (compiled) expect(bundle?.codePath).toBe(path.join(dist, 'workflow-bundle.js'));
    else expect(bundle).toBeUndefined();
  });

  it('starts worker processes from the same build', () => {
    const args = entryArgs('worker');
    const script = args[args.length - 1];
    expect(existsSync(script)).toBe(true);
    expect(script.startsWith(dist)).toBe(compiled);
  });
});
