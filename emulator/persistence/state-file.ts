/**
 * Optional persistence of the emulator's state in one JSON file (`startEmulator({ stateFile })`), so that what a
 * rehearsal built — hubs and their policies, devices and twins, enrollments, groups, registration states, DPS and
 * hub CA certificates, Event Grid subscriptions — is still there after a restart.
 *
 * The file is the emulator's own database: it holds every key and secret (policy keys, device and enrollment keys,
 * Event Grid secrets) and the certificates, so it is written with mode 0600, like the CA key beside it. Live state
 * is not kept: connections (every device starts Disconnected), DPS operations in flight, pending Event Grid
 * deliveries, dead letters and counters, quotas, faults and settings.
 *
 * Writes are atomic (a temporary file renamed over the old one, so a crash leaves the old or the new snapshot,
 * never half of one). The snapshot is taken synchronously, so it is a consistent picture even while requests
 * run; a change made while a write is in flight is written by the next one.
 */
import { mkdir, open, rename } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { idKey } from '../dps/enrollments';
import type { DeviceRegistrationState, EnrollmentGroup, IndividualEnrollment, LinkedHub } from '../dps/model';
import { addDpsCaCertificate, listDpsCaCertificates, type DpsCaCertificate } from '../dps/runtime';
import {
  IOT_HUB_EVENT_TYPES,
  exportEventSubscriptions,
  restoreEventSubscriptions,
  type EventSubscriptionRecord,
} from '../eventgrid/event-grid';
import type { DeviceRecord } from '../hub/model';
import { continueEtagsAfter } from '../hub/registry';
import type { DeviceBroker } from '../mqtt/broker';
import type { SharedAccessPolicy } from '../security/sas';
import { createEmulatorState, type EmulatorEventMap, type EmulatorState, type HubState } from '../state';

const FORMAT = 'iot-lifecycle-emulator-state';

export interface StateSnapshot {
  format: typeof FORMAT;
  version: 1;
  hubs: Array<{
    name: string;
    hostName: string;
    tier: HubState['tier'];
    units: number;
    policies: SharedAccessPolicy[];
    devices: DeviceRecord[];
    /** PEMs of the hub's verified CA certificates (for `certificateAuthority` devices). */
    verifiedCaCertificates: string[];
  }>;
  dps: {
    name: string;
    hostName: string;
    idScope: string;
    policies: SharedAccessPolicy[];
    linkedHubs: LinkedHub[];
    enrollments: IndividualEnrollment[];
    enrollmentGroups: EnrollmentGroup[];
    registrations: DeviceRegistrationState[];
    caCertificates: DpsCaCertificate[];
  };
  eventGrid: { subscriptions: EventSubscriptionRecord[] };
}

// ---------------------------------------------------------------------------------------------------------------
// What a state file must hold: the fields the emulator relies on are checked, the rest is kept as it is.

