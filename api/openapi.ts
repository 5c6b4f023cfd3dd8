import { OpenAPIRegistry, OpenApiGeneratorV31, type RouteConfig } from '@asteasolutions/zod-to-openapi';
import { CORRELATION_ID_HEADER, Problem, problemResponse, type ProblemKind } from './problems';
import { RETRY_AFTER_SECONDS } from './temporal';

/**
 * Each route file registers its paths here with `registerRoute`, beside the route; /openapi.json serves the
 * generated document and /docs shows it with Swagger UI.
 */
export const registry = new OpenAPIRegistry();

// Each response narrows `type` and `status`; the general shape is documented once.
registry.register('Problem', Problem);

/** The Event Grid webhook's secret, as Azure passes webhook secrets: `?code=` or a delivery header. */
export const SECURITY_SCHEMES = {
  eventGridCode: registry.registerComponent('securitySchemes', 'EventGridCode', {
    type: 'apiKey',
    in: 'query',
    name: 'code',
    description: 'EVENT_GRID_SECRET as the query parameter `code` (part of the subscription endpoint URL)',
  }).name,
  eventGridHeader: registry.registerComponent('securitySchemes', 'EventGridSecretHeader', {
    type: 'apiKey',
    in: 'header',
    name: 'x-iot-lifecycle-secret',
    description: 'EVENT_GRID_SECRET as a delivery header (an Event Grid delivery property marked secret)',
  }).name,
} as const;

export interface ApiRoute extends RouteConfig {
  /** The route calls Temporal (behind temporalDeadline): it may answer 503 with Retry-After. */
  temporal?: boolean;
}

/**
 * Registers an operation with the answers every route of its kind can give besides its own: 400 when it has
 * parameters, headers or a body; 413 and 415 with a body; 401 with security; 503 when it calls Temporal; always 500.
 * The route's own `responses` win over these.
 */
export function registerRoute({ temporal, ...route }: ApiRoute): void {
  const { request } = route;
  const standard: RouteConfig['responses'] = {};
  if (request?.params || request?.query || request?.headers || request?.body) {
    const kinds: ProblemKind[] = ['validation'];
    if (request.params || request.body) kinds.push('malformedRequest');
    standard[400] = problemResponse(400, kinds);
  }
  if (route.security?.length) standard[401] = problemResponse(401, ['unauthorized']);
  if (request?.body) {
    standard[413] = problemResponse(413, ['payloadTooLarge']);
    standard[415] = {
      ...problemResponse(415, ['unsupportedMediaType']),
      headers: { 'Accept-Post': { schema: { type: 'string' }, description: 'the media types accepted' } },
    };
  }
  standard[500] = problemResponse(500, ['internal']);
  if (temporal) {
    standard[503] = {
      ...problemResponse(503, ['temporalUnavailable']),
      headers: {
        'Retry-After': {
          schema: { type: 'integer', minimum: 0 },
          required: true,
          description: `seconds (${RETRY_AFTER_SECONDS})`,
        },
      },
    };
  }
  registry.registerPath({ ...route, responses: { ...standard, ...route.responses } });
}

export interface DocumentOptions {
  /** Whether the app requires EVENT_GRID_SECRET on the webhook; without it the webhook documents no security. */
  eventGridSecret: boolean;
  /** The environment names the app has configured: the only values its environment fields accept. */
  environments: string[];
}

/** Request fields and query parameters that name a configured environment. */
const ENVIRONMENT_FIELDS = new Set(['sourceEnvironment', 'targetEnvironment']);

type Document = ReturnType<OpenApiGeneratorV31['generateDocument']>;

/** The OpenAPI 3.1 document of an app, as it behaves with its options. */
export function openApiDocument(options: DocumentOptions): Document {
  const document = new OpenApiGeneratorV31(registry.definitions).generateDocument({
    openapi: '3.1.0',
    info: {
      title: 'iot-lifecycle',
      version: '0.1.0',
      description:
        'Azure IoT device lifecycle operations as Temporal workflows. Errors are RFC 9457 problem details ' +
        '(application/problem+json); every answer carries an X-Correlation-Id header.',
    },
  });
  if (options.environments.length > 0) narrowEnvironments(document, options.environments);
  for (const item of Object.values(document.paths ?? {})) {
    for (const operation of Object.values(item ?? {})) {
      if (typeof operation !== 'object' || !('responses' in operation)) continue;
      if (!options.eventGridSecret && operation.security) {
        delete operation.security;
        delete operation.responses[401];
      }
      for (const response of Object.values(operation.responses ?? {}) as Array<{ headers?: object }>) {
        response.headers = {
          ...response.headers,
          [CORRELATION_ID_HEADER]: {
            schema: { type: 'string', format: 'uuid' },
            required: true,
            description: 'the id of this request in the API log',
          },
        };
      }
    }
  }
  return document;
}

/** Environment fields take the configured environments only (the zod schemas check that apart, at run time). */
function narrowEnvironments(node: unknown, environments: string[]): void {
  if (Array.isArray(node)) {
    node.forEach((n) => narrowEnvironments(n, environments));
    return;
  }
  if (!node || typeof node !== 'object') return;
  const object = node as Record<string, unknown>;
  const narrow = (schema: unknown) => {
    if (schema && typeof schema === 'object' && !('$ref' in schema))
      (schema as { enum?: string[] }).enum = environments;
  };
  if (object.in === 'query' && ENVIRONMENT_FIELDS.has(object.name as string)) narrow(object.schema);
  const properties = object.properties as Record<string, unknown> | undefined;
  if (properties && typeof properties === 'object') {
    for (const field of ENVIRONMENT_FIELDS) if (field in properties) narrow(properties[field]);
  }
  Object.values(object).forEach((v) => narrowEnvironments(v, environments));
}

/** Documented methods by path template, for OPTIONS, 405 and 404 answers (see api/routing.ts). */
export function documentedRoutes(): Array<{ path: string; methods: string[] }> {
  const byPath = new Map<string, Set<string>>();
  for (const definition of registry.definitions) {
    if (definition.type !== 'route') continue;
    const { path, method } = definition.route;
    byPath.set(path, (byPath.get(path) ?? new Set()).add(method.toUpperCase()));
  }
  return [...byPath].map(([path, methods]) => ({ path, methods: [...methods] }));
}
