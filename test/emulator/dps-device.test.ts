/**
 * DPS device registration (2019-03-31) through the real ProvisioningDeviceClient, over HTTP and MQTT, with
 * symmetric-key, X.509 and X.509-CA attestation, against the in-process emulator.
 */
import { ProvisioningDeviceClient, type RegistrationResult } from 'azure-iot-provisioning-device';
import { Http } from 'azure-iot-provisioning-device-http';
import { Mqtt } from 'azure-iot-provisioning-device-mqtt';
import { MqttBase } from 'azure-iot-mqtt-base';
import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type { EnrollmentGroup, IndividualEnrollment } from 'azure-iot-provisioning-service/dist/interfaces';
import type { Query } from 'azure-iot-provisioning-service/dist/query';
import { SymmetricKeySecurityClient } from 'azure-iot-security-symmetric-key';
import { X509Security } from 'azure-iot-security-x509';
import { deriveDeviceKey, mintCertificate, startEmulator, type MintedCert, type RunningEmulator } from '../../emulator';
import { installAzureEndpointRouting } from '../../common/azure-routing';
import { configureDps } from '../../emulator/dps/runtime';
import { linkHubToDps, unlinkHubFromDps } from '../../emulator/dps/linked-hubs';
import { findDevice, patchReported, patchTwin } from '../../emulator/hub/registry';
import { addFaultRule, resetLimits } from '../../emulator/limits/decide';
import type { DeviceRecord } from '../../emulator/hub/model';
import type { HubState } from '../../emulator/state';

let emulator: RunningEmulator;
let uninstall: () => void;
let service: ProvisioningServiceClient;
let testHub: HubState;
let productionHub: HubState;

beforeAll(async () => {
  emulator = await startEmulator({ controlPort: false });
  uninstall = installAzureEndpointRouting({ address: emulator.address, caPem: emulator.caPem });
  service = ProvisioningServiceClient.fromConnectionString(emulator.connectionStrings.dps);
  // Azure answers `retry-after: 3`; polling at once keeps the suite fast.
  configureDps(emulator.state.dps, { retryAfterSeconds: 0 });
  testHub = emulator.state.hubs.get('test')!;
  productionHub = emulator.state.hubs.get('production')!;
});

afterAll(async () => {
  uninstall();
  await emulator.stop();
});

type Transport = 'http' | 'mqtt';
let counter = 0;
const uniqueId = (prefix: string): string => `${prefix}-${Date.now().toString(36)}-${(counter += 1)}`;

function transportOf(kind: Transport): Http | Mqtt {
  if (kind === 'http') return new Http();
  // The MQTT transport has no CA option of its own; its MqttBase takes one.
  const base = new MqttBase();
  base.setOptions({ ca: emulator.caPem });
  return new Mqtt(base as unknown as ConstructorParameters<typeof Mqtt>[0]);
}

function provisioningHost(kind: Transport): string {
  return kind === 'http' ? 'global.azure-devices-provisioning.net' : `127.0.0.1:${emulator.mqttPort}`;
}

function registerWithKey(kind: Transport, registrationId: string, key: string): Promise<RegistrationResult> {
  const client = ProvisioningDeviceClient.create(
    provisioningHost(kind),
    emulator.idScope,
    transportOf(kind),
    // The security package bundles its own azure-iot-common typings.
    new SymmetricKeySecurityClient(registrationId, key) as unknown as Parameters<
      typeof ProvisioningDeviceClient.create
    >[3],
  );
  return client.register() as Promise<RegistrationResult>;
}

function registerWithCert(kind: Transport, registrationId: string, cert: MintedCert): Promise<RegistrationResult> {
  const client = ProvisioningDeviceClient.create(
    provisioningHost(kind),
    emulator.idScope,
    transportOf(kind),
    new X509Security(registrationId, { cert: cert.chainPem, key: cert.keyPem }),
  );
  return client.register() as Promise<RegistrationResult>;
}

