import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import type { Express } from 'express';
import { Client, Connection } from '@temporalio/client';
import { exportJWK, generateKeyPair, SignJWT, type JWTPayload, type KeyLike } from 'jose';
import { createApp } from '../../api/app';
import { EVENT_GRID_APP_ID, EVENT_GRID_SUBSCRIBER_ROLE } from '../../api/auth/event-grid-entra';
import { createLogger } from '../../common/logger';
import { testSecurity } from '../helpers/credentials';

/**
 * Event Grid's Microsoft Entra–secured webhook delivery, checked offline against a JWKS served on loopback: a token
 * for the webhook's application, issued to Event Grid with its app role, besides the shared secret.
 */

const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const V1_ISSUER = `https://sts.windows.net/${TENANT}/`;
const AUDIENCE = 'api://iot-lifecycle-webhook';
const SECRET = 'the-shared-webhook-secret';

const validation = [
  {
    id: 'v-1',
    subject: '',
    eventType: 'Microsoft.EventGrid.SubscriptionValidationEvent',
    eventTime: '2026-01-01T00:00:00Z',
    data: { validationCode: 'code-123' },
    dataVersion: '1',
  },
];

describe('Event Grid Microsoft Entra–secured delivery', () => {
  // The validation handshake needs no Temporal call.
  const connection = Connection.lazy({ address: '127.0.0.1:1' });
  let app: Express;
  let jwks: Server;
  let key: KeyLike;

  beforeAll(async () => {
    const pair = await generateKeyPair('RS256');
    key = pair.privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'eg-1', alg: 'RS256' };
    jwks = createServer((_req, res) => res.end(JSON.stringify({ keys: [jwk] })));
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    app = createApp({
      security: testSecurity(),
      client: new Client({ connection }),
      taskQueue: 'unused',
      log: createLogger('silent'),
      eventGridSecret: SECRET,
      eventGridEntra: {
        issuers: [V1_ISSUER],
        audiences: [AUDIENCE],
        jwksUri: `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/keys`,
        appIds: [EVENT_GRID_APP_ID],
        role: EVENT_GRID_SUBSCRIBER_ROLE,
      },
    });
  });
  afterAll(async () => {
    await connection.close();
    await new Promise((resolve) => jwks.close(resolve));
  });

  const token = (claims: JWTPayload = {}, audience = AUDIENCE) =>
    new SignJWT({ appid: EVENT_GRID_APP_ID, roles: [EVENT_GRID_SUBSCRIBER_ROLE], oid: 'eg-sp', ...claims })
      .setProtectedHeader({ alg: 'RS256', kid: 'eg-1' })
      .setIssuer(V1_ISSUER)
      .setAudience(audience)
      .setExpirationTime('5m')
      .sign(key);

  const deliver = (headers: Record<string, string>) =>
    request(app)
      .post('/v1/eventgrid')
      .set({ 'aeg-event-type': 'SubscriptionValidation', ...headers });

  it("accepts a delivery with Event Grid's token for this application, and still the shared secret", async () => {
    const res = await deliver({ authorization: `Bearer ${await token()}` })
      .send(validation)
      .expect(200);
    expect(res.body).toEqual({ validationResponse: 'code-123' });
    await deliver({ 'x-iot-lifecycle-secret': SECRET }).send(validation).expect(200);
  });

  it('refuses a token not issued to Event Grid, without its role, for another audience, or no credentials', async () => {
    const refused = {
      otherClient: await token({ appid: '11111111-2222-3333-4444-555555555555' }),
      noRole: await token({ roles: ['SomethingElse'] }),
      otherAudience: await token({}, 'api://another-app'),
    };
    for (const [why, jwt] of Object.entries(refused)) {
      const res = await deliver({ authorization: `Bearer ${jwt}` }).send(validation);
      expect([why, res.status, res.body.type]).toEqual([why, 401, '/problems/unauthorized']);
    }
    const none = await deliver({}).send(validation);
    expect(none.status).toBe(401);
    expect(none.headers['www-authenticate']).toMatch(/Bearer/);
  });

  it('authenticates before reading the body: a bad token with bad JSON or a huge body is 401, not 400 or 413', async () => {
    const bad = `Bearer ${await token({ roles: [] })}`;
    await deliver({ authorization: bad, 'content-type': 'application/json' }).send('{not json').expect(401);
    await deliver({ authorization: bad, 'content-type': 'application/json' })
      .send(`[${'"x",'.repeat(400_000)}"x"]`)
      .expect(401);
  });

  it('documents the Entra scheme on the webhook beside the secret', async () => {
    const { body } = await request(app).get('/openapi.json').expect(200);
    expect(body.paths['/v1/eventgrid'].post.security).toEqual([
      { EventGridCode: [] },
      { EventGridSecretHeader: [] },
      { EventGridEntraToken: [] },
    ]);
  });
});
