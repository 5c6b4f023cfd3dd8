import { randomUUID } from 'node:crypto';
import type { ErrorRequestHandler } from 'express';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import { ZodError } from 'zod';
import type { Logger } from '../common/logger';

/** An error with an HTTP status that a route throws on purpose (auth, conflicts it detects itself, …). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** The one error middleware: every failure leaves the API in one of these shapes. */
export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    if (err instanceof ZodError) {
      res.status(400).json({ error: 'ValidationError', message: 'request is invalid', issues: err.issues });
      return;
    }
    if (err instanceof HttpError) {
      res.status(err.status).json({ error: err.code, message: err.message, ...err.details });
      return;
    }
    if (err instanceof WorkflowNotFoundError) {
      res.status(404).json({ error: 'NotFound', message: 'no such workflow', workflowId: err.workflowId });
      return;
    }
    if (err instanceof WorkflowExecutionAlreadyStartedError) {
      res.status(409).json({
        error: 'AlreadyRunning',
        message: 'an operation for this device is already in flight',
        workflowId: err.workflowId,
      });
      return;
    }
    if ((err as { type?: string }).type === 'entity.parse.failed') {
      res.status(400).json({ error: 'ValidationError', message: 'body is not valid JSON', issues: [] });
      return;
    }
    const correlationId = randomUUID();
    log.error({ err, correlationId, method: req.method, path: req.path }, 'request failed');
    res.status(500).json({ error: 'InternalError', message: 'internal error', correlationId });
  };
}
