import { ActivityFailure, ApplicationFailure, CancellationScope, TemporalFailure } from '@temporalio/workflow';
import type { CompensationReport, UndoReport } from '../common/promotion';

/**
 * The compensation (saga) helper every workflow uses, after samples-typescript's `saga` sample: each change
 * registers its own undo; `compensate()` runs the undos in reverse order, each on its own, all attempted even when
 * one fails, and never cancelled half-way. Undos that failed stay pending, so `compensate()` can be called again
 * (an operator's retry) and runs only those.
 *
 * An undo must be idempotent and must not touch what someone else changed meanwhile: it may run after its change
 * was only half applied (an activity whose answer was lost), and again on a retry.
 */
export class Saga {
  private readonly undos: Array<{ step: string; undo: () => Promise<string | void>; report: UndoReport }> = [];
  private attempts = 0;

  /** Registers the undo of a change about to be made (register first: the change may apply and still fail). */
  add(step: string, undo: () => Promise<string | void>): void {
    this.undos.push({ step, undo, report: { step, status: 'pending' } });
  }

  get isEmpty(): boolean {
    return this.undos.length === 0;
  }

  /**
   * Runs every undo that has not succeeded yet, newest first; `onStep` hears about each as it ends. `shouldStop`,
   * asked before each undo, ends the compensation early (the rest stay pending): something else has taken over.
   */
  async compensate(onStep?: (report: UndoReport) => void, shouldStop?: () => boolean): Promise<CompensationReport> {
    this.attempts += 1;
    await CancellationScope.nonCancellable(async () => {
      for (const entry of [...this.undos].reverse()) {
        if (entry.report.status === 'undone') continue;
        if (shouldStop?.()) break;
        try {
          const detail = await entry.undo();
          entry.report = { step: entry.step, status: 'undone', ...(detail ? { detail } : {}) };
        } catch (err) {
          entry.report = { step: entry.step, status: 'failed', error: failureOf(err) };
        }
        onStep?.(entry.report);
      }
    });
    return this.report();
  }

  report(): CompensationReport {
    const steps = this.undos.map((u) => u.report);
    return { attempts: this.attempts, steps, leftovers: steps.filter((s) => s.status !== 'undone') };
  }
}

/** The named type and message of a failure, looking through ActivityFailure to the ApplicationFailure inside. */
export function failureOf(err: unknown): { type: string; message: string } {
  const application = applicationFailureIn(err);
  if (application) return { type: application.type ?? 'Error', message: application.message };
  // An activity that timed out or ran out of attempts: name what happened to it, not the wrapper.
  if (err instanceof ActivityFailure && err.cause instanceof TemporalFailure) {
    return { type: err.cause.name, message: `${err.activityType}: ${err.cause.message}` };
  }
  if (err instanceof TemporalFailure) return { type: err.name, message: err.message };
  return { type: 'Error', message: String((err as Error)?.message ?? err) };
}

export function applicationFailureIn(err: unknown): ApplicationFailure | undefined {
  if (err instanceof ApplicationFailure) return err;
  if (err instanceof ActivityFailure && err.cause instanceof ApplicationFailure) return err.cause;
  return undefined;
}
