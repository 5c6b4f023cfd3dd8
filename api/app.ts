import express, { type Express } from 'express';
import type { Client } from '@temporalio/client';
import type { Logger } from '../common/logger';
import { correlation } from './correlation';
import { errorHandler } from './errors';
import { methodGuard, notFound } from './routing';
import { docsRoutes } from './routes/docs';
import { healthRoutes } from './routes/health';
import { diagnosticsRoutes } from './routes/diagnostics';
import { promotionRoutes } from './routes/promotions';
import { eventGridRoutes } from './routes/eventgrid';
import { revocationRoutes } from './routes/revocations';
import { auditRoutes } from './routes/audits';
import { reportRoutes } from './routes/reports';

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
  /** API_PAGE_TOKEN_SECRET: the HMAC key of list page tokens; unset, a random one (tokens valid for this process). */
  pageTokenSecret?: string;
  /** How long a request waits for Temporal before answering 503 (api/temporal.ts); 5 s. */
  temporalDeadlineMs?: number;
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
  app.use(correlation(deps.log));
  // Bodies are parsed per route (api/body.ts); unknown methods and paths answer problems, not express's pages.
  app.use(methodGuard());
  app.use(healthRoutes(deps));
  app.use(
    docsRoutes({ eventGridSecret: Boolean(deps.eventGridSecret), environments: Object.keys(deps.environments ?? {}) }),
  );
  app.use('/v1', diagnosticsRoutes(deps));
  app.use('/v1', promotionRoutes(deps));
  app.use('/v1', eventGridRoutes(deps));
  app.use('/v1', revocationRoutes(deps));
  app.use('/v1', auditRoutes(deps));
  app.use('/v1', reportRoutes(deps));
  app.use(notFound);
  app.use(errorHandler(deps.log));
  return app;
}
