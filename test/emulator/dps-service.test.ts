/**
 * DPS service REST (2021-10-01) through the real ProvisioningServiceClient against the in-process emulator.
 */
import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type { Query } from 'azure-iot-provisioning-service/dist/query';
import type {
  BulkEnrollmentOperation,
  BulkEnrollmentOperationResult,
  EnrollmentGroup,
  IndividualEnrollment,
} from 'azure-iot-provisioning-service/dist/interfaces';
import { installAzureEndpointRouting } from '../../common/azure-routing';
import { mintCertificate, startEmulator, type RunningEmulator } from '../../emulator';
import { createSasToken } from '../../emulator/security/sas';

let emulator: RunningEmulator;
let uninstall: () => void;
let client: ProvisioningServiceClient;

beforeAll(async () => {
  emulator = await startEmulator({ controlPort: false });
  uninstall = installAzureEndpointRouting({ address: emulator.address, caPem: emulator.caPem });
  client = ProvisioningServiceClient.fromConnectionString(emulator.connectionStrings.dps);
});

afterAll(async () => {
  uninstall();
  await emulator.stop();
});

let counter = 0;
const uniqueId = (prefix: string): string => `${prefix}-${Date.now().toString(36)}-${(counter += 1)}`;

/** The SDK types want every field; the service fills in the rest. */
const asEnrollment = (e: Record<string, unknown>): IndividualEnrollment => e as unknown as IndividualEnrollment;
const asGroup = (g: Record<string, unknown>): EnrollmentGroup => g as unknown as EnrollmentGroup;

function symmetricEnrollment(registrationId: string, extra: Record<string, unknown> = {}): IndividualEnrollment {
  return asEnrollment({ registrationId, attestation: { type: 'symmetricKey' }, ...extra });
}

/** The promise form of runBulkEnrollmentOperation never settles (SDK bug); use the callback form. */
function runBulk(operation: BulkEnrollmentOperation): Promise<BulkEnrollmentOperationResult> {
  return new Promise((resolve, reject) => {
    client.runBulkEnrollmentOperation(operation, (err, result) => (err ? reject(err) : resolve(result!)));
  });
}

/** The SDKs bundle their own copies of azure-iot-common, so compare error classes by name. */
function expectSdkError(err: unknown, className: string): void {
  expect(err).toBeInstanceOf(Error);
  expect((err as Error).constructor.name).toBe(className);
}

/** All pages of a query through the SDK (callback form: the promise form without a token restarts at page 1). */
async function allPages<T>(query: Query): Promise<{ pages: T[][]; itemTypes: unknown[] }> {
  const pages: T[][] = [];
  const itemTypes: unknown[] = [];
  while (query.hasMoreResults) {
    await new Promise<void>((resolve, reject) => {
      query.next((err, result, response) => {
        if (err) return reject(err);
        pages.push(result as unknown as T[]);
        itemTypes.push((response as { headers: Record<string, unknown> }).headers['x-ms-item-type']);
        resolve();
      });
    });
  }
  return { pages, itemTypes };
}

/** Status and DPS error body of a failed SDK call. */
function failure(err: unknown): { status: number; errorCode: number } {
  const e = err as { response?: { statusCode: number }; responseBody?: string };
  return { status: e.response?.statusCode ?? 0, errorCode: JSON.parse(e.responseBody ?? '{}').errorCode };
}

