/**
 * Runs `stop` once on the first SIGINT or SIGTERM, then exits (1 if stopping failed). For the command-line
 * entries; the worker relies on the Temporal Runtime's own signal handling.
 */
export function stopOnSignals(stop: (signal: string) => Promise<void>): void {
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    stop(signal).then(
      () => process.exit(0),
      (err: unknown) => {
        console.error(err);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
}
