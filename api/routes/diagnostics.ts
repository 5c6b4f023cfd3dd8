import { Router } from 'express';
import { z } from 'zod';
import type { AppDeps } from '../app';
import { registry } from '../openapi';
import { WORKFLOW_ID_PREFIX, WORKFLOW_TYPES } from '../../common/messages';
import type { checkConnectivity } from '../../workflows/connectivity';

const Probe = z.object({
  kind: z.enum(['dps', 'hub']),
  environment: z.string().optional(),
  hostName: z.string(),
  reachable: z.boolean(),
  detail: z.string(),
});
const ConnectivityReport = z.object({ allReachable: z.boolean(), endpoints: z.array(Probe), workflowId: z.string() });

registry.registerPath({
  method: 'post',
  path: '/v1/diagnostics/connectivity',
  summary: 'Run the connectivity check workflow: can the worker reach DPS and every configured hub?',
  responses: { 200: { description: 'report', content: { 'application/json': { schema: ConnectivityReport } } } },
});

export function diagnosticsRoutes({ client, taskQueue }: AppDeps): Router {
  const router = Router();
  router.post('/diagnostics/connectivity', async (_req, res) => {
    const workflowId = `${WORKFLOW_ID_PREFIX.connectivity}/${new Date().toISOString()}`;
    const report = await client.workflow.execute<typeof checkConnectivity>(WORKFLOW_TYPES.checkConnectivity, {
      taskQueue,
      workflowId,
      workflowExecutionTimeout: '2 minutes',
    });
    res.json({ ...report, workflowId });
  });
  return router;
}