const nullableString = z.string().nullable();
const policy = z.object({
  keyName: z.string().min(1),
  primaryKey: z.string().min(1),
  secondaryKey: z.string().min(1),
  rights: z.array(
    z.enum([
      'RegistryRead',
      'RegistryWrite',
      'ServiceConnect',
      'DeviceConnect',
      'ServiceConfig',
      'EnrollmentRead',
      'EnrollmentWrite',
      'RegistrationStatusRead',
      'RegistrationStatusWrite',
    ]),
  ),
});
const device = z.looseObject({
  deviceId: z.string().min(1),
  generationId: z.string(),
  etag: z.string(),
  status: z.enum(['enabled', 'disabled']),
  statusReason: nullableString,
  statusUpdatedTime: z.string(),
  connectionStateUpdatedTime: z.string(),
  lastActivityTime: z.string(),
  cloudToDeviceMessageCount: z.number().int().min(0),
  capabilities: z.object({ iotEdge: z.boolean() }),
  authentication: z.object({
    type: z.enum(['sas', 'selfSigned', 'certificateAuthority', 'none']),
    symmetricKey: z.object({ primaryKey: nullableString, secondaryKey: nullableString }),
    x509Thumbprint: z.object({ primaryThumbprint: nullableString, secondaryThumbprint: nullableString }),
  }),
  twin: z.object({
    tags: z.record(z.string(), z.unknown()),
    desired: z.record(z.string(), z.unknown()),
    desiredVersion: z.number().int(),
    reported: z.record(z.string(), z.unknown()),
    reportedVersion: z.number().int(),
    version: z.number().int(),
    etag: z.string(),
    lastDesiredUpdate: z.string(),
    lastReportedUpdate: z.string(),
  }),
});
const enrollmentCommon = {
  attestation: z.looseObject({ type: z.enum(['tpm', 'x509', 'symmetricKey']) }),
  etag: z.string(),
  provisioningStatus: z.enum(['enabled', 'disabled']),
  reprovisionPolicy: z.object({ updateHubAssignment: z.boolean(), migrateDeviceData: z.boolean() }),
  createdDateTimeUtc: z.string(),
  lastUpdatedDateTimeUtc: z.string(),
};
const snapshotSchema = z.object({
  format: z.literal(FORMAT),
  version: z.literal(1),
  hubs: z.array(
    z.object({
      name: z.string().min(1),
      hostName: z.string().min(1),
      tier: z.enum(['F1', 'B1', 'B2', 'B3', 'S1', 'S2', 'S3']),
      units: z.number().int().min(1),
      policies: z.array(policy),
      devices: z.array(device),
      verifiedCaCertificates: z.array(z.string()),
    }),
  ),
  dps: z.object({
    name: z.string().min(1),
    hostName: z.string().min(1),
    idScope: z.string().min(1),
    policies: z.array(policy),
    linkedHubs: z.array(
      z.object({
        hostName: z.string(),
        connectionString: z.string(),
        allocationWeight: z.number(),
        applyAllocationPolicy: z.boolean(),
        location: z.string(),
      }),
    ),
    enrollments: z.array(z.looseObject({ registrationId: z.string().min(1), ...enrollmentCommon })),
    enrollmentGroups: z.array(z.looseObject({ enrollmentGroupId: z.string().min(1), ...enrollmentCommon })),
    registrations: z.array(
      z.looseObject({
        registrationId: z.string().min(1),
        status: z.enum(['unassigned', 'assigning', 'assigned', 'failed', 'disabled']),
        etag: z.string(),
        createdDateTimeUtc: z.string(),
        lastUpdatedDateTimeUtc: z.string(),
      }),
    ),
    caCertificates: z.array(z.object({ name: z.string(), certificatePem: z.string(), isVerified: z.boolean() })),
  }),
  eventGrid: z.object({
    subscriptions: z.array(
      z.object({
        hub: z.string(),
        name: z.string(),
        endpointUrl: z.string(),
        secret: z.string().optional(),
        includedEventTypes: z.array(z.enum(IOT_HUB_EVENT_TYPES)),
        createdTime: z.string(),
      }),
    ),
  }),
});

/** A state file that cannot be used; the message names the file and what is wrong with it. */
export class StateFileError extends Error {
  constructor(
    readonly file: string,
    reason: string,
  ) {
    super(`Emulator state file ${file} cannot be loaded: ${reason}. Repair or remove it, or start without it.`);
    this.name = 'StateFileError';
  }
}

