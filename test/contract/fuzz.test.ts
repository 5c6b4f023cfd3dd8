import { spawn, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { TEST_KEYS } from '../helpers/credentials';
import { startStack, type Stack } from '../helpers/stack';
import pino from 'pino';
import { createLogger } from '../../common/logger';

/**
 * Property-based contract test: schemathesis (PyPI, in .tools/schemathesis; scripts/setup-schemathesis.js) reads
 * the API's own /openapi.json and fuzzes every operation of the real stack (dev server, emulator, worker, API with
 * its webhook secret): examples, coverage, fuzzing and stateful phases, every check. Any 5xx or any answer the
 * document does not describe fails it. FUZZ_MAX_EXAMPLES sets the examples per operation (100).
 */

const root = path.resolve(__dirname, '..', '..');
const setup = path.join(root, 'scripts', 'setup-schemathesis.js');
const CONFIG = path.join(__dirname, 'schemathesis.toml');
/** The whole output of the last run (a failure's reproduction can hold a body of megabytes). */
const LOG = path.join(root, '.data', 'contract', 'schemathesis.log');
const API_LOG = path.join(root, '.data', 'contract', 'api.log');
/** Hard bound on the run, whatever schemathesis does (it takes about 90 s here, alone on 2 cores). */
const RUN_LIMIT_MS = 300_000;

describe('contract: the API fuzzed from its own OpenAPI document', () => {
  let stack: Stack;
  let st: string;
  beforeAll(async () => {
    // Installs the pinned schemathesis on first use (about 20 s); CI runs the same script before the tests.
    const installed = spawnSync(process.execPath, [setup], { encoding: 'utf8', timeout: 300_000 });
    if (installed.status !== 0) throw new Error(`schemathesis setup failed:\n${installed.stdout}${installed.stderr}`);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    st = (require(setup) as { st: string }).st;
    // The API's log (each request with its status and duration; the cause of any 5xx) goes to a file beside
    // schemathesis's log, new for each run.
    await mkdir(path.dirname(API_LOG), { recursive: true });
    await rm(API_LOG, { force: true });
    stack = await startStack({
      log: createLogger('info', 'iot-lifecycle-api', pino.destination({ dest: API_LOG, sync: true })),
    });
  }, 360_000);
  afterAll(() => stack?.stop());

  it(
    'answers no 5xx and nothing the document does not describe',
    async () => {
      const args = [
        ...['--config-file', CONFIG, 'run', `${stack.apiUrl}/openapi.json`],
        ...['--checks', 'all', '--max-examples', process.env.FUZZ_MAX_EXAMPLES ?? '100'],
        // One worker: CPython 3.11's ast module is not thread-safe (gh-106905), and hypothesis parses lambdas
        // with it while reporting, which made a two-worker run fail with "AST constructor recursion depth mismatch".
        // The request timeout is above the API's own bound on a request that waits for workers (20 s, then 503).
        ...['--workers', '1', '--request-timeout', '30', '--generation-database', 'none', '--no-color'],
      ];
      // Its working directory takes its caches (.schemathesis/), kept out of the repository.
      const cwd = await mkdtemp(path.join(os.tmpdir(), 'schemathesis-'));
      const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
        const env = { ...process.env, EVENT_GRID_SECRET: stack.eventGridSecret, IOT_API_KEY: TEST_KEYS.admin };
        const child = spawn(st, args, { cwd, env });
        let text = '';
        child.stdout.on('data', (chunk: Buffer) => (text += chunk.toString()));
        child.stderr.on('data', (chunk: Buffer) => (text += chunk.toString()));
        const timer = setTimeout(() => child.kill('SIGKILL'), RUN_LIMIT_MS);
        child.once('error', reject);
        child.once('exit', (exitCode) => {
          clearTimeout(timer);
          resolve({ code: exitCode, output: text });
        });
      });
      await rm(cwd, { recursive: true, force: true });
      await mkdir(path.dirname(LOG), { recursive: true });
      await writeFile(LOG, output);
      // schemathesis prints each failure with a curl line to reproduce it (`st replay <id>` needs the cache, so
      // the curl line is what to keep), and the seed of the run.
      if (code !== 0) {
        const shown = output
          .split('\n')
          .map((line) => (line.length > 2_000 ? `${line.slice(0, 2_000)} … (cut; whole line in ${LOG})` : line))
          .join('\n');
        // The failures first: a CI log that keeps only the head and the tail of a long output still shows them.
        const failures = /=+ FAILURES =+\n([\s\S]*?)\n=+ (?:WARNINGS|SUMMARY) =+/.exec(shown)?.[1];
        throw new Error(
          `schemathesis exited with ${code ?? 'a kill after the time limit'}` +
            (failures ? `; its failures:\n${failures}\n\nThe whole run:\n${shown}` : `:\n${shown}`),
        );
      }
      const summary = /(\d+) generated, (\d+) passed/.exec(output);
      expect(summary).not.toBeNull();
      expect(Number(summary![1])).toBeGreaterThan(0);
    },
    RUN_LIMIT_MS + 30_000,
  );
});
