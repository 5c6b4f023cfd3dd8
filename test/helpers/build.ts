import path from 'node:path';
import { prebuiltBundlePath, prebuiltWorkflowBundle } from '../../worker/worker';

/** True when this run tests the compiled build (jest.dist.config.js resolves product modules to dist/). */
export function testsCompiledBuild(): boolean {
  return prebuiltWorkflowBundle() !== undefined;
}

/** Node arguments that start a product entry of the build under test: `dist/<entry>/main.js`, or the source by tsx. */
export function entryArgs(entry: 'worker' | 'api' | 'emulator'): string[] {
  if (testsCompiledBuild()) return [path.join(path.dirname(prebuiltBundlePath), entry, 'main.js')];
  return ['--import', 'tsx', path.join(__dirname, '..', '..', entry, 'main.ts')];
}
