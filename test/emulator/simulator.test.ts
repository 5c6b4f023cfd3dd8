/**
 * The device simulator (real azure-iot-provisioning-device + azure-iot-device SDKs) against the in-process
 * emulator: each attestation kind provisions through DPS and connects; when its enrollment is re-pointed to the
 * other hub and it is removed from its hub, it re-registers there on its own.
 */
import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type { EnrollmentGroup, IndividualEnrollment } from 'azure-iot-provisioning-service/dist/interfaces';
import { Registry } from 'azure-iothub';
import { mintCertificate } from '../../emulator/security/certs';
import { configureDps } from '../../emulator/dps/runtime';
import { deviceBroker } from '../../emulator/mqtt/listener';
import { installAzureEndpointRouting } from '../../common/azure-routing';
import { startEmulator, type RunningEmulator } from '../../emulator/server';
import { SimulatedDevice, type Attestation, type SimulatorEvent } from '../../emulator/simulator/device';
import { numberedRegistrationIds, startFleet, type Fleet } from '../../emulator/simulator/fleet';

let emulator: RunningEmulator;
let uninstallRouting: () => void;
let service: ProvisioningServiceClient;
let registries: Record<'test' | 'production', Registry>;
let hosts: Record<'test' | 'production', string>;
const running: Array<SimulatedDevice | Fleet> = [];
let counter = 0;
const uniqueId = (prefix: string): string => `${prefix}-${Date.now().toString(36)}-${++counter}`;

beforeAll(async () => {
  emulator = await startEmulator({ controlPort: false });
  uninstallRouting = installAzureEndpointRouting({ address: emulator.address, caPem: emulator.caPem });
  service = ProvisioningServiceClient.fromConnectionString(emulator.connectionStrings.dps);
  configureDps(emulator.state.dps, { retryAfterSeconds: 0 });
  registries = {
    test: Registry.fromConnectionString(emulator.connectionStrings.hubs.test),
    production: Registry.fromConnectionString(emulator.connectionStrings.hubs.production),
  };
  hosts = {
    test: emulator.state.hubs.get('test')!.hostName,
    production: emulator.state.hubs.get('production')!.hostName,
  };
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop()));
});

afterAll(async () => {
  uninstallRouting();
  await emulator.stop();
});

function simulate(
  registrationId: string,
  attestation: Attestation,
  dpsTransport: 'http' | 'mqtt',
  backoff = { initialMs: 50, maxMs: 400 },
): SimulatedDevice {
  const address = `127.0.0.1:${emulator.mqttPort}`;
  const device = new SimulatedDevice({
    registrationId,
    idScope: emulator.idScope,
    attestation,
    dpsTransport,
    dpsMqttAddress: address,
    hubMqttAddress: address,
    ca: emulator.caPem,
    backoff,
    reportedProperties: { simulator: true },
  });
  running.push(device);
  return device.start();
}

const connectedTo =
  (host: string) =>
  (e: SimulatorEvent): boolean =>
    e.type === 'connected' && e.hub === host;

/** `x509Attestation`: DPS returns X.509 attestations without the certificates, so updates send them again. */
type Enrollment = { kind: 'individual' | 'group'; id: string; x509Attestation?: Record<string, unknown> };

/** Re-points an enrollment to `host` (static allocation), keeping its attestation. */
async function repoint(enrollment: Enrollment, host: string): Promise<void> {
  if (enrollment.kind === 'individual') {
    const current = (await service.getIndividualEnrollment(enrollment.id)).responseBody;
    const attestation =
      enrollment.x509Attestation ??
      (await service.getIndividualEnrollmentAttestationMechanism(enrollment.id)).responseBody;
    await service.createOrUpdateIndividualEnrollment({
      ...current,
      attestation,
      iotHubs: [host],
      allocationPolicy: 'static',
    } as IndividualEnrollment);
  } else {
    const current = (await service.getEnrollmentGroup(enrollment.id)).responseBody;
    const attestation =
      enrollment.x509Attestation ?? (await service.getEnrollmentGroupAttestationMechanism(enrollment.id)).responseBody;
    await service.createOrUpdateEnrollmentGroup({
      ...current,
      attestation,
      iotHubs: [host],
      allocationPolicy: 'static',
    } as EnrollmentGroup);
  }
}

