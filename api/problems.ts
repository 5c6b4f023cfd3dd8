import type { Request, Response } from 'express';
import createError, { type HttpError } from 'http-errors';
import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import { correlationIdOf } from './correlation';

// Registering Problem as a component (api/openapi.ts) takes zod's .openapi(), which only schemas created after
// this call have.
extendZodWithOpenApi(z);

/**
 * RFC 9457 problem details: every error the API answers is `application/problem+json` with one of these types.
 * A type is a URI reference (`/problems/<slug>`) that the API also serves, describing the type; its title never
 * changes between occurrences, the `detail` says what went wrong this time.
 */

export const PROBLEM_MEDIA_TYPE = 'application/problem+json';
export const CORRELATION_ID_HEADER = 'X-Correlation-Id';

export const PROBLEMS = {
  validation: {
    slug: 'validation-error',
    status: 400,
    title: 'The request is invalid',
    description: 'Parameters, headers or body do not match the schema; `issues` lists each problem with its path.',
  },
  malformedRequest: {
    slug: 'malformed-request',
    status: 400,
    title: 'The request could not be read',
    description: 'The body is not JSON, a %-escape in the path is malformed, or the upload was aborted.',
  },
  unauthorized: {
    slug: 'unauthorized',
    status: 401,
    title: 'Authentication is required',
    description:
      'No credentials, or credentials the API does not accept: an API key (X-API-Key) or an OIDC bearer token ' +
      'for the API routes; the secret or an Event Grid Entra token for the webhook. `WWW-Authenticate` says which.',
  },
  forbidden: {
    slug: 'forbidden',
    status: 403,
    title: 'Not allowed',
    description:
      'The caller is authenticated but its role does not allow this (`requiredRole` names the role needed), or a ' +
      'browser sent the request from an origin the API does not allow.',
  },
  hostNotAllowed: {
    slug: 'host-not-allowed',
    status: 421,
    title: 'Host not allowed',
    description:
      'The Host header names none of the names this API answers to (API_ALLOWED_HOSTS); a guard against DNS ' +
      'rebinding.',
  },
  notFound: {
    slug: 'not-found',
    status: 404,
    title: 'No such resource',
    description: 'No route of the API has this path.',
  },
  workflowNotFound: {
    slug: 'workflow-not-found',
    status: 404,
    title: 'No such workflow',
    description: 'No operation was ever started with this id (or its history is past retention); see `workflowId`.',
  },
  notRunning: {
    slug: 'not-running',
    status: 409,
    title: 'The operation is not running',
    description: 'The operation exists but has closed, so it cannot be changed; `executionStatus` says how it ended.',
  },
  nothingToRetry: {
    slug: 'nothing-to-retry',
    status: 409,
    title: 'There is nothing to retry',
    description: 'The operation is running but not waiting for a retry of its compensation (phase compensationFailed).',
  },
  wrongState: {
    slug: 'wrong-state',
    status: 409,
    title: 'The operation is not in a state for this',
    description: 'For example resuming an operation that is not paused; `type` names the failure.',
  },
  planRefused: {
    slug: 'plan-refused',
    status: 422,
    title: 'The operation cannot be planned',
    description:
      'A dry run found that the operation cannot run as asked (its targets hold too many devices, the group or ' +
      'earlier operation does not exist…); `failureType` names why. Nothing was changed.',
  },
  methodNotAllowed: {
    slug: 'method-not-allowed',
    status: 405,
    title: 'Method not allowed',
    description: 'The path exists but not with this method; the `Allow` header lists the methods it has.',
  },
  alreadyStarted: {
    slug: 'already-started',
    status: 409,
    title: 'A different operation is already in flight',
    description:
      'An operation with this id is running and was started by a different request; `workflowId` and `runId` name it.',
  },
  payloadTooLarge: {
    slug: 'payload-too-large',
    status: 413,
    title: 'The body is too large',
    description: 'Request bodies are limited to 1 MiB.',
  },
  unsupportedMediaType: {
    slug: 'unsupported-media-type',
    status: 415,
    title: 'Unsupported media type',
    description: 'The body is not of a media type (or charset) this operation accepts; see `Accept-Post`.',
  },
  idempotencyKeyReused: {
    slug: 'idempotency-key-reused',
    status: 422,
    title: 'The Idempotency-Key was used for a different request',
    description: 'The key started an operation whose request differs from this one; `workflowId` names it.',
  },
  auditNotCompleted: {
    slug: 'audit-not-completed',
    status: 409,
    title: 'The audit has not completed',
    description: 'Its findings are remediated only once it has completed; `executionStatus` says where it stands.',
  },
  scheduleNotFound: {
    slug: 'schedule-not-found',
    status: 404,
    title: 'No audit schedule',
    description: 'No audit schedule is set up; POST /v1/audits/schedule creates it.',
  },
  tooManyTargets: {
    slug: 'too-many-targets',
    status: 422,
    title: 'Too many targets for one call',
    description: 'The remediation names more devices than one fleet operation lists; `limit` says how many.',
  },
  nothingToRemediate: {
    slug: 'nothing-to-remediate',
    status: 422,
    title: 'Nothing to remediate',
    description: 'The audit found no device of this finding type that an operation can name; `plan` says so.',
  },
  notExpressible: {
    slug: 'not-expressible',
    status: 422,
    title: 'No operation can carry this out yet',
    description:
      'The request is understood, but no operation the API has can carry it out; `plan` says what was proposed instead.',
  },
  internal: {
    slug: 'internal-error',
    status: 500,
    title: 'Internal error',
    description: 'Something failed inside the API; quote `correlationId`, which the API logged with the cause.',
  },
  tooManyRequests: {
    slug: 'too-many-requests',
    status: 429,
    title: 'Too many requests',
    description:
      'This client sent more changes than API_RATE_LIMIT_PER_MINUTE allows; retry after `Retry-After` seconds.',
  },
  temporalUnavailable: {
    slug: 'temporal-unavailable',
    status: 503,
    title: 'Temporal is unavailable',
    description:
      'Temporal did not answer in time or could not be reached, or no worker polls the task queue to answer a query; retry after `Retry-After` seconds.',
  },
  timedOut: {
    slug: 'timed-out',
    status: 504,
    title: 'The operation did not finish in time',
    description: 'A workflow the request waits for did not finish within its timeout (is a worker running?).',
  },
} as const satisfies Record<string, { slug: string; status: number; title: string; description: string }>;

