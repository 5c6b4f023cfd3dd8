import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import type { WorkflowHandle } from '@temporalio/client';

export const historiesDir = path.join(__dirname, '..', 'histories');

/**
 * With RECORD_HISTORIES=1 the end-to-end tests save their workflows' histories to test/histories/, where the
 * replay tests check every later change of the workflow code against them. Re-record only on purpose.
 */
export async function recordHistory(
  handle: WorkflowHandle,
  name: string,
  options: { keepWorkflowId?: boolean } = {},
): Promise<void> {
  if (process.env.RECORD_HISTORIES !== '1') return;
  const history = await handle.fetchHistory();
  await writeFile(path.join(historiesDir, `${name}.json`), historyToJSON(history));
  if (options.keepWorkflowId) await writeFile(workflowIdFile(name), `${handle.workflowId}\n`);
}

/**
 * Where a history's original workflow id is kept, for a workflow whose commands depend on it (a fleet operation
 * names its chunks after itself): the replay runs under that id instead of the history's name.
 */
export const workflowIdFile = (name: string): string => path.join(historiesDir, `${name}.workflow-id`);
