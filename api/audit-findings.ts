import type { Client } from '@temporalio/client';
import type { Logger } from '../common/logger';
import type { FindingsChunk } from '../activities/audit';
import {
  auditFindingsChunkId,
  FINDING_TYPES,
  type AuditResult,
  type AuditStatus,
  type Finding,
  type FindingType,
} from '../common/audit';
import { auditStatusQuery } from '../common/messages';
import { describeRun, type ExecutionStatus, type RunDetail } from './operations';

/**
 * Reading an audit back: its state (the live status while it runs, its result once completed, the status carried in
 * its failure when a bucket failed for good) and its findings, which live in chunk workflows per bucket and type
 * (see activities/audit.ts), read in order: type, bucket, chunk, position.
 */

export interface AuditRun {
  description: Awaited<ReturnType<typeof describeRun>>['description'];
  status: ExecutionStatus;
  detail: RunDetail;
  /** What the audit knows so far: undefined only when a running audit's status query did not answer. */
  audit?: AuditStatus | AuditResult;
}

export async function describeAudit(client: Client, log: Logger, auditId: string): Promise<AuditRun> {
  const run = await describeRun(client, log, auditId, auditStatusQuery);
  const audit =
    (run.detail.progress as AuditStatus | undefined) ??
    (run.detail.result as AuditResult | undefined) ??
    (run.detail.failure?.details?.[0] as AuditStatus | undefined);
  return { ...run, ...(audit?.bucketResults ? { audit } : {}) };
}

/** Where a reader stands: the index in the list of types read, the bucket result, the chunk and the finding in it. */
export interface FindingsCursor {
  t: number;
  b: number;
  c: number;
  o: number;
}

export const START: FindingsCursor = { t: 0, b: 0, c: 0, o: 0 };

/**
 * Up to `limit` findings of `types` from `cursor` on, and where the next read starts (undefined at the end). Reads
 * only the chunks it needs: a page costs at most limit / FINDINGS_PER_CHUNK + 1 chunk results.
 */
export async function readFindings(
  client: Client,
  audit: AuditStatus,
  options: { types: readonly FindingType[]; limit: number; cursor?: FindingsCursor },
): Promise<{ findings: Finding[]; next?: FindingsCursor }> {
  const findings: Finding[] = [];
  const at = { ...(options.cursor ?? START) };
  const buckets = audit.bucketResults;
  while (at.t < options.types.length) {
    const type = options.types[at.t];
    const bucket = buckets[at.b];
    if (!bucket) {
      Object.assign(at, { t: at.t + 1, b: 0, c: 0, o: 0 });
      continue;
    }
    if (at.c >= bucket.chunks[type]) {
      Object.assign(at, { b: at.b + 1, c: 0, o: 0 });
      continue;
    }
    if (findings.length >= options.limit) return { findings, next: at };
    const chunkId = auditFindingsChunkId(audit.workflowId, bucket.index, bucket.attempt, type, at.c);
    const chunk = (await client.workflow.getHandle(chunkId).result()) as FindingsChunk;
    const taken = chunk.findings.slice(at.o, at.o + options.limit - findings.length);
    findings.push(...taken);
    at.o += taken.length;
    if (at.o >= chunk.findings.length) Object.assign(at, { c: at.c + 1, o: 0 });
  }
  return { findings };
}

/** Every finding of `types`, page by page (for reports and remediation plans). */
export async function* allFindings(
  client: Client,
  audit: AuditStatus,
  types: readonly FindingType[] = FINDING_TYPES,
): AsyncGenerator<Finding> {
  let cursor: FindingsCursor | undefined = START;
  while (cursor) {
    const page = await readFindings(client, audit, { types, limit: 1_000, cursor });
    yield* page.findings;
    cursor = page.next;
  }
}
