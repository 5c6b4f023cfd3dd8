import { setTimeout as sleep } from 'node:timers/promises';
import type { DeviceRecord, FleetResult, FleetStatus } from '../common/fleet';
import { ApiError, type Api } from './api';
import { EXIT } from './exit-codes';
import { finishedOf, planLines, progressLine, summaryLines } from './progress';

/**
 * `fleet watch`: polls the operation's status until it closes, drawing progress as it goes, then prints the summary
 * and the failed devices and answers the exit code of how it ended. Stopping (Ctrl-C) stops the watching only.
 */

/** GET /v1/fleet-operations/:id, as far as the CLI reads it. */
export interface OperationView {
  operationId: string;
  workflowId: string;
  status: string;
  phase?: string;
  fleet?: FleetStatus | FleetResult;
  failure?: { type: string; message: string };
  progressUnavailable?: string;
}

export interface Output {
  write(text: string): void;
  isTTY: boolean;
}

/** A log line at least this often while nothing changes, so a CI log shows the operation is alive. */
const QUIET_LINE_MS = 10_000;
/** The API may restart under a long watch: network errors and 5xx are retried this long before giving up. */
const OUTAGE_TOLERANCE_MS = 30_000;
/** Failed devices listed at the end (the rest are a page away). */
const FAILED_SHOWN = 20;

/** The time of day (UTC) a log line starts with. */
const clock = () => new Date().toISOString().slice(11, 19);

export const opPath = (id: string) => `/v1/fleet-operations/${encodeURIComponent(id)}`;

export async function watch(
  api: Api,
  operationId: string,
  out: Output,
  options: { intervalMs: number; signal: AbortSignal; command: string },
): Promise<number> {
  let lastKey = '';
  let lastPrinted = 0;
  let outageSince: number | undefined;
  let drawn = false;
  const clearLine = () => {
    if (drawn) out.write('\r\x1b[K');
    drawn = false;
  };
  const interrupted = () => {
    clearLine();
    out.write(
      `Stopped watching; fleet operation ${operationId} goes on.\n` +
        `Watch it again: ${options.command} fleet watch ${operationId}\n`,
    );
    return EXIT.interrupted;
  };

  for (;;) {
    if (options.signal.aborted) return interrupted();
    let view: OperationView;
    try {
      view = (await api.get<OperationView>(opPath(operationId))).body;
      outageSince = undefined;
    } catch (err) {
      const transient = err instanceof ApiError && (err.status === undefined || err.status >= 500);
      if (!transient) throw err;
      outageSince ??= Date.now();
      if (Date.now() - outageSince > OUTAGE_TOLERANCE_MS) throw err;
      clearLine();
      out.write(`(status unavailable, retrying: ${err.message.split('\n')[0]})\n`);
      await pause(options);
      continue;
    }

    if (view.status === 'running') {
      const status = view.fleet as FleetStatus | undefined;
      if (status) {
        if (out.isTTY) {
          out.write(`\r${progressLine(status, { bar: true })}\x1b[K`);
          drawn = true;
        } else {
          const key = keyOf(status);
          if (key !== lastKey || Date.now() - lastPrinted >= QUIET_LINE_MS) {
            out.write(`${clock()} ${progressLine(status)}\n`);
            lastKey = key;
            lastPrinted = Date.now();
          }
        }
      }
      await pause(options);
      continue;
    }

    clearLine();
    return finish(api, operationId, view, out, lastKey);
  }
}

async function pause(options: { intervalMs: number; signal: AbortSignal }): Promise<void> {
  await sleep(options.intervalMs, undefined, { signal: options.signal }).catch(() => undefined);
}

/** What makes a log line worth printing: the counts or the phase changed. */
const keyOf = (status: FleetStatus) => JSON.stringify([status.counts, status.phase, status.pausedBecause ?? null]);

async function finish(
  api: Api,
  operationId: string,
  view: OperationView,
  out: Output,
  lastKey: string,
): Promise<number> {
  const result = view.fleet as FleetResult | undefined;
  if (view.status !== 'completed' || !result) {
    const why = view.failure ? `${view.failure.type}: ${view.failure.message}` : 'no result';
    out.write(`Fleet operation ${operationId} ended ${view.status}: ${why}\n`);
    return view.status === 'cancelled' ? EXIT.cancelled : EXIT.noResult;
  }
  if (result.outcome === 'planned') {
    if (result.plan) out.write(`Plan of fleet ${result.operation} ${operationId} (dry run, nothing changed):\n`);
    for (const line of result.plan ? planLines(result.plan) : []) out.write(`  ${line}\n`);
    return EXIT.ok;
  }
  // The last log line may already say it (the operation's phase is completed a moment before it closes).
  const said = !out.isTTY && keyOf(result) === lastKey;
  if (finishedOf(result.counts) && !said) out.write(`${out.isTTY ? '' : `${clock()} `}${progressLine(result)}\n`);
  for (const line of summaryLines(operationId, result)) out.write(`${line}\n`);
  if (result.counts.failed + result.counts.timedOut) {
    const failed = await failedDevices(api, operationId);
    out.write(`Failed devices${failed.more ? ` (the first ${failed.devices.length})` : ''}:\n`);
    for (const d of failed.devices) {
      const error = d.error ? `${d.error.type}: ${d.error.message}` : '';
      out.write(`  ${d.registrationId}  ${d.state}  ${d.attempts} attempt(s)  ${error}\n`);
    }
  }
  switch (result.outcome) {
    case 'completed':
      return EXIT.ok;
    case 'completedWithFailures':
      return EXIT.someFailed;
    case 'aborted':
      return EXIT.aborted;
    case 'cancelled':
      return EXIT.cancelled;
  }
}

/** The first failed and timed-out devices, with their errors. */
async function failedDevices(api: Api, operationId: string): Promise<{ devices: DeviceRecord[]; more: boolean }> {
  const devices: DeviceRecord[] = [];
  let more = false;
  for (const state of ['failed', 'timedOut']) {
    const page = await api.get<{ devices: DeviceRecord[]; nextPageToken?: string }>(`${opPath(operationId)}/devices`, {
      state,
      pageSize: FAILED_SHOWN,
    });
    devices.push(...page.body.devices);
    more ||= page.body.nextPageToken !== undefined;
  }
  more ||= devices.length > FAILED_SHOWN;
  return { devices: devices.slice(0, FAILED_SHOWN), more };
}
