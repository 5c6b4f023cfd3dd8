import request from 'supertest';
import { Client, Connection } from '@temporalio/client';
import { createApp } from '../../api/app';
import { createLogger } from '../../common/logger';
import { as, testSecurity } from '../helpers/credentials';

/** Rate limits on changes, security headers and CORS; none of these requests reaches Temporal. */
describe('browser safety and rate limits', () => {
  const connection = Connection.lazy({ address: '127.0.0.1:1' });
  const client = new Client({ connection });
  const appWith = (overrides: Parameters<typeof testSecurity>[0] = {}) =>
    createApp({ security: testSecurity(overrides), client, taskQueue: 'unused', log: createLogger('silent') });
  afterAll(() => connection.close());

  it('limits each client to its changes per minute (429 with Retry-After), not its reads or other clients', async () => {
    const app = appWith({ rateLimitPerMinute: 3 });
    // Invalid bodies (400) still count: the limit is on requests, before any work.
    for (let i = 0; i < 3; i++) {
      await request(app).post('/v1/promotions').set(as('operator')).send({}).expect(400);
    }
    const limited = await request(app).post('/v1/promotions').set(as('operator')).send({});
    expect(limited.status).toBe(429);
    expect(limited.body).toMatchObject({ type: '/problems/too-many-requests', status: 429 });
    expect(Number(limited.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(Number(limited.headers['retry-after'])).toBeLessThanOrEqual(60);
    await request(app).post('/v1/promotions').set(as('admin')).send({}).expect(400);
    await request(app).get('/v1/promotions?pageSize=0').set(as('operator')).expect(400);
  });

  it('sends security headers on every answer and no X-Powered-By', async () => {
    const res = await request(appWith()).get('/healthz').expect(200);
    expect(res.headers).toMatchObject({
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'SAMEORIGIN',
      'cross-origin-opener-policy': 'same-origin',
    });
    expect(res.headers['content-security-policy']).toMatch(/frame-ancestors 'none'/);
    expect(res.headers['x-powered-by']).toBeUndefined();
  });

  it('allows no cross-origin browser by default: no CORS headers, and a change from another origin is 403', async () => {
    const app = appWith();
    const preflight = await request(app)
      .options('/v1/promotions')
      .set({ origin: 'https://evil.example', 'access-control-request-method': 'POST' });
    expect(preflight.headers['access-control-allow-origin']).toBeUndefined();
    const post = await request(app)
      .post('/v1/promotions')
      .set({ ...as('operator'), origin: 'https://evil.example' })
      .send({ registrationId: 'x' });
    expect([post.status, post.body.type]).toEqual([403, '/problems/forbidden']);
    // The API's own page (Swagger UI at /docs) is same-origin.
    const own = await request(app)
      .post('/v1/promotions')
      .set({ ...as('operator'), origin: 'http://127.0.0.1' })
      .set('host', '127.0.0.1')
      .send({});
    expect(own.status).toBe(400);
  });

  it('answers CORS for configured origins only', async () => {
    const app = appWith({ corsOrigins: ['http://127.0.0.1:8233'] });
    const preflight = await request(app)
      .options('/v1/promotions')
      .set({ origin: 'http://127.0.0.1:8233', 'access-control-request-method': 'POST' })
      .expect(204);
    expect(preflight.headers['access-control-allow-origin']).toBe('http://127.0.0.1:8233');
    expect(preflight.headers['access-control-allow-headers']).toMatch(/x-api-key/i);
    const post = await request(app)
      .post('/v1/promotions')
      .set({ ...as('operator'), origin: 'http://127.0.0.1:8233' })
      .send({});
    expect(post.status).toBe(400);
  });

  it('answers the loopback names by default and 421 to any other Host', async () => {
    const app = appWith();
    await request(app).get('/healthz').set('host', 'localhost:3000').expect(200);
    await request(app).get('/healthz').set('host', '[::1]:3000').expect(200);
    const other = await request(app).get('/healthz').set('host', 'attacker.example');
    expect([other.status, other.body.type]).toEqual([421, '/problems/host-not-allowed']);
  });
});
