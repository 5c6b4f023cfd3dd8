import { Context } from '@temporalio/activity';
import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import type {
  DeviceRegistrationState,
  EnrollmentGroup,
  IndividualEnrollment,
} from 'azure-iot-provisioning-service/dist/interfaces';
import { backOff } from 'exponential-backoff';
import type { AzureClients, HubClient } from './azure-clients';
import { permanent, statusOf, toFailure } from './azure-errors';
import { bucketOf, classify, type DeviceFacts, type DpsFacts } from './audit-classify';
import { continuationOf, dpsClient, queryItems } from './dps';
import {
  auditFindingsChunkId,
  FINDING_TYPES,
  FINDINGS_PER_CHUNK,
  noFindings,
  type AuditBucketResult,
  type AuditRequest,
  type DecidingEnrollment,
  type Finding,
  type FindingType,
  type HubIdentity,
} from '../common/audit';
import { WORKFLOW_TYPES } from '../common/messages';

/**
 * The fleet audit's reads. The join of DPS and the hubs runs one bucket at a time: a device falls in bucket
 * `FNV-1a(deviceId) mod buckets`, and one activity per bucket streams every DPS query page and every registry query
 * page, keeping only its bucket's devices — so a worker holds one bucket (about `bucketDevices` identities plus their
 * DPS records), never the fleet. Neither service can filter by a hash, so each bucket reads everything: B buckets
 * cost B scans, paced within the quotas (registry queries per hub, DPS operations), and a fleet that fits one bucket
 * costs one scan. Throttling (429), 5xx and network errors are retried per call with back-off, so that one of them
 * does not restart a bucket; Azure's permanent answers fail the activity by name.
 *
 * A bucket's findings go to small workflows of their own (`auditFindings`, up to FINDINGS_PER_CHUNK each), started
 * here with the Temporal client and read back by the API page by page: the audit's own history only carries counts.
 */

export interface AuditPlan {
  environments: Record<string, string>;
  hubIdentities: Record<string, number>;
  buckets: number;
}

export interface AuditBucketInput {
  auditId: string;
  bucket: number;
  buckets: number;
  asOf: string;
  request: AuditRequest;
  environments: Record<string, string>;
}

export interface AuditBucketOutput extends AuditBucketResult {
  /** Every DPS record read (individual enrollments and group registration records), not only this bucket's. */
  dpsRecordsTotal: number;
  hubIdentitiesTotal: Record<string, number>;
}

/** What a findings chunk workflow holds. */
export interface FindingsChunk {
  auditId: string;
  bucket: number;
  type: FindingType;
  n: number;
  findings: Finding[];
}

const RETRY = { numOfAttempts: 8, startingDelay: 500, maxDelay: 30_000, timeMultiple: 2, jitter: 'full' as const };

/** Throttling, 5xx, timeouts and network errors (no status): worth another try after a pause. */
function transient(err: unknown): boolean {
  const status = statusOf(err);
  return status === undefined || status === 408 || status === 429 || status >= 500;
}

