import { DefaultLogger, Runtime, type LogLevel } from '@temporalio/worker';
import type { Config } from '../common/config';
import type { Logger } from '../common/logger';

const PINO_LEVEL: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error'> = {
  TRACE: 'trace',
  DEBUG: 'debug',
  INFO: 'info',
  WARN: 'warn',
  ERROR: 'error',
};

const RUNTIME_LEVEL: Record<Config['LOG_LEVEL'], LogLevel> = {
  trace: 'TRACE',
  debug: 'DEBUG',
  info: 'INFO',
  warn: 'WARN',
  error: 'ERROR',
  fatal: 'ERROR',
  silent: 'ERROR',
};

/**
 * The process's Temporal runtime (one per process, installed before any connection): the SDK's, core's, workflows'
 * and activities' logs written by the project's pino logger (JSON, with the trace ids of the activity's span:
 * common/logger.ts), and, with `metricsAddress` (host:port), the SDK's own Prometheus exporter there: worker and
 * client metrics (`temporal_*`: task slots, polls, latencies, workflow completions, request failures) plus the metrics
 * workflows and activities record on the SDK's meter (`iot_lifecycle_operations_*`, `iot_lifecycle_azure_calls`).
 */
export function installRuntime(config: Pick<Config, 'LOG_LEVEL'>, log: Logger, metricsAddress?: string): void {
  const level = RUNTIME_LEVEL[config.LOG_LEVEL];
  const temporalLog = log.child({ component: 'temporal' });
  Runtime.install({
    logger: new DefaultLogger(level, (entry) => temporalLog[PINO_LEVEL[entry.level]]({ ...entry.meta }, entry.message)),
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
