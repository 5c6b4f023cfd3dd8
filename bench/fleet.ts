/**
 * 6. Fleet operations (issue 10), through the whole product: REST API → Temporal dev server → the project's worker
 * (a process of its own) → activities → Azure SDKs → emulator. Four parts, each side by side in one run:
 *
 * - revoke: a fleet revoke of N devices (10,000) with quotas set so high that they do not bind, against a plain
 *   script making the same Azure calls with the same SDKs and the same concurrency, without durability
 *   (bench/fleet-script.ts). Target: the product takes at most 1.5× the script's wall time.
 * - quota: the same revoke with S1-like quotas enforced by the emulator (429 + Retry-After) and configured in the
 *   product (AZURE_QUOTAS), both scaled up by the same factor so that the run stays short. Targets: the achieved
 *   device rate is at least 95 % of the rate the quotas allow (what the operation plans, common/quotas.ts), and no
 *   device fails because of a 429 (the emulator's 429 answers are counted; retried activity attempts are read from
 *   the histories).
 * - webhook: one Event Grid delivery of 1,000 DeviceConnected events answered in under 1 s (bench/eventgrid.ts).
 * - promote: a fleet promotion of simulated devices (real device SDKs over MQTT, emulator/simulator) in which every device is
 *   promoted.
 * - history: a 100,000-device dry run and a 20,000-device revoke keep every history (the operation's runs through
 *   continue-as-new, and every chunk child) under 10,240 events, and the worker's RSS under 500 MB, sampled every
 *   250 ms from /proc. `--scale` adds the full 100,000-device revoke.
 *
 * Devices are written into the emulator's state before each measurement (bench/fleet-stack.ts seedFleet): an
 * enabled individual enrollment in DPS and an enabled identity in the test hub, tagged for the registry query that
 * selects them (a listed target holds at most 5,000 devices). Each measurement starts from an emulator holding only
 * its own devices.
 */
import { Registry } from 'azure-iothub';
import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import { fleetDevicesQuery, fleetChunkWorkflowId } from '../common/messages';
import type { FleetOperationRequestInput, FleetResult } from '../common/fleet';
import { QuotasConfig } from '../common/quotas';
import type { TemporalCli } from '../common/temporal-server';
import { numberedRegistrationIds, startFleet } from '../emulator/simulator/fleet';
import { enrollSymmetricKeyDevice } from '../emulator/simulator/enroll';
import { benchEventGrid } from './eventgrid';
import {
  clearFleet,
  fleetHistorySizes,
  seedFleet,
  startFleetService,
  startFleetStack,
  type FleetService,
  type FleetStack,
} from './fleet-stack';
import { scriptedFleetRevoke, scriptStats } from './fleet-script';
import { forEachConcurrently, type Defer } from './harness';
import type { Measurement } from './report';

export const FLEET_PARTS = ['revoke', 'history', 'webhook', 'promote', 'quota'] as const;
export type FleetPart = (typeof FLEET_PARTS)[number];

export interface FleetBenchOptions {
  parts: FleetPart[];
  /** revoke: devices per side. */
  revokeDevices: number;
  /** quota: devices, and the factor both quotas are scaled by. */
  quotaDevices: number;
  quotaScale: number;
  /** promote: simulated devices promoted, and events in one Event Grid delivery. */
  promotions: number;
  events: number;
  /** history: the dry run's devices and the revoke's; `scale` adds a revoke of `dryRunDevices`. */
  dryRunDevices: number;
  historyRevokeDevices: number;
  scale: boolean;
  /** The operation's maximumInFlight; the script runs maximumInFlight / 100 batches at once. */
  maximumInFlight: number;
  cli: TemporalCli;
  timeoutMs: number;
}

const RATIO_TARGET = 1.5;
const QUOTA_SHARE = 0.95;
const HISTORY_LIMIT = 10_240;
const RSS_LIMIT_MB = 500;

/** Quotas that never bind: every rate scaled 100,000×. */
const UNBOUND = QuotasConfig.parse({ scale: 100_000 });

export async function benchFleet(options: FleetBenchOptions, defer: Defer): Promise<Measurement[]> {
  const stack = await startFleetStack(options.cli, defer);
  const results: Measurement[] = [];
  const wants = (part: FleetPart) => options.parts.includes(part);

  if (wants('webhook')) results.push(...(await benchEventGrid({ events: options.events, cli: options.cli }, defer)));
  if (wants('revoke') || wants('history') || wants('promote')) {
    const service = await startFleetService(stack, UNBOUND, defer);
    if (wants('revoke')) results.push(await revokeVersusScript(stack, service, options));
    if (wants('history')) results.push(...(await historySizes(stack, service, options)));
    if (wants('promote')) results.push(await fleetPromotion(stack, service, options, defer));
    await service.stop();
  }
  if (wants('quota')) results.push(...(await quotaBound(stack, options, defer)));
  return results;
}

