import { Router } from 'express';
import { z } from 'zod';
import type { AppDeps } from '../app';
import { registerRoute } from '../openapi';
import { json } from '../operations';
import { problem, problemResponse } from '../problems';
import { buildReport, CSV_COLUMNS, reportKind, reportKinds, writeCsv, writeJson } from '../reports';
import { temporalDeadline, withLongerTemporalDeadline } from '../temporal';
import { validate } from '../validate';

/**
 * `GET /v1/reports/{kind}/{id}`: the report of an operation's latest run as JSON (default) or CSV (`Accept:
 * text/csv` or `?format=csv`). Kinds come from api/reports.ts (`registerReportKind`); an unknown kind or an id no
 * operation of that kind has is a 404.
 */

/** How long streaming a report's rows may take (an audit of a large fleet reads every findings chunk). */
const REPORT_STREAM_MS = 10 * 60_000;

const Params = z.object({
  kind: z
    .string()
    .regex(/^[a-z][a-z-]{0,39}$/, 'a report kind')
    .describe(
      'promotions, revocations, group-revocations, reinstatements, group-reinstatements, fleet-operations, audits, …',
    ),
  id: z
    .string()
    .min(1)
    .max(160)
    .describe('the operation’s business id: registration id, group id, fleet operation id or audit id'),
});
const Query = z.strictObject({ format: z.enum(['json', 'csv']).optional().describe('overrides Accept') });

const Row = z.object({
  registrationId: z.string().optional(),
  deviceId: z.string().optional(),
  hub: z.string().optional().describe('a hub host name, or dps'),
  before: z.string().optional(),
  after: z.string().optional(),
  action: z.string().optional(),
  outcome: z.string().optional(),
  problems: z.array(z.string()).optional(),
});
const ReportSchema = z.object({
  kind: z.string(),
  id: z.string(),
  workflowId: z.string(),
  runId: z.string(),
  status: z.string(),
  outcome: z.string().optional(),
  phase: z.string().optional(),
  requestedBy: z
    .object({ subject: z.string(), name: z.string().optional(), authMethod: z.enum(['oidc', 'apiKey']) })
    .optional()
    .describe('who started the operation, from its memo'),
  reason: z.string().optional(),
  startedAt: z.string(),
  closedAt: z.string().optional(),
  failure: z.record(z.string(), z.unknown()).optional(),
  summary: z.record(z.string(), z.unknown()),
  rows: z.array(Row),
});

registerRoute({
  method: 'get',
  path: '/v1/reports/{kind}/{id}',
  operationId: 'getReport',
  auth: 'viewer',
  summary: 'The report of an operation: what changed where, before and after, who asked, when, the outcome per device',
  description:
    'JSON by default; CSV (RFC 4180, CRLF, a header line; cells starting with = + - @ are prefixed with a quote) ' +
    `with Accept: text/csv or ?format=csv. CSV columns: ${CSV_COLUMNS.join(', ')}.`,
  temporal: true,
  request: { params: Params, query: Query },
  responses: {
    200: {
      description: 'the report',
      content: { ...json(ReportSchema), 'text/csv': { schema: z.string() } },
    },
    404: problemResponse(404, ['notFound', 'workflowNotFound'], 'no such kind, or no operation of it with this id'),
  },
});

export function reportRoutes(deps: AppDeps): Router {
  const { client, log } = deps;
  const router = Router();
  const temporal = temporalDeadline(deps);

  router.get('/reports/:kind/:id', validate({ params: Params, query: Query }), temporal, async (req, res) => {
    const { kind: name, id } = req.params;
    const kind = reportKind(name);
    if (!kind) {
      throw problem(
        'notFound',
        `no report kind ${name}; kinds: ${reportKinds()
          .map((k) => k.kind)
          .join(', ')}`,
      );
    }
    if (!kind.idPattern.test(id)) throw problem('notFound', `no ${name} operation can have the id ${id}`);
    const format =
      (req.query as z.output<typeof Query>).format ??
      (req.accepts(['application/json', 'text/csv']) === 'text/csv' ? 'csv' : 'json');
    const report = await buildReport(client, log, kind, id);
    await withLongerTemporalDeadline(res, REPORT_STREAM_MS, async () => {
      const filename = `${name}-${id.replace(/[^A-Za-z0-9._-]/g, '_')}.${format}`;
      res.status(200).set('Content-Disposition', `attachment; filename="${filename}"`);
      if (format === 'csv') res.type('text/csv; charset=utf-8; header=present');
      else res.type('application/json; charset=utf-8');
      try {
        if (format === 'csv') await writeCsv(report, res);
        else await writeJson(report, res);
        res.end();
      } catch (err) {
        if (!res.headersSent) throw err;
        // The answer has started: cut it, so that a client never takes a partial report for a whole one.
        log.error({ err, kind: name, id }, 'report failed while streaming');
        res.destroy(err as Error);
      }
    });
  });
  return router;
}
