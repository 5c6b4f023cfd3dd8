import type { Logger } from './logger';

/**
 * Start-up and shutdown of a process made of parts (servers, workers, child processes), driven by SIGINT/SIGTERM
 * from the moment the process starts:
 * - each part registers its stop with a rank as soon as it exists; on the first signal the parts stop rank by rank
 *   (lowest first: intake before workers before stores), the parts of one rank together;
 * - a start-up step still running is abandoned (`signal` aborts the steps that honour it) and anything it
 *   registers afterwards is stopped at once;
 * - a second signal, or a stop that overruns `forceAfterMs`, runs the `force` hooks (kill child process groups) and
 *   exits at once.
 * Terminal Ctrl-C reaches every process of the foreground group; child processes that must outlive the first moments
 * of shutdown (the Temporal server) run in their own process group and are stopped by their part.
 */
export class Lifecycle {
  private readonly parts: Array<{ name: string; rank: number; stop: () => Promise<void> }> = [];
  private readonly forceHooks: Array<() => void> = [];
  private readonly late: Array<Promise<void>> = [];
  private readonly controller = new AbortController();
  private stopping?: Promise<void>;
  private firstSignalAt = 0;

  constructor(
    private readonly log: Logger,
    private readonly options: { forceAfterMs: number; exit?: (code: number) => void },
  ) {}

  /** Aborted on the first signal: start-up steps that take it give up. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get isStopping(): boolean {
    return this.stopping !== undefined;
  }

  installSignalHandlers(): void {
    const onSignal = (signal: NodeJS.Signals) => {
      // One Ctrl-C can arrive twice (the terminal signals the whole group, and npm or tsx relay it again).
      if (this.stopping && Date.now() - this.firstSignalAt < SAME_KEYPRESS_MS) return;
      if (this.stopping) {
        this.log.warn({ signal }, 'second signal: forcing exit');
        this.force(130);
        return;
      }
      this.firstSignalAt = Date.now();
      this.log.info({ signal }, 'stopping (press Ctrl-C again to force)');
      const started = Date.now();
      void this.stop().then(
        () => {
          this.log.info({ ms: Date.now() - started }, 'stopped');
          this.exit(0);
        },
        (err: unknown) => {
          this.log.error({ err }, 'stopping failed');
          this.exit(1);
        },
      );
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }

  /** Registers a running part. While stopping, it is stopped at once instead. */
  add(name: string, rank: number, stop: () => Promise<void>): void {
    if (this.stopping) {
      this.late.push(this.stopPart({ name, stop }));
      return;
    }
    this.parts.push({ name, rank, stop });
  }

  /** Registered by parts that own child processes: kill them outright. */
  onForce(hook: () => void): void {
    this.forceHooks.push(hook);
  }

  /** Throws once stopping has begun: start-up calls it between steps. */
  checkpoint(): void {
    if (this.stopping) throw new StopRequested();
  }

  /** Stops every part, rank by rank; idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.stopAll();
    return this.stopping;
  }

  private async stopAll(): Promise<void> {
    this.controller.abort();
    const watchdog = setTimeout(() => {
      this.log.error({ afterMs: this.options.forceAfterMs }, 'stopping took too long: forcing exit');
      this.force(1);
    }, this.options.forceAfterMs);
    watchdog.unref();
    try {
      const ranks = [...new Set(this.parts.map((p) => p.rank))].sort((a, b) => a - b);
      for (const rank of ranks) {
        await Promise.all(this.parts.filter((p) => p.rank === rank).map((p) => this.stopPart(p)));
      }
      await Promise.all(this.late);
    } finally {
      clearTimeout(watchdog);
    }
  }

  private async stopPart(part: { name: string; stop: () => Promise<void> }): Promise<void> {
    const started = Date.now();
    try {
      await part.stop();
      this.log.debug({ part: part.name, ms: Date.now() - started }, 'stopped');
    } catch (err) {
      this.log.error({ err, part: part.name }, 'error while stopping');
    }
  }

  private force(code: number): void {
    for (const hook of this.forceHooks) {
      try {
        hook();
      } catch {
        // Killing what is already gone: nothing to do.
      }
    }
    this.exit(code);
  }

  private exit(code: number): void {
    (this.options.exit ?? process.exit)(code);
  }
}

/** Signals closer together than this are one keypress relayed twice, not a request to force. */
const SAME_KEYPRESS_MS = 500;

/** Start-up was interrupted by a stop signal: not an error. */
export class StopRequested extends Error {
  constructor() {
    super('stop requested during start-up');
    this.name = 'StopRequested';
  }
}