export function auditActivities(clients: AzureClients, temporal?: Client) {
  // One reservoir per quota and rate, shared by every audit bucket this worker runs (buckets run one after another).
  const reservoirs = new Map<string, MinuteReservoir>();
  const reservoir = (key: string, perMinute: number) => {
    const id = `${key}@${perMinute}`;
    let found = reservoirs.get(id);
    if (!found) reservoirs.set(id, (found = new MinuteReservoir(perMinute)));
    return found;
  };

  /** One Azure call, paced by `key`'s reservoir, retried on transient failures; permanent ones are named. */
  async function call<T>(what: string, key: string, perMinute: number, fn: () => Promise<T>): Promise<T> {
    const signal = Context.current().cancellationSignal;
    try {
      return await backOff(
        async () => {
          await reservoir(key, perMinute).take();
          return fn();
        },
        { ...RETRY, retry: (err: unknown) => !signal.aborted && transient(err) },
      );
    } catch (err) {
      throw toFailure(what, err);
    }
  }

  const hubs = (environments: Record<string, string>): HubClient[] =>
    Object.keys(environments).map((environment) => {
      const found = clients.hubs.get(environment);
      if (!found) throw permanent('UnknownEnvironment', `no IoT hub is configured for environment "${environment}"`);
      return found;
    });

  return {
    /** The hubs to read, how many identities each holds (one COUNT query each), and so how many buckets. */
    async auditPlan(input: { request: AuditRequest }): Promise<AuditPlan> {
      const environments = Object.fromEntries([...clients.hubs].map(([env, h]) => [env, h.hostName]));
      const hubIdentities: Record<string, number> = {};
      for (const hub of hubs(environments)) {
        const { result } = await call(
          `count devices in ${hub.hostName}`,
          hub.hostName,
          input.request.hubQueriesPerMinute,
          () => hub.registry.createQuery('SELECT COUNT() AS n FROM devices').next(),
        );
        hubIdentities[hub.environment] = Number((result as Array<{ n?: number }>)[0]?.n ?? 0);
      }
      const largest = Math.max(0, ...Object.values(hubIdentities));
      return { environments, hubIdentities, buckets: Math.max(1, Math.ceil(largest / input.request.bucketDevices)) };
    },

    /** One bucket: scan, join, classify, keep the findings in chunks; answers counts only. */
    async auditBucket(input: AuditBucketInput): Promise<AuditBucketOutput> {
      if (!temporal) throw permanent('TemporalClientNotConfigured', 'the worker has no Temporal client for activities');
      const context = Context.current();
      const { request } = input;
      const inBucket = (deviceId: string) => bucketOf(deviceId, input.buckets) === input.bucket;
      const devices = new Map<string, DeviceFacts>();
      const device = (deviceId: string) => {
        let found = devices.get(deviceId);
        if (!found) devices.set(deviceId, (found = { deviceId, identities: [] }));
        return found;
      };
      const counters = { dpsOperations: 0, hubQueries: 0, dpsRecordsTotal: 0 };
      const progress = (stage: string) => {
        context.heartbeat({ stage, ...counters, devices: devices.size });
        context.cancellationSignal.throwIfAborted();
      };

      // 1. DPS: groups (few), then individual enrollments, then each group's registration records.
      const dps = dpsClient(clients);
      const dpsPages = async <T>(
        what: string,
        query: () => { next: (token?: string) => Promise<unknown> },
        onPage: (items: T[]) => void,
      ) => {
        for (let token: string | undefined; ;) {
          const page = (await call(what, 'dps', request.dpsOperationsPerMinute, () =>
            token ? query().next(token) : query().next(),
          )) as { responseBody: unknown; httpResponse?: { headers?: Record<string, unknown> } };
          counters.dpsOperations += 1;
          onPage(queryItems<T>(page.responseBody));
          progress(what);
          token = continuationOf(page);
          if (!token) return;
        }
      };
      const groups = new Map<string, EnrollmentGroup>();
      await dpsPages<EnrollmentGroup>(
        'query enrollment groups',
        () => dps.createEnrollmentGroupQuery({ query: '*' }, request.dpsPageSize),
        (items) => items.forEach((g) => groups.set(g.enrollmentGroupId, g)),
      );
      await dpsPages<IndividualEnrollment>(
        'query individual enrollments',
        () => dps.createIndividualEnrollmentQuery({ query: '*' }, request.dpsPageSize),
        (items) => {
          for (const e of items) {
            const facts = individualFacts(e);
            counters.dpsRecordsTotal += 1;
            if (inBucket(facts.deviceId)) device(facts.deviceId).dps = facts;
          }
        },
      );
      for (const group of groups.values()) {
        await dpsPages<DeviceRegistrationState>(
          `query registrations of group ${group.enrollmentGroupId}`,
          () =>
            dps.createEnrollmentGroupDeviceRegistrationStateQuery(
              { query: '*' },
              group.enrollmentGroupId,
              request.dpsPageSize,
            ),
          (items) => {
            for (const r of items) {
              const deviceId = r.deviceId || r.registrationId;
              counters.dpsRecordsTotal += 1;
              if (!inBucket(deviceId)) continue;
              const existing = devices.get(deviceId)?.dps;
              if (existing) {
                // Its own individual enrollment decides (DPS checks those first); the group record says where it was.
                existing.enrollment.enrollmentGroupId ??= group.enrollmentGroupId;
                existing.assignedHub ??= r.assignedHub || undefined;
              } else {
                device(deviceId).dps = groupMemberFacts(r, deviceId, group);
              }
            }
          },
        );
      }

      // 2. Every configured hub's registry, page by page.
      const hubIdentitiesTotal: Record<string, number> = {};
      let identities = 0;
      for (const hub of hubs(input.environments)) {
        hubIdentitiesTotal[hub.environment] = 0;
        for (let token: string | undefined; ;) {
          const query = hub.registry.createQuery('SELECT * FROM devices', request.hubPageSize);
          const { result } = await call(
            `query devices of ${hub.hostName}`,
            hub.hostName,
            request.hubQueriesPerMinute,
            () => query.next(token as string),
          );
          counters.hubQueries += 1;
          for (const twin of result as RawTwin[]) {
            hubIdentitiesTotal[hub.environment] += 1;
            if (!inBucket(twin.deviceId)) continue;
            device(twin.deviceId).identities.push(identityOf(hub, twin));
            identities += 1;
          }
          progress(`query devices of ${hub.hostName}`);
          token = (query.continuationToken as string | null | undefined) ?? undefined;
          if (!token) break;
        }
      }

      // 3. Join and classify, then keep the findings where the API reads them.
      const options = { asOf: new Date(input.asOf), staleAfterDays: request.staleAfterDays };
      const findings = [...devices.values()]
        .sort((a, b) => (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0))
        .flatMap((d) => classify(d, options));
      const attempt = context.info.attempt;
      const counts = noFindings();
      const chunks = noFindings();
      for (const type of FINDING_TYPES) {
        const ofType = findings.filter((f) => f.type === type);
        counts[type] = ofType.length;
        for (let n = 0; n * FINDINGS_PER_CHUNK < ofType.length; n += 1) {
          await keepChunk(
            temporal,
            context.info.taskQueue,
            auditFindingsChunkId(input.auditId, input.bucket, attempt, type, n),
            {
              auditId: input.auditId,
              bucket: input.bucket,
              type,
              n,
              findings: ofType.slice(n * FINDINGS_PER_CHUNK, (n + 1) * FINDINGS_PER_CHUNK),
            },
          );
          chunks[type] = n + 1;
          progress('keeping findings');
        }
      }
      return {
        index: input.bucket,
        attempt,
        counts,
        chunks,
        dpsDevices: [...devices.values()].filter((d) => d.dps).length,
        identities,
        dpsOperations: counters.dpsOperations,
        hubQueries: counters.hubQueries,
        dpsRecordsTotal: counters.dpsRecordsTotal,
        hubIdentitiesTotal,
      };
    },
  };
}