describe('individual enrollments', () => {
  it('generates 64-byte keys for an empty symmetric-key attestation and returns them only from the attestation call', async () => {
    const id = uniqueId('gen');
    const created = (await client.createOrUpdateIndividualEnrollment(symmetricEnrollment(id))).responseBody;
    const keys = created.attestation.symmetricKey!;
    expect(Buffer.from(keys.primaryKey, 'base64')).toHaveLength(64);
    expect(Buffer.from(keys.secondaryKey, 'base64')).toHaveLength(64);
    expect(keys.primaryKey).not.toEqual(keys.secondaryKey);
    expect(created).toMatchObject({
      registrationId: id,
      provisioningStatus: 'enabled',
      reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: true },
      capabilities: { iotEdge: false },
    });
    expect(created.etag).toEqual(expect.any(String));

    const fetched = (await client.getIndividualEnrollment(id)).responseBody;
    expect(fetched.etag).toBe(created.etag);
    expect(fetched.attestation).toEqual({ type: 'symmetricKey', symmetricKey: {} });

    const attestation = (await client.getIndividualEnrollmentAttestationMechanism(id)).responseBody;
    expect(attestation.symmetricKey).toEqual(keys);
  });

  it('rejects supplied symmetric keys that are not base64 of 16 to 64 bytes', async () => {
    const tooShort = Buffer.alloc(8, 1).toString('base64');
    const err = await client
      .createOrUpdateIndividualEnrollment(
        asEnrollment({
          registrationId: uniqueId('badkey'),
          attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: tooShort, secondaryKey: tooShort } },
        }),
      )
      .catch((e: unknown) => e);
    expectSdkError(err, 'ArgumentError');
    expect(failure(err)).toEqual({ status: 400, errorCode: 400004 });
  });

  it('answers 409 to a create over an existing enrollment and 412 to a stale etag, and updates with the current one', async () => {
    const id = uniqueId('etag');
    const first = (await client.createOrUpdateIndividualEnrollment(symmetricEnrollment(id))).responseBody;

    const conflict = await client.createOrUpdateIndividualEnrollment(symmetricEnrollment(id)).catch((e: unknown) => e);
    expectSdkError(conflict, 'DeviceAlreadyExistsError');
    expect(failure(conflict).status).toBe(409);

    const updated = (
      await client.createOrUpdateIndividualEnrollment({ ...first, provisioningStatus: 'disabled', deviceId: 'dev-x' })
    ).responseBody;
    expect(updated.provisioningStatus).toBe('disabled');
    expect(updated.deviceId).toBe('dev-x');
    expect(updated.etag).not.toBe(first.etag);
    expect(updated.createdDateTimeUtc).toBe(first.createdDateTimeUtc);

    const stale = await client.createOrUpdateIndividualEnrollment(first).catch((e: unknown) => e);
    expectSdkError(stale, 'InvalidEtagError');
    expect(failure(stale).status).toBe(412);

    const staleDelete = await client.deleteIndividualEnrollment(id, first.etag).catch((e: unknown) => e);
    expectSdkError(staleDelete, 'InvalidEtagError');

    await client.deleteIndividualEnrollment(id, updated.etag);
    const gone = await client.getIndividualEnrollment(id).catch((e: unknown) => e);
    expect(failure(gone)).toEqual({ status: 404, errorCode: 404201 });
  });

  it('deletes under If-Match: an enrollment object carries its etag (412 when stale), "*" or none deletes', async () => {
    // Revocation deletes only the enrollment it validated; DPS answers 412 PreconditionFailed to a stale etag.
    const id = uniqueId('del');
    const first = (await client.createOrUpdateIndividualEnrollment(symmetricEnrollment(id))).responseBody;
    const second = (await client.createOrUpdateIndividualEnrollment({ ...first, provisioningStatus: 'disabled' }))
      .responseBody;
    const stale = await client.deleteIndividualEnrollment(first).catch((e: unknown) => e);
    expect(failure(stale)).toEqual({ status: 412, errorCode: 412201 });
    expect((await client.getIndividualEnrollment(id)).responseBody.etag).toBe(second.etag);
    await client.deleteIndividualEnrollment(second);
    expect(failure(await client.getIndividualEnrollment(id).catch((e: unknown) => e)).status).toBe(404);

    const other = uniqueId('del');
    await client.createOrUpdateIndividualEnrollment(symmetricEnrollment(other));
    await client.deleteIndividualEnrollment(other, '*');
    expect(failure(await client.deleteIndividualEnrollment(other).catch((e: unknown) => e)).status).toBe(404);
  });

  it('stores X.509 client certificates as info with thumbprints and never returns the certificate', async () => {
    const id = uniqueId('x509');
    const device = mintCertificate({ commonName: id });
    const created = (
      await client.createOrUpdateIndividualEnrollment(
        asEnrollment({
          registrationId: id,
          attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: device.certPem } } } },
        }),
      )
    ).responseBody;
    const primary = created.attestation.x509!.clientCertificates!.primary;
    expect(primary.certificate).toBeUndefined();
    expect(primary.info).toMatchObject({
      subjectName: `CN=${id}`,
      sha1Thumbprint: device.thumbprintSha1,
      sha256Thumbprint: device.thumbprintSha256,
      version: 3,
    });
  });

  it('rejects a certificate that does not parse and hubs that are not linked', async () => {
    const badCert = await client
      .createOrUpdateIndividualEnrollment(
        asEnrollment({
          registrationId: uniqueId('badcert'),
          attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: 'not a cert' } } } },
        }),
      )
      .catch((e: unknown) => e);
    expectSdkError(badCert, 'ArgumentError');

    const unlinked = await client
      .createOrUpdateIndividualEnrollment(symmetricEnrollment(uniqueId('hub'), { iotHubs: ['nope.azure-devices.net'] }))
      .catch((e: unknown) => e);
    expectSdkError(unlinked, 'ArgumentError');
  });

  it('accepts a token whose sr is a path prefix of the call, like the hub does', async () => {
    const dpsHost = emulator.state.dps.hostName;
    const owner = emulator.state.dps.policies.find((p) => p.keyName === 'provisioningserviceowner')!;
    const id = uniqueId('scoped');
    await client.createOrUpdateIndividualEnrollment(symmetricEnrollment(id));
    const scopedTo = (resource: string): ProvisioningServiceClient =>
      new ProvisioningServiceClient({
        host: dpsHost,
        sharedAccessSignature: createSasToken({ resource, key: owner.primaryKey, keyName: owner.keyName }),
      });
    await expect(scopedTo(`${dpsHost}/enrollments`).getIndividualEnrollment(id)).resolves.toBeDefined();
    await expect(scopedTo(`${dpsHost}/enrollments/${id}`).getIndividualEnrollment(id)).resolves.toBeDefined();
    expectSdkError(
      await scopedTo(`${dpsHost}/enrollmentGroups`)
        .getIndividualEnrollment(id)
        .catch((e: unknown) => e),
      'UnauthorizedError',
    );
  });

  it('refuses a wrong key, an expired token and a read-only policy writing', async () => {
    const dpsHost = emulator.state.dps.hostName;
    const owner = emulator.state.dps.policies.find((p) => p.keyName === 'provisioningserviceowner')!;
    const reader = emulator.state.dps.policies.find((p) => p.keyName === 'enrollmentread')!;
    const withToken = (token: string): ProvisioningServiceClient =>
      new ProvisioningServiceClient({ host: dpsHost, sharedAccessSignature: token });

    const wrongKey = createSasToken({ resource: dpsHost, key: reader.primaryKey, keyName: owner.keyName });
    const expired = createSasToken({
      resource: dpsHost,
      key: owner.primaryKey,
      keyName: owner.keyName,
      expiry: Math.floor(Date.now() / 1000) - 10,
    });
    const readOnly = createSasToken({ resource: dpsHost, key: reader.primaryKey, keyName: reader.keyName });

    for (const token of [wrongKey, expired]) {
      const err = await withToken(token)
        .getIndividualEnrollment('anything')
        .catch((e: unknown) => e);
      expectSdkError(err, 'UnauthorizedError');
    }
    const readOnlyClient = withToken(readOnly);
    const notFound = await readOnlyClient.getIndividualEnrollment(uniqueId('missing')).catch((e: unknown) => e);
    expect(failure(notFound).status).toBe(404);
    const write = await readOnlyClient
      .createOrUpdateIndividualEnrollment(symmetricEnrollment(uniqueId('ro')))
      .catch((e: unknown) => e);
    expectSdkError(write, 'UnauthorizedError');
  });
});