// ---- helpers ----

function revokeRequest(tag: string, maximumInFlight: number, dryRun = false): FleetOperationRequestInput {
  return {
    operation: 'revoke',
    targets: { query: { environment: 'test', where: `tags.fleetbench = '${tag}'` } },
    parameters: { reason: 'fleet bench', disconnectTimeoutSeconds: 1 },
    rollout: { maximumInFlight },
    dryRun,
  };
}

/** Starts an operation through the API and waits for its result (a dry run's too). */
async function runFleet(
  stack: FleetStack,
  service: FleetService,
  request: FleetOperationRequestInput,
  timeoutMs: number,
): Promise<{ workflowId: string; seconds: number; result: FleetResult }> {
  const start = performance.now();
  const answer = await service.post('/v1/fleet-operations', request);
  if (answer.status !== 202 && answer.status !== 200) {
    throw new Error(`POST /v1/fleet-operations: ${answer.status} ${JSON.stringify(answer.body)}`);
  }
  const workflowId = answer.body.workflowId as string;
  const result = (await Promise.race([
    stack.client.workflow.getHandle(workflowId).result(),
    new Promise((_, reject) =>
      setTimeout(() => reject(new Error(`${workflowId} did not finish in ${timeoutMs / 1000} s`)), timeoutMs).unref(),
    ),
  ])) as FleetResult;
  return { workflowId, seconds: (performance.now() - start) / 1000, result };
}

function scriptClients(stack: FleetStack) {
  const { connectionStrings } = stack.emulator;
  return {
    dps: ProvisioningServiceClient.fromConnectionString(connectionStrings.dps),
    hubs: Object.fromEntries(
      Object.entries(connectionStrings.hubs).map(([environment, cs]) => [
        environment,
        Registry.fromConnectionString(cs),
      ]),
    ),
  };
}

const perSecond = (n: number, seconds: number) => Math.round(n / seconds);

/** Failed devices of an operation whose error names a 429 / throttling, from its chunks' device lists. */
async function throttledFailures(stack: FleetStack, workflowId: string, chunks: number): Promise<number> {
  let n = 0;
  for (let index = 0; index < chunks; index += 1) {
    const handle = stack.client.workflow.getHandle(fleetChunkWorkflowId(workflowId, index));
    for (const state of ['failed', 'timedOut'] as const) {
      const { devices } = await handle.query(fleetDevicesQuery, { state, limit: 1_000 });
      n += devices.filter((d) => /429|thrott/i.test(`${d.error?.type} ${d.error?.message}`)).length;
    }
  }
  return n;
}

// ---- revoke: the product against a plain script ----

async function revokeVersusScript(
  stack: FleetStack,
  service: FleetService,
  options: FleetBenchOptions,
): Promise<Measurement> {
  const n = options.revokeDevices;
  const { emulator } = stack;
  const clients = scriptClients(stack);
  const lanes = Math.max(1, Math.floor(options.maximumInFlight / 100));
  const script = (tag: string) =>
    scriptedFleetRevoke(clients, { queryHub: 'test', tag, batchesInFlight: lanes, statusReason: 'fleet bench' });

  // Warm-up of both sides: workflow sandbox, first activities, TLS sessions, JIT.
  clearFleet(emulator);
  seedFleet(emulator, 'warm-product', 200);
  await runFleet(stack, service, revokeRequest('warm-product', options.maximumInFlight), options.timeoutMs);
  seedFleet(emulator, 'warm-script', 200);
  await script('warm-script');

  clearFleet(emulator);
  seedFleet(emulator, 'revoke-product', n);
  const product = await runFleet(
    stack,
    service,
    revokeRequest('revoke-product', options.maximumInFlight),
    options.timeoutMs,
  );
  const { counts } = product.result;
  if (counts.succeeded !== n) throw new Error(`fleet revoke: ${JSON.stringify(counts)} of ${n} devices`);

  clearFleet(emulator);
  seedFleet(emulator, 'revoke-script', n);
  const start = performance.now();
  const revoked = await script('revoke-script');
  const scriptSeconds = (performance.now() - start) / 1000;
  if (revoked !== n) throw new Error(`script revoke: ${revoked} of ${n} devices`);
  clearFleet(emulator);

  const ratio = product.seconds / scriptSeconds;
  return {
    name: `fleet.revoke (${n}) vs script`,
    value: ratio,
    unit: 'x',
    better: 'lower',
    target: RATIO_TARGET,
    targetSource: 'issue 10: <= 1.5x a plain script, same calls and concurrency',
    details: {
      devices: n,
      productSeconds: product.seconds,
      scriptSeconds,
      batchesInFlight: lanes,
      maximumInFlight: options.maximumInFlight,
      chunks: product.result.plan?.chunks ?? 0,
      scriptNetworkRetries: scriptStats.networkRetries,
    },
    note:
      `product ${product.seconds.toFixed(1)} s (${perSecond(n, product.seconds)} devices/s), ` +
      `script ${scriptSeconds.toFixed(1)} s (${perSecond(n, scriptSeconds)} devices/s), ` +
      `${lanes} batches of 100 in flight, ${scriptStats.networkRetries} script calls retried on reset; ${ratio <= RATIO_TARGET ? 'PASS' : 'FAIL'} vs ${RATIO_TARGET}`,
  };
}

