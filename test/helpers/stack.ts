import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import type { Worker, WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type { EnrollmentGroup, IndividualEnrollment } from 'azure-iot-provisioning-service/dist/interfaces';
import { Registry } from 'azure-iothub';
import { createAzureClients, type AzureClients } from '../../activities/azure-clients';
import { createApp } from '../../api/app';
import { QuotasConfig } from '../../common/quotas';
import { createLogger, type Logger } from '../../common/logger';
import { configureDps } from '../../emulator/dps/runtime';
import { installAzureEndpointRouting } from '../../common/azure-routing';
import { startEmulator, type RunningEmulator } from '../../emulator/server';
import { mintCertificate, type MintedCert } from '../../emulator/security/certs';
import { SimulatedDevice, type Attestation, type SimulatedDeviceOptions } from '../../emulator/simulator/device';
import { enrollSymmetricKeyDevice } from '../../emulator/simulator/enroll';
import { createWorker } from '../../worker/worker';
import { Client } from '@temporalio/client';
import type { PayloadCodec } from '@temporalio/common';
import { dataConverterWith } from '../../common/payload-codec';
import { testSecurity } from './credentials';
import { connectToHarness, uniqueTaskQueue, workflowBundle, type TemporalTestContext } from './temporal';

/**
 * The real stack for end-to-end tests: the emulator (DPS + test and production hubs) reached by the unchanged
 * Azure SDKs, the project's worker on the harness Temporal server, and the API listening on a port (so the
 * emulator's Event Grid can call its webhook).
 */
export interface Stack {
  emulator: RunningEmulator;
  temporal: TemporalTestContext;
  taskQueue: string;
  azure: AzureClients;
  dps: ProvisioningServiceClient;
  registries: Record<'test' | 'production', Registry>;
  hosts: Record<'test' | 'production', string>;
  apiUrl: string;
  app: ReturnType<typeof createApp>;
  eventGridSecret: string;
  worker: Worker;
  /** Stops the in-process worker (e.g. to simulate a crash) and lets a new one take over later. */
  restartWorker(): Promise<void>;
  stopWorker(): Promise<void>;
  /** Starts a worker: the project's workflows, or another build of them (an earlier release, for upgrades). */
  startWorker(options?: { workflowBundle?: WorkflowBundleWithSourceMap; identity?: string }): Promise<void>;
  stop(): Promise<void>;
}

/** The emulator's quotas are off in tests; fleet operations plan against S3-sized hubs scaled well up. */
export const STACK_QUOTAS = QuotasConfig.parse({
  hubs: { test: { tier: 'S3', units: 10 }, production: { tier: 'S3', units: 10 } },
  dps: { operationsPerMinute: 100_000 },
});

export async function startStack(
  options: {
    workflowBundle?: WorkflowBundleWithSourceMap;
    codec?: PayloadCodec;
    /** The API's logger; silent by default (a test that reads the log lines gives its own). */
    log?: Logger;
    /** The API's FLEET_OPERATOR_MAX_DEVICES (its default, 1,000, when not given). */
    fleetOperatorMaxDevices?: number;
  } = {},
): Promise<Stack> {
  const emulator = await startEmulator({ controlPort: false });
  const uninstallRouting = installAzureEndpointRouting({ address: emulator.address, caPem: emulator.caPem });
  configureDps(emulator.state.dps, { retryAfterSeconds: 0 });
  const azure = createAzureClients({
    dpsConnectionString: emulator.connectionStrings.dps,
    hubConnectionStrings: emulator.connectionStrings.hubs,
  });
  const hosts = {
    test: emulator.state.hubs.get('test')!.hostName,
    production: emulator.state.hubs.get('production')!.hostName,
  };
  const harness = await connectToHarness();
  // With a codec, the API's client and the worker share it, as in production (common/payload-codec.ts).
  const dataConverter = dataConverterWith(options.codec);
  const temporal: TemporalTestContext = options.codec
    ? { ...harness, client: new Client({ connection: harness.connection, namespace: 'default', dataConverter }) }
    : harness;
  const taskQueue = uniqueTaskQueue('stack');
  const eventGridSecret = randomBytes(16).toString('hex');
  const app = createApp({
    security: testSecurity(),
    client: temporal.client,
    taskQueue,
    log: options.log ?? createLogger('silent'),
    environments: hosts,
    eventGridSecret,
    quotas: STACK_QUOTAS,
    codec: options.codec,
    fleetOperatorMaxDevices: options.fleetOperatorMaxDevices,
  });
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const apiUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  let worker: Worker | undefined;
  let running: Promise<void> | undefined;
  const startWorker = async (worker_: { workflowBundle?: WorkflowBundleWithSourceMap; identity?: string } = {}) => {
    worker = await createWorker({
      connection: temporal.nativeConnection,
      namespace: 'default',
      taskQueue,
      deps: { azure, temporal: temporal.client, quotas: STACK_QUOTAS },
      workflowBundle: worker_.workflowBundle ?? (await workflowBundle()),
      shutdownGraceSeconds: 1,
      dataConverter,
      ...(worker_.identity ? { identity: worker_.identity } : {}),
    });
    running = worker.run();
  };
  const stopWorker = async () => {
    if (worker?.getState() === 'RUNNING') worker.shutdown();
    await running;
    worker = undefined;
  };
  await startWorker({ workflowBundle: options.workflowBundle });

  return {
    emulator,
    temporal,
    taskQueue,
    azure,
    dps: ProvisioningServiceClient.fromConnectionString(emulator.connectionStrings.dps),
    registries: {
      test: Registry.fromConnectionString(emulator.connectionStrings.hubs.test),
      production: Registry.fromConnectionString(emulator.connectionStrings.hubs.production),
    },
    hosts,
    apiUrl,
    app,
    eventGridSecret,
    get worker() {
      return worker!;
    },
    startWorker,
    stopWorker,
    async restartWorker() {
      await stopWorker();
      await startWorker();
    },
    async stop() {
      await stopWorker();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await temporal.close();
      uninstallRouting();
      await emulator.stop();
    },
  };
}

let counter = 0;
export const uniqueId = (prefix: string): string => `${prefix}-${Date.now().toString(36)}-${++counter}`;

export type DeviceKind = 'symmetricKey' | 'x509' | 'x509CAGroup' | 'symmetricKeyGroup';

export interface EnrolledDevice {
  registrationId: string;
  kind: DeviceKind;
  attestation: Attestation;
  enrollmentGroupId?: string;
  /** Public certificate of an X.509 device. */
  certPem?: string;
  /** Its chain, leaf first, up to the group's CA: what an operator passes to move it out of a group. */
  chainPem?: string;
  /** A secret the test gave the device: used to prove it never reaches a workflow history. */
  secret: string;
}

/** Enrolls a device in DPS pointing at the test hub, the way an operator sets up step 1 of the flow. */
export async function enrollDevice(stack: Stack, kind: DeviceKind, registrationId = uniqueId(kind.toLowerCase())) {
  const testHub = [stack.hosts.test];
  const common = { iotHubs: testHub, allocationPolicy: 'hashed', provisioningStatus: 'enabled' };
  const twin = { tags: { stage: 'test' }, properties: { desired: { firmware: '1.0' } } };
  switch (kind) {
    case 'symmetricKey': {
      const key = await enrollSymmetricKeyDevice(stack.dps, {
        registrationId,
        hubHostName: stack.hosts.test,
        initialTwin: twin,
      });
      return { registrationId, kind, attestation: { type: 'symmetricKey', key }, secret: key } as EnrolledDevice;
    }
    case 'x509': {
      const cert = mintCertificate({ commonName: registrationId });
      await stack.dps.createOrUpdateIndividualEnrollment({
        registrationId,
        deviceId: registrationId,
        attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: cert.certPem } } } },
        initialTwin: twin,
        ...common,
      } as unknown as IndividualEnrollment);
      return x509Device(registrationId, kind, cert);
    }
    case 'x509CAGroup': {
      const root = mintCertificate({ commonName: uniqueId('root'), isCa: true });
      const enrollmentGroupId = uniqueId('cagroup');
      await stack.dps.createOrUpdateEnrollmentGroup({
        enrollmentGroupId,
        attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: root.certPem } } } },
        initialTwin: twin,
        ...common,
      } as unknown as EnrollmentGroup);
      const leaf = mintCertificate({ commonName: registrationId, issuer: root });
      return { ...x509Device(registrationId, kind, leaf), enrollmentGroupId };
    }
    case 'symmetricKeyGroup': {
      const groupKey = randomBytes(64).toString('base64');
      const enrollmentGroupId = uniqueId('symgroup');
      await stack.dps.createOrUpdateEnrollmentGroup({
        enrollmentGroupId,
        attestation: {
          type: 'symmetricKey',
          symmetricKey: { primaryKey: groupKey, secondaryKey: randomBytes(64).toString('base64') },
        },
        initialTwin: twin,
        ...common,
      } as unknown as EnrollmentGroup);
      return {
        registrationId,
        kind,
        enrollmentGroupId,
        attestation: { type: 'symmetricKeyGroup', groupKey },
        secret: groupKey,
      } as EnrolledDevice;
    }
  }
}