describe('enrollment groups', () => {
  it('creates, reads (keys only through the attestation call), updates with If-Match and deletes a group', async () => {
    const id = uniqueId('group');
    const created = (
      await client.createOrUpdateEnrollmentGroup(
        asGroup({
          enrollmentGroupId: id,
          attestation: { type: 'symmetricKey' },
          reprovisionPolicy: { updateHubAssignment: false },
        }),
      )
    ).responseBody;
    expect(created.reprovisionPolicy).toEqual({ updateHubAssignment: false, migrateDeviceData: true });
    const keys = created.attestation.symmetricKey!;

    const fetched = (await client.getEnrollmentGroup(id)).responseBody;
    expect(fetched.attestation.symmetricKey).toEqual({});
    // The SDK asks for /enrollmentgroups/{id}/attestationmechanism in lower case.
    const attestation = (await client.getEnrollmentGroupAttestationMechanism(id)).responseBody;
    expect(attestation.symmetricKey).toEqual(keys);

    const conflict = await client
      .createOrUpdateEnrollmentGroup(asGroup({ enrollmentGroupId: id, attestation: { type: 'symmetricKey' } }))
      .catch((e: unknown) => e);
    expectSdkError(conflict, 'DeviceAlreadyExistsError');

    const updated = (
      await client.createOrUpdateEnrollmentGroup({ ...fetched, attestation, provisioningStatus: 'disabled' })
    ).responseBody;
    expect(updated.provisioningStatus).toBe('disabled');
    expect((await client.getEnrollmentGroupAttestationMechanism(id)).responseBody.symmetricKey).toEqual(keys);

    const stale = await client.deleteEnrollmentGroup(id, created.etag!).catch((e: unknown) => e);
    expectSdkError(stale, 'InvalidEtagError');
    await client.deleteEnrollmentGroup(id);
    expect(failure(await client.getEnrollmentGroup(id).catch((e: unknown) => e))).toEqual({
      status: 404,
      errorCode: 404202,
    });
  });

  it('accepts signing certificates for an X.509 CA group and refuses client certificates and TPM', async () => {
    const ca = mintCertificate({ commonName: 'group ca', isCa: true });
    const created = (
      await client.createOrUpdateEnrollmentGroup(
        asGroup({
          enrollmentGroupId: uniqueId('cagroup'),
          attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: ca.certPem } } } },
        }),
      )
    ).responseBody;
    expect(created.attestation.x509!.signingCertificates!.primary.info!.sha1Thumbprint).toBe(ca.thumbprintSha1);

    for (const attestation of [
      { type: 'x509', x509: { clientCertificates: { primary: { certificate: ca.certPem } } } },
      { type: 'tpm', tpm: { endorsementKey: 'AToAAQAL' } },
    ]) {
      const err = await client
        .createOrUpdateEnrollmentGroup(asGroup({ enrollmentGroupId: uniqueId('badgroup'), attestation }))
        .catch((e: unknown) => e);
      expectSdkError(err, 'ArgumentError');
    }
  });
});

