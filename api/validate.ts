import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { z } from 'zod';

/**
 * A middleware that reads none of a route's typed parts (body parsing, deadlines): generic, so it fits between
 * validate() and a handler without widening the types express infers for them.
 */
export type Middleware = <P, ResBody, ReqBody, Q>(
  req: Request<P, ResBody, ReqBody, Q>,
  res: Response<ResBody>,
  next: NextFunction,
) => void;

type Location = 'params' | 'query' | 'headers' | 'body';

export interface RequestSchemas<P extends z.ZodType, Q extends z.ZodType, B extends z.ZodType> {
  params?: P;
  query?: Q;
  /** Checked only: `req.headers` keeps every header (read them with `req.get`). Names in lower case. */
  headers?: z.ZodType;
  body?: B;
}

/**
 * Parses `req.params`, `req.query` and `req.body` with zod and replaces them with the parsed values, so handlers see
 * defaults and coercions applied; checks `req.headers`. All problems are reported together as one ZodError (→ 400
 * problem via the error middleware), each issue's path starting with where it was found: ['body', 'registrationId'],
 * ['query', 'pageSize']. Request schemas are strict objects, so unknown fields are issues too, named in `keys`.
 * Use it after the route's jsonBody() and before its handler; express infers the handler's `req` types from it.
 */
export function validate<
  P extends z.ZodType = z.ZodType<Record<string, string>>,
  Q extends z.ZodType = z.ZodType<Record<string, unknown>>,
  B extends z.ZodType = z.ZodType<unknown>,
>(schemas: RequestSchemas<P, Q, B>): RequestHandler<z.output<P>, unknown, z.output<B>, z.output<Q>> {
  return (req, _res, next) => {
    const issues: z.core.$ZodIssue[] = [];
    const parsed: Partial<Record<Location, unknown>> = {};
    for (const location of ['params', 'query', 'headers', 'body'] as const) {
      const schema = schemas[location];
      if (!schema) continue;
      const result = schema.safeParse(req[location]);
      if (result.success) parsed[location] = result.data;
      else issues.push(...result.error.issues.map((issue) => ({ ...issue, path: [location, ...issue.path] })));
    }
    if (issues.length > 0) {
      next(new z.ZodError(issues));
      return;
    }
    delete parsed.headers;
    for (const [location, value] of Object.entries(parsed)) {
      // Express 5 defines req.query as a getter on the request prototype: shadow it with an own property.
      Object.defineProperty(req, location, { value, writable: true, configurable: true, enumerable: true });
    }
    next();
  };
}
