import { OpenAPIRegistry, OpenApiGeneratorV31, type RouteConfig } from '@asteasolutions/zod-to-openapi';
import { API_KEY_HEADER } from './auth/api-keys';
import type { Role } from './auth/roles';
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
  eventGridEntra: registry.registerComponent('securitySchemes', 'EventGridEntraToken', {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description:
      'Event Grid’s Microsoft Entra–secured webhook delivery: a token for the configured application, issued ' +
      'to Event Grid with the AzureEventGridSecureWebhookSubscriber role',
  }).name,
  apiKey: registry.registerComponent('securitySchemes', 'ApiKey', {
    type: 'apiKey',
    in: 'header',
    name: API_KEY_HEADER,
    description: 'An API key for automation (`npm run api-key` makes one); its role is configured with its hash',
  }).name,
  bearer: registry.registerComponent('securitySchemes', 'Bearer', {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description:
      'An OIDC access token of the configured issuer and audience (Microsoft Entra ID); roles from its roles claim',
  }).name,
} as const;

/**
 * Who may call a route: a role (the caller needs it or a higher one: viewer < operator < admin), `public` (health,
 * readiness, this document), or `webhook` (the route authenticates its caller itself, e.g. Event Grid).
 */
export type RouteAuth = Role | 'public' | 'webhook';

export interface ApiRoute extends RouteConfig {
  /**
   * Who may call it: the one declaration that both the OpenAPI `security` of the operation and the authorization
   * middleware (api/auth/middleware.ts) read. Required, so that no route is left open by omission.
   */
  auth: RouteAuth;
  /**
   * Whether the operation changes anything: POST, PUT, PATCH and DELETE do unless they say `false` (the codec's
   * POSTs only translate payloads). Changes are rate-limited per client (429).
   */
  changes?: boolean;
  /** The route calls Temporal (behind temporalDeadline): it may answer 503 with Retry-After. */
  temporal?: boolean;
}

const MUTATING_METHODS = new Set(['post', 'put', 'patch', 'delete']);

/** Declared auth by `METHOD path-template`, e.g. `POST /v1/promotions/{registrationId}/cancel` → operator. */
const declaredAuth = new Map<string, RouteAuth>();
/** `METHOD path-template` of the operations that change something. */
const declaredChanges = new Set<string>();

/**
 * Registers an operation with the answers every route of its kind can give besides its own: 400 when it has
 * parameters, headers or a body; 413 with a body; 415 with a body or a mutating method; 401 with security, and 403
 * and 429 (mutating) with a role; 503 when it calls Temporal; always 421 and 500.
 * The route's own `responses` win over these.
 */
export function registerRoute({ temporal, auth, changes, ...route }: ApiRoute): void {
  const { request } = route;
  const key = `${route.method.toUpperCase()} ${route.path}`;
  declaredAuth.set(key, auth);
  const isChange = changes ?? MUTATING_METHODS.has(route.method);
  if (isChange) declaredChanges.add(key);
  if (auth !== 'public' && auth !== 'webhook') {
    // OpenAPI 3.1 lets a non-OAuth requirement list the roles it needs.
    route.security = [{ [SECURITY_SCHEMES.apiKey]: [auth] }, { [SECURITY_SCHEMES.bearer]: [auth] }];
    route['x-required-role'] = auth;
  }
  const standard: RouteConfig['responses'] = {};
  if (request?.params || request?.query || request?.headers || request?.body) {
    const kinds: ProblemKind[] = ['validation'];
    if (request.params || request.body) kinds.push('malformedRequest');
    standard[400] = problemResponse(400, kinds);
  }
  if (route.security?.length) {
    standard[401] = {
      ...problemResponse(401, ['unauthorized']),
      headers: { 'WWW-Authenticate': { schema: { type: 'string' }, required: true, description: 'the challenge' } },
    };
  }
  if (auth !== 'public' && auth !== 'webhook') {
    standard[403] = problemResponse(403, ['forbidden'], `the caller's role is not ${auth} or higher`);
  }
  if (request?.body) standard[413] = problemResponse(413, ['payloadTooLarge']);
  if (request?.body || MUTATING_METHODS.has(route.method)) {
    standard[415] = {
      ...problemResponse(415, ['unsupportedMediaType']),
      headers: { 'Accept-Post': { schema: { type: 'string' }, description: 'the media types accepted' } },
    };
  }
  if (auth !== 'public' && auth !== 'webhook' && isChange) {
    standard[429] = {
      ...problemResponse(429, ['tooManyRequests']),
      headers: {
        'Retry-After': { schema: { type: 'integer', minimum: 0 }, required: true, description: 'seconds' },
      },
    };
  }
  standard[421] = problemResponse(421, ['hostNotAllowed']);
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
  /** Whether the webhook accepts Event Grid's Microsoft Entra–secured delivery (a JWT). */
  eventGridEntra?: boolean;
  /** Whether the API accepts OIDC bearer tokens; without an issuer only API keys are documented. */
  oidc?: boolean;
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
  for (const [path, item] of Object.entries(document.paths ?? {})) {
    for (const [method, operation] of Object.entries(item ?? {})) {
      if (typeof operation !== 'object' || !('responses' in operation)) continue;
      const auth = declaredAuth.get(`${method.toUpperCase()} ${path}`);
      // Only the schemes this app accepts: the webhook's as configured, bearer tokens with an OIDC issuer.
      const accepted = new Set<string>([SECURITY_SCHEMES.apiKey]);
      if (options.oidc) accepted.add(SECURITY_SCHEMES.bearer);
      if (options.eventGridSecret) accepted.add(SECURITY_SCHEMES.eventGridCode).add(SECURITY_SCHEMES.eventGridHeader);
      if (options.eventGridEntra) accepted.add(SECURITY_SCHEMES.eventGridEntra);
      if (operation.security) {
        operation.security = operation.security.filter((requirement: Record<string, string[]>) =>
          Object.keys(requirement).every((scheme) => accepted.has(scheme)),
        );
        if (auth === 'webhook' && operation.security.length === 0) {
          delete operation.security;
          delete operation.responses[401];
        }
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

/**
 * Documented methods by path template, with who may call each, for OPTIONS, 405 and 404 answers (api/routing.ts)
 * and for authorization (api/auth/middleware.ts).
 */
export function documentedRoutes(): Array<{
  path: string;
  methods: string[];
  auth: Record<string, RouteAuth>;
  /** The methods of this path that change something. */
  changes: string[];
}> {
  const byPath = new Map<string, Map<string, RouteAuth>>();
  for (const definition of registry.definitions) {
    if (definition.type !== 'route') continue;
    const { path, method } = definition.route;
    const key = method.toUpperCase();
    byPath.set(path, (byPath.get(path) ?? new Map()).set(key, declaredAuth.get(`${key} ${path}`)!));
  }
  return [...byPath].map(([path, methods]) => ({
    path,
    methods: [...methods.keys()],
    auth: Object.fromEntries(methods),
    changes: [...methods.keys()].filter((method) => declaredChanges.has(`${method} ${path}`)),
  }));
}
