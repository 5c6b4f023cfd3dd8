import request from 'supertest';
import { WorkflowNotFoundError, type WorkflowHandle } from '@temporalio/client';
import type { SimulatedDevice } from '../../emulator/simulator/device';
import { documentedRoutes } from '../../api/openapi';
import { promotionWorkflowId } from '../../common/messages';
import { PROMOTION_REPORT_MEMO, type PromotionReport, type PromotionStatus } from '../../common/promotion';
import { REQUESTED_BY_MEMO } from '../../common/requested-by';
import { SA } from '../../common/search-attributes';
import { as, authed } from '../helpers/credentials';
import { connectedTo, enrollDevice, simulate, startStack, uniqueId, type Stack } from '../helpers/stack';
import { eventually, waitForVisibility } from '../fixtures/promotion-fixture';
import type { Role } from '../../common/access';

/**
 * Who may call what, through the real stack (API → Temporal → worker → emulator): every route that needs a role
 * refuses no credentials (401) and a lower role (403) and accepts its role; what a caller starts or changes records
 * who they are; a browser on another site changes nothing.
 */

jest.setTimeout(120_000);

let stack: Stack;
const devices: SimulatedDevice[] = [];

beforeAll(async () => {
  stack = await startStack();
});
afterEach(async () => {
  await Promise.all(devices.splice(0).map((d) => d.stop()));
});
afterAll(async () => {
  await stack?.stop();
});

interface Sample {
  method: 'get' | 'post' | 'delete';
  path: string;
  body?: unknown;
}

/** A request per route that needs a role. A route added with a role and no sample here fails the first test. */
function samples(id: string): Record<string, Sample> {
  return {
    'POST /v1/promotions': { method: 'post', path: '/v1/promotions', body: { registrationId: id } },
    'GET /v1/promotions': { method: 'get', path: '/v1/promotions' },
    'GET /v1/promotions/{registrationId}': { method: 'get', path: `/v1/promotions/${id}` },
    'POST /v1/promotions/{registrationId}/cancel': { method: 'post', path: `/v1/promotions/${id}/cancel` },
    'POST /v1/promotions/{registrationId}/retry-compensation': {
      method: 'post',
      path: `/v1/promotions/${id}/retry-compensation`,
    },
    'POST /v1/diagnostics/connectivity': { method: 'post', path: '/v1/diagnostics/connectivity' },
    'GET /metrics': { method: 'get', path: '/metrics' },
    'POST /codec/decode': { method: 'post', path: '/codec/decode', body: { payloads: [] } },
    'POST /codec/encode': { method: 'post', path: '/codec/encode', body: { payloads: [] } },
    'POST /v1/revocations': { method: 'post', path: '/v1/revocations', body: { registrationId: id, reason: 'access' } },
    'GET /v1/revocations': { method: 'get', path: '/v1/revocations' },
    'GET /v1/revocations/devices/{registrationId}': { method: 'get', path: `/v1/revocations/devices/${id}` },
    'GET /v1/revocations/groups/{enrollmentGroupId}': { method: 'get', path: `/v1/revocations/groups/g-${id}` },
    'POST /v1/reinstatements': {
      method: 'post',
      path: '/v1/reinstatements',
      body: { registrationId: id, reason: 'access' },
    },
    'GET /v1/reinstatements': { method: 'get', path: '/v1/reinstatements' },
    'GET /v1/reinstatements/devices/{registrationId}': { method: 'get', path: `/v1/reinstatements/devices/${id}` },
    'GET /v1/reinstatements/groups/{enrollmentGroupId}': {
      method: 'get',
      path: `/v1/reinstatements/groups/g-${id}`,
    },
    'POST /v1/fleet-operations': {
      method: 'post',
      path: '/v1/fleet-operations',
      body: { operation: 'revoke', targets: { registrationIds: [id] }, parameters: { reason: 'access' }, dryRun: true },
    },
    'GET /v1/fleet-operations': { method: 'get', path: '/v1/fleet-operations' },
    'GET /v1/fleet-operations/{operationId}': { method: 'get', path: `/v1/fleet-operations/${id}` },
    'GET /v1/fleet-operations/{operationId}/devices': { method: 'get', path: `/v1/fleet-operations/${id}/devices` },
    'POST /v1/fleet-operations/{operationId}/pause': { method: 'post', path: `/v1/fleet-operations/${id}/pause` },
    'POST /v1/fleet-operations/{operationId}/resume': { method: 'post', path: `/v1/fleet-operations/${id}/resume` },
    'POST /v1/fleet-operations/{operationId}/cancel': { method: 'post', path: `/v1/fleet-operations/${id}/cancel` },
    'POST /v1/fleet-operations/{operationId}/retry-failed': {
      method: 'post',
      path: `/v1/fleet-operations/${id}/retry-failed`,
    },
    'POST /v1/audits/schedule': {
      method: 'post',
      path: '/v1/audits/schedule',
      body: { interval: '1d', paused: true },
    },
    'GET /v1/audits/schedule': { method: 'get', path: '/v1/audits/schedule' },
    'DELETE /v1/audits/schedule': { method: 'delete', path: '/v1/audits/schedule' },
    'POST /v1/audits': { method: 'post', path: '/v1/audits', body: { staleAfterDays: 30 } },
    'GET /v1/audits': { method: 'get', path: '/v1/audits' },
    'GET /v1/audits/{id}': { method: 'get', path: `/v1/audits/audit-${id}` },
    'GET /v1/audits/{id}/findings': { method: 'get', path: `/v1/audits/audit-${id}/findings` },
    'POST /v1/audits/{id}/remediate': {
      method: 'post',
      path: `/v1/audits/audit-${id}/remediate`,
      body: { findingType: 'orphan', confirm: true },
    },
    'GET /v1/reports/{kind}/{id}': { method: 'get', path: `/v1/reports/audits/audit-${id}` },
  };
}

