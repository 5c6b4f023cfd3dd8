import type { Writable } from 'node:stream';
import { stringify } from 'csv-stringify';
import type { Client, WorkflowExecutionDescription } from '@temporalio/client';
import { decodeArrayFromPayloads } from '@temporalio/common/lib/internal-non-workflow';
import type { QueryDefinition } from '@temporalio/workflow';
import type { Logger } from '../common/logger';
import { allFindings } from './audit-findings';
import { describeRun, type ExecutionStatus, type Failure } from './operations';
import type { AuditStatus } from '../common/audit';
import type { FleetStatus } from '../common/fleet';
import {
  auditStatusQuery,
  fleetChunkWorkflowId,
  fleetDevicesQuery,
  fleetStatusQuery,
  fleetWorkflowId,
  promotionStatusQuery,
  promotionWorkflowId,
  reinstatementWorkflowId,
  revocationStatusQuery,
  revocationWorkflowId,
} from '../common/messages';
import type { PromotionResult } from '../common/promotion';
import { REQUESTED_BY_MEMO, type RequestedBy } from '../common/requested-by';
import type { ReinstatementResult, RevocationResult } from '../common/revocation';

/**
 * Reports: what an operation changed where, before and after, who asked, when, and the outcome per device, in one
 * shape for every kind of operation, built from the workflow's result (or the result a failure carries, or its live
 * status) and its memo report. Downloadable as JSON or CSV (`GET /v1/reports/{kind}/{id}`).
 *
 * A new kind of operation plugs in with one mapping: `registerReportKind({ kind, workflowId, statusQuery, rows })`,
 * where `rows` turns the run (its result, its status, its input) into per-device rows.
 */

export interface ReportRow {
  registrationId?: string;
  deviceId?: string;
  /** Where: a hub host name, or `dps`. */
  hub?: string;
  before?: string;
  after?: string;
  action?: string;
  outcome?: string;
  problems?: string[];
}

export interface ReportHeader {
  kind: string;
  id: string;
  workflowId: string;
  runId: string;
  status: ExecutionStatus;
  /** How it ended (or `running`): the memo report's outcome, else the result's. */
  outcome?: string;
  phase?: string;
  /** Who started it: the memo every operation the API starts records (common/requested-by.ts). */
  requestedBy?: RequestedBy;
  reason?: string;
  startedAt: string;
  closedAt?: string;
  failure?: Failure;
  /** Counts and facts of the whole operation (kind-specific). */
  summary: Record<string, unknown>;
}

export interface Report extends ReportHeader {
  rows: AsyncIterable<ReportRow>;
}

/** What a kind's mapping gets: the run as the API reads it. */
export interface ReportRun {
  client: Client;
  description: WorkflowExecutionDescription;
  status: ExecutionStatus;
  /** The result (completed), the result a failure carries (failed), or the live status (running). */
  body?: Record<string, unknown>;
  memoReport?: Record<string, unknown>;
  failure?: Failure;
  /** The first argument the run was started with. */
  input?: Record<string, unknown>;
}

export interface ReportKind {
  /** The path segment: `/v1/reports/<kind>/<id>`. */
  kind: string;
  /** What `<id>` means, for the OpenAPI document. */
  idDescription: string;
  idPattern: RegExp;
  workflowId(id: string): string;
  statusQuery: QueryDefinition<unknown>;
  rows(run: ReportRun): AsyncIterable<ReportRow> | ReportRow[];
  summary?(run: ReportRun): Record<string, unknown>;
}

const kinds = new Map<string, ReportKind>();

export function registerReportKind(kind: ReportKind): void {
  kinds.set(kind.kind, kind);
}

export function reportKinds(): ReportKind[] {
  return [...kinds.values()];
}

export function reportKind(kind: string): ReportKind | undefined {
  return kinds.get(kind);
}