const toTest = (): Record<string, unknown> => ({ iotHubs: [hosts.test], allocationPolicy: 'static' });

/**
 * The promotion path the seed describes: the device runs on the test hub; the operator re-points its enrollment to
 * production and removes it from the test hub; the device is rejected on reconnect, re-runs DPS, and lands on
 * production with the substatus the reprovision policy and the removal imply (a deleted identity leaves nothing to
 * migrate).
 */
async function expectMovesToProduction(
  device: SimulatedDevice,
  enrollment: Enrollment,
  removal: 'delete' | 'disable',
  substatus: string,
): Promise<void> {
  await device.waitFor(connectedTo(hosts.test));
  const deviceId = device.state.deviceId!;
  const onTest = (await registries.test.get(deviceId)).responseBody;
  expect(onTest.connectionState).toBe('Connected');

  await repoint(enrollment, hosts.production);
  if (removal === 'delete') await registries.test.delete(deviceId);
  else await registries.test.update({ ...onTest, status: 'disabled' });

  await device.waitFor(connectedTo(hosts.production));
  expect(device.state).toMatchObject({ assignedHub: hosts.production, connected: true, phase: 'connected' });
  const types = device.state.history.map((e) => `${e.type}${'hub' in e ? `@${e.hub}` : ''}`);
  expect(types).toEqual(
    expect.arrayContaining([
      `connected@${hosts.test}`,
      `disconnected@${hosts.test}`,
      `connectFailed@${hosts.test}`,
      `connected@${hosts.production}`,
    ]),
  );
  const reprovisioned = device.state.history.filter(
    (e): e is Extract<SimulatorEvent, { type: 'provisioned' }> => e.type === 'provisioned',
  );
  expect(reprovisioned.map((e) => e.assignedHub)).toEqual([hosts.test, hosts.production]);
  expect(reprovisioned[1].substatus).toBe(substatus);
  await device.waitFor((e) => e.type === 'twinReported' && e.hub === hosts.production);
  const onProduction = await registries.production.get(deviceId);
  expect(onProduction.responseBody.connectionState).toBe('Connected');
  expect((await registries.production.getTwin(deviceId)).responseBody.properties.reported.simulator).toBe(true);
}