async function createEnrollment(fields: Record<string, unknown>): Promise<IndividualEnrollment> {
  return (await service.createOrUpdateIndividualEnrollment(fields as unknown as IndividualEnrollment)).responseBody;
}

async function symmetricEnrollment(extra: Record<string, unknown> = {}): Promise<{ id: string; key: string }> {
  const id = uniqueId('sym');
  const created = await createEnrollment({ registrationId: id, attestation: { type: 'symmetricKey' }, ...extra });
  return { id, key: created.attestation.symmetricKey!.primaryKey };
}

async function updateEnrollment(id: string, change: Record<string, unknown>): Promise<void> {
  const current = (await service.getIndividualEnrollment(id)).responseBody;
  const attestation = (await service.getIndividualEnrollmentAttestationMechanism(id)).responseBody;
  await service.createOrUpdateIndividualEnrollment({ ...current, attestation, ...change } as IndividualEnrollment);
}

async function createGroup(fields: Record<string, unknown>): Promise<EnrollmentGroup> {
  return (await service.createOrUpdateEnrollmentGroup(fields as unknown as EnrollmentGroup)).responseBody;
}

function hubDevice(hub: HubState, deviceId: string): DeviceRecord | undefined {
  return findDevice(hub, deviceId);
}

function hubByHost(host: string): HubState {
  return [testHub, productionHub].find((h) => h.hostName === host)!;
}

/** The SDKs bundle their own copies of azure-iot-common, so compare error classes by name. */
function expectSdkError(err: unknown, className: string): void {
  expect(err).toBeInstanceOf(Error);
  expect((err as Error).constructor.name).toBe(className);
}

const linkedHosts = (): string[] => [testHub.hostName, productionHub.hostName];

describe.each<Transport>(['http', 'mqtt'])('symmetric key over %s', (kind) => {
  it('provisions an individual enrollment into a linked hub with the enrollment keys', async () => {
    const { id, key } = await symmetricEnrollment({ initialTwin: { tags: { site: 'lab' } } });
    const result = await registerWithKey(kind, id, key);
    expect(result).toMatchObject({
      registrationId: id,
      deviceId: id,
      status: 'assigned',
      substatus: 'initialAssignment',
    });
    expect(linkedHosts()).toContain(result.assignedHub);

    const device = hubDevice(hubByHost(result.assignedHub), id)!;
    const attestation = (await service.getIndividualEnrollmentAttestationMechanism(id)).responseBody;
    expect(device.authentication).toEqual({
      type: 'sas',
      symmetricKey: attestation.symmetricKey,
      x509Thumbprint: { primaryThumbprint: null, secondaryThumbprint: null },
    });
    expect(device.twin.tags).toEqual({ site: 'lab' });

    const state = (await service.getDeviceRegistrationState(id)).responseBody;
    expect(state).toMatchObject({
      registrationId: id,
      status: 'assigned',
      assignedHub: result.assignedHub,
      etag: result.etag,
    });
    expect((await service.getIndividualEnrollment(id)).responseBody.registrationState).toMatchObject({
      status: 'assigned',
      deviceId: id,
    });
  });

  it('refuses a wrong key with 401 and records nothing', async () => {
    const { id } = await symmetricEnrollment();
    const wrong = Buffer.alloc(32, 7).toString('base64');
    const err = await registerWithKey(kind, id, wrong).catch((e: unknown) => e);
    expectSdkError(err, 'UnauthorizedError');
    const state = await service.getDeviceRegistrationState(id).catch((e: unknown) => e);
    expect((state as { response: { statusCode: number } }).response.statusCode).toBe(404);
  });

  it('fails the registration of a disabled enrollment with status disabled', async () => {
    const { id, key } = await symmetricEnrollment({ provisioningStatus: 'disabled' });
    const err = (await registerWithKey(kind, id, key).catch((e: unknown) => e)) as Error & {
      result?: { status: string };
    };
    // Azure answers status "disabled", which this SDK reports as an unexpected status.
    expect(err).toBeInstanceOf(Error);
    expect(err.result?.status).toBe('disabled');
    expect((await service.getDeviceRegistrationState(id)).responseBody.status).toBe('disabled');
    expect(hubDevice(testHub, id) ?? hubDevice(productionHub, id)).toBeUndefined();
  });
});

