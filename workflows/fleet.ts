import { requestedByKeyword, type ChangeRequest, type RequestedBy } from '../common/requested-by';
import {
  allHandlersFinished,
  ApplicationFailure,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  ParentClosePolicy,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  startChild,
  upsertMemo,
  upsertSearchAttributes,
  workflowInfo,
  CancellationScope,
  isCancellation,
  patched,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { Activities } from '../activities';
import {
  cancelFleetUpdate,
  chunkProgressSignal,
  fleetChunkWorkflowId,
  fleetDevicesQuery,
  fleetStatusQuery,
  grantSignal,
  OPERATIONS,
  pauseFleetUpdate,
  promotionWorkflowId,
  resumeFleetUpdate,
  stopChunkSignal,
  type ChunkProgress,
} from '../common/messages';
import {
  DEVICE_STATES,
  FleetErrors,
  FleetOperationRequest,
  MAX_FLEET_DEVICES,
  type FleetContext,
  noCounts,
  type DeviceCounts,
  type DeviceRecord,
  type FleetDevice,
  type FleetOperationRequestInput,
  type FleetPlan,
  type FleetResult,
  type FleetStatus,
} from '../common/fleet';
import { durationMs, PromotionErrors, type PromotionRequestInput } from '../common/promotion';
import { SA } from '../common/search-attributes';
import { PERMANENT_FAILURES } from './policies';
import { promoteDevice } from './promotion';
import { reinstateDevices } from './reinstatement';
import { revokeDevices } from './revocation';
import { applicationFailureIn, failureOf } from './saga';

// ---- Timeouts, retry policies, sizes ----

const planning = proxyActivities<Activities>({
  startToCloseTimeout: '2 minutes',
  heartbeatTimeout: '10 seconds',
  scheduleToCloseTimeout: '2 hours',
  retry: {
    initialInterval: '1 second',
    backoffCoefficient: 2,
    maximumInterval: '1 minute',
    nonRetryableErrorTypes: [...PERMANENT_FAILURES, ...Object.values(FleetErrors)],
  },
});

/** Devices a chunk holds (its input: the snapshot's slice), and devices a revoke/reinstate batch handles at once. */
const CHUNK_SIZE = 500;
const BATCH_SIZE = 100;
const TARGET_PAGE = 500;
/** How often the rollout loop grants devices and looks at its criteria, at most and at least. */
const MIN_TICK_MS = 1_000;
const MAX_TICK_MS = 10_000;
/** A run of the operation ends (continues as new) after this many loop turns, to keep histories short. */
const TURNS_PER_RUN = 400;
/** Progress signals a chunk coalesces: at most one per this interval (and always the last). */
const PROGRESS_INTERVAL_MS = 2_000;

// ---- The operation ----

interface ChunkState {
  index: number;
  /** The sequence number of the last progress applied. */
  sequence: number;
  size: number;
  granted: number;
  started: number;
  counts: DeviceCounts;
  done: boolean;
}

interface Carry {
  request: FleetOperationRequest;
  requestedBy?: RequestedBy;
  status: FleetStatus;
  chunks: ChunkState[];
  groupEnds: number[];
  rampSteps: number;
  tokens: number;
  stopSent: boolean;
  cancel?: { force: boolean; reason: string };
  paused?: string;
  /** The rollout group whose thresholds were last checked, and the counts when it began. */
  checkedGroup?: number;
  failingBefore?: number;
  succeededBefore?: number;
  /** (time, devices started) over the last minute: the measured rate. */
  window: Array<[number, number]>;
}

/** What wakes the rollout loop: a chunk's progress, or a pause, resume or cancel. */
interface Wakes {
  progress: number;
  control: number;
}

/**
 * One fleet operation: snapshots its devices at start into chunks (child workflows holding up to 500 devices each),
 * then grants them devices to start at the rate the request and the Azure quotas allow — constant or ramping, in
 * rollout groups with thresholds — stopping on abort criteria, pausing and resuming on request, and continuing as
 * new to keep its history short. Chunks run each device through the operation's own per-device logic.
 */
export async function fleetOperation(
  input: FleetOperationRequestInput,
  carry?: Carry,
  context: FleetContext = {},
): Promise<FleetResult> {
  const state: Carry = carry ?? (await plan(input, context));
  const { status } = state;
  const wakes: Wakes = { progress: 0, control: 0 };
  installHandlers(state, wakes);
  if (status.phase === 'planned') return finish(state, 'planned');
  // Cancelled while planning: a dry run has nothing to stop; otherwise the loop below stops the chunks started.
  if (state.cancel && state.request.dryRun) return finish(state, 'cancelled');

  for (let turn = 0; turn < TURNS_PER_RUN; turn += 1) {
    if (state.chunks.every((c) => c.done)) break;
    const before = Date.now();
    if (state.cancel && !state.stopSent) await stopChunks(state);
    if (!state.cancel && !state.paused) {
      grantDevices(state, before);
      checkAbort(state);
      checkGroups(state);
    }
    refresh(state);
    const tickMs = Math.min(MAX_TICK_MS, Math.max(MIN_TICK_MS, 60_000 / Math.max(1, status.ratePerMinute)));
    const seen = { ...wakes };
    await condition(
      () => wakes.progress !== seen.progress || wakes.control !== seen.control,
      state.paused ? MAX_TICK_MS : tickMs,
    );
    tokenClock(state, Date.now() - before);
  }
  if (!state.chunks.every((c) => c.done)) {
    await condition(allHandlersFinished);
    return continueAsNew<typeof fleetOperation>(input, state);
  }
  const failures = status.counts.failed + status.counts.timedOut;
  return finish(
    state,
    status.abortedBecause ? 'aborted' : state.cancel ? 'cancelled' : failures ? 'completedWithFailures' : 'completed',
  );
}

/** An operator's pause, resume or cancel, with who asked: the status keeps the last 50. */
function recordAction(status: FleetStatus, action: string, change: ChangeRequest | undefined): void {
  if (!change?.requestedBy) return;
  const actions = (status.operatorActions ??= []);
  actions.push({ action, requestedBy: change.requestedBy, at: new Date().toISOString() });
  if (actions.length > 50) actions.splice(0, actions.length - 50);
}

function installHandlers(state: Carry, wakes: Wakes): void {
  const { status } = state;
  setHandler(fleetStatusQuery, () => status);
  setHandler(chunkProgressSignal, (progress: ChunkProgress) => {
    const chunk = state.chunks[progress.chunkIndex];
    if (!chunk || progress.sequence <= chunk.sequence) return; // an older report, overtaken by a newer one
    chunk.sequence = progress.sequence;
    chunk.counts = progress.counts;
    chunk.started = progress.started;
    chunk.done = progress.done;
    recount(state);
    wakes.progress += 1;
  });
  const finished = () => ['completed', 'aborted', 'cancelled', 'planned'].includes(status.phase);
  setHandler(
    pauseFleetUpdate,
    (options) => {
      state.paused = options?.reason ?? 'paused by request';
      recordAction(status, 'pause', options);
      status.phase = 'paused';
      status.pausedBecause = state.paused;
      wakes.control += 1;
      refresh(state);
      return status;
    },
    {
      validator: (_options) => {
        if (finished() || state.cancel) throw failure(FleetErrors.alreadyFinished, `the operation is ${status.phase}`);
      },
    },
  );
  setHandler(
    resumeFleetUpdate,
    (change) => {
      state.paused = undefined;
      recordAction(status, 'resume', change);
      status.phase = 'running';
      status.pausedBecause = undefined;
      wakes.control += 1;
      refresh(state);
      return status;
    },
    {
      validator: (_change) => {
        if (!state.paused) throw failure(FleetErrors.notPaused, `the operation is ${status.phase}, not paused`);
      },
    },
  );
  setHandler(
    cancelFleetUpdate,
    (options) => {
      state.cancel = { force: !!options?.force, reason: options?.reason ?? 'cancelled by request' };
      recordAction(status, options?.force ? 'cancel (force)' : 'cancel', options);
      state.paused = undefined;
      status.phase = 'cancelling';
      wakes.control += 1;
      refresh(state);
      return status;
    },
    {
      validator: (_options) => {
        if (finished()) throw failure(FleetErrors.alreadyFinished, `the operation is ${status.phase}`);
      },
    },
  );
}

// ---- 1. Plan: snapshot the targets into chunks ----

async function plan(input: FleetOperationRequestInput, context: FleetContext): Promise<Carry> {
  const { requestedBy, maxDevices } = context;
  const parsed = FleetOperationRequest.safeParse(input);
  if (!parsed.success) {
    throw failure(
      FleetErrors.invalidRequest,
      parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '),
    );
  }
  const request = parsed.data;
  const now = new Date().toISOString();
  const status: FleetStatus = {
    workflowId: workflowInfo().workflowId,
    operation: request.operation,
    phase: 'planning',
    ...(requestedBy ? { requestedBy } : {}),
    counts: noCounts(),
    started: 0,
    ratePerMinute: 0,
    measuredPerMinute: 0,
    startedAt: now,
    updatedAt: now,
  };
  setHandler(fleetStatusQuery, () => status);
  upsertSearchAttributes([
    { key: SA.operation, value: OPERATIONS.fleet },
    { key: SA.phase, value: 'planning' },
  ]);
  setCurrentDetails(`**Fleet ${request.operation}**: planning`);

  // The controls work while the snapshot is taken too (a large group or query takes minutes; a plan whose DPS
  // calls keep failing retries for hours). A pause holds the rollout once planned; a cancel stops the snapshot at
  // once — the chunks already started are stopped and the operation ends cancelled. The rollout's own handlers
  // replace these once the plan is made.
  const early: { paused?: string; cancel?: { force: boolean; reason: string } } = {};
  const planning_ = new CancellationScope();
  setHandler(
    pauseFleetUpdate,
    (options) => {
      early.paused = options?.reason ?? 'paused by request';
      recordAction(status, 'pause', options);
      status.pausedBecause = early.paused;
      return status;
    },
    {
      validator: (_options) => {
        if (early.cancel) throw failure(FleetErrors.alreadyFinished, 'the operation is cancelling');
      },
    },
  );
  setHandler(
    resumeFleetUpdate,
    (change) => {
      early.paused = undefined;
      recordAction(status, 'resume', change);
      status.pausedBecause = undefined;
      return status;
    },
    {
      validator: (_change) => {
        if (!early.paused) throw failure(FleetErrors.notPaused, 'the operation is planning, not paused');
      },
    },
  );
  setHandler(cancelFleetUpdate, (options) => {
    early.cancel ??= { force: !!options?.force, reason: options?.reason ?? 'cancelled by request' };
    if (options?.force) early.cancel.force = true;
    recordAction(status, options?.force ? 'cancel (force)' : 'cancel', options);
    early.paused = undefined;
    status.pausedBecause = undefined;
    status.phase = 'cancelling';
    upsertSearchAttributes([{ key: SA.phase, value: 'cancelling' }]);
    planning_.cancel();
    return status;
  });

  const environments = await planning.listEnvironments();
  const involved =
    request.operation === 'promote'
      ? [request.parameters.sourceEnvironment, request.parameters.targetEnvironment]
      : Object.keys(environments);
  for (const environment of involved) {
    if (!environments[environment]) {
      throw failure('UnknownEnvironment', `no IoT hub is configured for environment "${environment}"`);
    }
  }
  if (request.operation === 'promote' && durationMs(request.deviceTimeout) > 30 * 86_400_000) {
    throw failure(FleetErrors.invalidRequest, 'deviceTimeout: a promotion waits at most 30d');
  }
  const quota = await planning.fleetQuotaPlan({ operation: request.operation, environments: involved });
  const chunks: ChunkState[] = [];
  const sample: string[] = [];
  const byHub: Record<string, number> = {};
  const seen = new Set<string>();
  let pending: FleetDevice[] = [];
  let devices = 0;

  const startChunk = async (slice: FleetDevice[]) => {
    const index = chunks.length;
    chunks.push({
      index,
      sequence: 0,
      size: slice.length,
      granted: 0,
      started: 0,
      counts: { ...noCounts(), pending: slice.length },
      done: false,
    });
    if (request.dryRun) return;
    // Not cancellable: a cancel while planning must find every chunk in the list started, to stop it.
    await CancellationScope.nonCancellable(() =>
      startChild(fleetChunk, {
        workflowId: fleetChunkWorkflowId(status.workflowId, index),
        args: [
          {
            operationWorkflowId: status.workflowId,
            chunkIndex: index,
            devices: slice,
            request,
            ...(requestedBy ? { requestedBy } : {}),
          },
        ],
        // Chunks outlive the run that started them: the operation continues as new while they work.
        parentClosePolicy: ParentClosePolicy.ABANDON,
        staticSummary: `Fleet ${request.operation}: devices ${index * CHUNK_SIZE + 1}–${index * CHUNK_SIZE + slice.length}`,
      }),
    );
  };
  const take = async (page: FleetDevice[], hub?: string) => {
    for (const device of page) {
      if (seen.has(device.registrationId)) continue;
      seen.add(device.registrationId);
      devices += 1;
      if (devices > MAX_FLEET_DEVICES) {
        throw failure(FleetErrors.tooManyDevices, `the targets hold more than ${MAX_FLEET_DEVICES} devices`);
      }
      if (maxDevices !== undefined && devices > maxDevices) {
        throw failure(
          FleetErrors.needsAdmin,
          `the targets hold more than ${maxDevices} devices: a larger fleet operation needs the admin role`,
        );
      }
      if (sample.length < 20) sample.push(device.registrationId);
      if (hub) byHub[hub] = (byHub[hub] ?? 0) + 1;
      pending.push(device);
      if (pending.length === CHUNK_SIZE) {
        await startChunk(pending);
        pending = [];
      }
    }
  };

  // The snapshot: every target device now, whatever joins the group or matches the query later. Should planning
  // fail part-way (too many devices, a DPS error past its retries), the chunks already started are stopped: they
  // would otherwise wait for grants that never come.
  try {
    await planning_.run(() => snapshot());
  } catch (err) {
    if (early.cancel && isCancellation(err)) return cancelledWhilePlanning();
    await Promise.all(
      request.dryRun
        ? []
        : chunks.map((c) =>
            getExternalWorkflowHandle(fleetChunkWorkflowId(status.workflowId, c.index))
              .signal(stopChunkSignal, { force: false })
              .catch(() => undefined),
          ),
    );
    throw err;
  }
  async function snapshot(): Promise<void> {
    const targets = request.targets;
    if ('registrationIds' in targets) {
      await take(targets.registrationIds.map((registrationId) => ({ registrationId })));
    } else if ('enrollmentGroupId' in targets) {
      const stages =
        request.operation === 'revoke' ? (['members', 'registrations'] as const) : (['registrations'] as const);
      for (const stage of stages) {
        let continuation: string | undefined;
        do {
          const page =
            stage === 'members'
              ? await planning.dpsGroupMemberEnrollments({
                  enrollmentGroupId: targets.enrollmentGroupId,
                  continuation,
                  pageSize: TARGET_PAGE,
                })
              : await planning.dpsGroupRegistrations({
                  enrollmentGroupId: targets.enrollmentGroupId,
                  continuation,
                  pageSize: TARGET_PAGE,
                });
          await take(page.registrations.map((r) => ({ registrationId: r.registrationId, deviceId: r.deviceId })));
          continuation = page.continuation;
        } while (continuation);
      }
    } else if ('query' in targets) {
      const hub = environments[targets.query.environment];
      if (!hub)
        throw failure('UnknownEnvironment', `no IoT hub is configured for environment "${targets.query.environment}"`);
      let continuation: string | undefined;
      do {
        const page = await planning.hubQueryDevices({ ...targets.query, continuation, pageSize: TARGET_PAGE });
        await take(page.devices, hub);
        continuation = page.continuation;
      } while (continuation);
    } else {
      const earlier = `fleet/${targets.retryOf}`;
      for (let index = 0; ; index += 1) {
        const chunk = await planning.fleetFailedDevices({ chunkWorkflowId: fleetChunkWorkflowId(earlier, index) });
        if (!chunk.exists) {
          if (index === 0) throw failure(FleetErrors.invalidRequest, `no fleet operation ${targets.retryOf}`);
          break;
        }
        await take(chunk.devices);
      }
    }
    if (pending.length) await startChunk(pending);
  }

  if (early.cancel) return cancelledWhilePlanning(); // the cancel came as the last page was taken

  const ratePerMinute = Math.min(initialRate(request), quota.devicesPerMinute);
  const planned: FleetPlan = {
    devices,
    sample,
    byHub,
    quota,
    ratePerMinute,
    estimatedSeconds: Math.ceil(
      (devices / Math.min(request.rollout.maximumPerMinute ?? Infinity, quota.devicesPerMinute)) * 60,
    ),
    chunks: chunks.length,
  };
  status.plan = planned;
  status.counts = { ...noCounts(), pending: devices };
  status.ratePerMinute = ratePerMinute;
  status.phase = request.dryRun ? 'planned' : devices === 0 ? 'completed' : early.paused ? 'paused' : 'running';
  upsertSearchAttributes([{ key: SA.phase, value: status.phase }]);
  return carry({
    tokens: Math.max(1, Math.min(ratePerMinute / 60, request.rollout.maximumInFlight)),
    ...(early.paused && !request.dryRun ? { paused: early.paused } : {}),
  });

  /** What the rollout starts from: the plan made, and how it is to begin. */
  function carry(start: Pick<Carry, 'tokens' | 'paused' | 'cancel'>): Carry {
    return {
      request,
      ...(requestedBy ? { requestedBy } : {}),
      status,
      chunks,
      groupEnds: groupBoundaries(request, devices),
      rampSteps: 0,
      stopSent: false,
      window: [],
      ...start,
    };
  }

  /** The plan so far (the devices snapshotted before the cancel), marked cancelled: the rollout stops its chunks. */
  function cancelledWhilePlanning(): Carry {
    status.plan = {
      devices,
      sample,
      byHub,
      quota,
      ratePerMinute: 0,
      estimatedSeconds: 0,
      chunks: chunks.length,
    };
    status.counts = { ...noCounts(), pending: devices };
    status.phase = 'cancelling';
    return carry({ tokens: 0, cancel: early.cancel });
  }
}

/** Where each rollout group ends, in devices started (the last group ends at the fleet's size). */
function groupBoundaries(request: FleetOperationRequest, devices: number): number[] {
  const ends: number[] = [];
  let at = 0;
  for (const group of request.groups) {
    const size = 'devices' in group.size ? group.size.devices : Math.ceil((group.size.percent / 100) * devices);
    at = Math.min(devices, at + Math.max(1, size));
    ends.push(at);
  }
  if (ends[ends.length - 1] !== devices) ends.push(devices);
  return ends;
}

function initialRate(request: FleetOperationRequest): number {
  const { exponentialRate, maximumPerMinute } = request.rollout;
  const base = exponentialRate?.baseRatePerMinute ?? maximumPerMinute ?? Number.MAX_SAFE_INTEGER;
  return Math.min(base, maximumPerMinute ?? Number.MAX_SAFE_INTEGER);
}

// ---- 2. Roll out: grants, ramp, abort, groups ----

/** Tokens accrue at the rate in force; a burst is capped at a few seconds' worth. */
function tokenClock(state: Carry, elapsedMs: number): void {
  const perMs = state.status.ratePerMinute / 60_000;
  state.tokens = Math.min(state.tokens + perMs * elapsedMs, Math.max(1, state.status.ratePerMinute / 6));
}

function grantDevices(state: Carry, now: number): void {
  const { status, request } = state;
  // The ramp: the rate multiplies each time the criterion's count passes another step.
  const ramp = request.rollout.exponentialRate;
  if (ramp) {
    const criterion = ramp.rateIncreaseCriteria;
    const count = 'numberOfNotifiedThings' in criterion ? status.started : status.counts.succeeded;
    const step =
      'numberOfNotifiedThings' in criterion ? criterion.numberOfNotifiedThings : criterion.numberOfSucceededThings;
    const steps = Math.floor(count / step);
    if (steps > state.rampSteps) {
      state.rampSteps = steps;
      const rate = ramp.baseRatePerMinute * ramp.incrementFactor ** steps;
      status.ratePerMinute = Math.floor(
        Math.min(rate, request.rollout.maximumPerMinute ?? rate, status.plan!.quota.devicesPerMinute),
      );
    }
  }
  const granted = state.chunks.reduce((n, c) => n + c.granted, 0);
  // At the end of a rollout group, the next starts only once the group has finished and passed its thresholds.
  const groupDone = state.groupEnds.indexOf(granted);
  if (groupDone >= 0 && groupDone < state.groupEnds.length - 1 && state.checkedGroup !== groupDone) return;
  const finished = status.counts.succeeded + status.counts.failed + status.counts.timedOut + status.counts.cancelled;
  const inFlight = granted - finished;
  const groupEnd = state.groupEnds.find((end) => end > granted) ?? granted;
  let allowance = Math.floor(Math.min(state.tokens, request.rollout.maximumInFlight - inFlight, groupEnd - granted));
  if (allowance <= 0) return;
  state.tokens -= allowance;
  for (const chunk of state.chunks) {
    if (allowance <= 0) break;
    const n = Math.min(allowance, chunk.size - chunk.granted);
    if (n <= 0) continue;
    chunk.granted += n;
    allowance -= n;
    void getExternalWorkflowHandle(fleetChunkWorkflowId(status.workflowId, chunk.index))
      .signal(grantSignal, n)
      .catch(() => undefined); // a chunk that has closed needs no more
  }
  status.updatedAt = new Date(now).toISOString();
}

/** AWS IoT Jobs' abort criteria: past the threshold share of executed devices failing, the operation is cancelled. */
function checkAbort(state: Carry): void {
  const { counts } = state.status;
  const executed = counts.succeeded + counts.failed + counts.timedOut;
  for (const criteria of state.request.abort) {
    if (executed < criteria.minNumberOfExecutedThings) continue;
    const failing =
      criteria.failureType === 'FAILED'
        ? counts.failed
        : criteria.failureType === 'TIMED_OUT'
          ? counts.timedOut
          : counts.failed + counts.timedOut;
    const percent = (failing / executed) * 100;
    if (percent >= criteria.thresholdPercentage) {
      state.status.abortedBecause = `${criteria.failureType} at ${percent.toFixed(1)} % of ${executed} executed devices (threshold ${criteria.thresholdPercentage} %)`;
      state.cancel = { force: false, reason: state.status.abortedBecause };
      state.status.phase = 'cancelling';
      return;
    }
  }
}

/** hawkBit's rollout groups: when a group has finished, its thresholds decide whether the next one starts. */
function checkGroups(state: Carry): void {
  const { request, status } = state;
  if (request.groups.length === 0) return;
  const granted = state.chunks.reduce((n, c) => n + c.granted, 0);
  const groupIndex = state.groupEnds.findIndex((end) => granted <= end);
  status.group = { index: groupIndex, of: state.groupEnds.length };
  const end = state.groupEnds[groupIndex];
  const group = request.groups[groupIndex];
  if (!group || granted < end || state.checkedGroup === groupIndex) return;
  const finished = status.counts.succeeded + status.counts.failed + status.counts.timedOut + status.counts.cancelled;
  if (finished < end) return; // the group is still running
  state.checkedGroup = groupIndex;
  const start = groupIndex === 0 ? 0 : state.groupEnds[groupIndex - 1];
  const size = end - start;
  const failing = status.counts.failed + status.counts.timedOut - (state.failingBefore ?? 0);
  const succeeded = status.counts.succeeded - (state.succeededBefore ?? 0);
  state.failingBefore = status.counts.failed + status.counts.timedOut;
  state.succeededBefore = status.counts.succeeded;
  const errorPercent = (failing / size) * 100;
  const successPercent = (succeeded / size) * 100;
  if (errorPercent >= group.errorThresholdPercent && failing > 0) {
    const why = `group ${groupIndex + 1}: ${errorPercent.toFixed(1)} % failed (threshold ${group.errorThresholdPercent} %)`;
    if (group.onError === 'abort') {
      status.abortedBecause = why;
      state.cancel = { force: false, reason: why };
      status.phase = 'cancelling';
    } else {
      pause(state, why);
    }
  } else if (successPercent < group.successThresholdPercent) {
    pause(
      state,
      `group ${groupIndex + 1}: ${successPercent.toFixed(1)} % succeeded (needs ${group.successThresholdPercent} %)`,
    );
  } else if (group.pauseAfter) {
    pause(state, `group ${groupIndex + 1} done: paused after it as requested`);
  }
}

function pause(state: Carry, why: string): void {
  state.paused = why;
  state.status.phase = 'paused';
  state.status.pausedBecause = why;
}

async function stopChunks(state: Carry): Promise<void> {
  state.stopSent = true;
  await Promise.all(
    state.chunks
      .filter((c) => !c.done)
      .map((c) =>
        getExternalWorkflowHandle(fleetChunkWorkflowId(state.status.workflowId, c.index))
          .signal(stopChunkSignal, { force: !!state.cancel?.force })
          .catch(() => undefined),
      ),
  );
}

function recount(state: Carry): void {
  const counts = noCounts();
  let started = 0;
  for (const chunk of state.chunks) {
    for (const key of DEVICE_STATES) counts[key] += chunk.counts[key];
    started += chunk.started;
  }
  const { status, window } = state;
  const now = Date.now();
  window.push([now, started]);
  while (window.length > 1 && now - window[0][0] > 60_000) window.shift();
  const [t0, s0] = window[0];
  status.measuredPerMinute = now > t0 ? Math.round(((started - s0) / (now - t0)) * 60_000) : 0;
  status.counts = counts;
  status.started = started;
  const left = counts.pending + counts.inProgress;
  status.etaSeconds = status.ratePerMinute > 0 ? Math.ceil((left / status.ratePerMinute) * 60) : undefined;
  status.updatedAt = new Date(now).toISOString();
}

function refresh(state: Carry): void {
  const { status } = state;
  const c = status.counts;
  upsertSearchAttributes([{ key: SA.phase, value: status.phase }]);
  setCurrentDetails(
    [
      `**Fleet ${status.operation}** of ${status.plan?.devices ?? '?'} devices — phase **${status.phase}**` +
        (status.pausedBecause ? ` (${status.pausedBecause})` : '') +
        (status.abortedBecause ? ` (aborted: ${status.abortedBecause})` : ''),
      `Succeeded ${c.succeeded} · failed ${c.failed} · timed out ${c.timedOut} · in progress ${c.inProgress} · pending ${c.pending} · cancelled ${c.cancelled}`,
      `Rate ${status.ratePerMinute}/min (measured ${status.measuredPerMinute}/min, quota ${status.plan?.quota.devicesPerMinute}/min: ${status.plan?.quota.binding})` +
        (status.etaSeconds !== undefined ? `; ETA ${status.etaSeconds} s` : ''),
      status.group ? `Rollout group ${status.group.index + 1} of ${status.group.of}` : '',
    ]
      .filter(Boolean)
      .join('\n'),
  );
}

function finish(state: Carry, outcome: FleetResult['outcome']): FleetResult {
  const { status } = state;
  status.phase =
    outcome === 'planned'
      ? 'planned'
      : outcome === 'aborted'
        ? 'aborted'
        : outcome === 'cancelled'
          ? 'cancelled'
          : 'completed';
  refresh(state);
  const result: FleetResult = { ...status, outcome, completedAt: new Date().toISOString() };
  upsertMemo({
    report: {
      outcome,
      phase: status.phase,
      counts: status.counts,
      requestedBy: state.requestedBy,
      ...(status.abortedBecause ? { abortedBecause: status.abortedBecause } : {}),
      completedAt: result.completedAt,
    },
  });
  return result;
}

// ---- Chunks: each device through the operation's own logic ----

/** Changes to the released fleet workflows (see README, "Versioning"): new runs take the new code. */
export const FLEET_PATCHES = {
  /** Revoke and reinstate batches bounded by deviceTimeout (their devices then timedOut); were unbounded. */
  batchTimeout: 'fleet-batch-timeout',
} as const;

interface ChunkInput {
  operationWorkflowId: string;
  chunkIndex: number;
  devices: FleetDevice[];
  request: FleetOperationRequest;
  requestedBy?: RequestedBy;
}

/**
 * A slice of a fleet operation's snapshot (its devices are its input, so the snapshot is durable without a store
 * of its own). It starts devices as the operation grants them — a promotion each (the real per-device workflow, as a
 * child under `promote/<registrationId>`), or batches of 100 revocations or reinstatements through the same code
 * as a single one — retries them as the request says, and reports its counts to the operation.
 */
export async function fleetChunk(input: ChunkInput): Promise<{ counts: DeviceCounts; devices: DeviceRecord[] }> {
  const { request } = input;
  const records: DeviceRecord[] = input.devices.map((d) => ({ ...d, state: 'pending', attempts: 0 }));
  let permits = 0;
  let stop: { force: boolean } | undefined;
  let started = 0;
  /** Promotions in flight, each in a scope of its own: a forced cancel cancels them (they compensate as they do). */
  const inFlight = new Map<string, CancellationScope>();
  setHandler(grantSignal, (n) => void (permits += n));
  setHandler(stopChunkSignal, (s) => void (stop ??= s));
  setHandler(fleetDevicesQuery, (options) => {
    const matching = options?.state ? records.filter((r) => r.state === options.state) : records;
    const offset = options?.offset ?? 0;
    return { devices: matching.slice(offset, offset + (options?.limit ?? 100)), total: matching.length };
  });

  const counts = (): DeviceCounts => {
    const c = noCounts();
    for (const r of records) c[r.state] += 1;
    return c;
  };
  const parent = getExternalWorkflowHandle(input.operationWorkflowId);
  let lastReport = 0;
  let reportDue = false;
  let sequence = 0;
  const report = async (done = false) => {
    reportDue = false;
    lastReport = Date.now();
    sequence += 1;
    await parent
      .signal(chunkProgressSignal, { chunkIndex: input.chunkIndex, sequence, counts: counts(), started, done })
      .catch(() => undefined);
  };
  const changed = () => {
    if (Date.now() - lastReport >= PROGRESS_INTERVAL_MS) void report();
    else reportDue = true;
  };
  const settle = (
    record: DeviceRecord,
    outcome: 'succeeded' | 'failed' | 'timedOut' | 'cancelled',
    error?: { type: string; message: string },
  ) => {
    record.finishedAt = new Date().toISOString();
    if ((outcome === 'failed' || outcome === 'timedOut') && retriesLeft(request, outcome, record.attempts) && !stop) {
      record.state = 'pending';
      record.error = error;
      retries.push(record);
    } else {
      record.state = outcome;
      if (error) record.error = error;
    }
    changed();
  };
  const retries: DeviceRecord[] = [];

  const next = (n: number): DeviceRecord[] => {
    const picked: DeviceRecord[] = [];
    // Retries first: they were granted already and need no new permit.
    while (retries.length && picked.length < n) picked.push(retries.shift()!);
    for (const record of records) {
      if (picked.length >= n) break;
      if (record.state === 'pending' && record.attempts === 0 && permits > 0) {
        permits -= 1;
        started += 1;
        picked.push(record);
      }
    }
    for (const record of picked) {
      record.state = 'inProgress';
      record.attempts += 1;
    }
    return picked;
  };

  const active = () => records.some((r) => r.state === 'pending' || r.state === 'inProgress');
  while (active()) {
    // A report that is due wakes the loop by its timer, never by the condition: workflow time stands still within
    // an activation, so a condition true before the report may be sent would spin forever without yielding (it did:
    // the worker thread's isolate timed out and Node aborted with a corrupted async hook stack).
    const reportIn = reportDue ? Math.max(1, PROGRESS_INTERVAL_MS - (Date.now() - lastReport)) : PROGRESS_INTERVAL_MS;
    await condition(
      () =>
        stop !== undefined ||
        retries.length > 0 ||
        (permits > 0 && records.some((r) => r.state === 'pending' && r.attempts === 0)),
      reportIn,
    );
    if (reportDue && Date.now() - lastReport >= PROGRESS_INTERVAL_MS) await report();
    if (stop) {
      // Devices not started are left as they are; in flight, they end by their own policy (or are cancelled).
      for (const r of records) if (r.state === 'pending') r.state = 'cancelled';
      if (stop.force) for (const scope of inFlight.values()) scope.cancel();
      await condition(() => inFlight.size === 0);
      break;
    }
    const batch = next(request.operation === 'promote' ? Number.MAX_SAFE_INTEGER : BATCH_SIZE);
    if (batch.length === 0) continue;
    if (request.operation === 'promote') {
      for (const record of batch) void promote(record);
    } else {
      await runBatch(batch);
    }
    changed();
  }
  await condition(() => inFlight.size === 0);
  await report(true);
  await condition(allHandlersFinished);
  // Its records too: a finished operation's devices are then listed from results the server holds, no replay needed.
  return { counts: counts(), devices: records };

  async function promote(record: DeviceRecord): Promise<void> {
    const workflowId = promotionWorkflowId(record.registrationId);
    record.workflowId = workflowId;
    const promotion: PromotionRequestInput = {
      ...(request.operation === 'promote' ? request.parameters : {}),
      registrationId: record.registrationId,
      deadline: request.deviceTimeout,
    };
    const scope = new CancellationScope();
    inFlight.set(record.registrationId, scope);
    try {
      await scope.run(async () => {
        const handle = await startChild(promoteDevice, {
          workflowId,
          args: [promotion, input.requestedBy ? { requestedBy: input.requestedBy } : {}],
          parentClosePolicy: ParentClosePolicy.ABANDON,
          typedSearchAttributes: [
            { key: SA.registrationId, value: record.registrationId },
            { key: SA.operation, value: OPERATIONS.promote },
          ],
        });
        await handle.result();
      });
      settle(record, 'succeeded');
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        settle(record, 'failed', {
          type: 'AlreadyInFlight',
          message: `another promotion of ${record.registrationId} is running`,
        });
        return;
      }
      const cause = (err as { cause?: unknown }).cause ?? err;
      const type = applicationFailureIn(cause)?.type ?? failureOf(cause).type;
      if (type === PromotionErrors.deadlineExceeded)
        settle(record, 'timedOut', { type, message: failureOf(cause).message });
      else if (isCancellation(err)) settle(record, 'cancelled');
      else settle(record, 'failed', { type, message: failureOf(cause).message });
    } finally {
      inFlight.delete(record.registrationId);
    }
  }

  async function runBatch(batch: DeviceRecord[]): Promise<void> {
    // A batch's devices share its deviceTimeout: past it the batch is cancelled and each of its devices timedOut.
    if (patched(FLEET_PATCHES.batchTimeout)) {
      try {
        await CancellationScope.withTimeout(durationMs(request.deviceTimeout), () => runBatchUnbounded(batch, true));
      } catch (err) {
        // Only the timeout cancels a batch (a cancelled chunk is cancelled as a whole, and rethrows).
        if (!isCancellation(err) || CancellationScope.current().consideredCancelled) throw err;
        const message = `not done within deviceTimeout ${request.deviceTimeout} (its batch of ${batch.length} was cancelled)`;
        for (const record of batch) {
          record.workflowId = workflowInfo().workflowId;
          settle(record, 'timedOut', { type: 'DeviceTimeout', message });
        }
      }
      return;
    }
    await runBatchUnbounded(batch);
  }

  async function runBatchUnbounded(batch: DeviceRecord[], bounded = false): Promise<void> {
    const environments = await planning.listEnvironments();
    const batchId = `${workflowInfo().workflowId}/batch`;
    try {
      if (request.operation === 'revoke') {
        const result = await revokeDevices({
          items: batch.map((r) => ({ registrationId: r.registrationId })),
          hubAction: request.parameters.hubAction,
          reason: request.parameters.reason,
          requestedBy: input.requestedBy && requestedByKeyword(input.requestedBy),
          disconnectTimeoutSeconds: request.parameters.disconnectTimeoutSeconds,
          environments,
          // Each device is revoked as its own revocation would: its reinstatement finds the marks.
          revocationOf: (registrationId) => `revoke/${registrationId}`,
          stoppedBy: batchId,
        });
        for (const record of batch) {
          record.workflowId = workflowInfo().workflowId;
          const refused = result.refusedRequests.get(record.registrationId);
          const proof = result.proofs.find((p) => p.registrationId === record.registrationId);
          if (proof) record.deviceId = proof.deviceId;
          if (refused) settle(record, 'failed', refused);
          else if (proof?.revoked) {
            // Revoked holds (DPS refuses it, no hub accepts it), but it may never have existed: say so.
            if (proof.dps.enrollment === 'noEnrollment' && proof.hubs.every((h) => h.before === 'absent')) {
              record.note = NOTHING_FOUND;
            }
            settle(record, 'succeeded');
          } else
            settle(record, 'failed', { type: 'PartiallyRevoked', message: proof?.problems.join('; ') ?? 'no proof' });
        }
      } else {
        const devices = await reinstateDevices({
          items: batch.map((r) => ({ registrationId: r.registrationId })),
          environments,
        });
        for (const record of batch) {
          record.workflowId = workflowInfo().workflowId;
          const device = devices.find((d) => d.registrationId === record.registrationId);
          if (device) record.deviceId = device.deviceId;
          if (device && device.problems.length === 0) settle(record, 'succeeded');
          else settle(record, 'failed', { type: 'PartiallyReinstated', message: device?.problems.join('; ') ?? '' });
        }
      }
    } catch (err) {
      if (bounded && isCancellation(err)) throw err; // its deviceTimeout: runBatch says so
      // The batch's Azure calls kept failing past their retries (or timed out): every device of it says so.
      const { type, message } = failureOf(err);
      const timedOut = type === 'TimeoutFailure' || /timeout/i.test(type);
      for (const record of batch) settle(record, timedOut ? 'timedOut' : 'failed', { type, message });
    }
  }
}

const NOTHING_FOUND =
  'nothing to revoke: no enrollment in DPS and no identity in any hub knows this id (is it misspelled?)';

/** Whether a device that ended `outcome` after `attempts` attempts gets another, by the request's retry criteria. */
function retriesLeft(request: FleetOperationRequest, outcome: 'failed' | 'timedOut', attempts: number): boolean {
  const type = outcome === 'failed' ? 'FAILED' : 'TIMED_OUT';
  const criteria =
    request.retries.find((r) => r.failureType === type) ?? request.retries.find((r) => r.failureType === 'ALL');
  return !!criteria && attempts <= criteria.numberOfRetries;
}

function failure(type: string, message: string): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true });
}
