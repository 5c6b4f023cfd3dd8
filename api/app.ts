import express, { type Express } from 'express';
import type { Client } from '@temporalio/client';
import type { PayloadCodec } from '@temporalio/common';
import type { Logger } from '../common/logger';
import type { QuotasConfig } from '../common/quotas';
import type { EventGridEntraOptions } from './auth/event-grid-entra';
import { authorization } from './auth/middleware';
import { browserGuard, corsFor, hostAllowList, securityHeaders } from './browser';
import { correlation } from './correlation';
import { requestLog, traceRoute } from './request-log';
import { errorHandler } from './errors';
import { methodGuard, notFound } from './routing';
import { docsRoutes } from './routes/docs';
import { healthRoutes } from './routes/health';
import { diagnosticsRoutes } from './routes/diagnostics';
import { promotionRoutes } from './routes/promotions';
import { eventGridRoutes } from './routes/eventgrid';
import { revocationRoutes } from './routes/revocations';
import { fleetRoutes } from './routes/fleet-operations';
import { codecRoutes } from './routes/codec';
import { metricsRoutes } from './routes/metrics';
import { createApiMetrics, httpMetrics, type ApiMetrics } from './metrics';
import { changeRateLimit } from './rate-limit';
import { DEFAULT_RATE_LIMIT_PER_MINUTE, type ApiSecurity } from './security';
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
  /** Event Grid's Microsoft Entra–secured delivery, accepted besides the secret (api/auth/event-grid-entra.ts). */
  eventGridEntra?: EventGridEntraOptions;
  /** How many (hub, device, sequenceNumber) keys the webhook remembers to drop redelivered events; 10,000. */
  eventGridDedupCapacity?: number;
  /** API_PAGE_TOKEN_SECRET: the HMAC key of list page tokens; unset, a random one (tokens valid for this process). */
  pageTokenSecret?: string;
  /** How long a request waits for Temporal before answering 503 (api/temporal.ts); 5 s. */
  temporalDeadlineMs?: number;
  /** AZURE_QUOTAS: fleet operations asking for more than these allow are refused up front. */
  quotas?: QuotasConfig;
  /** FLEET_OPERATOR_MAX_DEVICES: above this many devices a fleet operation needs the admin role; 1,000. */
  fleetOperatorMaxDevices?: number;
  /** Credentials, Host allow-list, CORS origins, rate limit (api/security.ts); without it every role route is 401. */
  security?: ApiSecurity;
  /** The payload codec of the client's data converter, served to the Temporal UI at /codec (api/routes/codec.ts). */
  codec?: PayloadCodec;
  /** The worker's Temporal metrics (its runtime's Prometheus exporter), served with the API's at /metrics. */
  temporalMetricsUrl?: string;
  /** The app's metrics; createApp makes them (api/metrics.ts). */
  metrics?: ApiMetrics;
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
export function createApp(appDeps: AppDeps): Express {
  const metrics = createApiMetrics();
  const deps: AppDeps = { ...appDeps, metrics };
  const app = express();
  app.disable('x-powered-by');
  app.use(correlation());
  app.use(traceRoute());
  app.use(requestLog(deps.log));
  app.use(httpMetrics(metrics));
  const security = deps.security ?? {};
  const corsOrigins = security.corsOrigins ?? [];
  app.use(hostAllowList(security.allowedHosts));
  app.use(securityHeaders());
  app.use(corsFor(corsOrigins));
  // Bodies are parsed per route (api/body.ts); unknown methods and paths answer problems, not express's pages.
  app.use(methodGuard());
  // Who may call what: from each route's `auth` in registerRoute (api/openapi.ts).
  app.use(authorization(security.auth, deps.log));
  app.use(browserGuard(corsOrigins));
  app.use(changeRateLimit(security.rateLimitPerMinute ?? DEFAULT_RATE_LIMIT_PER_MINUTE));
  app.use(healthRoutes(deps));
  app.use(
    docsRoutes({
      eventGridSecret: Boolean(deps.eventGridSecret),
      environments: Object.keys(deps.environments ?? {}),
      oidc: Boolean(security.auth?.oidc),
      eventGridEntra: Boolean(deps.eventGridEntra),
    }),
  );
  app.use('/v1', diagnosticsRoutes(deps));
  app.use('/v1', promotionRoutes(deps));
  app.use('/v1', eventGridRoutes(deps));
  app.use('/v1', revocationRoutes(deps));
  app.use('/v1', fleetRoutes(deps));
  app.use(codecRoutes(deps));
  app.use(metricsRoutes(metrics, deps.temporalMetricsUrl));
  app.use('/v1', auditRoutes(deps));
  app.use('/v1', reportRoutes(deps));
  app.use(notFound);
  app.use(errorHandler(deps.log));
  return app;
}