export type ProblemKind = keyof typeof PROBLEMS;

export const problemTypeUri = (kind: ProblemKind): string => `/problems/${PROBLEMS[kind].slug}`;

/** What an error carries so that the error middleware answers it as this problem. */
export interface ProblemProps {
  problem: ProblemKind;
  /** Extension members of the problem body (workflowId, status, …). */
  extensions?: Record<string, unknown>;
  /** Response headers (Retry-After, Allow, …); http-errors' own convention, honoured by express too. */
  headers?: Record<string, string>;
}

/** An error for a route to throw (or pass to next): the error middleware answers it as that problem. */
export function problem(
  kind: ProblemKind,
  detail: string,
  options: Omit<ProblemProps, 'problem'> = {},
): HttpError & ProblemProps {
  return createError(PROBLEMS[kind].status, detail, { problem: kind, ...options }) as HttpError & ProblemProps;
}

export function isProblem(err: unknown): err is HttpError & ProblemProps {
  return createError.isHttpError(err) && typeof (err as { problem?: unknown }).problem === 'string';
}

/** One answer of the API to a failed request: the problem body and the headers that go with it. */
export interface Answer {
  body: { type: string; title: string; status: number; detail: string; [extension: string]: unknown };
  headers?: Record<string, string>;
}

export function problemAnswer(
  kind: ProblemKind,
  detail: string,
  extensions: Record<string, unknown> = {},
  headers?: Record<string, string>,
): Answer {
  const { status, title } = PROBLEMS[kind];
  // Extensions never replace the RFC 9457 members (nor the instance and correlation id sendProblem adds).
  const members = new Set(['type', 'title', 'status', 'detail', 'instance', 'correlationId']);
  const rest = Object.fromEntries(Object.entries(extensions).filter(([key]) => !members.has(key)));
  return { body: { type: problemTypeUri(kind), title, status, detail, ...rest }, headers };
}

/** Writes a problem answer: the error middleware's, and the Temporal deadline's when a handler is still waiting. */
export function sendProblem(req: Request, res: Response, answer: Answer): void {
  const { type, title, status, detail, ...extensions } = answer.body;
  const body: ProblemBody = {
    type,
    title,
    status,
    detail,
    // The path only: the query may hold the webhook secret.
    instance: req.originalUrl.split('?')[0],
    correlationId: correlationIdOf(res),
    ...extensions,
  };
  res
    .status(body.status)
    .set(answer.headers ?? {})
    .type(PROBLEM_MEDIA_TYPE)
    .send(JSON.stringify(body));
}

// ----- schemas (OpenAPI) -----

const Issue = z
  .object({
    code: z.string(),
    path: z.array(z.union([z.string(), z.number()])).describe('where: starts with params, query, headers or body'),
    message: z.string(),
  })
  .catchall(z.unknown())
  .describe('A zod issue; `keys` names unknown fields, `params.type` a named failure type');

export const Problem = z
  .object({
    type: z.string().describe('URI reference of the problem type; GET it for a description'),
    title: z.string().describe('Short summary of the problem type; the same for every occurrence'),
    status: z.number().int().min(400).max(599).describe('The HTTP status code of this answer'),
    detail: z.string().describe('What went wrong this time'),
    instance: z.string().describe('The request path this occurrence answers'),
    correlationId: z.string().describe('Also in the X-Correlation-Id header and in the API log line of the request'),
    issues: z.array(Issue).optional().describe('validation-error: every problem found, each with its path'),
    workflowId: z.string().optional().describe('The workflow the problem is about'),
    runId: z.string().optional().describe('already-started: the run in flight'),
    executionStatus: z.string().optional().describe('not-running: how the latest run ended'),
    requiredRole: z.string().optional().describe('forbidden: the role the operation needs'),
  })
  .catchall(z.unknown())
  .meta({ id: 'Problem', description: 'RFC 9457 problem details' });

export type ProblemBody = z.infer<typeof Problem>;

export const ProblemType = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    description: z.string(),
  })
  .meta({ id: 'ProblemType', description: 'A problem type the API answers with' });

/** The response of an operation for one status: problem+json, its `type` limited to the kinds it can be. */
export function problemResponse(status: number, kinds: ProblemKind[], description?: string) {
  const types = kinds.map(problemTypeUri) as [string, ...string[]];
  return {
    description: description ?? kinds.map((kind) => PROBLEMS[kind].title).join('; '),
    content: {
      [PROBLEM_MEDIA_TYPE]: {
        schema: Problem.extend({ type: z.enum(types), status: z.literal(status) }),
      },
    },
  };
}