// ---- history: event counts and worker memory ----

async function historySizes(
  stack: FleetStack,
  service: FleetService,
  options: FleetBenchOptions,
): Promise<Measurement[]> {
  const { emulator } = stack;
  const runs: Array<{ label: string; devices: number; dryRun: boolean }> = [
    { label: 'dry run', devices: options.dryRunDevices, dryRun: true },
    { label: 'revoke', devices: options.historyRevokeDevices, dryRun: false },
    ...(options.scale ? [{ label: 'revoke', devices: options.dryRunDevices, dryRun: false }] : []),
  ];
  const results: Measurement[] = [];
  service.resetRss();
  for (const run of runs) {
    clearFleet(emulator);
    const tag = `history-${run.dryRun ? 'dry' : 'revoke'}-${run.devices}`;
    seedFleet(emulator, tag, run.devices, { dps: !run.dryRun });
    const { workflowId, seconds, result } = await runFleet(
      stack,
      service,
      revokeRequest(tag, options.maximumInFlight, run.dryRun),
      options.timeoutMs,
    );
    if (result.plan?.devices !== run.devices) throw new Error(`${tag}: planned ${result.plan?.devices} devices`);
    if (!run.dryRun && result.counts.succeeded !== run.devices) {
      throw new Error(`${tag}: ${JSON.stringify(result.counts)}`);
    }
    const sizes = await fleetHistorySizes(stack.client, workflowId, run.dryRun ? 0 : (result.plan?.chunks ?? 0));
    results.push({
      name: `fleet.history (${run.label} ${run.devices})`,
      value: sizes.maxEvents,
      unit: 'events',
      better: 'lower',
      target: HISTORY_LIMIT,
      targetSource: 'issue 10: every history < 10,240 events',
      details: { devices: run.devices, seconds, ...sizes },
      note:
        `${seconds.toFixed(1)} s; ${sizes.histories} histories (${sizes.runs} operation run(s), ` +
        `${sizes.histories - sizes.runs} chunks), ${sizes.totalEvents} events, largest ${sizes.maxEventsIn}`,
    });
  }
  clearFleet(emulator);
  results.push({
    name: 'fleet.workerRss max',
    value: service.maxRssMiB(),
    unit: 'MiB',
    better: 'lower',
    target: RSS_LIMIT_MB,
    targetSource: 'issue 10: worker RSS < 500 MB',
    details: {
      sampledEveryMs: 250,
      startRssMiB: service.startRssMiB,
      runs: runs.map((r) => `${r.label} ${r.devices}`).join(', '),
    },
    note:
      `worker process, during ${runs.map((r) => `${r.label} ${r.devices}`).join(', ')}; ` +
      `${Math.round(service.startRssMiB)} MiB once polling, before any work`,
  });
  return results;
}

// ---- promote: a fleet of simulated devices ----