describe('symmetric-key enrollment groups', () => {
  it('derives each device key from the group key and lists the group registrations', async () => {
    const groupId = uniqueId('symgroup');
    const group = await createGroup({ enrollmentGroupId: groupId, attestation: { type: 'symmetricKey' } });
    const { primaryKey, secondaryKey } = group.attestation.symmetricKey!;
    const devices = [uniqueId('gdev'), uniqueId('gdev')];

    const first = await registerWithKey('http', devices[0], deriveDeviceKey(primaryKey, devices[0]));
    const second = await registerWithKey('mqtt', devices[1], deriveDeviceKey(secondaryKey, devices[1]));
    for (const [result, id] of [
      [first, devices[0]],
      [second, devices[1]],
    ] as const) {
      expect(result).toMatchObject({ deviceId: id, status: 'assigned', symmetricKey: { enrollmentGroupId: groupId } });
      expect(hubDevice(hubByHost(result.assignedHub), id)!.authentication.symmetricKey).toEqual({
        primaryKey: deriveDeviceKey(primaryKey, id),
        secondaryKey: deriveDeviceKey(secondaryKey, id),
      });
    }

    const query: Query = service.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, groupId);
    const states = await new Promise<Array<{ registrationId: string }>>((resolve, reject) =>
      query.next((err, result) =>
        err ? reject(err) : resolve(result as unknown as Array<{ registrationId: string }>),
      ),
    );
    expect(states.map((s) => s.registrationId).sort()).toEqual([...devices].sort());
  });

  it('refuses the group key itself and a key derived for another device', async () => {
    const group = await createGroup({ enrollmentGroupId: uniqueId('symgroup'), attestation: { type: 'symmetricKey' } });
    const groupKey = group.attestation.symmetricKey!.primaryKey;
    const id = uniqueId('gdev');
    expectSdkError(await registerWithKey('http', id, groupKey).catch((e: unknown) => e), 'UnauthorizedError');
    expectSdkError(
      await registerWithKey('http', id, deriveDeviceKey(groupKey, `${id}-other`)).catch((e: unknown) => e),
      'UnauthorizedError',
    );
  });

  it('checks an individual enrollment before the group: a disabled one blocks a group device', async () => {
    const group = await createGroup({ enrollmentGroupId: uniqueId('symgroup'), attestation: { type: 'symmetricKey' } });
    const id = uniqueId('blocked');
    const derived = deriveDeviceKey(group.attestation.symmetricKey!.primaryKey, id);
    await createEnrollment({
      registrationId: id,
      attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: derived, secondaryKey: derived } },
      provisioningStatus: 'disabled',
    });
    const err = (await registerWithKey('http', id, derived).catch((e: unknown) => e)) as {
      result?: { status: string };
    };
    expect(err.result?.status).toBe('disabled');

    // Once the individual enrollment is gone, the group admits the device again.
    await service.deleteIndividualEnrollment(id);
    expect((await registerWithKey('http', id, derived)).status).toBe('assigned');
  });

  it('refuses a group member whose registration id has a disabled individual enrollment with other keys', async () => {
    // DPS matches the individual enrollment first and does not fall back to the group.
    const group = await createGroup({ enrollmentGroupId: uniqueId('symgroup'), attestation: { type: 'symmetricKey' } });
    const id = uniqueId('blocked');
    const derived = deriveDeviceKey(group.attestation.symmetricKey!.primaryKey, id);
    await createEnrollment({
      registrationId: id,
      attestation: { type: 'symmetricKey' },
      provisioningStatus: 'disabled',
    });
    const err = await registerWithKey('mqtt', id, derived).catch((e: unknown) => e);
    expectSdkError(err, 'UnauthorizedError');
    expect(hubDevice(testHub, id) ?? hubDevice(productionHub, id)).toBeUndefined();
  });

  it('fails registrations of a disabled group', async () => {
    const group = await createGroup({
      enrollmentGroupId: uniqueId('symgroup'),
      attestation: { type: 'symmetricKey' },
      provisioningStatus: 'disabled',
    });
    const id = uniqueId('gdev');
    const err = (await registerWithKey(
      'mqtt',
      id,
      deriveDeviceKey(group.attestation.symmetricKey!.primaryKey, id),
    ).catch((e: unknown) => e)) as { result?: { status: string } };
    expect(err.result?.status).toBe('disabled');
  });

  it('provisions many devices of a group concurrently without losing one', async () => {
    const group = await createGroup({ enrollmentGroupId: uniqueId('symgroup'), attestation: { type: 'symmetricKey' } });
    const key = group.attestation.symmetricKey!.primaryKey;
    const ids = Array.from({ length: 20 }, () => uniqueId('fleet'));
    const results = await Promise.all(ids.map((id) => registerWithKey('http', id, deriveDeviceKey(key, id))));
    for (const [i, result] of results.entries()) {
      expect(result.status).toBe('assigned');
      expect(hubDevice(hubByHost(result.assignedHub), ids[i])).toBeDefined();
      expect(emulator.state.dps.registrations.get(ids[i].toLowerCase())?.status).toBe('assigned');
    }
  });
});