/** The report of the latest run of `kind`'s `id` (the workflow's absence is a WorkflowNotFoundError, i.e. 404). */
export async function buildReport(client: Client, log: Logger, kind: ReportKind, id: string): Promise<Report> {
  const workflowId = kind.workflowId(id);
  const run = await describeRun(client, log, workflowId, kind.statusQuery);
  const body =
    (run.detail.result as Record<string, unknown> | undefined) ??
    (run.detail.failure?.details?.[0] as Record<string, unknown> | undefined) ??
    (run.detail.progress as Record<string, unknown> | undefined);
  const memoReport = run.detail.report;
  const input = await firstInput(client, workflowId, run.description.runId);
  const reportRun: ReportRun = {
    client,
    description: run.description,
    status: run.status,
    ...(body ? { body } : {}),
    ...(memoReport ? { memoReport } : {}),
    ...(run.detail.failure ? { failure: run.detail.failure } : {}),
    ...(input ? { input } : {}),
  };
  const text = (value: unknown) => (typeof value === 'string' && value ? value : undefined);
  const request = body?.request as Record<string, unknown> | undefined;
  const requestedBy = requestedByOf(run.description.memo?.[REQUESTED_BY_MEMO]);
  const reason = text(request?.reason) ?? text(memoReport?.reason) ?? text(input?.reason);
  const outcome =
    text(memoReport?.outcome) ?? text(body?.outcome) ?? (run.status === 'running' ? 'running' : undefined);
  const phase = text(memoReport?.phase) ?? text(body?.phase);
  return {
    kind: kind.kind,
    id,
    workflowId,
    runId: run.description.runId,
    status: run.status,
    ...(outcome ? { outcome } : {}),
    ...(phase ? { phase } : {}),
    ...(requestedBy ? { requestedBy } : {}),
    ...(reason ? { reason } : {}),
    startedAt: run.description.startTime.toISOString(),
    ...(run.description.closeTime ? { closedAt: run.description.closeTime.toISOString() } : {}),
    ...(run.detail.failure ? { failure: run.detail.failure } : {}),
    summary: kind.summary?.(reportRun) ?? {},
    rows: toAsync(kind.rows(reportRun)),
  };
}

function requestedByOf(value: unknown): RequestedBy | undefined {
  const by = value as Partial<RequestedBy> | undefined;
  return by && typeof by.subject === 'string' && typeof by.authMethod === 'string' ? (by as RequestedBy) : undefined;
}

/** The run's input (its first argument), from the first event of its history. */
async function firstInput(
  client: Client,
  workflowId: string,
  runId: string,
): Promise<Record<string, unknown> | undefined> {
  const { history } = await client.workflowService.getWorkflowExecutionHistory({
    namespace: client.options.namespace,
    execution: { workflowId, runId },
    maximumPageSize: 1,
  });
  const payloads = history?.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads;
  if (!payloads?.length) return undefined;
  const [first] = await decodeArrayFromPayloads(client.options.loadedDataConverter, payloads);
  return first && typeof first === 'object' ? (first as Record<string, unknown>) : undefined;
}

async function* toAsync(rows: AsyncIterable<ReportRow> | ReportRow[]): AsyncGenerator<ReportRow> {
  yield* rows;
}

// ----- writing a report: JSON (rows streamed) and CSV (RFC 4180) -----

export const CSV_COLUMNS = [
  'kind',
  'id',
  'registrationId',
  'deviceId',
  'hub',
  'before',
  'after',
  'action',
  'outcome',
  'problems',
] as const;

/**
 * A cell a spreadsheet would run as a formula (starting with = + - @, or a tab or carriage return, per OWASP's
 * "CSV injection") is prefixed with a single quote, so it reads as text.
 */
export function guardCell(value: string): string {
  return /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
}

/** Writes the report as JSON, rows streamed one by one (an audit of a large fleet has as many rows as findings). */
export async function writeJson(report: Report, out: Writable): Promise<void> {
  const { rows, ...header } = report;
  const head = JSON.stringify(header);
  await write(out, `${head.slice(0, -1)},"rows":[`);
  let first = true;
  for await (const row of rows) {
    await write(out, `${first ? '' : ','}${JSON.stringify(row)}`);
    first = false;
  }
  await write(out, ']}');
}

