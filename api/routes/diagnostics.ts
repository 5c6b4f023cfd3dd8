import { randomUUID } from 'node:crypto';
import { Router } from 'express';
import { z } from 'zod';
import { WorkflowFailedError } from '@temporalio/client';
import { TimeoutFailure } from '@temporalio/common';
import type { AppDeps } from '../app';
import { registerRoute } from '../openapi';
import { problem, problemResponse } from '../problems';
import { temporalDeadline, withLongerTemporalDeadline } from '../temporal';
import { WORKFLOW_ID_PREFIX, WORKFLOW_TYPES } from '../../common/messages';
import type { checkConnectivity } from '../../workflows/connectivity';

/** The check's own execution timeout; the request waits that long (plus a margin) for its report. */
const CHECK_TIMEOUT_MS = 120_000;
const WAIT_MARGIN_MS = 5_000;

const Probe = z.object({
  kind: z.enum(['dps', 'hub']),
  environment: z.string().optional(),
  hostName: z.string(),
  reachable: z.boolean(),
  detail: z.string(),
});
const ConnectivityReport = z.object({ allReachable: z.boolean(), endpoints: z.array(Probe), workflowId: z.string() });

registerRoute({
  method: 'post',
  path: '/v1/diagnostics/connectivity',
  operationId: 'checkConnectivity',
  auth: 'operator',
  summary: 'Run the connectivity check workflow: can the worker reach DPS and every configured hub?',
  description: 'Each request runs its own check (a workflow with a unique id) and waits up to 2 minutes for it.',
  temporal: true,
  responses: {
    200: { description: 'report', content: { 'application/json': { schema: ConnectivityReport } } },
    504: problemResponse(504, ['timedOut'], 'the check did not finish within 2 minutes (no worker running?)'),
  },
});

export function diagnosticsRoutes(deps: AppDeps): Router {
  const { client, taskQueue } = deps;
  const router = Router();
  router.post('/diagnostics/connectivity', temporalDeadline(deps), async (_req, res) => {
    // Unique per request: concurrent checks are independent runs, never an id conflict.
    const workflowId = `${WORKFLOW_ID_PREFIX.connectivity}/${randomUUID()}`;
    const handle = await client.workflow.start<typeof checkConnectivity>(WORKFLOW_TYPES.checkConnectivity, {
      taskQueue,
      workflowId,
      workflowExecutionTimeout: CHECK_TIMEOUT_MS,
    });
    const report = await withLongerTemporalDeadline(res, CHECK_TIMEOUT_MS + WAIT_MARGIN_MS, () =>
      handle.result().catch((err: unknown) => {
        if (err instanceof WorkflowFailedError && err.cause instanceof TimeoutFailure) {
          throw problem('timedOut', `${workflowId} did not finish within ${CHECK_TIMEOUT_MS / 1000} s`, {
            extensions: { workflowId, taskQueue },
          });
        }
        throw err;
      }),
    );
    res.json({ ...report, workflowId });
  });
  return router;
}
