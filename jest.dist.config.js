/**
 * The same suite against the compiled build (`npm run build` first): the tests' imports of product code load
 * dist/, the worker loads dist/workflow-bundle.js, and worker processes start with `node dist/worker/main.js`.
 *   npx jest -c jest.dist.config.js test/e2e test/api test/replay.test.ts
 */
const { existsSync } = require('node:fs');
const path = require('node:path');
const base = require('./jest.config');

if (!existsSync(path.join(__dirname, 'dist', 'workflow-bundle.js'))) {
  throw new Error('no compiled build in dist/: run `npm run build` first');
}
// Read by test/build.test.ts, which fails if the run did not load what it claims.
process.env.IOT_LIFECYCLE_TEST_BUILD = 'dist';

module.exports = { ...base, resolver: '<rootDir>/test/helpers/dist-resolver.js' };
