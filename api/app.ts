import express, { type Express } from 'express';
import type { Client } from '@temporalio/client';
import type { Logger } from '../common/logger';
import { errorHandler } from './errors';
import { healthRoutes } from './routes/health';
import { diagnosticsRoutes } from './routes/diagnostics';
import { openApiDocument } from './openapi';

export interface AppDeps {
  client: Client;
  taskQueue: string;
  log: Logger;
}

/** The REST API as an express app (exported for supertest); api/main.ts listens. */
export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '1mb' }));
  app.use((req, res, next) => {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      deps.log.debug({ method: req.method, path: req.path, status: res.statusCode, ms }, 'request');
    });
    next();
  });
  app.use(healthRoutes(deps));
  app.use('/v1', diagnosticsRoutes(deps));
  app.get('/openapi.json', (_req, res) => {
    res.json(openApiDocument());
  });
  app.use(errorHandler(deps.log));
  return app;
}
