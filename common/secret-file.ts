import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** The files under DATA_DIR where `npm start` keeps its local API keys (the CLI reads the operator's). */
export const LOCAL_KEY_FILES = { operator: 'local-operator.key', admin: 'local-admin.key' } as const;

/**
 * A secret kept in a file of its own (mode 0600, its folder 0700), made on first use: `npm start`'s local operator
 * key and the emulator's control token. The same secret on every start, so printed curls and scripts keep working.
 */
export function ensureSecretFile(file: string, make: () => string): string {
  try {
    const existing = readFileSync(file, 'utf8').trim();
    if (existing) {
      chmodSync(file, 0o600);
      return existing;
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const secret = make();
  // 'wx': two processes starting at once do not both write; the loser reads the winner's.
  try {
    writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return readFileSync(file, 'utf8').trim();
    throw err;
  }
  return secret;
}
