import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { compileErrors, validate } from '@readme/openapi-parser';
import { createApp } from '../../api/app';
import { createLogger } from '../../common/logger';
import { authed, testSecurity } from '../helpers/credentials';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Every value of `key` anywhere in the document. */
function collect(node: unknown, key: string, found: unknown[] = []): unknown[] {
  if (Array.isArray(node)) node.forEach((n) => collect(n, key, found));
  else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === key) found.push(v);
      collect(v, key, found);
    }
  }
  return found;
}

describe('the OpenAPI document', () => {
  // No Temporal call is made: the document, Swagger UI and problem types are served by the API alone.
  const connection = Connection.lazy({ address: '127.0.0.1:1' });
  const client = new Client({ connection });
  const app = createApp({
    security: testSecurity(),
    client,
    taskQueue: 'unused',
    log: createLogger('silent'),
    eventGridSecret: 's'.repeat(16),
    environments: { test: 't.azure-devices.net', production: 'p.azure-devices.net' },
  });
  let doc: Json;

  beforeAll(async () => {
    doc = (await authed(app).get('/openapi.json').expect(200)).body;
  });
  afterAll(() => connection.close());

  it('validates as OpenAPI 3.1', async () => {
    expect(doc.openapi).toBe('3.1.0');
    // Against the official OpenAPI 3.1 schema, plus checks it cannot express (duplicate operationIds, …).
    const result = await validate(structuredClone(doc) as Parameters<typeof validate>[0]);
    expect(result.valid ? '' : compileErrors(result)).toBe('');
    expect(result.specification).toBe('OpenAPI');
  });

  it('has patterns that are plain ECMA-262 regexes, without /flags, that match real ids', () => {
    const patterns = collect(doc, 'pattern') as string[];
    expect(patterns.length).toBeGreaterThan(0);
    for (const pattern of patterns) {
      expect(pattern).not.toMatch(/\$\/[a-z]+$/);
      expect(() => new RegExp(pattern, 'u')).not.toThrow();
    }
    const body = doc.paths['/v1/promotions'].post.requestBody.content['application/json'].schema;
    const registrationId = new RegExp(body.properties.registrationId.pattern, 'u');
    for (const id of ['dev-1', 'Demo-Device_2.a:b', 'X'.repeat(128)]) expect(registrationId.test(id)).toBe(true);
    for (const id of ['.', '..', 'has space', 'a/b', '', 'X'.repeat(129)]) expect(registrationId.test(id)).toBe(false);
    expect(new RegExp(body.properties.targetEnvironment.pattern, 'u').test('Production')).toBe(true);
  });

  it('names the environments this app has configured as the only values of environment fields', () => {
    const body = doc.paths['/v1/promotions'].post.requestBody.content['application/json'].schema;
    expect(body.properties.sourceEnvironment).toMatchObject({ enum: ['test', 'production'], default: 'test' });
    expect(body.properties.targetEnvironment).toMatchObject({ enum: ['test', 'production'], default: 'production' });
    const query = doc.paths['/v1/promotions'].get.parameters.find((p: Json) => p.name === 'targetEnvironment');
    expect(query.schema.enum).toEqual(['test', 'production']);
  });

  it('marks the promotion body required and strict, with every answer the route gives', () => {
    const post = doc.paths['/v1/promotions'].post;
    expect(post.requestBody.required).toBe(true);
    expect(post.requestBody.content['application/json'].schema.additionalProperties).toBe(false);
    expect(Object.keys(post.responses).sort()).toEqual([
      '202',
      '400',
      '401',
      '403',
      '409',
      '413',
      '415',
      '421',
      '422',
      '429',
      '500',
      '503',
    ]);
    expect(post.parameters).toEqual([expect.objectContaining({ in: 'header', name: 'idempotency-key' })]);
    expect(post.responses['503'].headers['Retry-After'].required).toBe(true);
    expect(doc.paths['/v1/promotions'].get.parameters.length).toBeGreaterThan(0);
  });

  it('documents errors as RFC 9457 problem+json with a correlation id header', () => {
    for (const [path, item] of Object.entries(doc.paths as Json)) {
      for (const [method, operation] of Object.entries(item as Json)) {
        expect([path, method, operation.responses['500']?.content]).toEqual([
          path,
          method,
          { 'application/problem+json': expect.any(Object) },
        ]);
        for (const response of Object.values(operation.responses as Json)) {
          expect(response.headers['X-Correlation-Id']).toMatchObject({ required: true });
        }
      }
    }
    expect(doc.components.schemas.Problem.required).toEqual(
      expect.arrayContaining(['type', 'title', 'status', 'detail', 'instance', 'correlationId']),
    );
  });

  it('documents the webhook: secret schemes, 401/413/415, CloudEvents media types, the handshake header', () => {
    const { post, options } = doc.paths['/v1/eventgrid'];
    expect(doc.components.securitySchemes).toMatchObject({
      EventGridCode: expect.objectContaining({ type: 'apiKey', in: 'query', name: 'code' }),
      EventGridSecretHeader: expect.objectContaining({ type: 'apiKey', in: 'header', name: 'x-iot-lifecycle-secret' }),
    });
    expect(post.security).toEqual([{ EventGridCode: [] }, { EventGridSecretHeader: [] }]);
    expect(Object.keys(post.requestBody.content).sort()).toEqual([
      'application/cloudevents+json',
      'application/cloudevents-batch+json',
      'application/json',
    ]);
    expect(Object.keys(post.responses)).toEqual(expect.arrayContaining(['200', '400', '401', '413', '415', '500']));
    expect(options.parameters).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ in: 'header', name: 'webhook-request-origin', required: true }),
      ]),
    );
    expect(options.responses['200'].headers['WebHook-Allowed-Origin'].required).toBe(true);
  });

  it('documents the role every API operation needs as its security, and none on health, readiness and docs', () => {
    const roles: Record<string, string | undefined> = {};
    for (const [path, item] of Object.entries(doc.paths as Json)) {
      for (const [method, operation] of Object.entries(item as Json)) {
        const security = operation.security as Array<Record<string, string[]>> | undefined;
        const role = operation['x-required-role'] as string | undefined;
        roles[`${method.toUpperCase()} ${path}`] = role;
        if (role) {
          // This app has no OIDC issuer: API keys only, each naming the role (OpenAPI 3.1 role lists).
          expect([path, method, security]).toEqual([path, method, [{ ApiKey: [role] }]]);
          expect(Object.keys(operation.responses)).toEqual(expect.arrayContaining(['401', '403']));
          expect(operation.responses['401'].headers['WWW-Authenticate'].required).toBe(true);
        }
      }
    }
    expect(roles).toMatchObject({
      'POST /v1/promotions': 'operator',
      'GET /v1/promotions': 'viewer',
      'GET /v1/promotions/{registrationId}': 'viewer',
      'POST /v1/promotions/{registrationId}/cancel': 'operator',
      'POST /v1/promotions/{registrationId}/retry-compensation': 'operator',
      'POST /v1/diagnostics/connectivity': 'operator',
      'GET /healthz': undefined,
      'GET /readyz': undefined,
      'GET /openapi.json': undefined,
    });
    expect(doc.components.securitySchemes.ApiKey).toMatchObject({ type: 'apiKey', in: 'header', name: 'x-api-key' });
  });

  it('documents bearer tokens beside API keys for an app with an OIDC issuer', async () => {
    const withOidc = createApp({
      security: testSecurity({
        auth: {
          oidc: { issuers: ['https://issuer.example'], audiences: ['api://x'], jwksUri: 'http://127.0.0.1:1/k' },
        },
      }),
      client,
      taskQueue: 'unused',
      log: createLogger('silent'),
    });
    const { body } = await authed(withOidc).get('/openapi.json').expect(200);
    expect(body.paths['/v1/promotions'].post.security).toEqual([{ ApiKey: ['operator'] }, { Bearer: ['operator'] }]);
  });

  it('documents no webhook security for an app without EVENT_GRID_SECRET, which accepts every delivery', async () => {
    const open = createApp({ security: testSecurity(), client, taskQueue: 'unused', log: createLogger('silent') });
    const { body } = await authed(open).get('/openapi.json').expect(200);
    expect(body.paths['/v1/eventgrid'].post.security).toBeUndefined();
    expect(body.paths['/v1/eventgrid'].post.responses['401']).toBeUndefined();
  });

  it('lists in the README API sections exactly the operations it documents', async () => {
    const readme = await readFile(path.join(__dirname, '..', '..', 'README.md'), 'utf8');
    // Every top-level section whose heading ends in "API" (Promotion API, Revocation API, …).
    const section = readme
      .split(/\n(?=## )/)
      .filter((part) => /^## .*API\n/.test(part))
      .join('\n');
    // `GET /v1/promotions/:registrationId?x=` → GET /v1/promotions/{}; path parameters compared by position.
    const normalize = (method: string, route: string) =>
      `${method.toUpperCase()} ${route.split('?')[0].replace(/(:\w+|\{\w+\}|<\w+>)/g, '{}')}`;
    const inReadme = new Set(
      [...section.matchAll(/`(GET|POST|PUT|PATCH|DELETE|OPTIONS) (\/[^`\s]*)`/g)].map(([, m, r]) => normalize(m, r)),
    );
    inReadme.delete('GET /docs'); // Swagger UI: a page, not an operation of the API
    const documented = new Set(
      Object.entries(doc.paths as Json).flatMap(([route, item]) => Object.keys(item).map((m) => normalize(m, route))),
    );
    expect([...inReadme].sort()).toEqual([...documented].sort());
  });

  it('serves Swagger UI over the document at /docs', async () => {
    const page = await authed(app).get('/docs/').expect(200);
    expect(page.headers['content-type']).toMatch(/text\/html/);
    expect(page.text).toContain('swagger-ui');
    const init = await authed(app).get('/docs/swagger-ui-init.js').expect(200);
    expect(init.text).toContain('/openapi.json');
    expect(init.text).toMatch(/"validatorUrl": null/); // the browser sends the document nowhere
    await authed(app).get('/docs/swagger-ui-bundle.js').expect(200);
  });

  it('serves each problem type its problems refer to', async () => {
    const res = await authed(app).get('/problems/temporal-unavailable').expect(200);
    expect(res.body).toEqual({
      type: '/problems/temporal-unavailable',
      title: 'Temporal is unavailable',
      status: 503,
      description: expect.any(String),
    });
    const missing = await authed(app).get('/problems/no-such-type').expect(400);
    expect(missing.headers['content-type']).toMatch(/^application\/problem\+json/);
  });
});