describe('bulk enrollment operations', () => {
  it('creates, updates, updates-if-match and deletes, reporting per-enrollment errors', async () => {
    const ids = [uniqueId('bulk'), uniqueId('bulk'), uniqueId('bulk')];
    const created = await runBulk({ mode: 'create', enrollments: ids.map((id) => symmetricEnrollment(id)) });
    expect(created).toEqual({ isSuccessful: true, errors: [] });

    const again = await runBulk({ mode: 'create', enrollments: [symmetricEnrollment(ids[0])] });
    expect(again.isSuccessful).toBe(false);
    expect(again.errors).toEqual([{ registrationId: ids[0], errorCode: 409201, errorStatus: expect.any(String) }]);

    const updated = await runBulk({
      mode: 'update',
      enrollments: [symmetricEnrollment(ids[0], { provisioningStatus: 'disabled' })],
    });
    expect(updated.isSuccessful).toBe(true);
    expect((await client.getIndividualEnrollment(ids[0])).responseBody.provisioningStatus).toBe('disabled');

    const current = (await client.getIndividualEnrollment(ids[1])).responseBody;
    const ifMatch = await runBulk({
      mode: 'updateIfMatchEtag',
      enrollments: [
        symmetricEnrollment(ids[1], { etag: current.etag, deviceId: 'bulk-device' }),
        symmetricEnrollment(ids[2], { etag: current.etag }),
      ],
    });
    expect(ifMatch.isSuccessful).toBe(false);
    expect(ifMatch.errors).toEqual([{ registrationId: ids[2], errorCode: 412201, errorStatus: expect.any(String) }]);
    expect((await client.getIndividualEnrollment(ids[1])).responseBody.deviceId).toBe('bulk-device');

    const deleted = await runBulk({ mode: 'delete', enrollments: ids.map((id) => symmetricEnrollment(id)) });
    expect(deleted.isSuccessful).toBe(true);
    for (const id of ids)
      expect(failure(await client.getIndividualEnrollment(id).catch((e: unknown) => e)).status).toBe(404);
  });

  it('refuses an empty bulk and one of more than 10 enrollments', async () => {
    const eleven = Array.from({ length: 11 }, () => symmetricEnrollment(uniqueId('many')));
    for (const enrollments of [[], eleven]) {
      const err = await runBulk({ mode: 'create', enrollments }).catch((e: unknown) => e);
      expectSdkError(err, 'ArgumentError');
    }
    expect(emulator.state.dps.enrollments.has(eleven[0].registrationId.toLowerCase())).toBe(false);
  });
});

