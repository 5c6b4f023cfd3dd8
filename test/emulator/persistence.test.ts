/**
 * The emulator's optional state file: what is built through the real SDKs survives a stop and a start, changes are
 * saved about a second after they happen, concurrent changes during a save are not lost, and a corrupted file is
 * refused at start with its name.
 */
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client as DeviceClient, type Twin } from 'azure-iot-device';
import { Mqtt } from 'azure-iot-device-mqtt';
import { NoRetry } from 'azure-iot-common';
import { ProvisioningDeviceClient, type RegistrationResult } from 'azure-iot-provisioning-device';
import { Http } from 'azure-iot-provisioning-device-http';
import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type { EnrollmentGroup, IndividualEnrollment } from 'azure-iot-provisioning-service/dist/interfaces';
import { SymmetricKeySecurityClient } from 'azure-iot-security-symmetric-key';
import { Registry } from 'azure-iothub';
import { mintCertificate } from '../../emulator/security/certs';
import { addDpsCaCertificate, configureDps, listDpsCaCertificates } from '../../emulator/dps/runtime';
import { deviceBroker } from '../../emulator/mqtt/listener';
import { StateFileError } from '../../emulator/persistence/state-file';
import { installAzureEndpointRouting } from '../../common/azure-routing';
import { deriveDeviceKey } from '../../emulator/security/sas';
import { startEmulator, type RunningEmulator } from '../../emulator/server';
import { WebhookSubscriber } from './webhook-subscriber';
import { controlFetch } from '../helpers/control';

const dir = mkdtempSync(path.join(os.tmpdir(), 'emulator-state-'));
const running = new Set<RunningEmulator>();
const openDevices: DeviceClient[] = [];
let uninstallRouting: (() => void) | undefined;