describe.each<Transport>(['http', 'mqtt'])('X.509 over %s', (kind) => {
  it('provisions an individual enrollment by certificate thumbprint, with either certificate', async () => {
    const id = uniqueId('x509');
    const primary = mintCertificate({ commonName: id });
    const secondary = mintCertificate({ commonName: id });
    await createEnrollment({
      registrationId: id,
      attestation: {
        type: 'x509',
        x509: {
          clientCertificates: {
            primary: { certificate: primary.certPem },
            secondary: { certificate: secondary.certPem },
          },
        },
      },
    });
    const result = await registerWithCert(kind, id, primary);
    expect(result).toMatchObject({ deviceId: id, status: 'assigned', substatus: 'initialAssignment' });
    const hub = hubByHost(result.assignedHub);
    expect(hubDevice(hub, id)!.authentication).toMatchObject({
      type: 'selfSigned',
      x509Thumbprint: { primaryThumbprint: primary.thumbprintSha1 },
    });

    const again = await registerWithCert(kind, id, secondary);
    expect(again).toMatchObject({ status: 'assigned', substatus: 'reprovisionedToInitialAssignment' });
    expect(hubDevice(hub, id)!.authentication.x509Thumbprint.primaryThumbprint).toBe(secondary.thumbprintSha1);
  });

  it('refuses a certificate that is not enrolled, and one whose common name is not the registration id', async () => {
    const id = uniqueId('x509');
    const enrolled = mintCertificate({ commonName: id });
    await createEnrollment({
      registrationId: id,
      attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: enrolled.certPem } } } },
    });
    const stranger = mintCertificate({ commonName: id });
    expectSdkError(await registerWithCert(kind, id, stranger).catch((e: unknown) => e), 'UnauthorizedError');
    const otherName = uniqueId('x509');
    expectSdkError(await registerWithCert(kind, otherName, enrolled).catch((e: unknown) => e), 'UnauthorizedError');
  });

  it('blocks one device of an enabled X.509 CA group with a disabled individual enrollment of its certificate', async () => {
    // how-to-revoke-device-access-portal, "Disallow specific devices in an enrollment group": "If the service finds a
    // disabled individual enrollment for the device, it prevents the device from connecting", even with an enabled
    // group for a CA in its chain. The rest of the group still registers.
    const root = mintCertificate({ commonName: uniqueId('root'), isCa: true });
    await createGroup({
      enrollmentGroupId: uniqueId('cagroup'),
      attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: root.certPem } } } },
    });
    const blockedId = uniqueId('leaf');
    const blocked = mintCertificate({ commonName: blockedId, issuer: root });
    await createEnrollment({
      registrationId: blockedId,
      attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: blocked.certPem } } } },
      provisioningStatus: 'disabled',
    });
    const refused = (await registerWithCert(kind, blockedId, blocked).catch((e: unknown) => e)) as {
      result?: { status: string };
    };
    expect(refused.result?.status).toBe('disabled');
    expect(hubDevice(testHub, blockedId) ?? hubDevice(productionHub, blockedId)).toBeUndefined();

    const otherId = uniqueId('leaf');
    const other = mintCertificate({ commonName: otherId, issuer: root });
    expect((await registerWithCert(kind, otherId, other)).status).toBe('assigned');
  });

  it('provisions a device of an X.509 CA group as a selfSigned device with its leaf thumbprint', async () => {
    const root = mintCertificate({ commonName: uniqueId('root'), isCa: true });
    const intermediate = mintCertificate({ commonName: uniqueId('intermediate'), isCa: true, issuer: root });
    const groupId = uniqueId('cagroup');
    await createGroup({
      enrollmentGroupId: groupId,
      attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: root.certPem } } } },
    });
    const id = uniqueId('leaf');
    const leaf = mintCertificate({ commonName: id, issuer: intermediate });
    const result = await registerWithCert(kind, id, leaf);
    expect(result).toMatchObject({ deviceId: id, status: 'assigned', x509: { enrollmentGroupId: groupId } });
    expect(hubDevice(hubByHost(result.assignedHub), id)!.authentication).toEqual({
      type: 'selfSigned',
      symmetricKey: { primaryKey: null, secondaryKey: null },
      x509Thumbprint: { primaryThumbprint: leaf.thumbprintSha1, secondaryThumbprint: leaf.thumbprintSha1 },
    });
    // A second registration (a resumed TLS session, where the server may not see the intermediates) still works.
    expect(await registerWithCert(kind, id, leaf)).toMatchObject({ substatus: 'reprovisionedToInitialAssignment' });

    const foreignRoot = mintCertificate({ commonName: uniqueId('foreign'), isCa: true });
    const foreignId = uniqueId('leaf');
    const foreign = mintCertificate({ commonName: foreignId, issuer: foreignRoot });
    expectSdkError(await registerWithCert(kind, foreignId, foreign).catch((e: unknown) => e), 'UnauthorizedError');
  });
});

