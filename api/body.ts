import express, { type Request } from 'express';
import { problem } from './problems';
import type { Middleware } from './validate';

/** The largest request body any route accepts; past it the parser's own 413 is answered. */
export const BODY_LIMIT = '1mb';

/**
 * A route's JSON body: a body of another media type is answered 415 (with `Accept-Post` naming the accepted ones),
 * then express's JSON parser reads it (413 past 1 MiB, 400 for bad JSON, 415 for an unsupported charset or
 * encoding). Per route rather than for the whole app, so that e.g. the webhook checks its secret before reading.
 */
export function jsonBody(types: string[] = ['application/json']): Middleware {
  const parse = express.json({ type: types, limit: BODY_LIMIT });
  return (req, res, next) => {
    // null: no body at all (the schema then says whether one is required); false: a body of another type.
    // An empty POST without a Content-Type (`curl -X POST`, clients that send Content-Length: 0) has no body.
    const empty = !req.get('content-type') && req.get('content-length') === '0' && !req.get('transfer-encoding');
    if (!empty && req.is(types) === false) {
      const got = req.get('content-type') ?? 'no Content-Type';
      next(
        problem('unsupportedMediaType', `expected ${types.join(' or ')}, got ${got}`, {
          headers: { 'Accept-Post': types.join(', ') },
        }),
      );
      return;
    }
    parse(req as unknown as Request, res, next);
  };
}
