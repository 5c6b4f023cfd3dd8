import type { RequestHandler } from 'express';
import { z } from 'zod';

type Location = 'params' | 'query' | 'body';

export interface RequestSchemas<P extends z.ZodType, Q extends z.ZodType, B extends z.ZodType> {
  params?: P;
  query?: Q;
  body?: B;
}

/**
 * Parses `req.params`, `req.query` and `req.body` with zod and replaces them with the parsed values, so handlers see
 * defaults and coercions applied. All problems are reported together as one ZodError (→ 400 via the error
 * middleware), each issue's path starting with where it was found: ['body', 'registrationId'], ['query', 'pageSize'].
 * Use it as a route's first handler; express infers the later handlers' `req` types from it.
 */
export function validate<
  P extends z.ZodType = z.ZodType<Record<string, string>>,
  Q extends z.ZodType = z.ZodType<Record<string, unknown>>,
  B extends z.ZodType = z.ZodType<unknown>,
>(schemas: RequestSchemas<P, Q, B>): RequestHandler<z.output<P>, unknown, z.output<B>, z.output<Q>> {
  return (req, _res, next) => {
    const issues: z.core.$ZodIssue[] = [];
    const parsed: Partial<Record<Location, unknown>> = {};
    for (const location of ['params', 'query', 'body'] as const) {
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
    for (const [location, value] of Object.entries(parsed)) {
      // Express 5 defines req.query as a getter on the request prototype: shadow it with an own property.
      Object.defineProperty(req, location, { value, writable: true, configurable: true, enumerable: true });
    }
    next();
  };
}
