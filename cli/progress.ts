import type { DeviceCounts, FleetPlan, FleetResult, FleetStatus } from '../common/fleet';

/**
 * What `fleet watch` prints: one progress line (a bar on a TTY, plain words in logs), the plan of a dry run, and the
 * summary at the end. Pure functions of the API's status, so they are tested without a stack.
 */

const BAR_WIDTH = 24;

export const finishedOf = (c: DeviceCounts): number => c.succeeded + c.failed + c.timedOut + c.cancelled;
export const totalOf = (s: Pick<FleetStatus, 'plan' | 'counts'>): number =>
  s.plan?.devices ?? Object.values(s.counts).reduce((a, b) => a + b, 0);

const devices = (n: number) => `${n} device${n === 1 ? '' : 's'}`;

/** 75 → "1m15s"; under a minute in seconds, past an hour in hours and minutes. */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function rate(status: Pick<FleetStatus, 'measuredPerMinute' | 'ratePerMinute'>): string {
  return `${Math.round(status.measuredPerMinute)}/min (limit ${Math.round(status.ratePerMinute)}/min)`;
}

/**
 * One line of progress: done/total and percentage, succeeded/failed/timed out/in flight, the measured rate, the ETA
 * and the phase. `bar` draws a bar (a TTY repaints it in place); without it, the line suits a log.
 */
export function progressLine(status: FleetStatus, options: { bar?: boolean } = {}): string {
  if (status.phase === 'planning' && !status.plan) return 'planning: taking the snapshot of its devices';
  const total = totalOf(status);
  const done = finishedOf(status.counts);
  const pct = total ? Math.floor((done / total) * 100) : 0;
  const c = status.counts;
  const parts = [
    `${done}/${total} (${pct}%)`,
    `succeeded ${c.succeeded}`,
    `failed ${c.failed}`,
    `timed out ${c.timedOut}`,
    `in flight ${c.inProgress}`,
    ...(c.cancelled ? [`cancelled ${c.cancelled}`] : []),
    rate(status),
    ...(status.etaSeconds !== undefined && status.phase === 'running' ? [`ETA ${duration(status.etaSeconds)}`] : []),
    ...(status.group ? [`group ${status.group.index + 1}/${status.group.of}`] : []),
    status.phase === 'paused' ? `PAUSED${status.pausedBecause ? ` (${status.pausedBecause})` : ''}` : status.phase,
  ];
  if (!options.bar) return parts.join('  ');
  const filled = total ? Math.round((done / total) * BAR_WIDTH) : 0;
  return `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${parts.join('  ')}`;
}

/** A dry run's plan: devices, hubs, the binding quota, rate and duration. */
export function planLines(plan: FleetPlan): string[] {
  const hubs = Object.entries(plan.byHub);
  const calls = Object.entries(plan.quota.callsPerDevice).map(([k, v]) => `${k} ${v}`);
  return [
    `Devices:    ${plan.devices}${plan.sample.length ? ` (${plan.sample.slice(0, 5).join(', ')}${plan.devices > 5 ? ', …' : ''})` : ''}`,
    `Hubs:       ${hubs.length ? hubs.map(([h, n]) => `${h}: ${n}`).join(', ') : 'known once the devices are looked up'}`,
    `Quota:      ${plan.quota.devicesPerMinute} devices/min at most, bound by ${plan.quota.binding}${calls.length ? ` (calls per device: ${calls.join(', ')})` : ''}`,
    `Rate:       ${plan.ratePerMinute} devices/min`,
    `Duration:   about ${duration(plan.estimatedSeconds)}`,
    `Chunks:     ${plan.chunks}`,
  ];
}

/** The closing lines: how it ended, the counts, and why it was aborted or cancelled. */
export function summaryLines(operationId: string, result: FleetResult): string[] {
  const c = result.counts;
  const took = (Date.parse(result.completedAt) - Date.parse(result.startedAt)) / 1000;
  const ended: Record<FleetResult['outcome'], string> = {
    completed: 'completed',
    completedWithFailures: 'completed with failures',
    aborted: 'aborted',
    cancelled: 'cancelled',
    planned: 'planned (dry run)',
  };
  const lines = [
    `Fleet ${result.operation} ${operationId} ${ended[result.outcome]} in ${duration(took)}: ${devices(totalOf(result))}, ` +
      `${c.succeeded} succeeded, ${c.failed} failed, ${c.timedOut} timed out, ${c.cancelled} cancelled` +
      (c.pending ? `, ${c.pending} never started` : ''),
  ];
  if (result.abortedBecause) lines.push(`Aborted: ${result.abortedBecause}`);
  const cancel = [...(result.operatorActions ?? [])].reverse().find((a) => a.action === 'cancel');
  if (result.outcome === 'cancelled' && cancel) {
    lines.push(`Cancelled by ${cancel.requestedBy.name ?? cancel.requestedBy.subject}`);
  }
  return lines;
}