describe('simulated devices', () => {
  it('symmetric key (DPS over HTTP) moves to production when removed from the test hub', async () => {
    const registrationId = uniqueId('sim-sk');
    const created = await service.createOrUpdateIndividualEnrollment({
      registrationId,
      attestation: { type: 'symmetricKey' },
      ...toTest(),
    } as unknown as IndividualEnrollment);
    const device = simulate(
      registrationId,
      { type: 'symmetricKey', key: created.responseBody.attestation.symmetricKey!.primaryKey },
      'http',
    );
    // Deleted from the test hub first: nothing is left to migrate, so its data is reset (emulator/dps/registration.ts).
    await expectMovesToProduction(device, { kind: 'individual', id: registrationId }, 'delete', 'deviceDataReset');
  });

  it('group-derived symmetric key (DPS over MQTT) moves when disabled on the test hub, resetting its data', async () => {
    const groupId = uniqueId('sim-group');
    const group = await service.createOrUpdateEnrollmentGroup({
      enrollmentGroupId: groupId,
      attestation: { type: 'symmetricKey' },
      reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: false },
      ...toTest(),
    } as unknown as EnrollmentGroup);
    const device = simulate(
      uniqueId('sim-gk'),
      { type: 'symmetricKeyGroup', groupKey: group.responseBody.attestation.symmetricKey!.primaryKey },
      'mqtt',
    );
    await expectMovesToProduction(device, { kind: 'group', id: groupId }, 'disable', 'deviceDataReset');
  });

  it('X.509 client certificate (DPS over HTTP) moves to production when disabled on the test hub, migrating its data', async () => {
    const registrationId = uniqueId('sim-x509');
    const cert = mintCertificate({ commonName: registrationId });
    const attestation = { type: 'x509', x509: { clientCertificates: { primary: { certificate: cert.certPem } } } };
    await service.createOrUpdateIndividualEnrollment({
      registrationId,
      attestation,
      ...toTest(),
    } as unknown as IndividualEnrollment);
    const device = simulate(registrationId, { type: 'x509', certPem: cert.certPem, keyPem: cert.keyPem }, 'http');
    await expectMovesToProduction(
      device,
      { kind: 'individual', id: registrationId, x509Attestation: attestation },
      'disable',
      'deviceDataMigrated',
    );
  });

  it('X.509 CA chain (DPS over MQTT) moves to production when removed from the test hub', async () => {
    const root = mintCertificate({ commonName: uniqueId('sim-root'), isCa: true });
    const intermediate = mintCertificate({ commonName: uniqueId('sim-int'), isCa: true, issuer: root });
    const groupId = uniqueId('sim-ca');
    const attestation = { type: 'x509', x509: { signingCertificates: { primary: { certificate: root.certPem } } } };
    await service.createOrUpdateEnrollmentGroup({
      enrollmentGroupId: groupId,
      attestation,
      ...toTest(),
    } as unknown as EnrollmentGroup);
    const registrationId = uniqueId('sim-leaf');
    const leaf = mintCertificate({ commonName: registrationId, issuer: intermediate });
    const device = simulate(registrationId, { type: 'x509', certPem: leaf.chainPem, keyPem: leaf.keyPem }, 'mqtt');
    await expectMovesToProduction(
      device,
      { kind: 'group', id: groupId, x509Attestation: attestation },
      'delete',
      'deviceDataReset',
    );
  });

  it('asks DPS again at once when its hub refuses it, however long its back-off', async () => {
    // The seed's step 5: removed from the test hub, the device re-registers and shows up on production. A refusal is
    // answered by re-registration (DPS how-to-troubleshoot-dps), not by the back-off meant for failures.
    const registrationId = uniqueId('sim-prompt');
    const created = await service.createOrUpdateIndividualEnrollment({
      registrationId,
      attestation: { type: 'symmetricKey' },
      ...toTest(),
    } as unknown as IndividualEnrollment);
    const device = simulate(
      registrationId,
      { type: 'symmetricKey', key: created.responseBody.attestation.symmetricKey!.primaryKey },
      'http',
      { initialMs: 30_000, maxMs: 60_000 },
    );
    await device.waitFor(connectedTo(hosts.test));
    await repoint({ kind: 'individual', id: registrationId }, hosts.production);
    const removed = Date.now();
    await registries.test.delete(registrationId);
    const connected = await device.waitFor(connectedTo(hosts.production), 5_000);
    expect(Date.parse(connected.time) - removed).toBeLessThan(5_000);
    expect(device.state.history).toContainEqual(
      expect.objectContaining({ type: 'connectFailed', hub: hosts.test, refused: true }),
    );
  });

  it('retries its hub with back-off when a connection fails without a refusal, and keeps its assignment', async () => {
    const registrationId = uniqueId('sim-flaky');
    const created = await service.createOrUpdateIndividualEnrollment({
      registrationId,
      attestation: { type: 'symmetricKey' },
      ...toTest(),
    } as unknown as IndividualEnrollment);
    const device = simulate(
      registrationId,
      { type: 'symmetricKey', key: created.responseBody.attestation.symmetricKey!.primaryKey },
      'http',
    );
    await device.waitFor(connectedTo(hosts.test));
    // Two connection attempts die without a CONNACK, as over a failing network.
    emulator.faults.addRule({ surface: 'mqtt', hub: 'test', operation: 'connect', status: 0, times: 2 });
    deviceBroker(emulator.state)!.disconnectDevice('test', device.state.deviceId!);
    await device.waitFor(
      (e) => e.type === 'connected' && device.state.history.filter((h) => h.type === 'connected').length === 2,
    );
    const failed = device.state.history.filter((e) => e.type === 'connectFailed');
    expect(failed).toHaveLength(2);
    expect(failed.every((e) => e.type === 'connectFailed' && !e.refused)).toBe(true);
    expect(device.state.history.filter((e) => e.type === 'provisioned')).toHaveLength(1);
  });

  it('reconnects to the same hub without re-provisioning when merely dropped', async () => {
    const registrationId = uniqueId('sim-drop');
    const created = await service.createOrUpdateIndividualEnrollment({
      registrationId,
      attestation: { type: 'symmetricKey' },
      ...toTest(),
    } as unknown as IndividualEnrollment);
    const device = simulate(
      registrationId,
      { type: 'symmetricKey', key: created.responseBody.attestation.symmetricKey!.primaryKey },
      'http',
    );
    await device.waitFor(connectedTo(hosts.test));
    expect(deviceBroker(emulator.state)!.disconnectDevice('test', device.state.deviceId!)).toBe(1);
    await device.waitFor((e) => e.type === 'disconnected');
    await device.waitFor(
      (e) => e.type === 'connected' && device.state.history.filter((h) => h.type === 'connected').length === 2,
    );
    expect(device.state.history.filter((e) => e.type === 'provisioned')).toHaveLength(1);
    expect(device.state.history.some((e) => e.type === 'connectFailed')).toBe(false);
  });

  it('keeps retrying DPS with back-off while its enrollment is disabled, and stops cleanly', async () => {
    const registrationId = uniqueId('sim-off');
    const created = await service.createOrUpdateIndividualEnrollment({
      registrationId,
      attestation: { type: 'symmetricKey' },
      provisioningStatus: 'disabled',
    } as unknown as IndividualEnrollment);
    const device = simulate(
      registrationId,
      { type: 'symmetricKey', key: created.responseBody.attestation.symmetricKey!.primaryKey },
      'http',
    );
    await device.waitFor(() => device.state.history.filter((e) => e.type === 'provisioningFailed').length >= 2, 10_000);
    await device.stop();
    expect(device.state.phase).toBe('stopped');
    expect(device.state.history.some((e) => e.type === 'connected')).toBe(false);
  });

  it('runs a fleet that provisions through one enrollment group and spreads over the linked hubs', async () => {
    const group = await service.createOrUpdateEnrollmentGroup({
      enrollmentGroupId: uniqueId('fleet'),
      attestation: { type: 'symmetricKey' },
    } as unknown as EnrollmentGroup);
    const groupKey = group.responseBody.attestation.symmetricKey!.primaryKey;
    const address = `127.0.0.1:${emulator.mqttPort}`;
    const fleet = startFleet({
      registrationIds: numberedRegistrationIds(uniqueId('fleet-dev'), 6),
      attestationFor: () => ({ type: 'symmetricKeyGroup', groupKey }),
      idScope: emulator.idScope,
      hubMqttAddress: address,
      ca: emulator.caPem,
      backoff: { initialMs: 50, maxMs: 400 },
      startIntervalMs: 5,
    });
    running.push(fleet);
    const summary = await fleet.waitUntil((s) => s.connected === 6, 30_000);
    expect(Object.keys(summary.connectedByHub).every((h) => h === hosts.test || h === hosts.production)).toBe(true);
    expect(
      deviceBroker(emulator.state)!
        .connections()
        .filter((c) => c.deviceId.startsWith('fleet-dev')),
    ).toHaveLength(6);
  });
});

