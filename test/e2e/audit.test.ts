/**
 * The fleet drift audit through the real stack (API → Temporal → worker → activities → Azure SDKs → emulator), on a
 * fleet seeded by hand through the Azure APIs with one device of every finding type — as an operator's mistakes
 * would leave it — beside devices that are in order: the audit must report exactly those findings and no others;
 * remediating "revoked but active" leaves the next audit clean of it; the reports download and parse.
 */
import { randomBytes } from 'node:crypto';
import { parse as parseCsv } from 'csv-parse/sync';
import type { WorkflowHandle } from '@temporalio/client';
import type { IndividualEnrollment } from 'azure-iot-provisioning-service/dist/interfaces';
import { ProvisioningDeviceClient } from 'azure-iot-provisioning-device';
import { Http as ProvisioningHttp } from 'azure-iot-provisioning-device-http';
import { SymmetricKeySecurityClient } from 'azure-iot-security-symmetric-key';
import { Client as DeviceClient } from 'azure-iot-device';
import { Mqtt as DeviceMqtt } from 'azure-iot-device-mqtt';
import { auditFindingsChunkId, type AuditResult, type Finding } from '../../common/audit';
import type { FleetResult } from '../../common/fleet';
import { REQUESTED_BY_MEMO } from '../../common/requested-by';
import { GLOBAL_DPS_HOST } from '../../emulator/state';
import { createApp } from '../../api/app';
import { createLogger } from '../../common/logger';
import { authed, testSecurity } from '../helpers/credentials';
import { recordHistory } from '../helpers/histories';
import {
  connectedTo,
  enrollDevice,
  simulate,
  startStack,
  uniqueId,
  type EnrolledDevice,
  type Stack,
} from '../helpers/stack';

jest.setTimeout(240_000);

let stack: Stack;

beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.stop();
});

/** Provisions the device through DPS and connects it once (its identity then has a lastActivityTime). */
async function provisionedAndSeen(kind: Parameters<typeof enrollDevice>[1], registrationId?: string) {
  const enrolled = await enrollDevice(stack, kind, registrationId);
  const device = simulate(stack, enrolled);
  try {
    await connectedTo(device, stack.hosts.test);
  } finally {
    await device.stop();
  }
  return enrolled;
}

/** A device connecting to a hub directly with a SAS key (the device SDK over MQTT), once. */
async function connectOnce(hubHost: string, deviceId: string, key: string) {
  const client = DeviceClient.fromConnectionString(
    `HostName=${hubHost};DeviceId=${deviceId};SharedAccessKey=${key};GatewayHostName=127.0.0.1:${stack.emulator.mqttPort}`,
    DeviceMqtt,
  );
  await client.setOptions({ ca: stack.emulator.caPem });
  await client.open();
  await client.close();
}

/** DPS registration only (the provisioning device SDK over HTTP): the device never goes on to its hub. */
async function registerOnly(enrolled: EnrolledDevice) {
  if (enrolled.attestation.type !== 'symmetricKey') throw new Error('symmetric-key devices only');
  const security = new SymmetricKeySecurityClient(enrolled.registrationId, enrolled.attestation.key);
  const client = ProvisioningDeviceClient.create(
    GLOBAL_DPS_HOST,
    stack.emulator.idScope,
    new ProvisioningHttp(),
    security as unknown as Parameters<typeof ProvisioningDeviceClient.create>[3],
  );
  await new Promise((resolve, reject) => client.register((err, result) => (err ? reject(err) : resolve(result))));
}

async function audit(
  body: Record<string, unknown> = {},
): Promise<{ id: string; handle: WorkflowHandle; result: AuditResult }> {
  const res = await authed(stack.app, 'operator').post('/v1/audits').send(body).expect(202);
  expect(res.headers.location).toBe(`/v1/audits/${res.body.workflowId}`);
  const handle = stack.temporal.client.workflow.getHandle(res.body.workflowId);
  return { id: res.body.workflowId, handle, result: await handle.result() };
}

