import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import type { Express } from 'express';
import { exportJWK, generateKeyPair, SignJWT, type JWTPayload, type KeyLike } from 'jose';
import { createApp } from '../../api/app';
import { createLogger } from '../../common/logger';
import { promotionWorkflowId } from '../../common/messages';
import { REQUESTED_BY_MEMO } from '../../common/requested-by';
import { SA } from '../../common/search-attributes';
import { testSecurity } from '../helpers/credentials';
import { connectToHarness, type TemporalTestContext } from '../helpers/temporal';
import {
  startFixtureWorker,
  terminateAll,
  uniqueEnvironments,
  uniqueRegistrationId,
  type FixtureWorker,
} from '../fixtures/promotion-fixture';

/**
 * OIDC bearer tokens as Microsoft Entra ID issues them (v2 issuer, audience, `oid`, app roles in `roles`), checked
 * offline against a JWKS this test serves on loopback.
 */

const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const ISSUER = `https://login.microsoftonline.com/${TENANT}/v2.0`;
const AUDIENCE = 'api://iot-lifecycle';
const OID = '00000000-0000-0000-0000-0000000000a1';

describe('OIDC bearer tokens (Microsoft Entra ID access tokens)', () => {
  let ctx: TemporalTestContext;
  let fixture: FixtureWorker;
  let app: Express;
  let jwks: Server;
  let signingKey: KeyLike;
  let otherKey: KeyLike;
  let keyFetches = 0;
  const environments = uniqueEnvironments();
  const started = new Set<string>();

  beforeAll(async () => {
    const pair = await generateKeyPair('RS256');
    signingKey = pair.privateKey;
    otherKey = (await generateKeyPair('RS256')).privateKey;
    const publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'key-1', alg: 'RS256', use: 'sig' };
    jwks = createServer((_req, res) => {
      keyFetches += 1;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: [publicJwk] }));
    });
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    const jwksUri = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/discovery/v2.0/keys`;
    ctx = await connectToHarness();
    fixture = await startFixtureWorker(ctx);
    app = createApp({
      security: testSecurity({ auth: { oidc: { issuers: [ISSUER], audiences: [AUDIENCE], jwksUri } } }),
      client: ctx.client,
      taskQueue: fixture.taskQueue,
      log: createLogger('silent'),
      environments,
    });
  });
  afterAll(async () => {
    await terminateAll(ctx.client, started);
    await fixture.stop();
    await ctx.close();
    await new Promise((resolve) => jwks.close(resolve));
  });

  function token(claims: JWTPayload = {}, options: { key?: KeyLike; kid?: string; expiresIn?: string } = {}) {
    return new SignJWT({
      oid: OID,
      sub: 'pairwise-subject',
      preferred_username: 'ana@contoso.example',
      roles: ['operator'],
      tid: TENANT,
      ...claims,
    })
      .setProtectedHeader({ alg: 'RS256', kid: options.kid ?? 'key-1', typ: 'JWT' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setIssuedAt()
      .setExpirationTime(options.expiresIn ?? '10m')
      .sign(options.key ?? signingKey);
  }

  const bearer = (jwt: string) => ({ authorization: `Bearer ${jwt}` });

  it('serves a caller whose token holds the role, and records its oid and name with what it starts', async () => {
    await request(app)
      .get('/v1/promotions')
      .set(bearer(await token({ roles: ['viewer'] })))
      .expect(200);
    const registrationId = uniqueRegistrationId('oidc');
    const res = await request(app)
      .post('/v1/promotions')
      .set(bearer(await token()))
      .send({ registrationId });
    expect(res.status).toBe(202);
    started.add(res.body.workflowId);
    const description = await ctx.client.workflow.getHandle(promotionWorkflowId(registrationId)).describe();
    expect(description.memo?.[REQUESTED_BY_MEMO]).toEqual({
      subject: OID,
      name: 'ana@contoso.example',
      authMethod: 'oidc',
    });
    expect(description.typedSearchAttributes.get(SA.requestedBy)).toBe(`oidc:${OID}`);
  });

  it('names an application (client credentials) by its client id', async () => {
    const app_ = await token({ preferred_username: undefined, azp: '11111111-2222-3333-4444-555555555555' });
    const registrationId = uniqueRegistrationId('oidc-app');
    const res = await request(app).post('/v1/promotions').set(bearer(app_)).send({ registrationId });
    started.add(res.body.workflowId);
    const description = await ctx.client.workflow.getHandle(promotionWorkflowId(registrationId)).describe();
    expect(description.memo?.[REQUESTED_BY_MEMO]).toMatchObject({ name: '11111111-2222-3333-4444-555555555555' });
  });

  it('answers 403 to a token without the role, or without any role of the API', async () => {
    const viewer = await request(app)
      .post('/v1/promotions')
      .set(bearer(await token({ roles: ['viewer'] })))
      .send({ registrationId: 'x' });
    expect([viewer.status, viewer.body.requiredRole]).toEqual([403, 'operator']);
    await request(app)
      .get('/v1/promotions')
      .set(bearer(await token({ roles: ['Directory.Read', 'Admin'] })))
      .expect(403);
    await request(app)
      .get('/v1/promotions')
      .set(bearer(await token({ roles: undefined })))
      .expect(403);
  });

  it('answers 401 with an invalid_token challenge to a token of another audience, issuer, key, or past its expiry', async () => {
    const refused = {
      audience: await new SignJWT({ oid: OID, roles: ['admin'] })
        .setProtectedHeader({ alg: 'RS256', kid: 'key-1' })
        .setIssuer(ISSUER)
        .setAudience('api://another-app')
        .setExpirationTime('10m')
        .sign(signingKey),
      issuer: await new SignJWT({ oid: OID, roles: ['admin'] })
        .setProtectedHeader({ alg: 'RS256', kid: 'key-1' })
        .setIssuer('https://login.microsoftonline.com/another-tenant/v2.0')
        .setAudience(AUDIENCE)
        .setExpirationTime('10m')
        .sign(signingKey),
      otherKey: await token({ roles: ['admin'] }, { key: otherKey }),
      unknownKid: await token({ roles: ['admin'] }, { key: otherKey, kid: 'key-2' }),
      expired: await token({ roles: ['admin'] }, { expiresIn: '-5m' }),
      hmac: await new SignJWT({ oid: OID, roles: ['admin'] })
        .setProtectedHeader({ alg: 'HS256', kid: 'key-1' })
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setExpirationTime('10m')
        .sign(new TextEncoder().encode('a shared secret the attacker chose')),
      unsigned: `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(
        JSON.stringify({ iss: ISSUER, aud: AUDIENCE, oid: OID, roles: ['admin'], exp: 9_999_999_999 }),
      ).toString('base64url')}.`,
    };
    for (const [why, jwt] of Object.entries(refused)) {
      const res = await request(app).get('/v1/promotions').set(bearer(jwt));
      expect([why, res.status, res.body.type]).toEqual([why, 401, '/problems/unauthorized']);
      expect(res.headers['www-authenticate']).toMatch(/^Bearer .*error="invalid_token"/);
      // The answer says why, never echoes the token.
      expect(JSON.stringify(res.body)).not.toContain(jwt.split('.')[1]);
    }
    expect(keyFetches).toBeGreaterThan(0);
  });
});
