/**
 * 6. A fleet drift audit of N devices through the real worker (Temporal dev server → worker with the real
 * activities → Azure SDKs → emulator): N individual enrollments on the test hub (every tenth disabled by hand) and N
 * identities there, never connected — so the audit finds N findings (N/10 revoked but active, the rest stale) and
 * keeps them all, which is the case that stresses where findings live. The join runs in buckets of
 * `--audit-bucket-devices` identities (default N/4, so several buckets and, past 20 of them, continue-as-new).
 *
 * Targets:
 * - wall time: what Azure's quotas alone would allow for the same reads — its registry queries at S1's 20/min per
 *   unit, or its DPS operations at 1,000/min, whichever is longer (/work/shared/notes/azure-wire.md "Quotas"). The
 *   bench runs unpaced against the emulator, so the figure is the project's own cost, which must stay under what
 *   Azure would impose anyway.
 * - history: the largest run's events against Temporal's warning threshold of 10,240 events per run
 *   (/work/shared/notes/temporal.md "Limits").
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type { BulkEnrollmentOperation } from 'azure-iot-provisioning-service/dist/interfaces';
import { Registry } from 'azure-iothub';
import { createAzureClients } from '../activities/azure-clients';
import type { AuditResult } from '../common/audit';
import { WORKFLOW_TYPES } from '../common/messages';
import { startDevServer, type TemporalCli } from '../common/temporal-server';
import { bundleWorkflows, createWorker } from '../worker/worker';
import { forEachConcurrently, hubHost, startBenchEmulator, timed, type Defer } from './harness';
import type { Measurement } from './report';

const S1_QUERIES_PER_MIN = 20;
const DPS_OPERATIONS_PER_MIN = 1_000;
const HISTORY_WARNING_EVENTS = 10_240;

export interface AuditBenchOptions {
  devices: number;
  bucketDevices?: number;
  cli: TemporalCli;
}

export async function benchAudit(options: AuditBenchOptions, defer: Defer): Promise<Measurement[]> {
  const n = options.devices;
  const bucketDevices = options.bucketDevices ?? Math.max(100, Math.ceil(n / 4));
  const server = await startDevServer({ cli: options.cli });
  defer(() => server.stop());
  const emulator = await startBenchEmulator(defer);
  const testHub = hubHost(emulator, 'test');
  const azure = createAzureClients({
    dpsConnectionString: emulator.connectionStrings.dps,
    hubConnectionStrings: emulator.connectionStrings.hubs,
  });
  const connection = await Connection.connect({ address: server.address });
  defer(() => connection.close());
  const nativeConnection = await NativeConnection.connect({ address: server.address });
  defer(() => nativeConnection.close());
  const client = new Client({ connection, namespace: server.namespace });
  const taskQueue = `bench-${randomUUID()}`;
  const worker = await createWorker({
    connection: nativeConnection,
    namespace: server.namespace,
    taskQueue,
    deps: { azure, temporal: client },
    workflowBundle: await bundleWorkflows(),
    shutdownGraceSeconds: 1,
  });
  const running = worker.run();
  defer(async () => {
    if (worker.getState() === 'RUNNING') worker.shutdown();
    await running;
  });

  // The fleet, through the service SDKs: enrollments 10 per bulk call (DPS's limit), identities 100 per call.
  const dps = ProvisioningServiceClient.fromConnectionString(emulator.connectionStrings.dps);
  const registry = Registry.fromConnectionString(emulator.connectionStrings.hubs.test);
  const ids = Array.from({ length: n }, (_, i) => `bench-audit-${String(i).padStart(6, '0')}`);
  const chunks = <T>(list: T[], size: number) =>
    Array.from({ length: Math.ceil(list.length / size) }, (_, i) => list.slice(i * size, (i + 1) * size));
  await forEachConcurrently(chunks(ids, 10), 16, async (batch) => {
    const operation = {
      mode: 'create',
      enrollments: batch.map((registrationId) => ({
        registrationId,
        deviceId: registrationId,
        attestation: {
          type: 'symmetricKey',
          symmetricKey: {
            primaryKey: randomBytes(32).toString('base64'),
            secondaryKey: randomBytes(32).toString('base64'),
          },
        },
        iotHubs: [testHub],
        allocationPolicy: 'hashed',
        provisioningStatus: Number(registrationId.slice(-6)) % 10 === 0 ? 'disabled' : 'enabled',
      })),
    } as unknown as BulkEnrollmentOperation;
    // The SDK's promise form of runBulkEnrollmentOperation never settles; the callback form works.
    await new Promise((resolve, reject) =>
      dps.runBulkEnrollmentOperation(operation, (err, result) => (err ? reject(err) : resolve(result))),
    );
  });
  await forEachConcurrently(chunks(ids, 100), 8, async (batch) => {
    await registry.addDevices(batch.map((deviceId) => ({ deviceId })));
  });

  // The audit, unpaced: the emulator's quotas are off, and so is the audit's own pacing.
  let result: AuditResult | undefined;
  const workflowId = `audit-bench-${Date.now().toString(36)}`;
  const seconds = await timed(async () => {
    const handle = await client.workflow.start(WORKFLOW_TYPES.auditFleet, {
      taskQueue,
      workflowId,
      args: [{ bucketDevices, hubQueriesPerMinute: 100_000, dpsOperationsPerMinute: 100_000 }],
    });
    result = (await handle.result()) as AuditResult;
  });
  const audit = result!;
  const expected = { revokedButActive: n / 10, stale: n - n / 10 };
  if (
    audit.counts.revokedButActive !== Math.ceil(expected.revokedButActive) ||
    audit.counts.stale + audit.counts.revokedButActive !== n
  ) {
    throw new Error(`audit counted ${JSON.stringify(audit.counts)} for ${n} devices`);
  }

  // Every run of the audit (it continues as new every 20 buckets) and its history's length.
  const runs: number[] = [];
  for await (const run of client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) {
    const history = await client.workflow.getHandle(workflowId, run.runId).fetchHistory();
    runs.push(history.events?.length ?? 0);
  }
  const largestRun = Math.max(...runs);
  const floorSeconds = Math.max(
    (audit.hubQueries / S1_QUERIES_PER_MIN) * 60,
    (audit.dpsOperations / DPS_OPERATIONS_PER_MIN) * 60,
  );
  const perBucket = Math.ceil(n / audit.buckets.total);
  return [
    {
      name: `audit.wallTime (${n})`,
      value: seconds,
      unit: 's',
      better: 'lower',
      target: floorSeconds,
      targetSource: `Azure's floor: ${audit.hubQueries} queries at S1 20/min, ${audit.dpsOperations} DPS ops at 1,000/min`,
      details: {
        devices: n,
        buckets: audit.buckets.total,
        runs: runs.length,
        hubQueries: audit.hubQueries,
        dpsOperations: audit.dpsOperations,
        findings: n,
      },
      note: `${audit.buckets.total} bucket(s) of ~${perBucket} identities, ${runs.length} run(s), ${n} findings kept`,
    },
    {
      name: `audit.historyEvents (${n})`,
      value: largestRun,
      unit: 'events',
      better: 'lower',
      target: HISTORY_WARNING_EVENTS,
      targetSource: "Temporal's per-run warning threshold",
      details: { runs: runs.length, eventsPerRun: runs.join('/') },
      note: `events per run: ${runs.join(', ')}`,
    },
  ];
}
