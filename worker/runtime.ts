import { DefaultLogger, Runtime } from '@temporalio/worker';
import type { Config } from '../common/config';

/**
 * The process's Temporal runtime (one per process, installed before any connection): core's logs at the project's
 * level, and, with `metricsAddress` (host:port), the SDK's own Prometheus exporter there: worker and client metrics
 * (`temporal_*`: task slots, polls, latencies, workflow completions, request failures) plus the metrics workflows and
 * activities record on the SDK's meter (`iot_lifecycle_operations_*`, `iot_lifecycle_azure_calls`).
 */
export function installRuntime(config: Pick<Config, 'LOG_LEVEL'>, metricsAddress?: string): void {
  Runtime.install({
    logger: new DefaultLogger(config.LOG_LEVEL === 'debug' || config.LOG_LEVEL === 'trace' ? 'INFO' : 'WARN'),
    ...(metricsAddress
      ? {
          telemetryOptions: {
            metrics: {
              prometheus: { bindAddress: metricsAddress, countersTotalSuffix: true, useSecondsForDurations: true },
            },
          },
        }
      : {}),
  });
}
