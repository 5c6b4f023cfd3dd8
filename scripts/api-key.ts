import { parseArgs } from 'node:util';
import { ROLES, type Role } from '../common/access';
import { generateApiKey, hashApiKey } from '../api/auth/api-keys';

/**
 * `npm run api-key -- --id ci --role operator [--name "CI pipeline"]`: makes an API key. The key goes to stdout once
 * (give it to its holder); stderr shows the entry for API_KEYS or API_KEYS_FILE, which holds only its SHA-256.
 */
function main(): void {
  const { values } = parseArgs({
    options: { id: { type: 'string' }, role: { type: 'string' }, name: { type: 'string' } },
    strict: true,
  });
  const role = values.role as Role | undefined;
  if (!values.id || !/^[A-Za-z0-9._-]{1,64}$/.test(values.id) || !role || !ROLES.includes(role)) {
    console.error(
      `usage: npm run api-key -- --id <1-64 of A-Z a-z 0-9 . _ -> --role <${ROLES.join('|')}> [--name <holder>]`,
    );
    process.exit(2);
  }
  const key = generateApiKey();
  const entry = { id: values.id, role, sha256: hashApiKey(key), ...(values.name ? { name: values.name } : {}) };
  console.error(
    `Add this entry to API_KEYS or API_KEYS_FILE (it holds the key's hash only):\n${JSON.stringify(entry)}`,
  );
  console.log(key);
}

main();