/**
 * Devices on azure-iot-device-http (`hubTransport: 'https'`): no connection, so IoT Hub never shows them Connected and
 * raises no DeviceConnected; the promotion recognises one on the target hub by its DPS assignment and a
 * `lastActivityTime` newer than the re-point.
 */
describe('simulated HTTPS devices', () => {
  const NEVER = '0001-01-01T00:00:00Z';

  function simulateHttps(
    registrationId: string,
    attestation: Attestation,
    backoff = { initialMs: 50, maxMs: 400 },
  ): SimulatedDevice {
    const device = new SimulatedDevice({
      registrationId,
      idScope: emulator.idScope,
      attestation,
      hubTransport: 'https',
      telemetryIntervalMs: 100,
      cloudToDevicePollMs: 100,
      ca: emulator.caPem,
      backoff,
    });
    running.push(device);
    return device.start();
  }

  const activeOn =
    (host: string) =>
    (e: SimulatorEvent): boolean =>
      e.type === 'active' && e.hub === host;

  async function symmetricKeyEnrollment(registrationId: string): Promise<Attestation> {
    const created = await service.createOrUpdateIndividualEnrollment({
      registrationId,
      attestation: { type: 'symmetricKey' },
      ...toTest(),
    } as unknown as IndividualEnrollment);
    return { type: 'symmetricKey', key: created.responseBody.attestation.symmetricKey!.primaryKey };
  }

  /**
   * The promotion's scenario for an HTTPS device: active on the test hub; the enrollment is re-pointed to production
   * and the device removed from test; its next call is refused, it re-registers at once and goes on on production,
   * where its lastActivityTime passes the re-point while it stays Disconnected.
   */
  async function expectHttpsMovesToProduction(
    device: SimulatedDevice,
    enrollment: Enrollment,
    removal: 'delete' | 'disable',
    refusal: number,
  ): Promise<void> {
    await device.waitFor(activeOn(hosts.test));
    const deviceId = device.state.deviceId!;
    const onTest = (await registries.test.get(deviceId)).responseBody;
    expect(onTest).toMatchObject({ connectionState: 'Disconnected', connectionStateUpdatedTime: NEVER });
    expect(onTest.lastActivityTime).not.toBe(NEVER);

    await repoint(enrollment, hosts.production);
    const repointedAt = Date.now();
    if (removal === 'delete') await registries.test.delete(deviceId);
    else await registries.test.update({ ...onTest, status: 'disabled' });

    await device.waitFor(activeOn(hosts.production), 10_000);
    expect(device.state).toMatchObject({
      assignedHub: hosts.production,
      phase: 'active',
      active: true,
      connected: false,
    });
    expect(device.state.history).toContainEqual(
      expect.objectContaining({ type: 'requestFailed', hub: hosts.test, refused: true, status: refusal }),
    );
    const provisioned = device.state.history.filter(
      (e): e is Extract<SimulatorEvent, { type: 'provisioned' }> => e.type === 'provisioned',
    );
    expect(provisioned.map((e) => e.assignedHub)).toEqual([hosts.test, hosts.production]);
    expect(device.state.history.some((e) => e.type === 'connected')).toBe(false);

    const registration = await service.getDeviceRegistrationState(device.options.registrationId);
    expect(registration.responseBody).toMatchObject({ status: 'assigned', assignedHub: hosts.production });
    const onProduction = (await registries.production.get(deviceId)).responseBody;
    expect(onProduction).toMatchObject({ connectionState: 'Disconnected', connectionStateUpdatedTime: NEVER });
    expect(Date.parse(onProduction.lastActivityTime!)).toBeGreaterThan(repointedAt);
    expect(deviceBroker(emulator.state)!.telemetryCount('production', deviceId)).toBeGreaterThan(0);
  }

  it('symmetric key re-registers through DPS at once and goes on on production when deleted from the test hub', async () => {
    // Deleted: the next call is 404 (REST common error codes), a refusal: "for 401 Unauthorized, 403 Forbidden, 404
    // Not Found errors, perform a full re-registration" (DPS how-to-troubleshoot-dps). A 30 s back-off shows that the
    // refusal skips it.
    const registrationId = uniqueId('https-sk');
    const device = simulateHttps(registrationId, await symmetricKeyEnrollment(registrationId), {
      initialMs: 30_000,
      maxMs: 60_000,
    });
    await expectHttpsMovesToProduction(device, { kind: 'individual', id: registrationId }, 'delete', 404);
  });

  it('X.509 client certificate moves to production when disabled on the test hub', async () => {
    // Disabled: "If Disabled, this device can't connect" (iot-hub-devguide-identity-registry): 401.
    const registrationId = uniqueId('https-x509');
    const cert = mintCertificate({ commonName: registrationId });
    const attestation = { type: 'x509', x509: { clientCertificates: { primary: { certificate: cert.certPem } } } };
    await service.createOrUpdateIndividualEnrollment({
      registrationId,
      attestation,
      ...toTest(),
    } as unknown as IndividualEnrollment);
    const device = simulateHttps(registrationId, { type: 'x509', certPem: cert.certPem, keyPem: cert.keyPem });
    await expectHttpsMovesToProduction(
      device,
      { kind: 'individual', id: registrationId, x509Attestation: attestation },
      'disable',
      401,
    );
  });

  it('polls for cloud-to-device messages and completes them', async () => {
    const registrationId = uniqueId('https-c2d');
    const device = simulateHttps(registrationId, await symmetricKeyEnrollment(registrationId));
    await device.waitFor(activeOn(hosts.test));
    const broker = deviceBroker(emulator.state)!;
    broker.sendCloudToDevice('test', device.state.deviceId!, { payload: 'reboot', messageId: 'sim-c2d-1' });
    await device.waitFor((e) => e.type === 'messageReceived' && e.messageId === 'sim-c2d-1', 5_000);
    // Completed: nothing is left to deliver, now or after the lock would have run out.
    expect(broker.cloudToDevice.receive('test', device.state.deviceId!, Date.now() + 120_000)).toBeUndefined();
  });

  it('retries its hub with back-off when a call fails without a refusal, and keeps its assignment', async () => {
    const registrationId = uniqueId('https-flaky');
    const device = simulateHttps(registrationId, await symmetricKeyEnrollment(registrationId));
    await device.waitFor(activeOn(hosts.test));
    // A failed telemetry send, then a failed cloud-to-device poll (which only the transport reports).
    emulator.faults.addRule({ surface: 'hub', hub: 'test', operation: 'deviceTelemetry', status: 503 });
    await device.waitFor((e) => e.type === 'requestFailed' && e.status === 503, 5_000);
    await device.waitFor(() => device.state.history.filter((e) => e.type === 'active').length === 2, 5_000);
    emulator.faults.addRule({ surface: 'hub', hub: 'test', operation: 'receiveCloudToDevice', status: 500 });
    await device.waitFor((e) => e.type === 'requestFailed' && e.status === 500, 5_000);
    await device.waitFor(() => device.state.history.filter((e) => e.type === 'active').length === 3, 5_000);

    const failed = device.state.history.filter((e) => e.type === 'requestFailed');
    expect(failed).toHaveLength(2);
    expect(failed.every((e) => e.type === 'requestFailed' && !e.refused && e.hub === hosts.test)).toBe(true);
    expect(device.state.history.filter((e) => e.type === 'provisioned')).toHaveLength(1);
  });

  it('refuses to run over HTTPS without telemetry or with a twin to report', () => {
    const base = {
      registrationId: 'never-started',
      idScope: emulator.idScope,
      attestation: { type: 'symmetricKey', key: 'a2V5' } as Attestation,
      hubTransport: 'https' as const,
    };
    expect(() => new SimulatedDevice({ ...base, telemetryIntervalMs: 0 })).toThrow(/telemetryIntervalMs/);
    expect(() => new SimulatedDevice({ ...base, reportedProperties: { a: 1 } })).toThrow(/no twin/);
    expect(new SimulatedDevice(base).state).toMatchObject({ phase: 'idle', active: false, connected: false });
  });
});
