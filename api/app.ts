import express, { type Express } from 'express';
import type { Client } from '@temporalio/client';
import type { Logger } from '../common/logger';
import { errorHandler } from './errors';
import { healthRoutes } from './routes/health';
import { diagnosticsRoutes } from './routes/diagnostics';
import { promotionRoutes } from './routes/promotions';
import { eventGridRoutes } from './routes/eventgrid';
import { openApiDocument } from './openapi';

export interface AppDeps {
  client: Client;
  taskQueue: string;
  log: Logger;
  /** Environment name → IoT hub host name, e.g. {test: 'x-test.azure-devices.net'}: what promotions may name. */
  environments?: Record<string, string>;
  /** EVENT_GRID_SECRET: when set, the Event Grid webhook requires it (see api/routes/eventgrid.ts). */
  eventGridSecret?: string;
  /** How many (hub, device, sequenceNumber) keys the webhook remembers to drop redelivered events; 10,000. */
  eventGridDedupCapacity?: number;
}

/** The `environments` dependency from hub connection strings by environment (only their HostName is kept). */
export function hubHostNames(connectionStrings: Record<string, string> = {}): Record<string, string> {
  return Object.fromEntries(
    Object.entries(connectionStrings).flatMap(([environment, cs]) => {
      const hostName = /(?:^|;)HostName=([^;]+)/i.exec(cs)?.[1];
      return hostName ? [[environment, hostName]] : [];
    }),
  );
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
  app.use('/v1', promotionRoutes(deps));
  app.use('/v1', eventGridRoutes(deps));
  app.get('/openapi.json', (_req, res) => {
    res.json(openApiDocument());
  });
  app.use(errorHandler(deps.log));
  return app;
}
