// jest.dist.config.js: a test's relative import of product code (api, worker, common, …) loads the compiled module
// from dist/ instead of the TypeScript source. Only imports made by test files are redirected; what the compiled
// modules and node_modules import resolves as usual.
'use strict';
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const testDir = path.join(root, 'test') + path.sep;
const dist = path.join(root, 'dist');
const productDirs = new Set(['workflows', 'activities', 'common', 'worker', 'api', 'emulator']);

module.exports = (request, options) => {
  if (request.startsWith('.') && (options.basedir + path.sep).startsWith(testDir)) {
    const relative = path.relative(root, path.resolve(options.basedir, request));
    if (productDirs.has(relative.split(path.sep)[0])) {
      return options.defaultResolver(path.join(dist, relative), options);
    }
  }
  return options.defaultResolver(request, options);
};
