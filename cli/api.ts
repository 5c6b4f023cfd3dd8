import { EXIT } from './exit-codes';
import type { Credentials } from './config';

/**
 * The REST API as the CLI uses it: JSON in and out, RFC 9457 problems turned into an ApiError that knows its exit
 * code and prints its title, detail and validation issues readably. Node's fetch: no client library needed.
 */

/** Per request: a status poll that hangs must not hang the CLI. */
const REQUEST_TIMEOUT_MS = 30_000;

interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  issues?: Array<{ path?: Array<string | number>; message?: string }>;
  [extension: string]: unknown;
}

export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    message: string,
    readonly exitCode: number,
    readonly status?: number,
    readonly problem?: Problem,
  ) {
    super(message);
  }
}

export interface ApiResponse<T> {
  status: number;
  body: T;
  headers: Headers;
}

export class Api {
  constructor(
    readonly baseUrl: string,
    private readonly credentials: Credentials,
  ) {}

  get<T>(path: string, query: Record<string, string | number | undefined> = {}): Promise<ApiResponse<T>> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, String(v));
    const qs = params.size ? `?${params}` : '';
    return this.send<T>('GET', `${path}${qs}`);
  }

  post<T>(path: string, body: unknown, headers: Record<string, string> = {}): Promise<ApiResponse<T>> {
    return this.send<T>('POST', path, body, headers);
  }

  private async send<T>(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<ApiResponse<T>> {
    const url = new URL(path, this.baseUrl).toString();
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: {
          accept: 'application/json, application/problem+json',
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...this.credentials.headers,
          ...headers,
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code ?? cause?.message ?? (err as Error).message;
      throw new ApiError(`cannot reach the API at ${this.baseUrl} (${why}); is it running? (--api)`, EXIT.api);
    }
    const text = await res.text();
    let parsed: unknown = undefined;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = text;
    }
    if (res.ok) return { status: res.status, body: parsed as T, headers: res.headers };
    throw this.errorOf(method, path, res.status, parsed);
  }

  private errorOf(method: string, path: string, status: number, body: unknown): ApiError {
    const problem: Problem = body && typeof body === 'object' ? (body as Problem) : { detail: String(body ?? '') };
    const lines = [`${method} ${path.split('?')[0]}: ${status} ${problem.title ?? ''}`.trimEnd()];
    if (problem.detail && !problem.issues?.length) lines.push(`  ${problem.detail}`);
    for (const issue of problem.issues ?? []) {
      lines.push(`  - ${issue.path?.length ? `${issue.path.join('.')}: ` : ''}${issue.message ?? ''}`);
    }
    if (typeof problem.requiredRole === 'string' && !problem.detail?.includes(problem.requiredRole)) {
      lines.push(`  needs the ${problem.requiredRole} role`);
    }
    if (status === 401) lines.push(`  credentials used: ${this.credentials.source}`);
    if (typeof problem.correlationId === 'string') lines.push(`  correlation id: ${problem.correlationId}`);
    const exitCode = status === 401 || status === 403 || status === 429 || status >= 500 ? EXIT.api : EXIT.usage;
    return new ApiError(lines.join('\n'), exitCode, status, problem);
  }
}