/** Reads a state file; undefined when there is none yet. */
export function readStateFile(file: string): StateSnapshot | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new StateFileError(file, (err as Error).message);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new StateFileError(file, `it is not valid JSON (${(err as Error).message})`);
  }
  const parsed = snapshotSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues
      .slice(0, 5)
      .map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`)
      .join('; ');
    throw new StateFileError(file, `it is not an emulator state snapshot (${issues})`);
  }
  // The schema checked what the emulator relies on; the records are the emulator's own, written by takeSnapshot.
  return parsed.data as unknown as StateSnapshot;
}

/** The state a snapshot describes (hubs, devices, DPS); restoreRuntime adds what lives beside the state. */
export function restoreState(snapshot: StateSnapshot): EmulatorState {
  const { dps } = snapshot;
  const state = createEmulatorState({ name: dps.name, hostName: dps.hostName, idScope: dps.idScope });
  state.dps.policies = dps.policies;
  state.dps.linkedHubs = dps.linkedHubs;
  for (const e of dps.enrollments) state.dps.enrollments.set(idKey(e.registrationId), e);
  for (const g of dps.enrollmentGroups) state.dps.enrollmentGroups.set(idKey(g.enrollmentGroupId), g);
  for (const r of dps.registrations) state.dps.registrations.set(idKey(r.registrationId), r);
  for (const cert of dps.caCertificates) addDpsCaCertificate(state.dps, cert);
  for (const saved of snapshot.hubs) {
    // State files written before parentScopes was kept have none.
    const devices = saved.devices.map((d): DeviceRecord => ({
      ...d,
      parentScopes: d.parentScopes ?? [],
      connectionState: 'Disconnected',
    }));
    continueEtagsAfter(devices);
    state.hubs.set(saved.name, {
      name: saved.name,
      hostName: saved.hostName,
      tier: saved.tier,
      units: saved.units,
      policies: saved.policies,
      devices: new Map(devices.map((d) => [d.deviceId, d])),
      events: state.events,
    });
  }
  return state;
}

/** Restores what the device broker and Event Grid hold (they exist only once the emulator runs). */
export function restoreRuntime(state: EmulatorState, snapshot: StateSnapshot, broker: DeviceBroker): void {
  for (const hub of snapshot.hubs) {
    for (const pem of hub.verifiedCaCertificates) broker.addVerifiedCaCertificate(hub.name, pem);
  }
  restoreEventSubscriptions(state, snapshot.eventGrid.subscriptions);
}

/**
 * A consistent picture of the state, taken synchronously. Connection state is not kept: connected devices are
 * written as Disconnected (since the time they connected; a clean stop disconnects them before the last save).
 */
export function takeSnapshot(state: EmulatorState, broker: DeviceBroker | undefined): StateSnapshot {
  const { dps } = state;
  return {
    format: FORMAT,
    version: 1,
    hubs: [...state.hubs.values()].map((hub) => ({
      name: hub.name,
      hostName: hub.hostName,
      tier: hub.tier,
      units: hub.units,
      policies: hub.policies,
      devices: [...hub.devices.values()].map((d) =>
        d.connectionState === 'Disconnected' ? d : { ...d, connectionState: 'Disconnected' as const },
      ),
      verifiedCaCertificates: broker?.verifiedCaCertificates(hub.name) ?? [],
    })),
    dps: {
      name: dps.name,
      hostName: dps.hostName,
      idScope: dps.idScope,
      policies: dps.policies,
      linkedHubs: dps.linkedHubs,
      enrollments: [...dps.enrollments.values()],
      enrollmentGroups: [...dps.enrollmentGroups.values()],
      registrations: [...dps.registrations.values()],
      caCertificates: listDpsCaCertificates(dps),
    },
    eventGrid: { subscriptions: exportEventSubscriptions(state) },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Saving

export interface StateSaver {
  /** Something may have changed: a save follows within `delayMs`. */
  markDirty(): void;
  /** Saves now (after a save in flight); resolves once the file is on disk. */
  save(): Promise<void>;
  /** Stops saving on changes and writes the final snapshot. */
  close(): Promise<void>;
}

/**
 * Saves `snapshot()` to `file` at most `delayMs` after the first change since the last save (so a steady stream
 * of changes still gets written), one write at a time. A failed periodic save is reported by `onError` and tried
 * again at the next change; a failed `save()`/`close()` rejects.
 */
export function createStateSaver(
  file: string,
  snapshot: () => StateSnapshot,
  options: { delayMs?: number; onError?: (err: Error) => void } = {},
): StateSaver {
  const delayMs = options.delayMs ?? 1000;
  const temporary = `${file}.tmp`;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let lastWritten: string | undefined;
  let queue: Promise<void> = Promise.resolve();

  const write = async (): Promise<void> => {
    // Taken when this write starts, so it includes every change made before it.
    const text = JSON.stringify(snapshot(), null, 2);
    if (text === lastWritten) return;
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    // 0600: the file holds keys and secrets (see the module comment).
    const handle = await open(temporary, 'w', 0o600);
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, file);
    lastWritten = text;
  };

  const save = (): Promise<void> => {
    const next = queue.then(write);
    queue = next.catch(() => undefined);
    return next;
  };

  const markDirty = (): void => {
    if (closed || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      save().catch((err: Error) => options.onError?.(err));
    }, delayMs);
    // A pending save must not keep the process alive; stop() writes the final snapshot.
    timer.unref();
  };

  return {
    markDirty,
    save,
    async close() {
      closed = true;
      clearTimeout(timer);
      timer = undefined;
      await save();
    },
  };
}

/** Marks the saver dirty on every event of the state bus. */
export function saveOnStateEvents(state: EmulatorState, saver: StateSaver): void {
  const names: Array<keyof EmulatorEventMap> = [
    'deviceCreated',
    'deviceUpdated',
    'deviceDeleted',
    'deviceConnected',
    'deviceDisconnected',
    'twinDesiredUpdated',
  ];
  for (const name of names) state.events.on(name, () => saver.markDirty());
}
