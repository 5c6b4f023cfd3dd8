import {
  ApplicationFailure,
  continueAsNew,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertMemo,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { AuditBucketOutput, FindingsChunk } from '../activities/audit';
import {
  AuditErrors,
  AuditRequest,
  FINDING_TYPES,
  noFindings,
  type AuditPhase,
  type AuditRequestInput,
  type AuditResult,
  type AuditStatus,
} from '../common/audit';
import { auditStatusQuery, OPERATIONS } from '../common/messages';
import type { OperationContext, RequestedBy } from '../common/requested-by';
import { SA } from '../common/search-attributes';
import { PERMANENT_FAILURES } from './policies';
import { failureOf } from './saga';

// ---- Timeouts and retry policies ----

/** The plan: one COUNT query per hub. */
const planCall = {
  startToCloseTimeout: '5 minutes',
  heartbeatTimeout: '30 seconds',
  retry: {
    initialInterval: '1 second',
    backoffCoefficient: 2,
    maximumInterval: '2 minutes',
    maximumAttempts: 10,
    nonRetryableErrorTypes: PERMANENT_FAILURES,
  },
} as const;

/**
 * One bucket reads every DPS and registry page, paced within the quotas: at S1's 20 queries/min, 100,000 identities
 * in pages of 1,000 take 5 minutes per hub. Transient Azure failures are retried inside the activity per call; an
 * attempt that still fails (or a worker that dies: 30 s without a heartbeat) starts the bucket again.
 */
const bucketCall = {
  ...planCall,
  startToCloseTimeout: '6 hours',
  retry: { ...planCall.retry, maximumAttempts: 5 },
} as const;

const plan = proxyActivities<Activities>(planCall);
const scan = proxyActivities<Activities>(bucketCall);

/** Buckets per run before continuing as new (each bucket adds about 6 events), unless Temporal suggests it sooner. */
const BUCKETS_PER_RUN = 20;

/**
 * Audits the fleet for drift between DPS and the hubs: plans the buckets (hub sizes), then joins and classifies one
 * bucket at a time (activities/audit.ts), keeping only counts here; the findings themselves are kept per bucket
 * and type in `auditFindings` workflows. Continues as new every BUCKETS_PER_RUN buckets, so a fleet of any size keeps
 * each run's history short.
 */
export async function auditFleet(
  input: AuditRequestInput,
  context: OperationContext = {},
  carry?: AuditStatus,
): Promise<AuditResult> {
  const request = parse(input);
  const run = new AuditRun(request, context.requestedBy, carry);

  // 1. Plan: which hubs, how many identities each, how many buckets.
  if (!carry) {
    const planned = await plan.auditPlan({ request }).catch((err: unknown) => {
      throw run.fail(err);
    });
    Object.assign(run.status, { environments: planned.environments, hubIdentities: planned.hubIdentities });
    run.status.buckets.total = planned.buckets;
    upsertSearchAttributes([{ key: SA.hubs, value: Object.values(planned.environments) }]);
    run.phase('scanning');
  }

  // 2. One bucket at a time: scan, join, classify; the findings go to their chunks, the counts come back here.
  for (let thisRun = 0; run.status.buckets.done < run.status.buckets.total; thisRun += 1) {
    if (thisRun >= BUCKETS_PER_RUN || workflowInfo().continueAsNewSuggested) {
      await continueAsNew<typeof auditFleet>(input, context, run.carry());
    }
    const bucket = run.status.buckets.done;
    const out = await scan
      .auditBucket({
        auditId: workflowInfo().workflowId,
        bucket,
        buckets: run.status.buckets.total,
        asOf: run.status.asOf,
        request,
        environments: run.status.environments,
      })
      .catch((err: unknown) => {
        throw run.fail(err);
      });
    run.record(out);
  }

  // 3. Report.
  return run.finish();
}

/** A chunk of one audit's findings, kept as this workflow's result for the API to page through. */
export async function auditFindings(chunk: FindingsChunk): Promise<FindingsChunk> {
  return chunk;
}

class AuditRun {
  readonly status: AuditStatus;

  constructor(
    readonly request: AuditRequest,
    requestedBy: RequestedBy | undefined,
    carry?: AuditStatus,
  ) {
    const now = new Date().toISOString();
    this.status = carry
      ? { ...carry, runs: carry.runs + 1 }
      : {
          workflowId: workflowInfo().workflowId,
          request,
          ...(requestedBy ? { requestedBy } : {}),
          phase: 'planning',
          startedAt: now,
          phaseChangedAt: now,
          asOf: now,
          environments: {},
          hubIdentities: {},
          buckets: { total: 0, done: 0 },
          counts: noFindings(),
          dpsRecords: 0,
          dpsOperations: 0,
          hubQueries: 0,
          runs: 1,
          bucketResults: [],
        };
    setHandler(auditStatusQuery, () => this.status);
    upsertSearchAttributes([
      { key: SA.operation, value: OPERATIONS.audit },
      { key: SA.phase, value: this.status.phase },
    ]);
    this.refresh();
  }

  carry(): AuditStatus {
    return this.status;
  }

  phase(phase: AuditPhase): void {
    if (this.status.phase === phase) return;
    this.status.phase = phase;
    this.status.phaseChangedAt = new Date().toISOString();
    upsertSearchAttributes([{ key: SA.phase, value: phase }]);
    this.refresh();
  }

  record(out: AuditBucketOutput): void {
    const { status } = this;
    const { dpsRecordsTotal, hubIdentitiesTotal, ...bucket } = out;
    status.bucketResults.push(bucket);
    for (const type of FINDING_TYPES) status.counts[type] += out.counts[type];
    status.dpsOperations += out.dpsOperations;
    status.hubQueries += out.hubQueries;
    if (bucket.index === 0) {
      status.dpsRecords = dpsRecordsTotal;
      status.hubIdentities = hubIdentitiesTotal;
    }
    status.buckets.done += 1;
    this.refresh();
  }

  finish(): AuditResult {
    this.phase('completed');
    const total = FINDING_TYPES.reduce((sum, t) => sum + this.status.counts[t], 0);
    const result: AuditResult = {
      ...this.status,
      outcome: total === 0 ? 'clean' : 'findings',
      completedAt: new Date().toISOString(),
    };
    upsertMemo({
      report: {
        outcome: result.outcome,
        phase: 'completed',
        counts: result.counts,
        buckets: result.buckets,
        ...(result.requestedBy ? { requestedBy: result.requestedBy } : {}),
        completedAt: result.completedAt,
      },
    });
    this.refresh();
    return result;
  }

  /** A bucket (or the plan) failed for good: the failed phase, the memo, the named failure. */
  fail(err: unknown): ApplicationFailure {
    const { type, message } = failureOf(err);
    this.phase('failed');
    upsertMemo({
      report: {
        outcome: 'failed',
        phase: 'failed',
        failureType: type,
        message,
        counts: this.status.counts,
        buckets: this.status.buckets,
        ...(this.status.requestedBy ? { requestedBy: this.status.requestedBy } : {}),
        completedAt: new Date().toISOString(),
      },
    });
    return ApplicationFailure.create({ type, message, nonRetryable: true, details: [this.status] });
  }

  /** The Temporal UI's current details: progress and counts by finding type. */
  refresh(): void {
    const { status } = this;
    const counts = FINDING_TYPES.map((t) => `| ${t} | ${status.counts[t]} |`);
    setCurrentDetails(
      [
        `**Fleet audit** (stale after ${status.request.staleAfterDays} days, as of ${status.asOf})`,
        `Phase: **${status.phase}** since ${status.phaseChangedAt}`,
        `Buckets: ${status.buckets.done} of ${status.buckets.total} done; hubs: ${
          Object.entries(status.hubIdentities)
            .map(([env, n]) => `${env} ${n} identities`)
            .join(', ') || '-'
        }; DPS records: ${status.dpsRecords}`,
        `Azure calls: ${status.hubQueries} registry queries, ${status.dpsOperations} DPS operations`,
        '',
        '| Finding | Devices |',
        '| --- | --- |',
        ...counts,
      ].join('\n'),
    );
  }
}

function parse(input: AuditRequestInput): AuditRequest {
  const parsed = AuditRequest.safeParse(input);
  if (!parsed.success) {
    throw ApplicationFailure.create({
      type: AuditErrors.invalidRequest,
      message: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '),
      nonRetryable: true,
    });
  }
  return parsed.data;
}