afterEach(async () => {
  await Promise.all(openDevices.splice(0).map((c) => c.close().catch(() => undefined)));
  uninstallRouting?.();
  uninstallRouting = undefined;
  await Promise.all([...running].map((e) => e.stop()));
  running.clear();
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Starts an emulator on `stateFile` and routes the Azure SDKs to it. */
async function start(stateFile: string): Promise<RunningEmulator> {
  const emulator = await startEmulator({ stateFile });
  running.add(emulator);
  // Settings are not part of the state file: poll DPS operations at once after every start.
  configureDps(emulator.state.dps, { retryAfterSeconds: 0 });
  uninstallRouting?.();
  uninstallRouting = installAzureEndpointRouting({ address: emulator.address, caPem: emulator.caPem });
  return emulator;
}

async function stop(emulator: RunningEmulator): Promise<void> {
  running.delete(emulator);
  await emulator.stop();
}

async function control(emulator: RunningEmulator, method: string, route: string, body?: unknown): Promise<unknown> {
  const res = await controlFetch(emulator, `${emulator.controlUrl}${route}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status >= 300) throw new Error(`control ${method} ${route}: ${res.status} ${await res.text()}`);
  const text = await res.text();
  return text ? (JSON.parse(text) as unknown) : undefined;
}

async function connectDevice(emulator: RunningEmulator, deviceId: string, key: string): Promise<DeviceClient> {
  const hubHost = emulator.state.hubs.get('test')!.hostName;
  const client = DeviceClient.fromConnectionString(
    `HostName=${hubHost};DeviceId=${deviceId};SharedAccessKey=${key};GatewayHostName=127.0.0.1:${emulator.mqttPort}`,
    Mqtt,
  );
  client.setRetryPolicy(new NoRetry());
  openDevices.push(client);
  await client.setOptions({ ca: emulator.caPem });
  await client.open();
  return client;
}

function register(emulator: RunningEmulator, registrationId: string, key: string): Promise<RegistrationResult> {
  const client = ProvisioningDeviceClient.create(
    'global.azure-devices-provisioning.net',
    emulator.idScope,
    new Http(),
    new SymmetricKeySecurityClient(registrationId, key) as unknown as Parameters<
      typeof ProvisioningDeviceClient.create
    >[3],
  );
  return client.register() as Promise<RegistrationResult>;
}

function reportProperties(twin: Twin, patch: Record<string, unknown>): Promise<void> {
  return new Promise((resolve, reject) =>
    twin.properties.reported.update(patch, (err?: Error) => (err ? reject(err) : resolve())),
  );
}

interface SavedFile {
  hubs: Array<{
    name: string;
    devices: Array<{ deviceId: string; connectionState: string; twin: { reported: Record<string, unknown> } }>;
  }>;
}

function readSaved(file: string): SavedFile {
  return JSON.parse(readFileSync(file, 'utf8')) as SavedFile;
}

function savedDevice(file: string, deviceId: string) {
  return readSaved(file)
    .hubs.flatMap((h) => h.devices)
    .find((d) => d.deviceId === deviceId);
}

async function until(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

const sequenceOf = (e: { data: Record<string, unknown> }): string =>
  (e.data.deviceConnectionStateEventInfo as { sequenceNumber: string }).sequenceNumber;

describe('emulator state file', () => {
  it('keeps hubs, devices, twins, enrollments, groups, registrations, certificates and subscriptions across a restart', async () => {
    const stateFile = path.join(dir, 'round-trip', 'state.json');
    const subscriber = new WebhookSubscriber();
    const webhookUrl = await subscriber.start();
    try {
      // 1. Build state through the real SDKs and the control API.
      const first = await start(stateFile);
      const registry = Registry.fromConnectionString(first.connectionStrings.hubs.test);
      const dps = ProvisioningServiceClient.fromConnectionString(first.connectionStrings.dps);
      const staging = (await control(first, 'POST', '/hubs', { name: 'staging', tier: 'S2', units: 2 })) as {
        policies: Array<{ keyName: string; connectionString: string }>;
      };
      await control(first, 'PUT', '/eventgrid/hubs/test/subscriptions/keep-sub', {
        endpointUrl: webhookUrl,
        secret: 's3cret',
      });
      const hubCa = mintCertificate({ commonName: 'Kept Hub CA', isCa: true });
      await control(first, 'POST', '/mqtt/hubs/test/ca-certificates', { certificatePem: hubCa.certPem });
      const dpsCa = mintCertificate({ commonName: 'Kept DPS CA', isCa: true });
      addDpsCaCertificate(first.state.dps, { name: 'kept-ca', certificatePem: dpsCa.certPem, isVerified: true });

      const created = (await registry.create({ deviceId: 'kept-sas' })).responseBody;
      const key = created.authentication!.symmetricKey!.primaryKey!;
      const twin = (await registry.getTwin('kept-sas')).responseBody;
      await registry.updateTwin(
        'kept-sas',
        { tags: { site: 'lab' }, properties: { desired: { interval: 5 } } },
        twin.etag,
      );
      await registry.create({ deviceId: 'kept-off', status: 'disabled' });
      const cert = mintCertificate({ commonName: 'kept-x509' });
      await registry.create({
        deviceId: 'kept-x509',
        authentication: {
          x509Thumbprint: { primaryThumbprint: cert.thumbprintSha1, secondaryThumbprint: null as unknown as string },
        },
      });

      const enrollment = (
        await dps.createOrUpdateIndividualEnrollment({
          registrationId: 'kept-enrolled',
          attestation: { type: 'symmetricKey' },
          initialTwin: { tags: { stage: 'test' } },
        } as unknown as IndividualEnrollment)
      ).responseBody;
      const enrolledCert = mintCertificate({ commonName: 'kept-x509-enrolled' });
      await dps.createOrUpdateIndividualEnrollment({
        registrationId: 'kept-x509-enrolled',
        attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: enrolledCert.certPem } } } },
      } as unknown as IndividualEnrollment);
      const group = (
        await dps.createOrUpdateEnrollmentGroup({
          enrollmentGroupId: 'kept-group',
          attestation: { type: 'symmetricKey' },
        } as unknown as EnrollmentGroup)
      ).responseBody;
      const memberKey = deriveDeviceKey(group.attestation.symmetricKey!.primaryKey, 'kept-member');
      const firstRegistration = await register(first, 'kept-member', memberKey);
      expect(firstRegistration.status).toBe('assigned');

      // A connected device with reported properties, still connected when the emulator stops.
      const device = await connectDevice(first, 'kept-sas', key);
      await reportProperties(await device.getTwin(), { firmware: '1.0.0' });
      const firstConnected = await subscriber.until(
        (e) => e.eventType === 'Microsoft.Devices.DeviceConnected' && e.subject === 'devices/kept-sas',
      );
      const before = {
        device: (await registry.get('kept-sas')).responseBody,
        twin: (await registry.getTwin('kept-sas')).responseBody,
        enrollment: (await dps.getIndividualEnrollment('kept-enrolled')).responseBody,
        registration: (await dps.getDeviceRegistrationState('kept-member')).responseBody,
      };
      expect(before.device.connectionState).toBe('Connected');
      const dropped = new Promise<void>((resolve) => device.once('disconnect', () => resolve()));
      await stop(first);
      await dropped;

      // The file holds keys: owner-only permissions, and no connection state.
      expect(statSync(stateFile).mode & 0o777).toBe(0o600);
      expect(savedDevice(stateFile, 'kept-sas')!.connectionState).toBe('Disconnected');

      // 2. A new emulator on the same file answers with the same state, to the same connection strings.
      const second = await start(stateFile);
      expect(second.connectionStrings).toEqual({
        dps: first.connectionStrings.dps,
        hubs: {
          ...first.connectionStrings.hubs,
          staging: staging.policies.find((p) => p.keyName === 'iothubowner')!.connectionString,
        },
      });
      expect(second.idScope).toBe(first.idScope);
      const registryAgain = Registry.fromConnectionString(first.connectionStrings.hubs.test);
      const dpsAgain = ProvisioningServiceClient.fromConnectionString(first.connectionStrings.dps);

      const device2 = (await registryAgain.get('kept-sas')).responseBody;
      expect(device2).toMatchObject({
        deviceId: 'kept-sas',
        generationId: before.device.generationId,
        etag: before.device.etag,
        status: 'enabled',
        connectionState: 'Disconnected',
        authentication: before.device.authentication,
      });
      const twin2 = (await registryAgain.getTwin('kept-sas')).responseBody;
      expect(twin2.etag).toBe(before.twin.etag);
      expect(twin2.tags).toEqual({ site: 'lab' });
      expect(twin2.properties.desired.interval).toBe(5);
      expect(twin2.properties.reported.firmware).toBe('1.0.0');
      expect((await registryAgain.get('kept-off')).responseBody.status).toBe('disabled');
      expect((await registryAgain.get('kept-x509')).responseBody.authentication).toMatchObject({
        type: 'selfSigned',
        x509Thumbprint: { primaryThumbprint: cert.thumbprintSha1.toUpperCase() },
      });
      // Etags handed out after the restart are new ones.
      const updated = (await registryAgain.updateTwin('kept-sas', { tags: { site: 'hall' } }, twin2.etag)).responseBody;
      expect([before.twin.etag, twin.etag]).not.toContain(updated.etag);

      expect((await dpsAgain.getIndividualEnrollment('kept-enrolled')).responseBody).toMatchObject({
        etag: before.enrollment.etag,
        initialTwin: { tags: { stage: 'test' } },
      });
      expect(
        (await dpsAgain.getIndividualEnrollmentAttestationMechanism('kept-enrolled')).responseBody.symmetricKey,
      ).toEqual(enrollment.attestation.symmetricKey);
      const x509Attestation = (await dpsAgain.getIndividualEnrollmentAttestationMechanism('kept-x509-enrolled'))
        .responseBody;
      expect(x509Attestation.x509!.clientCertificates!.primary!.info!.sha1Thumbprint!.toUpperCase()).toBe(
        enrolledCert.thumbprintSha1.toUpperCase(),
      );
      expect((await dpsAgain.getEnrollmentGroupAttestationMechanism('kept-group')).responseBody.symmetricKey).toEqual(
        group.attestation.symmetricKey,
      );
      expect((await dpsAgain.getDeviceRegistrationState('kept-member')).responseBody).toMatchObject({
        etag: before.registration.etag,
        assignedHub: firstRegistration.assignedHub,
        deviceId: 'kept-member',
      });
      expect(listDpsCaCertificates(second.state.dps)).toEqual([
        { name: 'kept-ca', certificatePem: dpsCa.certPem, isVerified: true },
      ]);
      expect(
        deviceBroker(second.state)!
          .verifiedCaCertificates('test')
          .map((pem) => new X509Certificate(pem).fingerprint256),
      ).toEqual([new X509Certificate(hubCa.certPem).fingerprint256]);
      expect(await control(second, 'GET', '/hubs/staging')).toMatchObject({ tier: 'S2', units: 2, linkedToDps: true });
      expect(await control(second, 'GET', '/eventgrid/subscriptions')).toEqual([
        expect.objectContaining({ hub: 'test', name: 'keep-sub', endpointUrl: webhookUrl, hasSecret: true }),
      ]);

      // 3. Devices carry on with their old credentials; Event Grid delivers with the kept secret, in sequence.
      const seenBefore = subscriber.notifications.length;
      await connectDevice(second, 'kept-sas', key);
      const reconnected = await subscriber.until(
        (e) =>
          subscriber.notifications.indexOf(e) >= seenBefore &&
          e.eventType === 'Microsoft.Devices.DeviceConnected' &&
          e.subject === 'devices/kept-sas',
      );
      expect(subscriber.headers[subscriber.notifications.indexOf(reconnected)]['x-eventgrid-secret']).toBe('s3cret');
      expect(sequenceOf(reconnected) > sequenceOf(firstConnected)).toBe(true);
      expect((await registryAgain.get('kept-sas')).responseBody.connectionState).toBe('Connected');
      const again = await register(second, 'kept-member', memberKey);
      expect(again).toMatchObject({
        status: 'assigned',
        deviceId: 'kept-member',
        assignedHub: firstRegistration.assignedHub,
      });
    } finally {
      await subscriber.stop();
    }
  });

  it('saves changes about a second after they happen, without a stop (a crash loses at most that second)', async () => {
    const stateFile = path.join(dir, 'periodic.json');
    const emulator = await start(stateFile);
    const registry = Registry.fromConnectionString(emulator.connectionStrings.hubs.test);
    const { responseBody } = await registry.create({ deviceId: 'periodic-1' });
    await until(() => savedDevice(stateFile, 'periodic-1') !== undefined);

    // Over MQTT too: a reported-properties patch from a connected device.
    const device = await connectDevice(emulator, 'periodic-1', responseBody.authentication!.symmetricKey!.primaryKey!);
    await reportProperties(await device.getTwin(), { battery: 87 });
    await until(() => savedDevice(stateFile, 'periodic-1')?.twin.reported.battery === 87);

    // Another emulator started from the file while the first one still runs (as after a crash) has both.
    const recovered = await startEmulator({ stateFile, controlPort: false });
    running.add(recovered);
    expect(recovered.state.hubs.get('test')!.devices.get('periodic-1')).toMatchObject({
      connectionState: 'Disconnected',
      twin: { reported: { battery: 87 } },
    });
  });

  it('loses no change made while saves are in flight', async () => {
    const stateFile = path.join(dir, 'concurrent.json');
    const emulator = await start(stateFile);
    const registry = Registry.fromConnectionString(emulator.connectionStrings.hubs.test);
    const ids = Array.from({ length: 150 }, (_, i) => `concurrent-${i}`);
    let reads = 0;
    let reading = true;
    // The file is replaced atomically: a reader never sees half of it.
    const reader = (async () => {
      while (reading) {
        readSaved(stateFile);
        reads += 1;
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    await Promise.all([
      ...ids.map((deviceId) => registry.create({ deviceId })),
      ...Array.from({ length: 20 }, (_, i) =>
        new Promise((r) => setTimeout(r, i * 3)).then(() => emulator.saveState()),
      ),
    ]);
    // The periodic save that follows the last change has every device, before any stop.
    await until(() => ids.every((id) => savedDevice(stateFile, id) !== undefined));
    reading = false;
    await reader;
    expect(reads).toBeGreaterThan(0);

    // Changes right before a clean stop are in the file too.
    await registry.delete('concurrent-0');
    await registry.create({ deviceId: 'last-minute' });
    await stop(emulator);
    const restarted = await start(stateFile);
    const devices = restarted.state.hubs.get('test')!.devices;
    expect(devices.size).toBe(150);
    expect(devices.has('last-minute')).toBe(true);
    expect(devices.has('concurrent-0')).toBe(false);
  });

  it('refuses a corrupted file at start, naming it, and leaves it as it was', async () => {
    const notJson = path.join(dir, 'corrupted.json');
    writeFileSync(notJson, '{"format":"iot-lifecycle-emulator-state","hubs":[{"na');
    const start1 = startEmulator({ stateFile: notJson });
    await expect(start1).rejects.toThrow(StateFileError);
    await expect(start1).rejects.toThrow(`Emulator state file ${notJson} cannot be loaded: it is not valid JSON`);
    expect(readFileSync(notJson, 'utf8')).toBe('{"format":"iot-lifecycle-emulator-state","hubs":[{"na');

    const wrongShape = path.join(dir, 'wrong-shape.json');
    writeFileSync(
      wrongShape,
      JSON.stringify({ format: 'iot-lifecycle-emulator-state', version: 1, hubs: [{ name: 'x' }] }),
    );
    await expect(startEmulator({ stateFile: wrongShape })).rejects.toThrow(
      new RegExp(
        `${wrongShape.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} cannot be loaded: it is not an emulator state snapshot \\(.*hubs\\.0\\.hostName`,
      ),
    );
  });
});