const LOWER: Record<Role, Role | undefined> = { viewer: undefined, operator: 'viewer', admin: 'operator' };

function roleRoutes(): Array<{ route: string; role: Role }> {
  return documentedRoutes().flatMap(({ path, auth }) =>
    Object.entries(auth)
      .filter((entry): entry is [string, Role] => ['viewer', 'operator', 'admin'].includes(entry[1]))
      .map(([method, role]) => ({ route: `${method} ${path}`, role })),
  );
}

function send(sample: Sample, headers: Record<string, string> = {}) {
  const req = request(stack.app)[sample.method](sample.path).set(headers);
  return sample.body === undefined ? req : req.send(sample.body as object);
}

async function expectNoPromotion(registrationId: string) {
  await expect(
    stack.temporal.client.workflow.getHandle(promotionWorkflowId(registrationId)).describe(),
  ).rejects.toBeInstanceOf(WorkflowNotFoundError);
}

describe('every route that needs a role', () => {
  it('has a sample request here, and the API routes it documents all need one', () => {
    const routes = roleRoutes().map((r) => r.route);
    expect(routes.sort()).toEqual(Object.keys(samples('x')).sort());
  });

  it('answers 401 with a challenge and starts nothing without credentials, or with a key it does not know', async () => {
    const id = uniqueId('noauth');
    for (const [route, sample] of Object.entries(samples(id))) {
      const refused: Array<Record<string, string>> = [
        {},
        { 'x-api-key': 'iotl_not-a-key-of-this-api' },
        { authorization: 'Bearer x.y.z' },
      ];
      for (const headers of refused) {
        const res = await send(sample, headers);
        expect([route, headers, res.status, res.body.type]).toEqual([route, headers, 401, '/problems/unauthorized']);
        expect(res.headers['www-authenticate']).toMatch(/ApiKey|Bearer/);
      }
    }
    await expectNoPromotion(id);
  });

  it('answers 403 naming the role needed to a caller of a lower role, and starts nothing', async () => {
    const id = uniqueId('lowrole');
    for (const { route, role } of roleRoutes()) {
      const lower = LOWER[role];
      if (!lower) continue; // viewer routes: every authenticated role may read
      const res = await send(samples(id)[route], as(lower));
      expect([route, res.status, res.body]).toEqual([
        route,
        403,
        expect.objectContaining({ type: '/problems/forbidden', requiredRole: role }),
      ]);
    }
    await expectNoPromotion(id);
  });

  it('serves a caller of exactly the role the route declares', async () => {
    const id = uniqueId('rightrole');
    const answers: Record<string, number> = {};
    for (const { route, role } of roleRoutes()) {
      answers[route] = (await send(samples(id)[route], as(role))).status;
    }
    // The device is not enrolled: the start is accepted and the workflow fails by itself (EnrollmentNotFound).
    // Cancel: 202 while the run lasts, 409 once it has failed; retry-compensation: 409, nothing to retry.
    const cancelled = answers['POST /v1/promotions/{registrationId}/cancel'];
    expect({ ...answers, 'POST /v1/promotions/{registrationId}/cancel': cancelled === 202 ? 409 : cancelled }).toEqual({
      'POST /v1/promotions': 202,
      'GET /v1/promotions': 200,
      'GET /v1/promotions/{registrationId}': 200,
      'POST /v1/promotions/{registrationId}/cancel': 409,
      'POST /v1/promotions/{registrationId}/retry-compensation': 409,
      'POST /v1/diagnostics/connectivity': 200,
      'GET /metrics': 200,
      'POST /codec/decode': 200,
      'POST /codec/encode': 200,
      // Revoking and reinstating a device DPS does not know: accepted, and the workflow says so itself.
      'POST /v1/revocations': 202,
      'GET /v1/revocations': 200,
      'GET /v1/revocations/devices/{registrationId}': 200,
      'GET /v1/revocations/groups/{enrollmentGroupId}': 404,
      'POST /v1/reinstatements': 202,
      'GET /v1/reinstatements': 200,
      'GET /v1/reinstatements/devices/{registrationId}': 200,
      'GET /v1/reinstatements/groups/{enrollmentGroupId}': 404,
      // A dry run answers its plan; the samples name no fleet operation that exists.
      'POST /v1/fleet-operations': 200,
      'GET /v1/fleet-operations': 200,
      'GET /v1/fleet-operations/{operationId}': 404,
      'GET /v1/fleet-operations/{operationId}/devices': 404,
      'POST /v1/fleet-operations/{operationId}/pause': 404,
      'POST /v1/fleet-operations/{operationId}/resume': 404,
      'POST /v1/fleet-operations/{operationId}/cancel': 404,
      'POST /v1/fleet-operations/{operationId}/retry-failed': 404,
      // The schedule is created (paused), read and deleted in that order; the audit starts; none of the samples
      // names an audit that exists.
      'POST /v1/audits/schedule': 200,
      'GET /v1/audits/schedule': 200,
      'DELETE /v1/audits/schedule': 204,
      'POST /v1/audits': 202,
      'GET /v1/audits': 200,
      'GET /v1/audits/{id}': 404,
      'GET /v1/audits/{id}/findings': 404,
      'POST /v1/audits/{id}/remediate': 404,
      'GET /v1/reports/{kind}/{id}': 404,
    });
  });
});