/** Writes the rows as RFC 4180 CSV (CRLF, quoted where needed), with a header line. */
export async function writeCsv(report: Report, out: Writable): Promise<void> {
  const csv = stringify({
    header: true,
    columns: [...CSV_COLUMNS],
    record_delimiter: 'windows',
    cast: { string: guardCell },
  });
  csv.pipe(out);
  const done = new Promise<void>((resolve, reject) => {
    csv.once('end', resolve);
    csv.once('error', reject);
  });
  for await (const row of report.rows) {
    const record = {
      kind: report.kind,
      id: report.id,
      ...row,
      problems: row.problems?.join('; ') ?? '',
    };
    if (!csv.write(record)) await new Promise((resolve) => csv.once('drain', resolve));
  }
  csv.end();
  await done;
}

function write(out: Writable, chunk: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (out.write(chunk)) resolve();
    else {
      out.once('drain', resolve);
      out.once('error', reject);
    }
  });
}

// ----- the kinds this service has -----

const dpsIdPattern = /^(?!\.\.?$)[A-Za-z0-9._:-]{1,128}$/;

registerReportKind({
  kind: 'promotions',
  idDescription: 'the registration id of the device (its latest promotion)',
  idPattern: dpsIdPattern,
  workflowId: promotionWorkflowId,
  statusQuery: promotionStatusQuery as QueryDefinition<unknown>,
  rows: (run) => (run.body ? promotionRows(run.body as unknown as PromotionResult) : []),
  summary: (run) => {
    const result = run.body as Partial<PromotionResult> | undefined;
    return {
      sourceHub: result?.sourceHub,
      targetHub: result?.targetHub,
      request: result?.request,
      ...(result?.flagged ? { flagged: result.flagged } : {}),
      ...(result?.compensation ? { compensation: result.compensation } : {}),
    };
  },
});

for (const target of ['devices', 'groups'] as const) {
  const byGroup = target === 'groups';
  registerReportKind({
    kind: byGroup ? 'group-revocations' : 'revocations',
    idDescription: byGroup ? 'the enrollment group id' : 'the registration id of the device',
    idPattern: dpsIdPattern,
    workflowId: (id) => revocationWorkflowId(byGroup ? { enrollmentGroupId: id } : { registrationId: id }),
    statusQuery: revocationStatusQuery as QueryDefinition<unknown>,
    rows: (run) => revocationRows(run.body as Partial<RevocationResult> | undefined),
    summary: (run) => revocationSummary(run.body as Partial<RevocationResult> | undefined),
  });
  registerReportKind({
    kind: byGroup ? 'group-reinstatements' : 'reinstatements',
    idDescription: byGroup ? 'the enrollment group id' : 'the registration id of the device',
    idPattern: dpsIdPattern,
    workflowId: (id) => reinstatementWorkflowId(byGroup ? { enrollmentGroupId: id } : { registrationId: id }),
    statusQuery: revocationStatusQuery as QueryDefinition<unknown>,
    rows: (run) => reinstatementRows(run.body as Partial<ReinstatementResult> | undefined),
    summary: (run) => ({ devices: (run.body as Partial<ReinstatementResult> | undefined)?.devices?.length ?? 0 }),
  });
}

registerReportKind({
  kind: 'fleet-operations',
  idDescription: 'the fleet operation id',
  idPattern: /^[A-Za-z0-9._:-]{1,128}$/,
  workflowId: fleetWorkflowId,
  statusQuery: fleetStatusQuery as QueryDefinition<unknown>,
  rows: (run) => fleetRows(run),
  summary: (run) => {
    const fleet = run.body as Partial<FleetStatus> | undefined;
    return {
      operation: fleet?.operation,
      plan: fleet?.plan,
      counts: fleet?.counts,
      started: fleet?.started,
      ...(fleet?.abortedBecause ? { abortedBecause: fleet.abortedBecause } : {}),
      ...(fleet?.operatorActions?.length ? { operatorActions: fleet.operatorActions } : {}),
    };
  },
});

