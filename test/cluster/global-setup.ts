import { existsSync } from 'node:fs';
import path from 'node:path';
import { requireRoot } from '../../scripts/cluster/postgres';
import { projectRoot, TEMPORAL_SERVER_VERSION } from '../../scripts/cluster/settings';
import { ensureTemporalBinaries } from '../../scripts/cluster/temporal-binary';

/**
 * Before any drill file: the Temporal server binary (built once per machine: minutes the first time, see the
 * README) and, unless CLUSTER_BUILD=source, the compiled build the drills run.
 */
export default async function globalSetup(): Promise<void> {
  requireRoot();
  await ensureTemporalBinaries(TEMPORAL_SERVER_VERSION, (line) => console.log(`\n[cluster drills] ${line}`));
  if (process.env.CLUSTER_BUILD !== 'source' && !existsSync(path.join(projectRoot, 'dist', 'workflow-bundle.js'))) {
    throw new Error('the cluster drills run the compiled build: npm run build first (or CLUSTER_BUILD=source)');
  }
}
