import type { Request, Response } from 'express';
import { isGrpcServiceError, type Client } from '@temporalio/client';
import type { Logger } from '../common/logger';
import { correlationIdOf } from './correlation';
import { problemAnswer, sendProblem, type Answer } from './problems';
import type { Middleware } from './validate';

/**
 * Bounded Temporal calls for API requests. While Temporal is down the SDK's gRPC retry interceptor keeps retrying
 * a call (about 20 s), and a request would hang that long and then fail with 500. Instead every route that needs
 * Temporal runs behind `temporalDeadline`: its Temporal calls carry a deadline, and if the route has not answered
 * shortly after that deadline (the retry interceptor only notices it at its next attempt) the API answers 503 with
 * Retry-After itself. Unavailable, deadline-exceeded and resource-exhausted gRPC errors become the same 503.
 */

export const DEFAULT_TEMPORAL_DEADLINE_MS = 5_000;
/** How soon a client should try again after a 503: Temporal restarts and reconnects take seconds. */
export const RETRY_AFTER_SECONDS = 5;
/** Past the deadline, how long the route gets to answer on its own before the 503. */
const GRACE_MS = 250;

/** gRPC status codes that say Temporal cannot serve now, not that the request is wrong. */
const UNAVAILABLE_CODES: Record<number, string> = {
  4: 'did not answer before the deadline',
  8: 'is rate-limiting requests (resource exhausted)',
  14: 'is unreachable',
};

const FAILED_PRECONDITION = 9;

const BUDGET_KEY = 'temporalBudget';

class TemporalBudget {
  deadline: number;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly client: Client,
    private readonly onExpired: (ms: number) => void,
    private ms: number,
  ) {
    this.deadline = Date.now() + ms;
    this.arm();
  }

  /** Allows the request `ms` more from now (a route that waits for a workflow's result). */
  extend(ms: number): void {
    this.ms = ms;
    this.deadline = Date.now() + ms;
    this.arm();
  }

  clear(): void {
    clearTimeout(this.timer);
  }

  private arm(): void {
    this.clear();
    const ms = this.ms;
    this.timer = setTimeout(() => this.onExpired(ms), ms + GRACE_MS);
  }
}

/**
 * Middleware for routes that call Temporal; put it after body parsing and validation, so that only the time spent
 * waiting for Temporal counts (a slow upload is the client's doing and must never turn into a 503). The route's
 * own calls end shortly after (their deadline has passed); their failure is then only logged (debug).
 */
export function temporalDeadline(deps: { client: Client; log: Logger; temporalDeadlineMs?: number }): Middleware {
  const { client, log } = deps;
  const ms = deps.temporalDeadlineMs ?? DEFAULT_TEMPORAL_DEADLINE_MS;
  return (req, res, next) => {
    const budget = new TemporalBudget(
      client,
      (waited) => {
        if (res.headersSent) return;
        const answer = unavailableAnswer(`Temporal did not answer within ${waited} ms`);
        const context = { correlationId: correlationIdOf(res), method: req.method, path: req.path, status: 503 };
        log.warn({ ...context, detail: answer.body.detail }, 'request not served');
        sendProblem(req as Request, res, answer);
      },
      ms,
    );
    res.locals[BUDGET_KEY] = budget;
    res.once('close', () => budget.clear());
    // Every Temporal call the route makes from here on, including after its awaits, carries the deadline.
    void client.withDeadline(budget.deadline, async () => next());
  };
}

/** Runs `fn` (e.g. waiting for a workflow's result) with `ms` more for its Temporal calls and for the request. */
export async function withLongerTemporalDeadline<T>(res: Response, ms: number, fn: () => Promise<T>): Promise<T> {
  const budget = res.locals[BUDGET_KEY] as TemporalBudget | undefined;
  if (!budget) throw new Error('withLongerTemporalDeadline needs temporalDeadline() earlier in the route');
  budget.extend(ms);
  return budget.client.withDeadline(budget.deadline, fn);
}

/** The 503 for an error that says Temporal cannot serve now, or undefined for any other error. */
export function temporalUnavailableAnswer(err: unknown): Answer | undefined {
  for (let e = err; e instanceof Error; e = e.cause) {
    if (isGrpcServiceError(e) && e.code in UNAVAILABLE_CODES) {
      return unavailableAnswer(`Temporal ${UNAVAILABLE_CODES[e.code]}: ${e.details}`);
    }
    // A query needs a worker to run it; none has polled the task queue lately (all down, or all busy for longer
    // than the server's window): FAILED_PRECONDITION "no poller seen for task queue recently". Temporary too.
    if (isGrpcServiceError(e) && e.code === FAILED_PRECONDITION && /no poller seen/i.test(e.details)) {
      return unavailableAnswer(`no worker has polled the task queue recently (Temporal: ${e.details})`);
    }
  }
  return undefined;
}

function unavailableAnswer(detail: string): Answer {
  return problemAnswer('temporalUnavailable', detail, {}, { 'Retry-After': String(RETRY_AFTER_SECONDS) });
}
