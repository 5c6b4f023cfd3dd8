import express from 'express';
import request from 'supertest';
import { z } from 'zod';
import { errorHandler } from '../../api/errors';
import { validate } from '../../api/validate';
import { createLogger } from '../../common/logger';

/** A one-route app that echoes what its handler sees after validation. */
function echoApp() {
  const app = express();
  app.use(express.json());
  app.post(
    '/items/:id',
    validate({
      params: z.object({ id: z.coerce.number().int() }),
      query: z.object({ limit: z.coerce.number().int().max(10).default(5), tag: z.string().optional() }),
      body: z.object({ name: z.string().min(1), color: z.enum(['red', 'blue']).default('red') }),
    }),
    (req, res) => {
      res.json({ params: req.params, query: req.query, body: req.body });
    },
  );
  app.use(errorHandler(createLogger('silent')));
  return app;
}

describe('validate middleware', () => {
  it('replaces params, query (an express 5 getter) and body with the parsed values', async () => {
    const res = await request(echoApp()).post('/items/42').query({ tag: 'x' }).send({ name: 'n' }).expect(200);
    expect(res.body).toEqual({ params: { id: 42 }, query: { limit: 5, tag: 'x' }, body: { name: 'n', color: 'red' } });
  });

  it('reports the issues of every part together, each path starting with where it was found', async () => {
    const res = await request(echoApp()).post('/items/abc').query({ limit: '99' }).send({ color: 'green' }).expect(400);
    expect(res.body.type).toBe('/problems/validation-error');
    expect(res.body.issues.map((issue: { path: unknown[] }) => issue.path)).toEqual([
      ['params', 'id'],
      ['query', 'limit'],
      ['body', 'name'],
      ['body', 'color'],
    ]);
  });
});
