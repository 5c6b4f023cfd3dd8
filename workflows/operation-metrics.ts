import { metricMeter } from '@temporalio/workflow';

/**
 * Operations started and finished, by kind and outcome, through the SDK's workflow metric meter: exported by the
 * worker's Prometheus endpoint (TEMPORAL_METRICS_ADDRESS), never emitted while a history replays, and no command,
 * so adding them changes nothing for running workflows.
 */

export function operationStarted(kind: string): void {
  metricMeter
    .createCounter('iot_lifecycle_operations_started', 'operations', 'Operations started, by kind')
    .add(1, { kind });
}

export function operationFinished(kind: string, outcome: string): void {
  metricMeter
    .createCounter('iot_lifecycle_operations_finished', 'operations', 'Operations finished, by kind and outcome')
    .add(1, { kind, outcome });
}

/** A fleet operation's devices by state (pending, running, done, failed, …), set whenever they change. */
export function fleetDevices(operation: string, byState: Record<string, number>): void {
  const gauge = metricMeter.createGauge(
    'iot_lifecycle_fleet_devices',
    'int',
    'devices',
    'Devices of running fleet operations, by state',
  );
  for (const [state, count] of Object.entries(byState)) gauge.set(count, { operation, state });
}
