import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import type { WorkflowHandle } from '@temporalio/client';

export const historiesDir = path.join(__dirname, '..', 'histories');

/**
 * With RECORD_HISTORIES=1 the end-to-end tests save their workflows' histories to test/histories/, where the
 * replay tests check every later change of the workflow code against them. Re-record only on purpose.
 */
export async function recordHistory(handle: WorkflowHandle, name: string): Promise<void> {
  if (process.env.RECORD_HISTORIES !== '1') return;
  const history = await handle.fetchHistory();
  await writeFile(path.join(historiesDir, `${name}.json`), historyToJSON(history));
}
