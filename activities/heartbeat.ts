import { Context } from '@temporalio/activity';

/**
 * Wraps every activity so that, when its caller set a heartbeat timeout, it heartbeats while it runs: a worker that
 * dies in the middle of an Azure call then costs the heartbeat timeout (seconds), not the whole start-to-close
 * timeout, before another worker retries the call. Activities that report progress heartbeat with details themselves.
 */
export function heartbeating<T extends Record<string, (...args: never[]) => Promise<unknown>>>(activities: T): T {
  return Object.fromEntries(
    Object.entries(activities).map(([name, fn]) => [
      name,
      async (...args: never[]) => {
        const context = Context.current();
        const timeoutMs = context.info.heartbeatTimeoutMs;
        if (!timeoutMs) return fn(...args);
        const timer = setInterval(() => context.heartbeat(), Math.max(200, Math.floor(timeoutMs / 3)));
        try {
          return await fn(...args);
        } finally {
          clearInterval(timer);
        }
      },
    ]),
  ) as T;
}