/**
 * Microsoft's reprovisioning e2e test (azure-iot-sdk-csharp e2e/test/provisioning/ReprovisioningE2ETests.cs,
 * UpdateEnrollmentToForceReprovisionAsync) updates an enrollment with exactly what GET returned, keys redacted, plus
 * new iotHubs, and the device then registers with its original credentials.
 */
describe('an update that sends back what GET returned (ReprovisioningE2ETests: GET → change iotHubs → PUT)', () => {
  it('keeps the keys of an individual enrollment, so the device registers again with its original key', async () => {
    const { id, key } = await symmetricEnrollment({ allocationPolicy: 'static', iotHubs: [testHub.hostName] });
    const stored = (await service.getIndividualEnrollmentAttestationMechanism(id)).responseBody;
    expect((await registerWithKey('http', id, key)).assignedHub).toBe(testHub.hostName);

    const current = (await service.getIndividualEnrollment(id)).responseBody;
    expect(current.attestation.symmetricKey?.primaryKey).toBeUndefined();
    await service.createOrUpdateIndividualEnrollment({ ...current, iotHubs: [productionHub.hostName] });

    expect((await service.getIndividualEnrollmentAttestationMechanism(id)).responseBody).toEqual(stored);
    expect(await registerWithKey('mqtt', id, key)).toMatchObject({
      assignedHub: productionHub.hostName,
      substatus: 'deviceDataMigrated',
    });
  });

  it('keeps the keys of a symmetric-key group, so its devices keep their derived keys', async () => {
    const groupId = uniqueId('symgroup');
    const group = await createGroup({
      enrollmentGroupId: groupId,
      attestation: { type: 'symmetricKey' },
      allocationPolicy: 'static',
      iotHubs: [testHub.hostName],
    });
    const id = uniqueId('gdev');
    const derived = deriveDeviceKey(group.attestation.symmetricKey!.primaryKey, id);
    expect((await registerWithKey('http', id, derived)).assignedHub).toBe(testHub.hostName);

    const current = (await service.getEnrollmentGroup(groupId)).responseBody;
    await service.createOrUpdateEnrollmentGroup({ ...current, iotHubs: [productionHub.hostName] });

    expect((await service.getEnrollmentGroupAttestationMechanism(groupId)).responseBody.symmetricKey).toEqual(
      group.attestation.symmetricKey,
    );
    expect((await registerWithKey('http', id, derived)).assignedHub).toBe(productionHub.hostName);
  });

  it('keeps the signing certificate of an X.509 CA group, of which GET returns only the info', async () => {
    const root = mintCertificate({ commonName: uniqueId('root'), isCa: true });
    const groupId = uniqueId('cagroup');
    await createGroup({
      enrollmentGroupId: groupId,
      attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: root.certPem } } } },
      allocationPolicy: 'static',
      iotHubs: [testHub.hostName],
    });
    const id = uniqueId('leaf');
    const leaf = mintCertificate({ commonName: id, issuer: root });
    expect((await registerWithCert('http', id, leaf)).assignedHub).toBe(testHub.hostName);

    const current = (await service.getEnrollmentGroup(groupId)).responseBody;
    await service.createOrUpdateEnrollmentGroup({ ...current, iotHubs: [productionHub.hostName] });
    expect((await registerWithCert('http', id, leaf)).assignedHub).toBe(productionHub.hostName);
  });
});

