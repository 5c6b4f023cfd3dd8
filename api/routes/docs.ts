import { Router } from 'express';
import swaggerUi from 'swagger-ui-express';
import { z } from 'zod';
import { openApiDocument, registerRoute, type DocumentOptions } from '../openapi';
import { PROBLEMS, ProblemType, problemTypeUri, type ProblemKind } from '../problems';
import { validate } from '../validate';

const SLUGS = Object.values(PROBLEMS).map((p) => p.slug) as [string, ...string[]];
const ProblemTypeParams = z.object({ slug: z.enum(SLUGS).describe('the last segment of a problem `type`') }).strict();

registerRoute({
  method: 'get',
  path: '/openapi.json',
  auth: 'public',
  summary: 'This OpenAPI 3.1 document (Swagger UI at /docs)',
  responses: {
    200: {
      description: 'the document',
      content: { 'application/json': { schema: z.record(z.string(), z.unknown()) } },
    },
  },
});
registerRoute({
  method: 'get',
  path: '/problems/{slug}',
  auth: 'public',
  summary: 'What a problem type means (problem `type` URIs point here)',
  request: { params: ProblemTypeParams },
  responses: {
    200: { description: 'the problem type', content: { 'application/json': { schema: ProblemType } } },
  },
});

/** The OpenAPI document, Swagger UI over it, and the problem types the document's errors refer to. */
export function docsRoutes(options: DocumentOptions): Router {
  const router = Router();
  const document = openApiDocument(options);
  router.get('/openapi.json', (_req, res) => {
    res.json(document);
  });
  // Swagger UI's own static assets (swagger-ui-dist), loading the document above; validatorUrl null keeps the
  // browser from sending the document to the online validator at swagger.io.
  const ui = swaggerUi.setup(undefined, { swaggerOptions: { url: '/openapi.json', validatorUrl: null } });
  router.use('/docs', swaggerUi.serve, ui);
  router.get('/problems/:slug', validate({ params: ProblemTypeParams }), (req, res) => {
    const kind = (Object.keys(PROBLEMS) as ProblemKind[]).find((k) => PROBLEMS[k].slug === req.params.slug)!;
    const { status, title, description } = PROBLEMS[kind];
    res.json({ type: problemTypeUri(kind), title, status, description });
  });
  return router;
}