describe('queries', () => {
  it('pages enrollments by x-ms-max-item-count and drops the continuation token on the last page', async () => {
    const prefix = uniqueId('page');
    const ids = Array.from({ length: 7 }, (_, i) => `${prefix}-${i}`);
    await Promise.all(ids.map((id) => client.createOrUpdateIndividualEnrollment(symmetricEnrollment(id))));

    const query = client.createIndividualEnrollmentQuery({ query: '*' }, 3);
    const { pages, itemTypes } = await allPages<IndividualEnrollment>(query);
    const pageSizes = pages.map((p) => p.length);
    const seen = pages.flat().map((e) => e.registrationId);
    expect(new Set(itemTypes)).toEqual(new Set(['Enrollment']));
    expect(pageSizes.every((n) => n <= 3)).toBe(true);
    expect(pageSizes[pageSizes.length - 1]).toBeGreaterThan(0);
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen).toEqual(expect.arrayContaining(ids));
    expect(query.continuationToken).toBeUndefined();
  });

  it('pages enrollment groups', async () => {
    const prefix = uniqueId('gpage');
    for (let i = 0; i < 3; i += 1) {
      await client.createOrUpdateEnrollmentGroup(
        asGroup({ enrollmentGroupId: `${prefix}-${i}`, attestation: { type: 'symmetricKey' } }),
      );
    }
    const { pages } = await allPages<EnrollmentGroup>(client.createEnrollmentGroupQuery({ query: '*' }, 2));
    expect(pages.every((p) => p.length <= 2)).toBe(true);
    const seen = pages.flat().map((g) => g.enrollmentGroupId);
    expect(seen.filter((id) => id.startsWith(prefix))).toHaveLength(3);
  });
});

describe('concurrency', () => {
  it('loses no enrollment when single and bulk creates run in parallel', async () => {
    const prefix = uniqueId('conc');
    const singles = Array.from({ length: 30 }, (_, i) => `${prefix}-s${i}`);
    const bulks = Array.from({ length: 5 }, (_, b) => Array.from({ length: 10 }, (_, i) => `${prefix}-b${b}-${i}`));
    await Promise.all([
      ...singles.map((id) => client.createOrUpdateIndividualEnrollment(symmetricEnrollment(id))),
      ...bulks.map((ids) => runBulk({ mode: 'create', enrollments: ids.map((id) => symmetricEnrollment(id)) })),
    ]);
    for (const id of [...singles, ...bulks.flat()]) {
      expect(emulator.state.dps.enrollments.has(id.toLowerCase())).toBe(true);
    }
  });

  it('lets exactly one of several concurrent If-Match updates with the same etag win', async () => {
    const id = uniqueId('race');
    const created = (await client.createOrUpdateIndividualEnrollment(symmetricEnrollment(id))).responseBody;
    const attempts = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) =>
        client.createOrUpdateIndividualEnrollment({ ...created, deviceId: `winner-${i}` }),
      ),
    );
    expect(attempts.filter((a) => a.status === 'fulfilled')).toHaveLength(1);
    for (const a of attempts.filter((x) => x.status === 'rejected')) {
      expectSdkError((a as PromiseRejectedResult).reason, 'InvalidEtagError');
    }
  });
});