registerReportKind({
  kind: 'audits',
  idDescription: 'the audit id',
  idPattern: /^audit-[A-Za-z0-9._:-]{1,120}$/,
  workflowId: (id) => id,
  statusQuery: auditStatusQuery as QueryDefinition<unknown>,
  rows: (run) => auditRows(run),
  summary: (run) => {
    const audit = run.body as Partial<AuditStatus> | undefined;
    return {
      counts: audit?.counts,
      buckets: audit?.buckets,
      hubIdentities: audit?.hubIdentities,
      dpsRecords: audit?.dpsRecords,
      asOf: audit?.asOf,
      staleAfterDays: audit?.request?.staleAfterDays,
    };
  },
});

// ----- rows per kind -----

function promotionRows(result: PromotionResult): ReportRow[] {
  const steps = result.steps ?? [];
  const undone = (step: string) => result.compensation?.steps.some((s) => s.step === step && s.status === 'undone');
  const stepsAt = (names: string[]) =>
    steps
      .filter((s) => names.some((n) => s.step === n || s.step === `undo:${n}`))
      .map((s) => `${s.step}: ${s.detail}`)
      .join('; ');
  const leftovers = (step: string) =>
    (result.compensation?.leftovers ?? [])
      .filter((l) => l.step === step)
      .map((l) => `undo of ${step} left: ${l.error?.message ?? l.status}`);
  const base = { registrationId: result.request.registrationId, deviceId: result.deviceId, outcome: result.outcome };
  const repointed = steps.some((s) => s.step === 'repointed');
  const removed = steps.find((s) => s.step === 'removedFromSource')?.detail ?? '';
  // The clean-up found the source identity deleted or already gone: either way it is absent now.
  const cleaned = steps.some((s) => s.step === 'sourceCleaned' && /deleted|alreadyGone/.test(s.detail));
  const sourceAfter = !removed
    ? 'enabled'
    : undone('sourceDevice')
      ? 'enabled (restored)'
      : cleaned || /^deleted|alreadyGone/.test(removed)
        ? 'absent'
        : 'disabled';
  return [
    {
      ...base,
      hub: 'dps',
      before: `enrollment → ${result.sourceHub ?? result.request.sourceEnvironment}`,
      after: `enrollment → ${repointed && !undone('enrollment') ? (result.targetHub ?? result.request.targetEnvironment) : (result.sourceHub ?? result.request.sourceEnvironment)}`,
      action: stepsAt(['validated', 'certificateChecked', 'repointed', 'enrollment']),
      problems: leftovers('enrollment'),
    },
    {
      ...base,
      hub: result.sourceHub ?? result.request.sourceEnvironment,
      before: 'enabled',
      after: sourceAfter,
      action: stepsAt(['snapshot', 'removedFromSource', 'sourceCleaned', 'sourceDevice']),
      problems: leftovers('sourceDevice'),
    },
    {
      ...base,
      hub: result.targetHub ?? result.request.targetEnvironment,
      before: 'absent',
      after:
        result.outcome === 'promoted'
          ? 'enabled, connected'
          : undone('targetDevice')
            ? 'absent (removed)'
            : 'unchanged',
      action: stepsAt(['connected', 'twinVerified', 'deadline', 'targetDevice']),
      problems: [...leftovers('targetDevice'), ...(result.flagged ? [result.flagged] : [])],
    },
  ];
}

function revocationRows(result: Partial<RevocationResult> | undefined): ReportRow[] {
  return (result?.devices ?? []).flatMap((d) => {
    const outcome = d.revoked ? 'revoked' : 'notRevoked';
    const base = { registrationId: d.registrationId, deviceId: d.deviceId, outcome };
    return [
      {
        ...base,
        hub: 'dps',
        before: d.dps.changed ? 'enabled' : d.dps.enrollment,
        after: d.dps.enrollment,
        action: d.dps.changed ? 'disabled' : 'none',
        problems: d.problems,
      },
      ...d.hubs.map((h) => ({
        ...base,
        hub: h.hubHost,
        before: h.before,
        after: h.connectionState ? `${h.after} (${h.connectionState})` : h.after,
        action: h.action,
        problems: [],
      })),
    ];
  });
}