/** Starts the chunk's workflow (once: a retry finds it started or done) and waits until it has closed. */
async function keepChunk(client: Client, taskQueue: string, workflowId: string, chunk: FindingsChunk): Promise<void> {
  try {
    const handle = await client.workflow.start(WORKFLOW_TYPES.auditFindings, {
      taskQueue,
      workflowId,
      args: [chunk],
      workflowIdConflictPolicy: 'USE_EXISTING',
      workflowIdReusePolicy: 'REJECT_DUPLICATE',
      staticSummary: `${chunk.findings.length} ${chunk.type} finding(s) of ${chunk.auditId}, bucket ${chunk.bucket}`,
    });
    await untilCancelled(Context.current().cancellationSignal, handle.result());
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
}

/**
 * `perMinute` calls in each minute (a window from the first call; Azure's quotas are per minute). A call over it
 * waits for the next window — up to a minute at 1 a minute — with Context.sleep: cancelling the activity (a worker
 * shutting down) ends the wait at once and leaves no timer behind.
 */
class MinuteReservoir {
  private windowStart = 0;
  private used = 0;

  constructor(private readonly perMinute: number) {}

  async take(): Promise<void> {
    for (;;) {
      const now = Date.now();
      if (now >= this.windowStart + 60_000) {
        this.windowStart = now;
        this.used = 0;
      }
      if (this.used < this.perMinute) {
        this.used++;
        return;
      }
      await Context.current().sleep(this.windowStart + 60_000 - now);
    }
  }
}

/** `work`, or its activity's cancellation if that comes first (`work` then settles unobserved). */
function untilCancelled<T>(signal: AbortSignal, work: Promise<T>): Promise<T> {
  work.catch(() => undefined);
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err as Error);
      },
    );
  });
}

