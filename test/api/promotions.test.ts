import { createHash } from 'node:crypto';
import type { Express } from 'express';
import { WorkflowNotFoundError } from '@temporalio/client';
import { createApp } from '../../api/app';
import { PageTokens } from '../../api/page-tokens';
import { createLogger } from '../../common/logger';
import { promotionWorkflowId, WORKFLOW_TYPES } from '../../common/messages';
import { PromotionErrors } from '../../common/promotion';
import { SA } from '../../common/search-attributes';
import { connectToHarness, type TemporalTestContext } from '../helpers/temporal';
import {
  eventually,
  fixtureFinishSignal,
  startFixtureWorker,
  startPromotionDirectly,
  terminateAll,
  uniqueEnvironments,
  uniqueRegistrationId,
  waitForVisibility,
  type FixtureWorker,
} from '../fixtures/promotion-fixture';
import { authed, testSecurity } from '../helpers/credentials';

describe('promotions REST API', () => {
  let ctx: TemporalTestContext;
  let fixture: FixtureWorker;
  let app: Express;
  const environments = uniqueEnvironments();
  const started = new Set<string>();

  beforeAll(async () => {
    ctx = await connectToHarness();
    fixture = await startFixtureWorker(ctx);
    app = createApp({
      security: testSecurity(),
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
  });

  async function startPromotion(body: Record<string, unknown>) {
    const res = await authed(app).post('/v1/promotions').send(body);
    if (res.status === 202) started.add(res.body.workflowId);
    return res;
  }

  async function expectNothingStarted(registrationId: string) {
    await expect(ctx.client.workflow.getHandle(promotionWorkflowId(registrationId)).describe()).rejects.toBeInstanceOf(
      WorkflowNotFoundError,
    );
  }

  describe('POST /v1/promotions', () => {
    it('starts promoteDevice with its search attributes and summary and answers 202 with a Location', async () => {
      const registrationId = uniqueRegistrationId();
      const res = await startPromotion({ registrationId });
      expect(res.status).toBe(202);
      const workflowId = `promote/${registrationId}`;
      expect(res.headers.location).toBe(`/v1/promotions/${registrationId}`);
      expect(res.body).toEqual({
        workflowId,
        runId: expect.any(String),
        statusUrl: `/v1/promotions/${registrationId}`,
      });

      const handle = ctx.client.workflow.getHandle(workflowId);
      const description = await handle.describe();
      expect(description.type).toBe(WORKFLOW_TYPES.promoteDevice);
      expect(description.runId).toBe(res.body.runId);
      expect(description.taskQueue).toBe(fixture.taskQueue);
      const attributes = description.typedSearchAttributes;
      expect(attributes.get(SA.registrationId)).toBe(registrationId);
      expect(attributes.get(SA.operation)).toBe('promote');
      expect(attributes.get(SA.sourceHub)).toBe(environments.test);
      expect(attributes.get(SA.targetHub)).toBe(environments.production);
      expect(attributes.get(SA.phase)).toBe('validating');
      expect(await description.staticSummary()).toBe(`Promote ${registrationId}: test → production`);
    });

    it('passes the request with its defaults applied to the workflow', async () => {
      const registrationId = uniqueRegistrationId();
      await startPromotion({ registrationId, onTimeout: 'park' }).then((r) => expect(r.status).toBe(202));
      const status = await authed(app).get(`/v1/promotions/${registrationId}`).expect(200);
      expect(status.body.progress.request).toEqual({
        registrationId,
        sourceEnvironment: 'test',
        targetEnvironment: 'production',
        reprovisionPolicy: 'migrate',
        sourceRemoval: 'delete',
        protocol: 'mqtt',
        deadline: '24h',
        pollInterval: '30s',
        onTimeout: 'park',
      });
    });

    it('answers 409 with the running workflow id when a different promotion of the device is in flight', async () => {
      const registrationId = uniqueRegistrationId();
      const first = await startPromotion({ registrationId });
      expect(first.status).toBe(202);
      const second = await startPromotion({ registrationId, onTimeout: 'park' });
      expect(second.status).toBe(409);
      expect(second.body).toMatchObject({
        type: '/problems/already-started',
        workflowId: `promote/${registrationId}`,
        runId: first.body.runId,
      });
      // Still the first run.
      const description = await ctx.client.workflow.getHandle(`promote/${registrationId}`).describe();
      expect(description.runId).toBe(first.body.runId);
    });

    it('starts a new promotion of a device once the previous one has closed', async () => {
      const registrationId = uniqueRegistrationId();
      const first = await startPromotion({ registrationId });
      await ctx.client.workflow.getHandle(first.body.workflowId).signal(fixtureFinishSignal, { outcome: 'complete' });
      await ctx.client.workflow.getHandle(first.body.workflowId).result();
      const second = await startPromotion({ registrationId });
      expect(second.status).toBe(202);
      expect(second.body.runId).not.toBe(first.body.runId);
    });

    it.each([
      ['no registration id', {}, ['body', 'registrationId']],
      ['a bad reprovision policy', { reprovisionPolicy: 'sometimes' }, ['body', 'reprovisionPolicy']],
      ['a bad deadline', { deadline: 'tomorrow' }, ['body', 'deadline']],
      ['the same source and target', { targetEnvironment: 'test' }, ['body', 'targetEnvironment']],
      ['a non-PEM device certificate', { deviceCertificate: 'abc' }, ['body', 'deviceCertificate']],
    ])('answers 400 with issues for %s, and starts nothing', async (_name, fields, path) => {
      const registrationId = uniqueRegistrationId();
      const body = { registrationId, ...fields };
      if (path[1] === 'registrationId') delete (body as Partial<typeof body>).registrationId;
      const res = await startPromotion(body);
      expect(res.status).toBe(400);
      expect(res.body.type).toBe('/problems/validation-error');
      expect(res.body.issues).toEqual(expect.arrayContaining([expect.objectContaining({ path })]));
      await expectNothingStarted(registrationId);
    });

    it('answers 400 for a registration id DPS would refuse, and starts nothing', async () => {
      const res = await startPromotion({ registrationId: 'has spaces/and slashes' });
      expect(res.status).toBe(400);
      expect(res.body.issues[0].path).toEqual(['body', 'registrationId']);
    });

    it('answers 400 naming the field when an environment is not configured, and starts nothing', async () => {
      const registrationId = uniqueRegistrationId();
      const res = await startPromotion({ registrationId, targetEnvironment: 'staging' });
      expect(res.status).toBe(400);
      expect(res.body.issues).toEqual([
        expect.objectContaining({
          path: ['body', 'targetEnvironment'],
          message: expect.stringContaining('unknown environment "staging"'),
          params: { type: PromotionErrors.unknownEnvironment },
        }),
      ]);
      await expectNothingStarted(registrationId);
    });

    it('does not mistake object prototype names for environments', async () => {
      const registrationId = uniqueRegistrationId();
      const res = await startPromotion({ registrationId, sourceEnvironment: 'constructor' });
      expect(res.status).toBe(400);
      await expectNothingStarted(registrationId);
    });

    it('answers 400 for a body that is not JSON', async () => {
      const res = await authed(app)
        .post('/v1/promotions')
        .set('content-type', 'application/json')
        .send('{"registrationId": ');
      expect(res.status).toBe(400);
      expect(res.body.type).toBe('/problems/malformed-request');
    });

    it('answers 400 naming unknown fields, and starts nothing (a typo must not run with the default)', async () => {
      const registrationId = uniqueRegistrationId();
      const res = await startPromotion({ registrationId, onTimout: 'park' });
      expect(res.status).toBe(400);
      expect(res.body.issues).toEqual([
        expect.objectContaining({ code: 'unrecognized_keys', keys: ['onTimout'], path: ['body'] }),
      ]);
      await expectNothingStarted(registrationId);
    });

    it.each(['.', '..'])('refuses %s as a registration id, in the body and in the path', async (id) => {
      const res = await startPromotion({ registrationId: id });
      expect(res.status).toBe(400);
      expect(res.body.issues[0].path).toEqual(['body', 'registrationId']);
      const encoded = id.replace(/\./g, '%2E');
      const get = await authed(app).get(`/v1/promotions/${encoded}`).expect(400);
      expect(get.body.issues[0].path).toEqual(['params', 'registrationId']);
      await authed(app).post(`/v1/promotions/${encoded}/cancel`).expect(400);
    });

    it('answers 415 for a body that is not application/json, and starts nothing', async () => {
      const registrationId = uniqueRegistrationId();
      const res = await authed(app)
        .post('/v1/promotions')
        .set('content-type', 'application/x-www-form-urlencoded')
        .send(`registrationId=${registrationId}`);
      expect(res.status).toBe(415);
      expect(res.body.type).toBe('/problems/unsupported-media-type');
      await expectNothingStarted(registrationId);
    });
  });

  describe('POST /v1/promotions is idempotent', () => {
    const idempotent = (body: Record<string, unknown>, key?: string) => {
      const req = authed(app).post('/v1/promotions');
      if (key) void req.set('Idempotency-Key', key);
      return req.send(body).then((res) => {
        if (res.status === 202) started.add(res.body.workflowId);
        return res;
      });
    };

    it('answers the same request repeated while the first is in flight with the same workflow', async () => {
      const registrationId = uniqueRegistrationId();
      const first = await idempotent({ registrationId });
      expect(first.status).toBe(202);
      expect(first.headers['idempotent-replayed']).toBeUndefined();
      // The same request once its defaults are applied.
      const again = await idempotent({ registrationId, onTimeout: 'rollback', sourceEnvironment: 'test' });
      expect(again.status).toBe(202);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(again.headers.location).toBe(first.headers.location);
      expect(again.body).toEqual(first.body);
    });

    it('starts one workflow for concurrent identical requests, and answers each with it', async () => {
      const registrationId = uniqueRegistrationId();
      const answers = await Promise.all(Array.from({ length: 5 }, () => idempotent({ registrationId })));
      expect(answers.map((r) => r.status)).toEqual([202, 202, 202, 202, 202]);
      expect(new Set(answers.map((r) => r.body.runId)).size).toBe(1);
      expect(answers.filter((r) => r.headers['idempotent-replayed'] === 'true')).toHaveLength(4);
    });

    it('keeps 409 for a different request, and for a different Idempotency-Key', async () => {
      const registrationId = uniqueRegistrationId();
      const first = await idempotent({ registrationId }, 'key-1');
      expect(first.status).toBe(202);
      const other = await idempotent({ registrationId, deadline: '1h' });
      expect(other.status).toBe(409);
      expect(other.body).toMatchObject({ workflowId: first.body.workflowId, runId: first.body.runId });
      expect((await idempotent({ registrationId }, 'key-2')).status).toBe(409);
    });

    it('answers a seen Idempotency-Key with its workflow even after it closed, and 422 for another request', async () => {
      const registrationId = uniqueRegistrationId();
      const key = `retry-${registrationId}`;
      const first = await idempotent({ registrationId }, key);
      expect(first.status).toBe(202);
      const handle = ctx.client.workflow.getHandle(first.body.workflowId);
      expect((await handle.describe()).memo).toEqual({
        requestFingerprint: expect.any(String),
        idempotencyKey: key,
        requestedBy: { subject: 'test-admin', name: 'test admin', authMethod: 'apiKey' },
      });
      await handle.signal(fixtureFinishSignal, { outcome: 'complete' });
      await handle.result();

      const replay = await idempotent({ registrationId }, key);
      expect(replay.status).toBe(202);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.body.runId).toBe(first.body.runId);
      expect((await handle.describe()).runId).toBe(first.body.runId); // nothing new started

      const misuse = await idempotent({ registrationId, onTimeout: 'park' }, key);
      expect(misuse.status).toBe(422);
      expect(misuse.body).toMatchObject({
        type: '/problems/idempotency-key-reused',
        workflowId: first.body.workflowId,
      });

      // Without the key, a closed promotion does not stop a new one.
      const fresh = await idempotent({ registrationId });
      expect(fresh.status).toBe(202);
      expect(fresh.body.runId).not.toBe(first.body.runId);
    });

    it('answers 400 for an Idempotency-Key that is no visible ASCII', async () => {
      const registrationId = uniqueRegistrationId();
      const res = await idempotent({ registrationId }, 'x'.repeat(256));
      expect(res.status).toBe(400);
      expect(res.body.issues[0].path).toEqual(['headers', 'idempotency-key']);
      await expectNothingStarted(registrationId);
    });
  });

  describe('GET /v1/promotions/:registrationId', () => {
    it('answers the live status from the workflow query while it runs', async () => {
      const registrationId = uniqueRegistrationId();
      await startPromotion({ registrationId });
      const res = await authed(app).get(`/v1/promotions/${registrationId}`).expect(200);
      expect(res.body).toMatchObject({
        workflowId: `promote/${registrationId}`,
        status: 'running',
        registrationId,
        sourceHub: environments.test,
        targetHub: environments.production,
        sourceEnvironment: 'test',
        targetEnvironment: 'production',
        phase: 'validating',
        statusUrl: `/v1/promotions/${registrationId}`,
        progress: { workflowId: `promote/${registrationId}`, phase: 'awaitingReconnection' },
      });
      expect(res.body.closeTime).toBeUndefined();
    });

    it('answers the result once the promotion completed', async () => {
      const registrationId = uniqueRegistrationId();
      const { body } = await startPromotion({ registrationId });
      await ctx.client.workflow.getHandle(body.workflowId).signal(fixtureFinishSignal, { outcome: 'complete' });
      await ctx.client.workflow.getHandle(body.workflowId).result();
      const res = await authed(app).get(`/v1/promotions/${registrationId}`).expect(200);
      expect(res.body).toMatchObject({ status: 'completed', result: { outcome: 'promoted', phase: 'completed' } });
      expect(res.body.closeTime).toEqual(expect.any(String));
      expect(res.body.progress).toBeUndefined();
    });

    it('answers the ApplicationFailure type and message once the promotion failed', async () => {
      const registrationId = uniqueRegistrationId();
      const { body } = await startPromotion({ registrationId });
      const handle = ctx.client.workflow.getHandle(body.workflowId);
      await handle.signal(fixtureFinishSignal, {
        outcome: 'fail',
        type: PromotionErrors.enrollmentNotFound,
        message: `no enrollment ${registrationId}`,
      });
      await expect(handle.result()).rejects.toThrow();
      const res = await authed(app).get(`/v1/promotions/${registrationId}`).expect(200);
      expect(res.body).toMatchObject({
        status: 'failed',
        failure: { type: PromotionErrors.enrollmentNotFound, message: `no enrollment ${registrationId}` },
      });
    });

    it('answers terminated with the reason', async () => {
      const registrationId = uniqueRegistrationId();
      const { body } = await startPromotion({ registrationId });
      await ctx.client.workflow.getHandle(body.workflowId).terminate('operator gave up');
      const res = await authed(app).get(`/v1/promotions/${registrationId}`).expect(200);
      expect(res.body).toMatchObject({
        status: 'terminated',
        failure: { type: 'Terminated', message: 'operator gave up' },
      });
    });

    it('answers from the search attributes, saying why, when the status query gets no answer', async () => {
      const registrationId = uniqueRegistrationId();
      // A task queue no worker polls: the workflow is running but cannot answer queries.
      const handle = await startPromotionDirectly(ctx.client, `${fixture.taskQueue}-unpolled`, {
        registrationId,
        sourceHub: environments.test,
        targetHub: environments.production,
      });
      started.add(handle.workflowId);
      const res = await authed(app).get(`/v1/promotions/${registrationId}`).expect(200);
      expect(res.body).toMatchObject({ status: 'running', phase: 'awaitingReconnection' });
      expect(res.body.progress).toBeUndefined();
      expect(res.body.progressUnavailable).toEqual(expect.any(String));
    });

    it('answers 404 for a device that was never promoted', async () => {
      const res = await authed(app).get(`/v1/promotions/${uniqueRegistrationId()}`).expect(404);
      expect(res.body).toMatchObject({
        type: '/problems/workflow-not-found',
        workflowId: expect.stringMatching(/^promote\//),
      });
    });

    it('answers 400 for a malformed registration id', async () => {
      const res = await authed(app).get('/v1/promotions/bad%20id').expect(400);
      expect(res.body.issues[0].path).toEqual(['params', 'registrationId']);
    });
  });

  describe('POST /v1/promotions/:registrationId/cancel', () => {
    it('requests cancellation of a running promotion (202), after which it is cancelled and no longer cancellable', async () => {
      const registrationId = uniqueRegistrationId();
      const { body } = await startPromotion({ registrationId });
      const res = await authed(app).post(`/v1/promotions/${registrationId}/cancel`).expect(202);
      expect(res.headers.location).toBe(`/v1/promotions/${registrationId}`);
      expect(res.body).toEqual({ workflowId: body.workflowId, runId: body.runId, statusUrl: res.headers.location });

      await expect(ctx.client.workflow.getHandle(body.workflowId).result()).rejects.toThrow();
      const status = await authed(app).get(`/v1/promotions/${registrationId}`).expect(200);
      expect(status.body).toMatchObject({ status: 'cancelled', failure: { type: 'Cancelled' } });

      const again = await authed(app).post(`/v1/promotions/${registrationId}/cancel`).expect(409);
      expect(again.body).toMatchObject({ type: '/problems/not-running', executionStatus: 'cancelled' });
    });

    it('answers 404 when the device has no promotion', async () => {
      await authed(app).post(`/v1/promotions/${uniqueRegistrationId()}/cancel`).expect(404);
    });
  });

  describe('GET /v1/promotions', () => {
    // Three promotions of this file's environments: two running, one completed.
    const ids = [uniqueRegistrationId('list'), uniqueRegistrationId('list'), uniqueRegistrationId('list')];
    const inThisFile = `WorkflowType = 'promoteDevice' AND IotTargetHub = '${environments.production}'`;
    beforeAll(async () => {
      for (const registrationId of ids) await startPromotion({ registrationId });
      const done = ctx.client.workflow.getHandle(promotionWorkflowId(ids[2]));
      await done.signal(fixtureFinishSignal, { outcome: 'complete' });
      await done.result();
      await waitForVisibility(
        ctx.client,
        `${inThisFile} AND IotRegistrationId = '${ids[2]}' AND ExecutionStatus = 'Completed'`,
      );
      await waitForVisibility(ctx.client, `${inThisFile} AND IotRegistrationId = '${ids[1]}'`);
      await waitForVisibility(ctx.client, `${inThisFile} AND IotRegistrationId = '${ids[0]}'`);
    });

    it('filters by registration id', async () => {
      const res = await authed(app).get('/v1/promotions').query({ registrationId: ids[0] }).expect(200);
      expect(res.body.promotions).toEqual([
        expect.objectContaining({
          workflowId: promotionWorkflowId(ids[0]),
          registrationId: ids[0],
          status: 'running',
          sourceEnvironment: 'test',
          targetEnvironment: 'production',
          statusUrl: `/v1/promotions/${ids[0]}`,
        }),
      ]);
      expect(res.body.nextPageToken).toBeUndefined();
    });

    it('filters by status and environment', async () => {
      const completed = await authed(app)
        .get('/v1/promotions')
        .query({ status: 'completed', targetEnvironment: 'production' })
        .expect(200);
      const completedIds = completed.body.promotions.map((p: { registrationId: string }) => p.registrationId);
      expect(completedIds).toContain(ids[2]);
      expect(completedIds).not.toContain(ids[0]);
      for (const p of completed.body.promotions) expect(p.status).toBe('completed');

      const running = await authed(app)
        .get('/v1/promotions')
        .query({ status: 'running', sourceEnvironment: 'test' })
        .expect(200);
      const runningIds = running.body.promotions.map((p: { registrationId: string }) => p.registrationId);
      expect(runningIds).toEqual(expect.arrayContaining([ids[0], ids[1]]));
      expect(runningIds).not.toContain(ids[2]);
    });

    it('pages with pageSize and nextPageToken', async () => {
      const seen: string[] = [];
      const runs: string[] = [];
      let nextPageToken: string | undefined;
      do {
        const res = await authed(app)
          .get('/v1/promotions')
          .query({ targetEnvironment: 'production', pageSize: 1, ...(nextPageToken ? { nextPageToken } : {}) })
          .expect(200);
        expect(res.body.promotions.length).toBeLessThanOrEqual(1);
        for (const p of res.body.promotions) {
          seen.push(p.registrationId);
          runs.push(p.runId);
        }
        nextPageToken = res.body.nextPageToken;
      } while (nextPageToken);
      expect(seen).toEqual(expect.arrayContaining(ids));
      expect(new Set(runs).size).toBe(runs.length);
    });

    it('refuses a page token of another listing', async () => {
      const first = await authed(app)
        .get('/v1/promotions')
        .query({ targetEnvironment: 'production', pageSize: 1 })
        .expect(200);
      expect(first.body.nextPageToken).toEqual(expect.any(String));
      const res = await authed(app)
        .get('/v1/promotions')
        .query({ status: 'running', nextPageToken: first.body.nextPageToken })
        .expect(400);
      expect(res.body.issues[0].path).toEqual(['query', 'nextPageToken']);
      await authed(app).get('/v1/promotions').query({ nextPageToken: 'garbage' }).expect(400);
    });

    it('refuses forged page tokens with 400: unsigned ones and ones signed with another key', async () => {
      const query = `WorkflowType = 'promoteDevice'`;
      // What anyone could compute for the unkeyed fingerprint scheme, with a made-up server token.
      const unkeyed = Buffer.from(
        JSON.stringify({
          q: createHash('sha256').update(query).digest('base64url').slice(0, 22),
          t: Buffer.from('not a token of the server').toString('base64'),
        }),
      ).toString('base64url');
      const otherKey = new PageTokens('another server key of 32 characters!').seal(Buffer.from('xyz'), query);
      for (const nextPageToken of [unkeyed, otherKey]) {
        const res = await authed(app).get('/v1/promotions').query({ nextPageToken });
        expect(res.status).toBe(400);
        expect(res.body.issues[0]).toMatchObject({ path: ['query', 'nextPageToken'] });
      }
    });

    it('answers 400 naming unknown query parameters', async () => {
      const res = await authed(app).get('/v1/promotions').query({ staus: 'running' }).expect(400);
      expect(res.body.issues).toEqual([expect.objectContaining({ code: 'unrecognized_keys', keys: ['staus'] })]);
    });

    it('answers 400 for unknown filters values', async () => {
      const badStatus = await authed(app).get('/v1/promotions').query({ status: 'sleeping' }).expect(400);
      expect(badStatus.body.issues[0].path).toEqual(['query', 'status']);
      const badEnvironment = await authed(app)
        .get('/v1/promotions')
        .query({ sourceEnvironment: 'staging' })
        .expect(400);
      expect(badEnvironment.body.issues[0].path).toEqual(['query', 'sourceEnvironment']);
      await authed(app).get('/v1/promotions').query({ pageSize: 0 }).expect(400);
    });

    it('filters by device id once the workflow has set it', async () => {
      // The real workflow upserts IotDeviceId once it has read the device; the stand-in gets it at start.
      const registrationId = uniqueRegistrationId('list');
      const deviceId = `device-of-${registrationId}`;
      const handle = await startPromotionDirectly(ctx.client, fixture.taskQueue, {
        registrationId,
        deviceId,
        sourceHub: environments.test,
        targetHub: environments.production,
      });
      started.add(handle.workflowId);
      const res = await eventually(async () => {
        const page = await authed(app).get('/v1/promotions').query({ deviceId }).expect(200);
        expect(page.body.promotions).toHaveLength(1);
        return page;
      });
      expect(res.body.promotions[0]).toMatchObject({ workflowId: handle.workflowId, deviceId, registrationId });
    });
  });

  it('documents every promotion route in /openapi.json', async () => {
    const res = await authed(app).get('/openapi.json').expect(200);
    expect(Object.keys(res.body.paths)).toEqual(
      expect.arrayContaining([
        '/v1/promotions',
        '/v1/promotions/{registrationId}',
        '/v1/promotions/{registrationId}/cancel',
        '/v1/eventgrid',
      ]),
    );
    expect(res.body.paths['/v1/promotions'].post.requestBody).toBeDefined();
  });
});