describe('who did it', () => {
  async function runningPromotion(): Promise<{ id: string; handle: WorkflowHandle }> {
    const enrolled = await enrollDevice(stack, 'symmetricKey');
    const device = simulate(stack, enrolled);
    devices.push(device);
    await connectedTo(device, stack.hosts.test);
    await device.stop();
    const id = enrolled.registrationId;
    await authed(stack.app, 'operator')
      .post('/v1/promotions')
      .send({ registrationId: id, deadline: '1h', pollInterval: '1s' })
      .expect(202);
    const handle = stack.temporal.client.workflow.getHandle(promotionWorkflowId(id));
    await eventually(async () => {
      const status = (await handle.query('status')) as PromotionStatus;
      if (status.phase !== 'awaitingReconnection') throw new Error(`phase ${status.phase}`);
    }, 30_000);
    return { id, handle };
  }

  it('records the caller of a start (memo, search attribute, input) and of a cancel (status, report)', async () => {
    const { id, handle } = await runningPromotion();
    const operator = { subject: 'test-operator', name: 'test operator', authMethod: 'apiKey' };

    const description = await handle.describe();
    expect(description.memo?.[REQUESTED_BY_MEMO]).toEqual(operator);
    expect(description.typedSearchAttributes.get(SA.requestedBy)).toBe('apiKey:test-operator');
    expect(((await handle.query('status')) as PromotionStatus).requestedBy).toEqual(operator);
    // "Who started this?" is one visibility query.
    const query = `IotRequestedBy = 'apiKey:test-operator' AND IotRegistrationId = '${id}'`;
    await waitForVisibility(stack.temporal.client, query);

    await request(stack.app).post(`/v1/promotions/${id}/cancel`).set(as('admin')).expect(202);
    await handle.result().catch(() => undefined);
    const report = (await handle.describe()).memo?.[PROMOTION_REPORT_MEMO] as PromotionReport;
    expect(report).toMatchObject({
      outcome: 'rolledBack',
      requestedBy: operator,
      operatorActions: [
        {
          action: 'cancel',
          requestedBy: { subject: 'test-admin', name: 'test admin', authMethod: 'apiKey' },
          at: expect.any(String),
        },
      ],
    });
  });

  it('changes nothing for a cross-site form post, another origin, or another Host name', async () => {
    const { id, handle } = await runningPromotion();
    const cancel = () => request(stack.app).post(`/v1/promotions/${id}/cancel`);
    const form = { 'content-type': 'application/x-www-form-urlencoded', origin: 'https://evil.example' };

    // What a page on another site can send: a form post, without the API's credentials (it has none to send).
    expect((await cancel().set(form).send('')).status).toBe(401);
    expect((await cancel().set('content-type', 'text/plain').set('origin', 'https://evil.example')).status).toBe(401);
    // Even with credentials, another origin (403) or a form body (415) is refused.
    expect(
      (
        await cancel()
          .set({ ...as('operator'), ...form })
          .send('')
      ).status,
    ).toBe(403);
    const formOnly = await cancel().set({ ...as('operator'), 'content-type': 'application/x-www-form-urlencoded' });
    expect([formOnly.status, formOnly.headers['accept-post']]).toEqual([415, 'application/json']);
    expect((await cancel().set({ ...as('operator'), 'content-type': 'multipart/form-data; boundary=x' })).status).toBe(
      415,
    );
    // DNS rebinding: a name of the attacker's that resolves to this host still carries that name.
    const rebound = await cancel().set({ ...as('operator'), host: 'evil.example:3000' });
    expect([rebound.status, rebound.body.type]).toEqual([421, '/problems/host-not-allowed']);

    const description = await handle.describe();
    expect(description.status.name).toBe('RUNNING');
    expect(((await handle.query('status')) as PromotionStatus).operatorActions).toBeUndefined();

    // The same cancel, as the API's own client sends it, goes through.
    await cancel().set(as('operator')).set('content-type', 'application/json').expect(202);
    await handle.result().catch(() => undefined);
    expect((await handle.describe()).status.name).toBe('CANCELLED');
  });
});
