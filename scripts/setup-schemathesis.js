#!/usr/bin/env node
// Puts schemathesis (PyPI) in a project-local virtualenv, .tools/schemathesis, for the contract fuzz test
// (test/contract/fuzz.test.ts): the API fuzzed from its own OpenAPI document. Idempotent; fails loudly, because
// the fuzz test cannot run without it.
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync, rmSync } = require('node:fs');
const path = require('node:path');

const SCHEMATHESIS_VERSION = '4.32.5';
const root = path.resolve(__dirname, '..');
const venv = path.join(root, '.tools', 'schemathesis');
const st = path.join(venv, 'bin', 'st');

function installedVersion() {
  if (!existsSync(st)) return undefined;
  const out = spawnSync(st, ['--version'], { encoding: 'utf8' }).stdout ?? '';
  return /version (\S+)/.exec(out)?.[1];
}

function run(command, args) {
  const result = spawnSync(command, args, {
    stdio: 'inherit',
    env: { ...process.env, PIP_DISABLE_PIP_VERSION_CHECK: '1', PIP_ROOT_USER_ACTION: 'ignore' },
  });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${result.status}`);
}

function main() {
  if (installedVersion() === SCHEMATHESIS_VERSION) return say(`schemathesis ${SCHEMATHESIS_VERSION} at ${st}`);
  const python = ['python3', 'python'].find((p) => spawnSync(p, ['--version']).status === 0);
  if (!python) throw new Error('python3 is needed for the contract fuzz test (schemathesis from PyPI)');
  rmSync(venv, { recursive: true, force: true });
  run(python, ['-m', 'venv', venv]);
  run(path.join(venv, 'bin', 'python'), ['-m', 'pip', 'install', '--quiet', `schemathesis==${SCHEMATHESIS_VERSION}`]);
  if (installedVersion() !== SCHEMATHESIS_VERSION) throw new Error(`schemathesis did not install into ${venv}`);
  say(`installed schemathesis ${SCHEMATHESIS_VERSION} at ${st}`);
}

function say(message) {
  console.log(`[setup-schemathesis] ${message}`);
}

module.exports = { st, SCHEMATHESIS_VERSION };

if (require.main === module) {
  try {
    main();
  } catch (err) {
    console.error(`[setup-schemathesis] ${err.message}`);
    process.exit(1);
  }
}
