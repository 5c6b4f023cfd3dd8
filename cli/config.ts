import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { LOCAL_KEY_FILES } from '../common/secret-file';

/**
 * The CLI's environment, parsed once at start (nothing else reads `process.env`), and how a flag, a variable or
 * `npm start`'s local key file becomes the credentials of a request.
 */

export const CliEnv = z.object({
  IOT_LIFECYCLE_API: z.url().default('http://127.0.0.1:3000'),
  IOT_LIFECYCLE_API_KEY: z.string().min(1).optional(),
  IOT_LIFECYCLE_TOKEN: z.string().min(1).optional(),
  /** `npm start`'s data dir, relative to the project (as `npm start` resolves it). */
  DATA_DIR: z.string().min(1).default('.data'),
});
export type CliEnv = z.infer<typeof CliEnv>;

/** The project root: cli/ in the sources, dist/cli/ in the build (whose data dir is the project's too). */
const projectRoot = path.resolve(__dirname, path.basename(path.dirname(__dirname)) === 'dist' ? '../..' : '..');

export interface Credentials {
  headers: Record<string, string>;
  /** Where they came from, for messages (never the secret itself). */
  source: string;
}

/**
 * An API key or bearer token: the flag, then the variable, then `npm start`'s local operator key. None is not an
 * error here: the API says 401, and the CLI reports that.
 */
export function credentialsFrom(
  flags: { apiKey?: string; token?: string; keyFile?: string },
  env: CliEnv,
): Credentials {
  if (flags.apiKey) return { headers: { 'x-api-key': flags.apiKey }, source: '--api-key' };
  if (flags.token) return { headers: { authorization: `Bearer ${flags.token}` }, source: '--token' };
  if (flags.keyFile) return { headers: { 'x-api-key': readKeyFile(flags.keyFile, true)! }, source: flags.keyFile };
  if (env.IOT_LIFECYCLE_API_KEY) {
    return { headers: { 'x-api-key': env.IOT_LIFECYCLE_API_KEY }, source: 'IOT_LIFECYCLE_API_KEY' };
  }
  if (env.IOT_LIFECYCLE_TOKEN) {
    return { headers: { authorization: `Bearer ${env.IOT_LIFECYCLE_TOKEN}` }, source: 'IOT_LIFECYCLE_TOKEN' };
  }
  const local = path.resolve(projectRoot, env.DATA_DIR, LOCAL_KEY_FILES.operator);
  const key = readKeyFile(local, false);
  if (key) return { headers: { 'x-api-key': key }, source: path.relative(process.cwd(), local) || local };
  return {
    headers: {},
    source: `none (no --api-key, --token, IOT_LIFECYCLE_API_KEY, IOT_LIFECYCLE_TOKEN or ${path.join(env.DATA_DIR, LOCAL_KEY_FILES.operator)})`,
  };
}

export class UsageError extends Error {
  override name = 'UsageError';
}

function readKeyFile(file: string, required: boolean): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new UsageError(`cannot read the key file ${file}: ${(err as Error).message}`);
  }
}
