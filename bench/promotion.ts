/**
 * 4. Promotion end to end through the real stack: REST API → Temporal dev server (common/temporal-server.ts) →
 * the project's worker (worker/worker.ts) with the real activities → Azure SDKs → emulator → simulated devices
 * on the real device SDKs, which re-register through DPS on their own once removed from the test hub. K
 * promotions start at once; figures are promotions/s over the batch and the p50/p95 latency from the POST to
 * the workflow's result.
 *
 * The device's re-registration is part of every promotion, and is wall-clock waiting rather than server work.
 * It is kept short and bounded so that it does not dominate: DPS answers `retry-after: 0`, the simulated
 * devices back off 100 ms after the test hub rejects them, promotions poll every second (the contract's floor,
 * growing ×1.5) and Event Grid is not wired (the polling path: no webhook delivery in the loop). The wait overlaps across the K
 * concurrent promotions, so it caps throughput only at about K / wait, well above the target.
 *
 * Target: the dev server sustains roughly 10–20 workflows/s of a 3-activity workflow
 * (/work/shared/notes/temporal.md "Reference numbers"). A promotion schedules more activities (A, counted in
 * the histories of this run: 7 before the wait, 2 per poll, 2 to verify), so the lower end scaled by work is
 * R = 10 × 3 / A promotions/s. Latency targets follow from that rate with all K started together: the i-th
 * completion is due at i / R, plus the first poll (1 s) — p50 ≤ 0.5 K / R + 1 s, p95 ≤ 0.95 K / R + 1 s.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import { createAzureClients } from '../activities/azure-clients';
import { createApp } from '../api/app';
import { createLogger } from '../common/logger';
import { promotionWorkflowId } from '../common/messages';
import type { PromotionResult } from '../common/promotion';
import { describeCli, startDevServer, type TemporalCli } from '../common/temporal-server';
import { enrollSymmetricKeyDevice } from '../emulator/simulator/enroll';
import { SimulatedDevice } from '../emulator/simulator/device';
import { bundleWorkflows, createWorker } from '../worker/worker';
import { forEachConcurrently, hubHost, percentile, startBenchEmulator, type Defer } from './harness';
import type { Measurement } from './report';
import { API_KEY_HEADER, generateApiKey } from '../api/auth/api-keys';
import { localKeyEntry } from '../api/security';

const REFERENCE_WORKFLOWS_PER_S = 10;
const REFERENCE_ACTIVITIES_PER_WORKFLOW = 3;
const REFERENCE_SOURCE = 'dev server 10 wf/s x 3 activities';

export interface PromotionBenchOptions {
  promotions: number;
  pollIntervalSeconds: number;
  cli: TemporalCli;
  timeoutMs: number;
}

export async function benchPromotion(options: PromotionBenchOptions, defer: Defer): Promise<Measurement[]> {
  const k = options.promotions;
  const server = await startDevServer({ cli: options.cli });
  defer(() => server.stop());
  const emulator = await startBenchEmulator(defer);
  const hosts = { test: hubHost(emulator, 'test'), production: hubHost(emulator, 'production') };
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

  // The bench's own operator key, known to this app only.
  const apiKey = generateApiKey();
  const app = createApp({
    security: { auth: { apiKeys: [localKeyEntry('local-operator', 'operator', apiKey)] }, rateLimitPerMinute: 100_000 },
    client,
    taskQueue,
    log: createLogger('silent'),
    environments: hosts,
    eventGridSecret: randomBytes(16).toString('hex'),
  });
  const api: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  defer(() => new Promise<void>((resolve) => api.close(() => resolve())));
  const apiUrl = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;

  // K devices plus one for the warm-up promotion, each with its own individual enrollment on the test hub.
  const dps = ProvisioningServiceClient.fromConnectionString(emulator.connectionStrings.dps);
  const run = Date.now().toString(36);
  const ids = Array.from({ length: k + 1 }, (_, i) => `bench-promo-${run}-${i}`);
  const devices: SimulatedDevice[] = [];
  defer(() => Promise.all(devices.map((d) => d.stop())));
  await forEachConcurrently(ids, 16, async (registrationId) => {
    const key = await enrollSymmetricKeyDevice(dps, { registrationId, hubHostName: hosts.test });
    const address = `127.0.0.1:${emulator.mqttPort}`;
    const device = new SimulatedDevice({
      registrationId,
      idScope: emulator.idScope,
      attestation: { type: 'symmetricKey', key },
      hubMqttAddress: address,
      dpsMqttAddress: address,
      ca: emulator.caPem,
      backoff: { initialMs: 100, maxMs: 1_000 },
    });
    devices.push(device.start());
    await device.waitFor((e) => e.type === 'connected' && e.hub === hosts.test, options.timeoutMs);
  });

  const promote = async (registrationId: string) => {
    const start = performance.now();
    const res = await fetch(`${apiUrl}/v1/promotions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', [API_KEY_HEADER]: apiKey },
      body: JSON.stringify({ registrationId, pollInterval: `${options.pollIntervalSeconds}s` }),
    });
    if (res.status !== 202)
      throw new Error(`POST /v1/promotions for ${registrationId}: ${res.status} ${await res.text()}`);
    const handle = client.workflow.getHandle(promotionWorkflowId(registrationId));
    const result = (await handle.result()) as PromotionResult;
    const end = performance.now();
    if (result.outcome !== 'promoted') throw new Error(`${registrationId}: promotion ended ${result.outcome}`);
    return { start, end, handle, result };
  };

  // Warm-up: the worker's first workflow (sandbox set-up), first activities, first gRPC streams.
  await promote(ids[0]);

  const outcomes = await Promise.all(ids.slice(1).map(promote));
  const first = Math.min(...outcomes.map((o) => o.start));
  const last = Math.max(...outcomes.map((o) => o.end));
  const seconds = (last - first) / 1000;
  const latencies = outcomes.map((o) => (o.end - o.start) / 1000);

  let activities = 0;
  for (const { handle } of outcomes) {
    const history = await handle.fetchHistory();
    activities += (history.events ?? []).filter((e) => e.activityTaskScheduledEventAttributes).length;
  }
  const activitiesPerPromotion = activities / k;
  const rate = (REFERENCE_WORKFLOWS_PER_S * REFERENCE_ACTIVITIES_PER_WORKFLOW) / activitiesPerPromotion;
  const firstPoll = options.pollIntervalSeconds;
  // Where the time goes, from the workflow's own step times: the stack's work up to the removal from the test
  // hub, then the wait for the device (its re-registration plus the poll that sees it).
  const stepAt = (r: PromotionResult, step: string) => Date.parse(r.steps.find((s) => s.step === step)?.at ?? '');
  const beforeWait = outcomes.map(
    (o) => (stepAt(o.result, 'removedFromSource') - Date.parse(o.result.startedAt)) / 1000,
  );
  const waiting = outcomes.map((o) => (stepAt(o.result, 'connected') - stepAt(o.result, 'removedFromSource')) / 1000);
  const viaPolling = outcomes.filter((o) => o.result.connectedVia === 'polling').length;
  const common = {
    promotions: k,
    activitiesPerPromotion,
    referencePromotionsPerSecond: rate,
    pollIntervalSeconds: options.pollIntervalSeconds,
    connectedViaPolling: viaPolling,
    beforeWaitP50Seconds: percentile(beforeWait, 50),
    waitingP50Seconds: percentile(waiting, 50),
    temporal: describeCli(options.cli),
  };
  const scaled = `${REFERENCE_SOURCE}, scaled to ${activitiesPerPromotion.toFixed(1)} activities`;

  return [
    {
      name: `promotion.throughput (${k})`,
      value: k / seconds,
      unit: 'promotions/s',
      better: 'higher',
      target: rate,
      targetSource: scaled,
      details: { ...common, seconds },
      note:
        `${k} promotions in ${seconds.toFixed(2)} s, ${activitiesPerPromotion.toFixed(1)} activities each; ` +
        `p50 ${percentile(beforeWait, 50).toFixed(2)} s of work up to the removal, ` +
        `${percentile(waiting, 50).toFixed(2)} s waiting for the device`,
    },
    {
      name: 'promotion.latency p50',
      value: percentile(latencies, 50),
      unit: 's',
      better: 'lower',
      target: (0.5 * k) / rate + firstPoll,
      targetSource: `0.5 K / R + first poll, R from ${REFERENCE_SOURCE}`,
      details: common,
    },
    {
      name: 'promotion.latency p95',
      value: percentile(latencies, 95),
      unit: 's',
      better: 'lower',
      target: (0.95 * k) / rate + firstPoll,
      targetSource: `0.95 K / R + first poll, R from ${REFERENCE_SOURCE}`,
      details: common,
    },
  ];
}