function x509Device(registrationId: string, kind: DeviceKind, cert: MintedCert): EnrolledDevice {
  return {
    registrationId,
    kind,
    attestation: { type: 'x509', certPem: cert.chainPem, keyPem: cert.keyPem },
    certPem: cert.certPem,
    chainPem: cert.chainPem,
    secret: cert.keyPem.split('\n').slice(1, 3).join(''),
  };
}

/**
 * Runs a simulated device (real device SDKs) that provisions, connects and follows DPS on rejection. `options`
 * overrides the defaults, e.g. `{ hubTransport: 'https', telemetryIntervalMs: 500 }` for a device that talks to its
 * hub over HTTPS (it is then `active`, never `connected`; see `activeOn`).
 */
export function simulate(
  stack: Stack,
  device: EnrolledDevice,
  options: Partial<Omit<SimulatedDeviceOptions, 'registrationId' | 'attestation'>> = {},
): SimulatedDevice {
  const address = `127.0.0.1:${stack.emulator.mqttPort}`;
  return new SimulatedDevice({
    registrationId: device.registrationId,
    idScope: stack.emulator.idScope,
    attestation: device.attestation,
    hubMqttAddress: address,
    dpsMqttAddress: address,
    ca: stack.emulator.caPem,
    backoff: { initialMs: 100, maxMs: 1_000 },
    ...options,
  }).start();
}

export async function connectedTo(device: SimulatedDevice, hubHost: string, timeoutMs = 30_000) {
  return device.waitFor((e) => e.type === 'connected' && e.hub === hubHost, timeoutMs);
}

/** An HTTPS device's counterpart of `connectedTo`: the hub accepted its first call. */
export async function activeOn(device: SimulatedDevice, hubHost: string, timeoutMs = 30_000) {
  return device.waitFor((e) => e.type === 'active' && e.hub === hubHost, timeoutMs);
}