function revocationSummary(result: Partial<RevocationResult> | undefined): Record<string, unknown> {
  const found = result?.progress?.devicesFound ?? 0;
  return {
    target: result?.target,
    progress: result?.progress,
    hubs: result?.hubs,
    promotionsStopped: result?.promotionsStopped,
    // Past PROOF_LIMIT devices a result keeps only the devices left unrevoked: the rows are those.
    rowsCover: (result?.devices?.length ?? 0) >= found ? 'every device' : 'devices not revoked only',
  };
}

function reinstatementRows(result: Partial<ReinstatementResult> | undefined): ReportRow[] {
  return (result?.devices ?? []).flatMap((d) => {
    const outcome = d.problems.length ? 'partiallyReinstated' : 'reinstated';
    const base = { registrationId: d.registrationId, deviceId: d.deviceId, outcome };
    return [
      { ...base, hub: 'dps', before: 'revoked', after: d.dps, action: d.dps, problems: d.problems },
      ...d.hubs.map((h) => ({
        ...base,
        hub: h.environment,
        before: h.identity === 'reenabled' || h.identity === 'leftDisabled' ? 'disabled' : h.identity,
        after: h.identity === 'reenabled' ? 'enabled' : h.identity === 'leftDisabled' ? 'disabled' : h.identity,
        action: h.identity === 'reenabled' ? 'enabled' : 'none',
        problems: [],
      })),
    ];
  });
}

async function* auditRows(run: ReportRun): AsyncGenerator<ReportRow> {
  const audit = run.body as AuditStatus | undefined;
  if (!audit?.bucketResults) return;
  for await (const f of allFindings(run.client, audit)) {
    for (const h of f.hubs.length ? f.hubs : [undefined]) {
      yield {
        registrationId: f.registrationId,
        deviceId: f.deviceId,
        ...(h
          ? {
              hub: h.hubHost,
              before: `${h.status}, ${h.authType}${h.lastActivityTime ? `, active ${h.lastActivityTime}` : ', never active'}`,
            }
          : {}),
        after: 'unchanged (an audit reads only)',
        action: `finding: ${f.type}`,
        outcome: f.type,
        problems: [f.detail],
      };
    }
  }
}

/** How many devices one query of a chunk answers while a fleet operation's report is streamed. */
const FLEET_DEVICES_PAGE = 500;

/**
 * One row per device of a fleet operation, read from its chunks a page at a time (as
 * `GET /v1/fleet-operations/{id}/devices` does), so a large operation streams without being held in memory.
 */
async function* fleetRows(run: ReportRun): AsyncGenerator<ReportRow> {
  const fleet = run.body as Partial<FleetStatus> | undefined;
  const chunks = fleet?.plan?.chunks ?? 0;
  // A dry run plans and starts no chunk: it has no devices to report.
  if (!fleet || fleet.phase === 'planned') return;
  const workflowId = run.description.workflowId;
  for (let chunk = 0; chunk < chunks; chunk += 1) {
    const handle = run.client.workflow.getHandle(fleetChunkWorkflowId(workflowId, chunk));
    for (let offset = 0; ;) {
      const page = await handle.query(fleetDevicesQuery, { offset, limit: FLEET_DEVICES_PAGE });
      for (const d of page.devices) {
        yield {
          registrationId: d.registrationId,
          ...(d.deviceId ? { deviceId: d.deviceId } : {}),
          after: d.state,
          action: `${fleet.operation}${d.attempts > 1 ? ` (${d.attempts} attempts)` : ''}${d.workflowId ? ` by ${d.workflowId}` : ''}`,
          outcome: d.state,
          problems: d.error ? [`${d.error.type}: ${d.error.message}`] : [],
        };
      }
      offset += page.devices.length;
      if (page.devices.length === 0 || offset >= page.total) break;
    }
  }
}