/** Every finding, read back through the API page by page. */
async function findingsOf(id: string, pageSize: number): Promise<{ findings: Finding[]; pages: number }> {
  const findings: Finding[] = [];
  let pages = 0;
  for (let token: string | undefined; ;) {
    const res = await authed(stack.app, 'viewer')
      .get(`/v1/audits/${id}/findings`)
      .query({ pageSize, ...(token ? { nextPageToken: token } : {}) })
      .expect(200);
    pages += 1;
    expect(res.body.findings.length).toBeLessThanOrEqual(pageSize);
    findings.push(...res.body.findings);
    token = res.body.nextPageToken;
    if (!token) return { findings, pages };
  }
}

const otherKey = () => randomBytes(32).toString('base64');
const pairs = (findings: Finding[]) => findings.map((f) => `${f.type} ${f.deviceId}`).sort();

describe('a fleet with one device of every finding type, made by hand', () => {
  const ids = {
    revokedButActive: uniqueId('rba'),
    wrongHub: uniqueId('wrong-hub'),
    duplicate: uniqueId('duplicate'),
    orphan: uniqueId('orphan'),
    stale: uniqueId('stale'),
    authMismatch: uniqueId('auth'),
  };
  let first: { id: string; handle: WorkflowHandle; result: AuditResult };

  beforeAll(async () => {
    const { dps, registries, hosts } = stack;
    // In order: a symmetric-key device, a member of a group, an X.509 device, and one revoked properly through the API.
    await provisionedAndSeen('symmetricKey');
    await provisionedAndSeen('symmetricKeyGroup');
    await provisionedAndSeen('x509');
    const revoked = await provisionedAndSeen('symmetricKey');
    const revocation = await authed(stack.app, 'operator')
      .post('/v1/revocations')
      .send({ registrationId: revoked.registrationId, reason: 'retired' })
      .expect(202);
    await stack.temporal.client.workflow.getHandle(revocation.body.workflowId).result();

    // Revoked but active: the enrollment disabled in DPS by hand, the hub identity left enabled.
    await provisionedAndSeen('symmetricKey', ids.revokedButActive);
    const enrollment = (await dps.getIndividualEnrollment(ids.revokedButActive)).responseBody;
    await dps.createOrUpdateIndividualEnrollment({
      ...enrollment,
      provisioningStatus: 'disabled',
    } as IndividualEnrollment);

    // Wrong hub: moved to production by hand (same key), removed from test; DPS still assigns it to test.
    const moved = await provisionedAndSeen('symmetricKey', ids.wrongHub);
    const movedKey = (moved.attestation as { key: string }).key;
    await registries.production.create({
      deviceId: ids.wrongHub,
      authentication: { symmetricKey: { primaryKey: movedKey, secondaryKey: otherKey() } },
    } as never);
    await registries.test.delete(ids.wrongHub);
    await connectOnce(hosts.production, ids.wrongHub, movedKey);

    // Duplicate: copied to production by hand, enabled in both hubs.
    const copied = await provisionedAndSeen('symmetricKey', ids.duplicate);
    const copiedKey = (copied.attestation as { key: string }).key;
    await registries.production.create({
      deviceId: ids.duplicate,
      authentication: { symmetricKey: { primaryKey: copiedKey, secondaryKey: otherKey() } },
    } as never);

    // Orphan: an identity made in the portal for a device no enrollment knows.
    await registries.production.create({ deviceId: ids.orphan } as never);

    // Stale: enrolled and registered through DPS, never connected.
    await registerOnly(await enrollDevice(stack, 'symmetricKey', ids.stale));

    // Auth mismatch: an X.509 enrollment whose hub identity someone re-created with SAS keys, in use.
    await enrollDevice(stack, 'x509', ids.authMismatch);
    const sas = (await registries.test.create({ deviceId: ids.authMismatch } as never)).responseBody;
    await connectOnce(hosts.test, ids.authMismatch, sas.authentication!.symmetricKey!.primaryKey!);

    first = await audit({ staleAfterDays: 30 });
  });

  it('reports exactly those findings and no others, page by page', async () => {
    expect(first.result).toMatchObject({ phase: 'completed', outcome: 'findings', buckets: { total: 1, done: 1 } });
    expect(first.result.counts).toEqual({
      revokedButActive: 1,
      wrongHub: 1,
      duplicate: 1,
      orphan: 1,
      stale: 1,
      authMismatch: 1,
    });
    const { findings, pages } = await findingsOf(first.id, 4);
    expect(pages).toBe(2);
    expect(pairs(findings)).toEqual(
      pairs(Object.entries(ids).map(([type, deviceId]) => ({ type, deviceId }) as Finding)),
    );

    const byType = Object.fromEntries(findings.map((f) => [f.type, f]));
    expect(byType.revokedButActive).toMatchObject({
      registrationId: ids.revokedButActive,
      enrollment: { kind: 'individual', status: 'disabled' },
      hubs: [expect.objectContaining({ environment: 'test', status: 'enabled' })],
    });
    expect(byType.wrongHub).toMatchObject({
      assignedHub: stack.hosts.test,
      hubs: [expect.objectContaining({ environment: 'production' })],
    });
    expect(byType.duplicate.hubs.map((h) => h.environment).sort()).toEqual(['production', 'test']);
    expect(byType.orphan).not.toHaveProperty('registrationId');
    expect(byType.stale.detail).toBe('never connected');
    expect(byType.authMismatch.detail).toMatch(/sas authentication for a x509 enrollment/);

    // One type at a time, too.
    const stale = await authed(stack.app, 'viewer')
      .get(`/v1/audits/${first.id}/findings`)
      .query({ type: 'stale' })
      .expect(200);
    expect(stale.body).toMatchObject({ complete: true, findings: [expect.objectContaining({ deviceId: ids.stale })] });
    // A token is good for its own listing only.
    const page = await authed(stack.app, 'viewer')
      .get(`/v1/audits/${first.id}/findings`)
      .query({ pageSize: 1 })
      .expect(200);
    await authed(stack.app, 'viewer')
      .get(`/v1/audits/${first.id}/findings`)
      .query({ type: 'stale', nextPageToken: page.body.nextPageToken })
      .expect(400);
    await recordHistory(first.handle, 'audit-v1');
    const [bucket] = first.result.bucketResults;
    const chunk = auditFindingsChunkId(first.id, bucket.index, bucket.attempt, 'orphan', 0);
    await recordHistory(stack.temporal.client.workflow.getHandle(chunk), 'audit-findings-v1');
  });

  it('shows its progress and counts by finding type in the API and in the Temporal UI’s details', async () => {
    const detail = await authed(stack.app, 'viewer').get(`/v1/audits/${first.id}`).expect(200);
    expect(detail.body).toMatchObject({
      auditId: first.id,
      status: 'completed',
      outcome: 'findings',
      counts: first.result.counts,
      findingsUrl: `/v1/audits/${first.id}/findings`,
      reportUrl: `/v1/reports/audits/${first.id}`,
    });
    const metadata = (await first.handle.query('__temporal_workflow_metadata')) as { currentDetails?: string };
    expect(metadata.currentDetails).toMatch(/\| revokedButActive \| 1 \|/);
    expect(metadata.currentDetails).toMatch(/Buckets: 1 of 1 done/);
    const listed = await authed(stack.app, 'viewer').get('/v1/audits').query({ status: 'completed' }).expect(200);
    expect(listed.body.audits.map((a: { auditId: string }) => a.auditId)).toContain(first.id);
  });

  it('downloads the audit report as JSON and as CSV, one row per finding and identity', async () => {
    const jsonReport = await authed(stack.app, 'viewer').get(`/v1/reports/audits/${first.id}`).expect(200);
    expect(jsonReport.headers['content-type']).toMatch(/^application\/json/);
    expect(jsonReport.body).toMatchObject({ kind: 'audits', id: first.id, status: 'completed', outcome: 'findings' });
    expect(jsonReport.body.summary.counts).toEqual(first.result.counts);
    // The duplicate has two identities; every other finding one.
    expect(jsonReport.body.rows).toHaveLength(7);
    expect(jsonReport.body.rows.map((r: { outcome: string }) => r.outcome).sort()).toEqual([
      'authMismatch',
      'duplicate',
      'duplicate',
      'orphan',
      'revokedButActive',
      'stale',
      'wrongHub',
    ]);
    const csv = await authed(stack.app, 'viewer')
      .get(`/v1/reports/audits/${first.id}`)
      .set('Accept', 'text/csv')
      .expect(200);
    expect(csv.headers['content-type']).toMatch(/^text\/csv/);
    expect(csv.text).toContain('\r\n');
    const records = parseCsv(csv.text, { columns: true }) as Array<Record<string, string>>;
    expect(records).toHaveLength(7);
    expect(Object.keys(records[0])).toEqual([
      'kind',
      'id',
      'registrationId',
      'deviceId',
      'hub',
      'before',
      'after',
      'action',
      'outcome',
      'problems',
    ]);
    expect(records.find((r) => r.outcome === 'orphan')).toMatchObject({
      deviceId: ids.orphan,
      hub: stack.hosts.production,
    });
    const viaQuery = await authed(stack.app, 'viewer').get(`/v1/reports/audits/${first.id}?format=csv`).expect(200);
    expect(viaQuery.text).toBe(csv.text);
  });

  it('plans a remediation with the fleet operation’s dry run, carries it out as one fleet operation on confirm, and the next audit is clean of revoked-but-active devices', async () => {
    const url = `/v1/audits/${first.id}/remediate`;
    const operator = { subject: 'test-operator', name: 'test operator', authMethod: 'apiKey' };
    await authed(stack.app, 'viewer').post(url).send({ findingType: 'revokedButActive' }).expect(403);
    const plan = await authed(stack.app, 'operator').post(url).send({ findingType: 'revokedButActive' }).expect(200);
    expect(plan.body).toMatchObject({
      dryRun: true,
      expressible: true,
      findings: 1,
      confirmRole: 'operator',
      fleetOperation: {
        operation: 'revoke',
        targets: { registrationIds: [ids.revokedButActive] },
        parameters: { hubAction: 'disable' },
      },
      fleetDryRun: {
        workflowId: expect.stringMatching(/^fleet\//),
        plan: { devices: 1, sample: [ids.revokedButActive], chunks: 1 },
      },
    });
    // A dry run changes nothing.
    expect((await stack.registries.test.get(ids.revokedButActive)).responseBody.status).toBe('enabled');

    const started = await authed(stack.app, 'operator')
      .post(url)
      .send({ findingType: 'revokedButActive', confirm: true })
      .expect(202);
    const { operationId } = started.body;
    expect(started.body).toMatchObject({
      auditId: first.id,
      findingType: 'revokedButActive',
      workflowId: `fleet/${operationId}`,
      statusUrl: `/v1/fleet-operations/${operationId}`,
    });
    expect(started.headers.location).toBe(`/v1/fleet-operations/${operationId}`);
    // One fleet operation over the devices found, recorded as the caller's, like any fleet operation.
    const fleetHandle = stack.temporal.client.workflow.getHandle(started.body.workflowId);
    const fleet: FleetResult = await fleetHandle.result();
    expect(fleet).toMatchObject({
      operation: 'revoke',
      outcome: 'completed',
      requestedBy: operator,
      counts: { succeeded: 1, failed: 0, timedOut: 0, pending: 0 },
    });
    expect((await fleetHandle.describe()).memo?.[REQUESTED_BY_MEMO]).toEqual(operator);
    const devices = await authed(stack.app, 'viewer').get(`/v1/fleet-operations/${operationId}/devices`).expect(200);
    expect(devices.body.devices).toEqual([
      expect.objectContaining({ registrationId: ids.revokedButActive, state: 'succeeded' }),
    ]);
    expect((await stack.registries.test.get(ids.revokedButActive)).responseBody.status).toBe('disabled');
    // Confirming again answers the same fleet operation: an audit's finding type is remediated once.
    const again = await authed(stack.app, 'operator')
      .post(url)
      .send({ findingType: 'revokedButActive', confirm: true })
      .expect(202);
    expect([again.body.operationId, again.headers['idempotent-replayed']]).toEqual([operationId, 'true']);

    const next = await audit({ staleAfterDays: 30 });
    expect(next.result.counts.revokedButActive).toBe(0);
    const { findings } = await findingsOf(next.id, 100);
    expect(pairs(findings)).toEqual(
      pairs(
        Object.entries(ids)
          .filter(([type]) => type !== 'revokedButActive')
          .map(([type, deviceId]) => ({ type, deviceId }) as Finding),
      ),
    );

    // The fleet operation's report: who asked, the outcome, one row per device.
    const report = await authed(stack.app, 'viewer').get(`/v1/reports/fleet-operations/${operationId}`).expect(200);
    expect(report.body).toMatchObject({
      kind: 'fleet-operations',
      id: operationId,
      status: 'completed',
      outcome: 'completed',
      requestedBy: operator,
      summary: { operation: 'revoke', counts: expect.objectContaining({ succeeded: 1 }) },
      rows: [
        expect.objectContaining({ registrationId: ids.revokedButActive, after: 'succeeded', outcome: 'succeeded' }),
      ],
    });
    const csv = await authed(stack.app, 'viewer')
      .get(`/v1/reports/fleet-operations/${operationId}?format=csv`)
      .expect(200);
    expect(parseCsv(csv.text, { columns: true })).toEqual([
      expect.objectContaining({ kind: 'fleet-operations', id: operationId, registrationId: ids.revokedButActive }),
    ]);
    // The audit's report says who started it.
    const auditReport = await authed(stack.app, 'viewer').get(`/v1/reports/audits/${next.id}`).expect(200);
    expect(auditReport.body.requestedBy).toEqual(operator);
  });

  it('needs the admin role to confirm a remediation over the operator’s fleet operation limit', async () => {
    // An API whose operators may change no device in one fleet operation (FLEET_OPERATOR_MAX_DEVICES=0).
    const strict = createApp({
      security: testSecurity(),
      client: stack.temporal.client,
      taskQueue: stack.taskQueue,
      log: createLogger('silent'),
      environments: stack.hosts,
      fleetOperatorMaxDevices: 0,
    });
    const url = `/v1/audits/${first.id}/remediate`;
    const plan = await authed(strict, 'operator').post(url).send({ findingType: 'orphan' }).expect(200);
    expect(plan.body).toMatchObject({ confirmRole: 'admin', fleetDryRun: { plan: { devices: 1 } } });
    const refused = await authed(strict, 'operator')
      .post(url)
      .send({ findingType: 'orphan', confirm: true })
      .expect(403);
    expect(refused.body).toMatchObject({ type: '/problems/forbidden', requiredRole: 'admin' });
    expect((await stack.registries.production.get(ids.orphan)).responseBody.deviceId).toBe(ids.orphan);
  });

  it('refuses to carry out a cleanup the operations cannot express, and says what it proposes', async () => {
    const url = `/v1/audits/${first.id}/remediate`;
    const res = await authed(stack.app, 'operator')
      .post(url)
      .send({ findingType: 'duplicate', confirm: true })
      .expect(422);
    expect(res.body).toMatchObject({
      type: '/problems/not-expressible',
      plan: {
        expressible: false,
        proposal: {
          operation: 'disableInHubs',
          devices: [{ deviceId: ids.duplicate, keepIn: 'test', disableIn: ['production'] }],
        },
      },
    });
    const wrongHub = await authed(stack.app, 'operator').post(url).send({ findingType: 'wrongHub' }).expect(200);
    expect(wrongHub.body.proposal.devices).toEqual([
      { registrationId: ids.wrongHub, deviceId: ids.wrongHub, disableIn: ['production'] },
    ]);
    const orphan = await authed(stack.app, 'operator').post(url).send({ findingType: 'orphan' }).expect(200);
    expect(orphan.body.fleetOperation).toMatchObject({
      operation: 'revoke',
      targets: { registrationIds: [ids.orphan] },
      parameters: { hubAction: 'delete' },
    });
    await authed(stack.app, 'operator').post(url).send({ findingType: 'stale' }).expect(400);
  });

  it('answers 404 for an audit that does not exist, and 409 when remediating one still running', async () => {
    await authed(stack.app, 'viewer').get('/v1/audits/audit-nothing-here').expect(404);
    await authed(stack.app, 'viewer').get('/v1/reports/audits/audit-nothing-here').expect(404);
    await authed(stack.app, 'viewer').get('/v1/reports/no-such-kind/x').expect(404);
    await stack.stopWorker();
    try {
      const res = await authed(stack.app, 'operator').post('/v1/audits').send({}).expect(202);
      const busy = await authed(stack.app, 'operator')
        .post(`/v1/audits/${res.body.workflowId}/remediate`)
        .send({ findingType: 'orphan' })
        .expect(409);
      expect(busy.body).toMatchObject({ type: '/problems/audit-not-completed', executionStatus: 'running' });
      await stack.temporal.client.workflow.getHandle(res.body.workflowId).terminate('test over');
    } finally {
      await stack.startWorker();
    }
  });
});

describe('reports of the other operations', () => {
  it('reports a promotion and a reinstatement as JSON and CSV: where, before, after, outcome', async () => {
    const enrolled = await enrollDevice(stack, 'symmetricKey');
    const device = simulate(stack, enrolled);
    try {
      await connectedTo(device, stack.hosts.test);
      const id = enrolled.registrationId;
      await authed(stack.app, 'operator')
        .post('/v1/promotions')
        .send({ registrationId: id, pollInterval: '1s' })
        .expect(202);
      await stack.temporal.client.workflow.getHandle(`promote/${id}`).result();
      const promotion = await authed(stack.app, 'viewer').get(`/v1/reports/promotions/${id}`).expect(200);
      expect(promotion.body).toMatchObject({ kind: 'promotions', id, status: 'completed', outcome: 'promoted' });
      expect(promotion.body.rows).toEqual([
        expect.objectContaining({
          hub: 'dps',
          before: `enrollment → ${stack.hosts.test}`,
          after: `enrollment → ${stack.hosts.production}`,
        }),
        expect.objectContaining({ hub: stack.hosts.test, before: 'enabled', after: 'absent', outcome: 'promoted' }),
        expect.objectContaining({ hub: stack.hosts.production, before: 'absent', after: 'enabled, connected' }),
      ]);
      const csv = await authed(stack.app, 'viewer')
        .get(`/v1/reports/promotions/${id}`)
        .set('Accept', 'text/csv')
        .expect(200);
      expect(parseCsv(csv.text, { columns: true })).toHaveLength(3);

      await authed(stack.app, 'operator')
        .post('/v1/revocations')
        .send({ registrationId: id, reason: 'lost' })
        .expect(202);
      await stack.temporal.client.workflow.getHandle(`revoke/${id}`).result();
      await authed(stack.app, 'admin')
        .post('/v1/reinstatements')
        .send({ registrationId: id, reason: 'found' })
        .expect(202);
      await stack.temporal.client.workflow.getHandle(`reinstate/${id}`).result();
      const reinstatement = await authed(stack.app, 'viewer')
        .get(`/v1/reports/reinstatements/${id}?format=json`)
        .expect(200);
      expect(reinstatement.body).toMatchObject({ kind: 'reinstatements', outcome: 'reinstated', reason: 'found' });
      expect(reinstatement.body.rows).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ hub: 'dps', after: 'enabled' }),
          expect.objectContaining({ hub: 'production', before: 'disabled', after: 'enabled', action: 'enabled' }),
        ]),
      );
    } finally {
      await device.stop();
    }
  });
});