describe('reprovisioning when the enrollment points to another hub', () => {
  async function provisionToTest(reprovisionPolicy: Record<string, boolean>): Promise<{ id: string; key: string }> {
    const enrollment = await symmetricEnrollment({
      allocationPolicy: 'static',
      iotHubs: [testHub.hostName],
      reprovisionPolicy,
      initialTwin: { tags: { stage: 'initial' }, properties: { desired: { interval: 60 } } },
    });
    const first = await registerWithKey('http', enrollment.id, enrollment.key);
    expect(first).toMatchObject({ assignedHub: testHub.hostName, substatus: 'initialAssignment' });
    // The device's life on the test hub: tags, desired and reported properties change.
    patchTwin(testHub, enrollment.id, { tags: { stage: 'tested' }, properties: { desired: { interval: 5 } } });
    patchReported(testHub, enrollment.id, { firmware: '1.2.3' });
    await updateEnrollment(enrollment.id, { iotHubs: [productionHub.hostName] });
    return enrollment;
  }

  it('moves the device and migrates its twin (deviceDataMigrated) by default', async () => {
    const { id, key } = await provisionToTest({ updateHubAssignment: true, migrateDeviceData: true });
    const deleted = new Promise<string>((resolve) =>
      emulator.state.events.once('deviceDeleted', (e) => resolve(`${e.hubName}/${e.deviceId}`)),
    );
    const result = await registerWithKey('mqtt', id, key);
    expect(result).toMatchObject({ assignedHub: productionHub.hostName, substatus: 'deviceDataMigrated' });
    const moved = hubDevice(productionHub, id)!;
    expect(moved.twin.tags).toEqual({ stage: 'tested' });
    expect(moved.twin.desired).toEqual({ interval: 5 });
    expect(moved.twin.reported).toEqual({ firmware: '1.2.3' });
    expect(hubDevice(testHub, id)).toBeUndefined();
    expect(await deleted).toBe(`test/${id}`);
    expect((await service.getDeviceRegistrationState(id)).responseBody).toMatchObject({
      assignedHub: productionHub.hostName,
      substatus: 'deviceDataMigrated',
    });
  });

  it('migrates from a disabled identity on the old hub: twin and versions carried, old identity removed', async () => {
    // The promotion's "disable" removal: the device is refused on the test hub, re-registers, and its data moves
    // (ReprovisioningE2ETests KeepTwin: migrated reported properties keep their version).
    const { id, key } = await provisionToTest({ updateHubAssignment: true, migrateDeviceData: true });
    const old = hubDevice(testHub, id)!;
    old.status = 'disabled';
    const reportedVersion = old.twin.reportedVersion;
    expect(reportedVersion).toBe(2);
    const result = await registerWithKey('http', id, key);
    expect(result).toMatchObject({ assignedHub: productionHub.hostName, substatus: 'deviceDataMigrated' });
    const moved = hubDevice(productionHub, id)!;
    expect(moved).toMatchObject({ status: 'enabled' });
    expect(moved.twin).toMatchObject({
      tags: { stage: 'tested' },
      desired: { interval: 5 },
      reported: { firmware: '1.2.3' },
      reportedVersion,
    });
    expect(hubDevice(testHub, id)).toBeUndefined();
  });

  it('reports deviceDataReset with the initial twin when the old hub has no identity left to migrate', async () => {
    // Azure does not document this case; deviceDataReset is the substatus whose definition matches ("its device data
    // was populated from the initial state stored in the enrollment"). See assign() in emulator/dps/registration.ts.
    const { id, key } = await provisionToTest({ updateHubAssignment: true, migrateDeviceData: true });
    testHub.devices.delete(id);
    const result = await registerWithKey('mqtt', id, key);
    expect(result).toMatchObject({ assignedHub: productionHub.hostName, substatus: 'deviceDataReset' });
    const moved = hubDevice(productionHub, id)!;
    expect(moved.twin).toMatchObject({ tags: { stage: 'initial' }, desired: { interval: 60 }, reported: {} });
    expect((await service.getDeviceRegistrationState(id)).responseBody.substatus).toBe('deviceDataReset');
  });

  it('moves the device with the initial twin (deviceDataReset) when data is not migrated', async () => {
    const { id, key } = await provisionToTest({ updateHubAssignment: true, migrateDeviceData: false });
    const result = await registerWithKey('http', id, key);
    expect(result).toMatchObject({ assignedHub: productionHub.hostName, substatus: 'deviceDataReset' });
    const moved = hubDevice(productionHub, id)!;
    expect(moved.twin.tags).toEqual({ stage: 'initial' });
    expect(moved.twin.desired).toEqual({ interval: 60 });
    expect(moved.twin.reported).toEqual({});
    // ReprovisioningE2ETests ResetTwin: no reported properties, at version 1.
    expect(moved.twin.reportedVersion).toBe(1);
    expect(hubDevice(testHub, id)).toBeUndefined();
  });

  it('keeps the device on its hub when the hub assignment is never updated', async () => {
    const { id, key } = await provisionToTest({ updateHubAssignment: false, migrateDeviceData: false });
    const result = await registerWithKey('http', id, key);
    expect(result).toMatchObject({ assignedHub: testHub.hostName, substatus: 'reprovisionedToInitialAssignment' });
    expect(hubDevice(testHub, id)!.twin.tags).toEqual({ stage: 'tested' });
    expect(hubDevice(productionHub, id)).toBeUndefined();
  });

  it('re-creates a device deleted from its hub when it registers again', async () => {
    const { id, key } = await symmetricEnrollment({ allocationPolicy: 'static', iotHubs: [testHub.hostName] });
    await registerWithKey('http', id, key);
    testHub.devices.delete(id);
    const again = await registerWithKey('http', id, key);
    expect(again).toMatchObject({ assignedHub: testHub.hostName, substatus: 'reprovisionedToInitialAssignment' });
    expect(hubDevice(testHub, id)?.status).toBe('enabled');
  });

  it('returns a device to its hub after its enrollment was disabled and enabled again', async () => {
    const { id, key } = await symmetricEnrollment({ allocationPolicy: 'static', iotHubs: [testHub.hostName] });
    await registerWithKey('http', id, key);
    await updateEnrollment(id, { provisioningStatus: 'disabled' });
    const refused = (await registerWithKey('http', id, key).catch((e: unknown) => e)) as {
      result?: { status: string };
    };
    expect(refused.result?.status).toBe('disabled');
    expect((await service.getDeviceRegistrationState(id)).responseBody).toMatchObject({
      status: 'disabled',
      assignedHub: testHub.hostName,
    });
    await updateEnrollment(id, { provisioningStatus: 'enabled' });
    expect(await registerWithKey('http', id, key)).toMatchObject({
      assignedHub: testHub.hostName,
      substatus: 'reprovisionedToInitialAssignment',
    });
  });

  it('keeps a device disabled in the hub disabled when it registers again', async () => {
    const { id, key } = await symmetricEnrollment({ allocationPolicy: 'static', iotHubs: [testHub.hostName] });
    await registerWithKey('http', id, key);
    hubDevice(testHub, id)!.status = 'disabled';
    expect((await registerWithKey('http', id, key)).status).toBe('assigned');
    expect(hubDevice(testHub, id)!.status).toBe('disabled');
  });
});

