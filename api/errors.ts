import { STATUS_CODES } from 'node:http';
import type { ErrorRequestHandler } from 'express';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import { ZodError } from 'zod';
import type { Logger } from '../common/logger';
import { correlationIdOf } from './correlation';
import { isProblem, problemAnswer, sendProblem, type Answer, type ProblemKind } from './problems';
import { temporalUnavailableAnswer } from './temporal';

/**
 * The one error middleware: every failure leaves the API as `application/problem+json` (RFC 9457). Client errors
 * (4xx, including the body parser's and the router's own) are answered as such and logged at info; Temporal being
 * unreachable is a 503 with Retry-After (warn); anything else is a 500 with a correlation id and no stack (error).
 */
export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    const correlationId = correlationIdOf(res);
    if (res.headersSent) {
      // Already answered (e.g. 503 by the Temporal deadline); the handler failed afterwards.
      log.debug({ err, correlationId, method: req.method, path: req.path }, 'error after the answer was sent');
      return;
    }
    const answer = toAnswer(err);
    const status = answer.body.status;
    const context = { correlationId, method: req.method, path: req.path, status, type: answer.body.type };
    if (status >= 500 && status !== 503 && status !== 504) log.error({ ...context, err }, 'request failed');
    else if (status >= 500) log.warn({ ...context, detail: answer.body.detail }, 'request not served');
    else log.info({ ...context, detail: answer.body.detail }, 'request refused');
    sendProblem(req, res, answer);
  };
}

function toAnswer(err: unknown): Answer {
  if (err instanceof ZodError) {
    const issues = err.issues.map(({ input: _input, ...issue }) => issue);
    const detail = issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ');
    return problemAnswer('validation', detail, { issues });
  }
  if (isProblem(err)) return problemAnswer(err.problem, err.message, err.extensions, err.headers);
  if (err instanceof WorkflowNotFoundError) {
    return problemAnswer('workflowNotFound', `no workflow ${err.workflowId}`, { workflowId: err.workflowId });
  }
  if (err instanceof WorkflowExecutionAlreadyStartedError) {
    return problemAnswer('alreadyStarted', `workflow ${err.workflowId} is already running`, {
      workflowId: err.workflowId,
    });
  }
  const unavailable = temporalUnavailableAnswer(err);
  if (unavailable) return unavailable;
  const clientError = passedThroughClientError(err);
  if (clientError) return clientError;
  return problemAnswer('internal', 'internal error');
}

const PASSED_THROUGH: Partial<Record<number, ProblemKind>> = {
  400: 'malformedRequest',
  413: 'payloadTooLarge',
  415: 'unsupportedMediaType',
};

/**
 * The 4xx that express's body parser (http-errors: 400 bad JSON, 413, 415 charset/encoding) and router (URIError
 * for a malformed %-escape, status 400) raise themselves: passed through with their status, never turned into 500.
 */
function passedThroughClientError(err: unknown): Answer | undefined {
  const e = err as { status?: unknown; statusCode?: unknown; expose?: unknown; message?: unknown };
  const status = typeof e?.status === 'number' ? e.status : e?.statusCode;
  if (typeof status !== 'number' || status < 400 || status > 499) return undefined;
  const detail = e.expose !== false && typeof e.message === 'string' ? e.message : 'the request was refused';
  const kind = PASSED_THROUGH[status];
  if (kind) return problemAnswer(kind, detail);
  // Any other 4xx a parser may raise (e.g. 403 entity.verify.failed): RFC 9457's about:blank, titled by status.
  return {
    body: { type: 'about:blank', title: STATUS_CODES[status] ?? 'Client Error', status, detail },
  };
}