// ---- What each source says, as the join needs it ----

interface RawTwin {
  deviceId: string;
  status?: string;
  statusReason?: string | null;
  authenticationType?: string;
  x509Thumbprint?: { primaryThumbprint?: string | null; secondaryThumbprint?: string | null };
  connectionState?: string;
  lastActivityTime?: string;
}

const normalize = (print: string) => print.replace(/:/g, '').toUpperCase();

function identityOf(hub: HubClient, twin: RawTwin): HubIdentity {
  const prints = [twin.x509Thumbprint?.primaryThumbprint, twin.x509Thumbprint?.secondaryThumbprint]
    .filter((p): p is string => !!p)
    .map(normalize);
  const activity =
    twin.lastActivityTime && !twin.lastActivityTime.startsWith('0001-01-01') ? twin.lastActivityTime : undefined;
  return {
    environment: hub.environment,
    hubHost: hub.hostName,
    status: twin.status === 'disabled' ? 'disabled' : 'enabled',
    ...(twin.statusReason ? { statusReason: twin.statusReason } : {}),
    authType: twin.authenticationType ?? 'sas',
    ...(prints.length ? { thumbprints: [...new Set(prints)] } : {}),
    ...(twin.connectionState ? { connectionState: twin.connectionState } : {}),
    ...(activity ? { lastActivityTime: new Date(activity).toISOString() } : {}),
  };
}

type Attestation = { type?: string; x509?: Record<string, unknown> } | undefined;

function attestationOf(attestation: Attestation, group: boolean): DecidingEnrollment['attestation'] {
  switch (attestation?.type) {
    case 'symmetricKey':
      return 'symmetricKey';
    case 'tpm':
      return 'tpm';
    case 'x509':
      return group || attestation.x509?.signingCertificates || attestation.x509?.caReferences ? 'x509CA' : 'x509';
    default:
      return 'unknown';
  }
}

function certificateThumbprints(attestation: Attestation): string[] {
  const certificates = attestation?.x509?.clientCertificates as
    Record<string, { info?: { sha1Thumbprint?: string; sha256Thumbprint?: string } } | undefined> | undefined;
  return Object.values(certificates ?? {})
    .flatMap((c) => [c?.info?.sha1Thumbprint, c?.info?.sha256Thumbprint])
    .filter((p): p is string => !!p)
    .map(normalize);
}

function individualFacts(e: IndividualEnrollment): DpsFacts {
  const registration = (e as { registrationState?: DeviceRegistrationState }).registrationState;
  const attestation = attestationOf(e.attestation as Attestation, false);
  const thumbprints = attestation === 'x509' ? certificateThumbprints(e.attestation as Attestation) : [];
  return {
    registrationId: e.registrationId,
    deviceId: registration?.deviceId || e.deviceId || e.registrationId,
    enrollment: {
      kind: 'individual',
      id: e.registrationId,
      status: e.provisioningStatus === 'disabled' ? 'disabled' : 'enabled',
      attestation,
    },
    enrollmentHubs: e.iotHubs ?? [],
    ...(thumbprints.length ? { thumbprints } : {}),
    ...(registration?.assignedHub ? { assignedHub: registration.assignedHub } : {}),
  };
}

function groupMemberFacts(r: DeviceRegistrationState, deviceId: string, group: EnrollmentGroup): DpsFacts {
  return {
    registrationId: r.registrationId,
    deviceId,
    enrollment: {
      kind: 'group',
      id: group.enrollmentGroupId,
      status: group.provisioningStatus === 'disabled' ? 'disabled' : 'enabled',
      attestation: attestationOf(group.attestation as Attestation, true),
    },
    enrollmentHubs: group.iotHubs ?? [],
    ...(r.assignedHub ? { assignedHub: r.assignedHub } : {}),
  };
}
