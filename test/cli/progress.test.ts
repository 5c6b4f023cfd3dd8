import type { FleetResult, FleetStatus } from '../../common/fleet';
import { duration, planLines, progressLine, summaryLines } from '../../cli/progress';
import { startRequest, whereOf } from '../../cli/start-request';

const status = (over: Partial<FleetStatus> = {}): FleetStatus => ({
  workflowId: 'fleet/op-1',
  operation: 'revoke',
  phase: 'running',
  counts: { pending: 4, inProgress: 2, succeeded: 3, failed: 1, timedOut: 0, cancelled: 0 },
  started: 6,
  ratePerMinute: 60,
  measuredPerMinute: 42.4,
  etaSeconds: 75,
  startedAt: '2026-11-30T10:00:00.000Z',
  updatedAt: '2026-11-30T10:00:10.000Z',
  plan: {
    devices: 10,
    sample: ['a', 'b'],
    byHub: {},
    quota: { devicesPerMinute: 600, binding: 'hub registry writes', callsPerDevice: {} },
    ratePerMinute: 60,
    estimatedSeconds: 10,
    chunks: 1,
  },
  ...over,
});

describe('the progress line', () => {
  it('says done/total, percentage, each state, the measured rate, the ETA and the phase, in plain words for a log', () => {
    expect(progressLine(status())).toBe(
      '4/10 (40%)  succeeded 3  failed 1  timed out 0  in flight 2  42/min (limit 60/min)  ETA 1m15s  running',
    );
  });

  it('draws a bar in proportion on a TTY', () => {
    expect(progressLine(status(), { bar: true })).toMatch(/^\[#{10}-{14}\] 4\/10 \(40%\) /);
    const done = status({ counts: { pending: 0, inProgress: 0, succeeded: 10, failed: 0, timedOut: 0, cancelled: 0 } });
    expect(progressLine(done, { bar: true })).toMatch(/^\[#{24}\] 10\/10 \(100%\) /);
  });

  it('marks a paused operation with why, drops the ETA, and shows the rollout group and cancelled devices', () => {
    const line = progressLine(
      status({
        phase: 'paused',
        pausedBecause: 'group 1: 20.0 % failed',
        group: { index: 1, of: 3 },
        counts: { pending: 2, inProgress: 0, succeeded: 3, failed: 1, timedOut: 1, cancelled: 3 },
      }),
    );
    expect(line).toBe(
      '8/10 (80%)  succeeded 3  failed 1  timed out 1  in flight 0  cancelled 3  42/min (limit 60/min)  group 2/3  ' +
        'PAUSED (group 1: 20.0 % failed)',
    );
  });

  it('says it is planning until the plan is there', () => {
    expect(progressLine(status({ phase: 'planning', plan: undefined }))).toBe(
      'planning: taking the snapshot of its devices',
    );
  });

  it('counts the devices themselves when there is no plan', () => {
    expect(progressLine(status({ plan: undefined }))).toMatch(/^4\/10 \(40%\)/);
  });
});

describe('durations, plan and summary', () => {
  it('writes durations in seconds, minutes or hours', () => {
    expect([duration(0), duration(59.6), duration(75), duration(3600 * 2 + 61)]).toEqual([
      '0s',
      '1m00s',
      '1m15s',
      '2h01m',
    ]);
  });

  it('prints a plan with its binding quota, rate and duration', () => {
    expect(planLines(status().plan!)).toEqual([
      'Devices:    10 (a, b, …)',
      'Hubs:       known once the devices are looked up',
      'Quota:      600 devices/min at most, bound by hub registry writes',
      'Rate:       60 devices/min',
      'Duration:   about 10s',
      'Chunks:     1',
    ]);
  });

  it('sums up how it ended, and why it was aborted', () => {
    const result: FleetResult = {
      ...status({ phase: 'aborted', abortedBecause: 'ALL at 50.0 % of 4 executed devices (threshold 25 %)' }),
      outcome: 'aborted',
      completedAt: '2026-11-30T10:01:30.000Z',
    };
    expect(summaryLines('op-1', result)).toEqual([
      'Fleet revoke op-1 aborted in 1m30s: 10 devices, 3 succeeded, 1 failed, 0 timed out, 0 cancelled, 4 never started',
      'Aborted: ALL at 50.0 % of 4 executed devices (threshold 25 %)',
    ]);
  });
});

describe('fleet start flags → request', () => {
  const stdin = () => 'from-stdin-1\n# comment\n\nfrom-stdin-2\n';

  it('maps rollout, abort, retry and parameter flags onto the request schema exactly', () => {
    const body = startRequest(
      'revoke',
      {
        ids: 'a, b,c',
        'hub-action': 'delete',
        reason: 'recall',
        'disconnect-timeout': '30',
        'max-per-minute': '120',
        'max-in-flight': '50',
        'ramp-base': '10',
        'ramp-factor': '2',
        'ramp-every': '20',
        'ramp-on': 'succeeded',
        'abort-threshold': '12.5',
        'abort-min': '8',
        'abort-on': 'timed-out',
        'device-timeout': '5m',
        retries: '2',
        'retry-on': 'failed',
        description: 'line 3',
        'dry-run': true,
      },
      stdin,
    );
    expect(body).toEqual({
      operation: 'revoke',
      targets: { registrationIds: ['a', 'b', 'c'] },
      parameters: { hubAction: 'delete', reason: 'recall', disconnectTimeoutSeconds: 30 },
      rollout: {
        maximumPerMinute: 120,
        maximumInFlight: 50,
        exponentialRate: {
          baseRatePerMinute: 10,
          incrementFactor: 2,
          rateIncreaseCriteria: { numberOfSucceededThings: 20 },
        },
      },
      abort: [{ failureType: 'TIMED_OUT', thresholdPercentage: 12.5, minNumberOfExecutedThings: 8 }],
      retries: [{ failureType: 'FAILED', numberOfRetries: 2 }],
      deviceTimeout: '5m',
      description: 'line 3',
      dryRun: true,
    });
  });

  it('reads ids from stdin, a group, or a registry query (SELECT … WHERE or the condition alone)', () => {
    expect(startRequest('reinstate', { 'ids-file': '-' }, stdin).targets).toEqual({
      registrationIds: ['from-stdin-1', 'from-stdin-2'],
    });
    expect(startRequest('revoke', { group: 'line-3' }, stdin).targets).toEqual({ enrollmentGroupId: 'line-3' });
    expect(
      startRequest('promote', { query: "SELECT * FROM devices WHERE tags.line = 'L3'", environment: 'test' }, stdin)
        .targets,
    ).toEqual({ query: { environment: 'test', where: "tags.line = 'L3'" } });
    expect(whereOf('tags.x = 1')).toBe('tags.x = 1');
    expect(() => whereOf('select * from devices')).toThrow(/WHERE condition/);
  });

  it('takes a --json body and lets flags override its fields', () => {
    const body = startRequest('promote', { json: '-', 'max-per-minute': '30' }, () =>
      JSON.stringify({
        targets: { enrollmentGroupId: 'g' },
        rollout: { maximumInFlight: 5 },
        groups: [{ size: { percent: 10 } }],
      }),
    );
    expect(body).toEqual({
      operation: 'promote',
      targets: { enrollmentGroupId: 'g' },
      rollout: { maximumInFlight: 5, maximumPerMinute: 30 },
      groups: [{ size: { percent: 10 } }],
    });
  });

  it('names the flag behind each schema issue', () => {
    expect(() => startRequest('promote', { ids: 'a', source: 'test', target: 'test' }, stdin)).toThrow(
      '--target: source and target environments must differ',
    );
    expect(() => startRequest('revoke', { ids: 'a', 'max-per-minute': '0' }, stdin)).toThrow(/^--max-per-minute: /);
    expect(() => startRequest('reinstate', { ids: 'a', 'hub-action': 'delete' }, stdin)).toThrow(
      '--hub-action: not an option of a reinstate',
    );
    expect(() => startRequest('upgrade', { ids: 'a' }, stdin)).toThrow(/operation/);
    expect(() => startRequest('revoke', { ids: 'a', 'ramp-base': '5' }, stdin)).toThrow(/all three of --ramp-base/);
  });
});