describe('allocation failures', () => {
  it('fails the registration when none of its hubs is linked any more', async () => {
    const { id, key } = await symmetricEnrollment({ allocationPolicy: 'static', iotHubs: [productionHub.hostName] });
    unlinkHubFromDps(emulator.state, productionHub.hostName);
    try {
      const err = (await registerWithKey('http', id, key).catch((e: unknown) => e)) as Error;
      expectSdkError(err, 'DeviceRegistrationFailedError');
      const state = (await service.getDeviceRegistrationState(id)).responseBody;
      expect(state).toMatchObject({ status: 'failed', errorCode: expect.any(Number) });
    } finally {
      linkHubToDps(emulator.state, productionHub);
    }
  });
});

describe('throttling and injected faults', () => {
  afterEach(() => resetLimits(emulator.state.limits));

  it('answers a throttled MQTT registration on the response topic, and the SDK retries it', async () => {
    const { id, key } = await symmetricEnrollment();
    addFaultRule(emulator.state.limits, { surface: 'dpsDevice', operation: 'register', status: 429, times: 1 });
    const transport = transportOf('mqtt') as Mqtt;
    // Without a retry-after on the fault, the SDK waits its polling interval before trying again.
    transport.setTransportOptions({ pollingInterval: 10 });
    const client = ProvisioningDeviceClient.create(
      provisioningHost('mqtt'),
      emulator.idScope,
      transport,
      new SymmetricKeySecurityClient(id, key) as unknown as Parameters<typeof ProvisioningDeviceClient.create>[3],
    );
    expect(await client.register()).toMatchObject({ status: 'assigned' });
    expect(emulator.state.limits.faults.rules).toHaveLength(0);
  });

  it('answers DPS quota exhaustion over HTTP with 429', async () => {
    const { id, key } = await symmetricEnrollment();
    emulator.state.limits.quotas = { enabled: true, scale: 1, overrides: { dpsRegistration: 1 } };
    expect((await registerWithKey('http', id, key)).status).toBe('assigned');
    expectSdkError(await registerWithKey('http', id, key).catch((e: unknown) => e), 'ThrottlingError');
  });
});
