import { z } from 'zod';

/**
 * The API's roles and API key records: part of the configuration (API_KEYS, API_KEYS_FILE), so defined here where
 * common/config.ts can parse them. Each role includes the ones before it: `viewer` reads, `operator` starts and
 * changes operations, `admin` also reinstates devices, runs the larger fleet operations and controls the emulator.
 */
export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** An API key as the server knows it: by the SHA-256 of the key, never the key itself. */
export const ApiKeyEntry = z.strictObject({
  /** Names the key in logs and in what operations record as `requestedBy` (`apiKey:<id>`). */
  id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, '1–64 letters, digits, . _ -'),
  role: z.enum(ROLES),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'the hex SHA-256 of the key (npm run api-key prints it)'),
  /** Who holds it, for people reading the record ("CI pipeline", "Ana Silva"). */
  name: z.string().min(1).max(200).optional(),
});
export type ApiKeyEntry = z.infer<typeof ApiKeyEntry>;

export const ApiKeyEntries = z.array(ApiKeyEntry).superRefine((entries, ctx) => {
  const seen = new Set<string>();
  entries.forEach((entry, index) => {
    if (seen.has(entry.id)) ctx.addIssue({ code: 'custom', path: [index, 'id'], message: `duplicate id ${entry.id}` });
    seen.add(entry.id);
  });
});