async function fleetPromotion(
  stack: FleetStack,
  service: FleetService,
  options: FleetBenchOptions,
  defer: Defer,
): Promise<Measurement> {
  const n = options.promotions;
  const { emulator, hosts } = stack;
  clearFleet(emulator);
  const ids = numberedRegistrationIds('promote', n);
  // Enrolled through the service SDK, as an operator does (bench/promotion.ts does the same).
  const dps = ProvisioningServiceClient.fromConnectionString(emulator.connectionStrings.dps);
  const keys = new Map<string, string>();
  await forEachConcurrently(ids, 16, async (registrationId) => {
    keys.set(registrationId, await enrollSymmetricKeyDevice(dps, { registrationId, hubHostName: hosts.test }));
  });
  const address = `127.0.0.1:${emulator.mqttPort}`;
  const connectStart = performance.now();
  const fleet = startFleet({
    registrationIds: ids,
    attestationFor: (id) => ({ type: 'symmetricKey', key: keys.get(id)! }),
    idScope: emulator.idScope,
    hubMqttAddress: address,
    dpsMqttAddress: address,
    ca: emulator.caPem,
    backoff: { initialMs: 100, maxMs: 2_000 },
  });
  defer(() => fleet.stop());
  await fleet
    .waitUntil((s) => s.connectedByHub[hosts.test] === n, options.timeoutMs, 20)
    .catch((err: Error) => {
      const stuck = fleet.devices.find((d) => !d.state.connected);
      throw new Error(`${err.message}; e.g. ${JSON.stringify(stuck?.state.history.slice(-2))}`);
    });
  const connectSeconds = (performance.now() - connectStart) / 1000;

  const { seconds, result } = await runFleet(
    stack,
    service,
    {
      operation: 'promote',
      targets: { registrationIds: ids },
      parameters: { pollInterval: '1s' },
      deviceTimeout: '30m',
      rollout: { maximumInFlight: options.maximumInFlight },
    },
    options.timeoutMs,
  );
  await fleet.waitUntil((s) => (s.connectedByHub[hosts.production] ?? 0) === result.counts.succeeded, 60_000, 20);
  const onProduction = fleet.summary().connectedByHub[hosts.production] ?? 0;
  await fleet.stop();
  clearFleet(emulator);
  return {
    name: `fleet.promote (${n})`,
    value: result.counts.succeeded,
    unit: 'promoted',
    better: 'higher',
    target: n,
    targetSource: 'issue 10: every device of the fleet promoted',
    details: { devices: n, seconds, connectSeconds, onProduction, ...result.counts },
    note:
      `${n} simulated MQTT devices (connected in ${connectSeconds.toFixed(1)} s), promoted in ${seconds.toFixed(1)} s ` +
      `(${(n / seconds).toFixed(1)}/s); ${onProduction} connected to production; ` +
      `failed ${result.counts.failed}, timed out ${result.counts.timedOut}`,
  };
}

// ---- quota: S1-like quotas in the emulator and the product ----

async function quotaBound(stack: FleetStack, options: FleetBenchOptions, defer: Defer): Promise<Measurement[]> {
  const n = options.quotaDevices;
  const scale = options.quotaScale;
  const { emulator } = stack;
  const quotas = QuotasConfig.parse({
    hubs: { test: { tier: 'S1', units: 1 }, production: { tier: 'S1', units: 1 } },
    scale,
  });
  const service = await startFleetService(stack, quotas, defer);
  clearFleet(emulator);
  seedFleet(emulator, 'quota', n);
  const { limits } = emulator.state;
  limits.quotas = { enabled: true, scale, overrides: {} };
  limits.buckets.clear();
  limits.throttled.clear();
  defer(() => void (limits.quotas = { enabled: false, scale: 1, overrides: {} }));
  const { workflowId, seconds, result } = await runFleet(
    stack,
    service,
    revokeRequest('quota', options.maximumInFlight),
    options.timeoutMs,
  );
  limits.quotas = { enabled: false, scale: 1, overrides: {} };
  const throttled = [...limits.throttled.values()].reduce((a, b) => a + b, 0);
  const throttledBy = [...limits.throttled.entries()].map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
  const chunks = result.plan?.chunks ?? 0;
  const sizes = await fleetHistorySizes(stack.client, workflowId, chunks);
  const failedBy429 = await throttledFailures(stack, workflowId, chunks);
  await service.stop();
  clearFleet(emulator);

  const quota = result.plan!.quota;
  const quotaRate = quota.devicesPerMinute / 60;
  const achieved = n / seconds;
  const common = {
    devices: n,
    seconds,
    quotaScale: scale,
    quotaDevicesPerMinute: quota.devicesPerMinute,
    binding: quota.binding,
    throttled429: throttled,
    throttledBy,
    retriedActivities: sizes.retriedActivities,
    failed: result.counts.failed,
    timedOut: result.counts.timedOut,
  };
  return [
    {
      name: `fleet.quotaRate (${n}, ${scale}x S1)`,
      value: achieved,
      unit: 'devices/s',
      better: 'higher',
      target: QUOTA_SHARE * quotaRate,
      targetSource: `issue 10: >= 95 % of the quota rate, ${quotaRate.toFixed(1)}/s (${quota.binding})`,
      details: common,
      note:
        `${n} devices in ${seconds.toFixed(1)} s = ${((achieved / quotaRate) * 100).toFixed(1)} % of the quota rate; ` +
        `emulator answered ${throttled} x 429 (${throttledBy}), ${sizes.retriedActivities} activity attempts retried`,
    },
    {
      name: `fleet.quota429Failures (${n})`,
      value: failedBy429,
      unit: 'devices',
      better: 'lower',
      target: 0,
      targetSource: 'issue 10: no device fails because of 429',
      details: common,
      note: `devices failed ${result.counts.failed}, timed out ${result.counts.timedOut}; ${failedBy429} of them by 429`,
    },
  ];
}
