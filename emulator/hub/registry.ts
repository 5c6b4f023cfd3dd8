/**
 * IoT hub registry logic, independent of transport: the REST layer (hub/rest.ts), DPS registration and MQTT
 * authentication all go through these functions. Every function is synchronous so read-modify-write cycles
 * cannot interleave.
 */
import { generateKey, isValidSymmetricKey } from '../security/sas';
import { defaultHubPolicies, type EmulatorState, type HubState } from '../state';
import { AzureError, hubErrors } from './errors';
import type {
  AuthenticationType,
  DeviceAuthentication,
  DeviceRecord,
  DeviceStatus,
  HubTier,
  TwinProperties,
} from './model';

export const NEVER = '0001-01-01T00:00:00Z';

// ---------------------------------------------------------------------------------------------------------------
// Hubs

export interface CreateHubOptions {
  name: string;
  /** Default `<name>-hub.azure-devices.net`. */
  hostName?: string;
  tier?: HubTier;
  units?: number;
}

const HUB_NAME = /^[A-Za-z0-9-]{1,50}$/;

export function createHub(state: EmulatorState, options: CreateHubOptions): HubState {
  if (!HUB_NAME.test(options.name)) throw hubErrors.argument(`Invalid hub name ${options.name}`);
  if (state.hubs.has(options.name)) throw new AzureError(409, 'IotHubAlreadyExists', `Hub ${options.name} exists`);
  const hostName = (options.hostName ?? `${options.name}-hub.azure-devices.net`).toLowerCase();
  if (findHubByHost(state, hostName)) throw new AzureError(409, 'IotHubAlreadyExists', `Host ${hostName} is taken`);
  const hub: HubState = {
    name: options.name,
    hostName,
    tier: options.tier ?? 'S1',
    units: options.units ?? 1,
    policies: defaultHubPolicies(),
    devices: new Map(),
    events: state.events,
  };
  state.hubs.set(hub.name, hub);
  return hub;
}

export function findHubByHost(state: EmulatorState, hostName: string): HubState | undefined {
  const wanted = hostName.toLowerCase();
  for (const hub of state.hubs.values()) if (hub.hostName === wanted) return hub;
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Etags, ids, timestamps

let etagCounter = 0;
let generationCounter = 0;

/** Device etags look like Azure's: base64 of a decimal counter ("MjM0NTY3ODk="). */
function newDeviceEtag(): string {
  etagCounter += 1;
  return Buffer.from(String(100_000_000 + etagCounter)).toString('base64');
}

/** Twin etags look like Azure's ("AAAAAAAAAAE="): base64 of an 8-byte number, unique per change. */
function twinEtag(version: number): string {
  const buf = Buffer.alloc(8);
  buf.writeBigUInt64BE(BigInt(version) + BigInt(etagCounter++));
  return buf.toString('base64');
}

/**
 * Moves the etag counter past the etags of devices loaded from a state file, so that after a restart no etag
 * handed out before it comes back for another version of a device or twin.
 */
export function continueEtagsAfter(devices: Iterable<DeviceRecord>): void {
  for (const device of devices) {
    const deviceCount = Number(Buffer.from(device.etag, 'base64').toString('utf8')) - 100_000_000;
    if (Number.isSafeInteger(deviceCount)) etagCounter = Math.max(etagCounter, deviceCount);
    const twin = Buffer.from(device.twin.etag, 'base64');
    if (twin.length === 8) etagCounter = Math.max(etagCounter, Number(twin.readBigUInt64BE()));
  }
}

/** generationId: 18 digits from .NET ticks, unique per create, like Azure's. */
function newGenerationId(): string {
  generationCounter += 1;
  const ticks = BigInt(Date.now()) * 10_000n + 621_355_968_000_000_000n + BigInt(generationCounter % 10_000);
  return ticks.toString().slice(0, 18);
}

const now = (): string => new Date().toISOString();

/** Accepts `"etag"`, `etag`, `W/"etag"`. */
export function unquoteEtag(value: string): string {
  return value
    .trim()
    .replace(/^W\//, '')
    .replace(/^"(.*)"$/, '$1');
}

function etagMatches(ifMatch: string | undefined, etag: string): boolean {
  if (ifMatch === undefined) return true;
  const wanted = unquoteEtag(ifMatch);
  return wanted === '*' || wanted === etag;
}

// ---------------------------------------------------------------------------------------------------------------
// Devices

/** Device fields a caller may set (REST body, bulk item, DPS). */
export interface DeviceInput {
  deviceId: string;
  status?: string;
  statusReason?: string | null;
  capabilities?: { iotEdge?: boolean };
  authentication?: {
    type?: string;
    symmetricKey?: { primaryKey?: string | null; secondaryKey?: string | null } | null;
    x509Thumbprint?: { primaryThumbprint?: string | null; secondaryThumbprint?: string | null } | null;
  } | null;
  deviceScope?: string | null;
  parentScopes?: string[] | null;
}

const DEVICE_ID = /^[A-Za-z0-9\-:.+%_#*?!(),=@$']{1,128}$/;
const THUMBPRINT = /^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$/;

export function validateDeviceId(deviceId: unknown): string {
  if (typeof deviceId !== 'string' || !DEVICE_ID.test(deviceId)) {
    throw hubErrors.argument(`DeviceId ${String(deviceId)} is invalid`);
  }
  return deviceId;
}

function parseStatus(status: string | undefined): DeviceStatus {
  if (status === undefined || status === null) return 'enabled';
  const s = String(status).toLowerCase();
  if (s !== 'enabled' && s !== 'disabled') throw hubErrors.argument(`Invalid status ${status}`);
  return s;
}

/**
 * Normalises authentication like the service: sas with empty keys gets generated keys; selfSigned needs a
 * primary thumbprint (40 or 64 hex); certificateAuthority and none carry neither keys nor thumbprints.
 */
function parseAuthentication(input: DeviceInput['authentication']): DeviceAuthentication {
  const rawType = (input?.type ?? 'sas').toLowerCase();
  const types: Record<string, AuthenticationType> = {
    sas: 'sas',
    selfsigned: 'selfSigned',
    certificateauthority: 'certificateAuthority',
    none: 'none',
  };
  const type = types[rawType];
  if (!type) throw hubErrors.argument(`Authentication type ${input?.type} is not supported`);
  const empty: DeviceAuthentication = {
    type,
    symmetricKey: { primaryKey: null, secondaryKey: null },
    x509Thumbprint: { primaryThumbprint: null, secondaryThumbprint: null },
  };
  if (type === 'sas') {
    let primaryKey = input?.symmetricKey?.primaryKey || null;
    let secondaryKey = input?.symmetricKey?.secondaryKey || null;
    if (!primaryKey && !secondaryKey) {
      primaryKey = generateKey();
      secondaryKey = generateKey();
    }
    if (!primaryKey || !secondaryKey) throw hubErrors.argument('Both symmetric keys must be set, or neither');
    for (const key of [primaryKey, secondaryKey]) {
      if (!isValidSymmetricKey(key)) {
        throw hubErrors.argument('The symmetric key must be base64 of 16 to 64 bytes');
      }
    }
    if (primaryKey === secondaryKey) throw hubErrors.argument('Primary and secondary keys must differ');
    return { ...empty, symmetricKey: { primaryKey, secondaryKey } };
  }
  if (type === 'selfSigned') {
    const primary = input?.x509Thumbprint?.primaryThumbprint || null;
    const secondary = input?.x509Thumbprint?.secondaryThumbprint || null;
    if (!primary) throw hubErrors.argument('selfSigned authentication requires a primary thumbprint');
    for (const t of [primary, secondary]) {
      if (t && !THUMBPRINT.test(t)) throw hubErrors.argument(`Invalid thumbprint ${t}`);
    }
    return {
      ...empty,
      x509Thumbprint: {
        primaryThumbprint: primary.toUpperCase(),
        secondaryThumbprint: secondary?.toUpperCase() ?? null,
      },
    };
  }
  return empty;
}

function snapshot(device: DeviceRecord): DeviceRecord {
  return structuredClone(device);
}

function emptyTwin(): DeviceRecord['twin'] {
  const at = now();
  return {
    tags: {},
    desired: {},
    desiredVersion: 1,
    reported: {},
    reportedVersion: 1,
    version: 1,
    etag: twinEtag(1),
    lastDesiredUpdate: at,
    lastReportedUpdate: at,
  };
}

function hubEvent(hub: HubState, device: DeviceRecord) {
  return { hubName: hub.name, hubHostName: hub.hostName, deviceId: device.deviceId, device: snapshot(device) };
}

export function findDevice(hub: HubState, deviceId: string): DeviceRecord | undefined {
  return hub.devices.get(deviceId);
}

export function getDevice(hub: HubState, deviceId: string): DeviceRecord {
  const device = hub.devices.get(deviceId);
  if (!device) throw hubErrors.deviceNotFound(deviceId);
  return device;
}

/**
 * deviceScope and parentScopes as IoT Hub keeps them. An edge device's scope is generated at creation and immutable
 * ("Auto-generated and immutable for edge devices and modifiable in leaf devices to create child/parent
 * relationship", the service SDKs' Device.Scope); a leaf device's parentScopes is its deviceScope unless given
 * (azure-iot-sdk-csharp e2e RegistryManagerE2ETests: "The service should have copied the edge's scope to the leaf
 * device's parent scope array"); an edge device's parentScopes are kept as set.
 */
function scopesOf(
  input: DeviceInput,
  iotEdge: boolean,
  deviceId: string,
  generationId: string,
  previous?: DeviceRecord,
): { deviceScope?: string; parentScopes: string[] } {
  const given = typeof input.deviceScope === 'string' && input.deviceScope !== '' ? input.deviceScope : undefined;
  if (input.parentScopes !== undefined && input.parentScopes !== null) {
    if (!Array.isArray(input.parentScopes) || input.parentScopes.some((s) => typeof s !== 'string')) {
      throw hubErrors.argument('parentScopes must be an array of scopes');
    }
  }
  const parents = input.parentScopes?.length ? [...input.parentScopes] : undefined;
  if (iotEdge) {
    const own =
      previous?.capabilities.iotEdge && previous.deviceScope
        ? previous.deviceScope
        : (given ?? `ms-azure-iot-edge://${deviceId}-${generationId}`);
    return { deviceScope: own, parentScopes: parents ?? [] };
  }
  return { deviceScope: given, parentScopes: parents ?? (given ? [given] : []) };
}

/** Creates a device; 409 DeviceAlreadyExists if the id is taken. */
export function createDevice(hub: HubState, input: DeviceInput): DeviceRecord {
  const deviceId = validateDeviceId(input.deviceId);
  if (hub.devices.has(deviceId)) throw hubErrors.deviceAlreadyExists(deviceId);
  const generationId = newGenerationId();
  const iotEdge = !!input.capabilities?.iotEdge;
  const device: DeviceRecord = {
    deviceId,
    generationId,
    etag: newDeviceEtag(),
    status: parseStatus(input.status),
    statusReason: input.statusReason ?? null,
    statusUpdatedTime: NEVER,
    connectionState: 'Disconnected',
    connectionStateUpdatedTime: NEVER,
    lastActivityTime: NEVER,
    cloudToDeviceMessageCount: 0,
    capabilities: { iotEdge },
    authentication: parseAuthentication(input.authentication),
    ...scopesOf(input, iotEdge, deviceId, generationId),
    twin: emptyTwin(),
  };
  hub.devices.set(deviceId, device);
  hub.events.emit('deviceCreated', hubEvent(hub, device));
  return device;
}

/**
 * Replaces a device's settable fields; `ifMatch` is the raw If-Match value (`*`, `"etag"`) or undefined for an
 * unconditional update. 404 DeviceNotFound, 412 PreconditionFailed.
 */
export function updateDevice(hub: HubState, input: DeviceInput, ifMatch?: string): DeviceRecord {
  const deviceId = validateDeviceId(input.deviceId);
  const device = getDevice(hub, deviceId);
  if (!etagMatches(ifMatch, device.etag)) throw hubErrors.preconditionFailed(deviceId);
  const authentication = parseAuthentication(input.authentication);
  const status = parseStatus(input.status);
  const previous = snapshot(device);
  if (status !== device.status) device.statusUpdatedTime = now();
  device.status = status;
  // PUT replaces every settable field: one left out goes back to its default, as the service SDKs document for
  // Registry.update ("those properties will be reset").
  const iotEdge = !!input.capabilities?.iotEdge;
  const scopes = scopesOf(input, iotEdge, deviceId, device.generationId, previous);
  device.statusReason = input.statusReason ?? null;
  device.capabilities = { iotEdge };
  device.authentication = authentication;
  device.deviceScope = scopes.deviceScope;
  device.parentScopes = scopes.parentScopes;
  device.etag = newDeviceEtag();
  hub.events.emit('deviceUpdated', { ...hubEvent(hub, device), previous });
  return device;
}

/** PUT /devices/{id} semantics: no If-Match creates (409 if it exists); an If-Match updates (404 if missing). */
export function putDevice(hub: HubState, input: DeviceInput, ifMatch: string | undefined): DeviceRecord {
  return ifMatch === undefined ? createDevice(hub, input) : updateDevice(hub, input, ifMatch);
}

/** Deletes a device; `ifMatch` undefined or `*` is unconditional. */
export function deleteDevice(hub: HubState, deviceId: string, ifMatch?: string): DeviceRecord {
  const device = getDevice(hub, deviceId);
  if (!etagMatches(ifMatch, device.etag)) throw hubErrors.preconditionFailed(deviceId);
  hub.devices.delete(deviceId);
  hub.events.emit('deviceDeleted', hubEvent(hub, device));
  return device;
}

/** Connection tracking, for the MQTT layer. Emits deviceConnected/deviceDisconnected on change. */
export function setConnectionState(hub: HubState, deviceId: string, connected: boolean): void {
  const device = hub.devices.get(deviceId);
  if (!device) return;
  const state = connected ? 'Connected' : 'Disconnected';
  const at = now();
  if (connected) device.lastActivityTime = at;
  if (device.connectionState === state) return;
  device.connectionState = state;
  device.connectionStateUpdatedTime = at;
  hub.events.emit(connected ? 'deviceConnected' : 'deviceDisconnected', hubEvent(hub, device));
}

export function recordActivity(hub: HubState, deviceId: string): void {
  const device = hub.devices.get(deviceId);
  if (device) device.lastActivityTime = now();
}

export interface DeviceStatistics {
  totalDeviceCount: number;
  enabledDeviceCount: number;
  disabledDeviceCount: number;
}

export function deviceStatistics(hub: HubState): DeviceStatistics {
  let enabled = 0;
  for (const d of hub.devices.values()) if (d.status === 'enabled') enabled += 1;
  return {
    totalDeviceCount: hub.devices.size,
    enabledDeviceCount: enabled,
    disabledDeviceCount: hub.devices.size - enabled,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Bulk

export interface BulkItem extends Omit<DeviceInput, 'deviceId'> {
  id?: string;
  importMode?: string;
  etag?: string;
  eTag?: string;
}

export interface BulkResult {
  isSuccessful: boolean;
  errors: Array<{ deviceId: string; errorCode: string; errorStatus: string }>;
  warnings: Array<{ deviceId: string; warningCode: string; warningDetails: string }>;
}

export const BULK_MAX = 100;

/**
 * Bulk registry operation (POST /devices): each item independently; failures are reported per device and the
 * successful ones stay applied, as on Azure. `onApplied` hears of each device written.
 */
export function bulkDevices(
  hub: HubState,
  items: unknown,
  onApplied: (write: 'create' | 'update' | 'delete', deviceId: string) => void = () => undefined,
): BulkResult {
  if (!Array.isArray(items)) throw hubErrors.argument('The request body must be an array of devices');
  if (items.length === 0 || items.length > BULK_MAX) {
    throw hubErrors.argument(`The number of devices in a bulk operation must be between 1 and ${BULK_MAX}`);
  }
  const result: BulkResult = { isSuccessful: true, errors: [], warnings: [] };
  for (const raw of items as BulkItem[]) {
    const deviceId = String(raw?.id ?? '');
    try {
      const mode = String(raw?.importMode ?? 'create').toLowerCase();
      const etag = raw.eTag ?? raw.etag;
      const input: DeviceInput = { ...raw, deviceId };
      switch (mode) {
        case 'create':
          createDevice(hub, input);
          onApplied('create', deviceId);
          break;
        case 'update':
          updateDevice(hub, input);
          onApplied('update', deviceId);
          break;
        case 'updateifmatchetag':
          updateDevice(hub, input, etag ?? '');
          onApplied('update', deviceId);
          break;
        case 'delete':
          deleteDevice(hub, validateDeviceId(deviceId));
          onApplied('delete', deviceId);
          break;
        case 'deleteifmatchetag':
          deleteDevice(hub, validateDeviceId(deviceId), etag ?? '');
          onApplied('delete', deviceId);
          break;
        default:
          throw hubErrors.argument(`Unknown importMode ${raw.importMode}`);
      }
    } catch (err) {
      if (!(err instanceof AzureError)) throw err;
      result.isSuccessful = false;
      result.errors.push({ deviceId, errorCode: err.code, errorStatus: err.message });
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// Twins

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** JSON merge patch as twins use it: null removes, objects merge, everything else replaces. */
function mergePatch(target: Record<string, unknown>, patch: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith('$')) continue;
    if (value === null) delete target[key];
    else if (isPlainObject(value)) {
      const current = target[key];
      const next = isPlainObject(current) ? current : {};
      mergePatch(next, value);
      target[key] = next;
    } else target[key] = value;
  }
}

export interface TwinPatch {
  tags?: Record<string, unknown>;
  properties?: { desired?: TwinProperties; reported?: unknown };
}

function bumpTwin(twin: DeviceRecord['twin']): void {
  twin.version += 1;
  twin.etag = twinEtag(twin.version);
}

/** Service-side twin PATCH (tags and desired properties). 412 on etag mismatch; reported is read-only. */
export function patchTwin(hub: HubState, deviceId: string, body: unknown, ifMatch?: string): DeviceRecord {
  const device = getDevice(hub, deviceId);
  if (!isPlainObject(body)) throw hubErrors.argument('Twin patch must be an object');
  const patch = body as TwinPatch;
  if (patch.properties?.reported !== undefined) {
    throw hubErrors.argument('Reported properties cannot be updated by the service');
  }
  if (!etagMatches(ifMatch, device.twin.etag)) throw hubErrors.preconditionFailed(deviceId);
  const twin = device.twin;
  if (patch.tags !== undefined) {
    if (!isPlainObject(patch.tags)) throw hubErrors.argument('tags must be an object');
    mergePatch(twin.tags, patch.tags);
  }
  const desired = patch.properties?.desired;
  if (desired !== undefined) {
    if (!isPlainObject(desired)) throw hubErrors.argument('desired properties must be an object');
    mergePatch(twin.desired, desired);
    twin.desiredVersion += 1;
    twin.lastDesiredUpdate = now();
  }
  bumpTwin(twin);
  if (desired !== undefined) {
    hub.events.emit('twinDesiredUpdated', {
      hubName: hub.name,
      hubHostName: hub.hostName,
      deviceId,
      patch: { ...structuredClone(desired), $version: twin.desiredVersion },
      version: twin.desiredVersion,
    });
  }
  return device;
}

/** A twin document's properties without the `$metadata`/`$version` decorations GET adds. */
function undecorated(value: unknown, what: string): Record<string, unknown> {
  if (value === undefined || value === null) return {};
  if (!isPlainObject(value)) throw hubErrors.argument(`${what} must be an object`);
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) if (!key.startsWith('$')) out[key] = structuredClone(v);
  return out;
}

/**
 * Service-side twin PUT ("Replace Twin", `PUT /twins/{id}`): tags and desired properties replaced wholesale; reported
 * properties are the device's and are left as they are (a twin sent back as GET returned it carries them). 412 on
 * etag mismatch. Connected devices get the change as a desired patch, removed keys as null.
 */
export function putTwin(hub: HubState, deviceId: string, body: unknown, ifMatch?: string): DeviceRecord {
  const device = getDevice(hub, deviceId);
  if (!isPlainObject(body)) throw hubErrors.argument('The twin must be an object');
  const tags = undecorated(body.tags, 'tags');
  const desired = undecorated(isPlainObject(body.properties) ? body.properties.desired : undefined, 'desired');
  if (!etagMatches(ifMatch, device.twin.etag)) throw hubErrors.preconditionFailed(deviceId);
  const twin = device.twin;
  const removed = Object.keys(twin.desired).filter((key) => !(key in desired));
  twin.tags = tags;
  twin.desired = desired;
  twin.desiredVersion += 1;
  twin.lastDesiredUpdate = now();
  bumpTwin(twin);
  const patch: Record<string, unknown> = structuredClone(desired);
  for (const key of removed) patch[key] = null;
  hub.events.emit('twinDesiredUpdated', {
    hubName: hub.name,
    hubHostName: hub.hostName,
    deviceId,
    patch: { ...patch, $version: twin.desiredVersion },
    version: twin.desiredVersion,
  });
  return device;
}

/** Replaces tags and desired properties wholesale (DPS initial twin / data reset). */
export function replaceTwin(
  hub: HubState,
  deviceId: string,
  initial: { tags?: Record<string, unknown>; desired?: TwinProperties },
): DeviceRecord {
  const device = getDevice(hub, deviceId);
  const twin = device.twin;
  twin.tags = structuredClone(initial.tags ?? {});
  twin.desired = structuredClone(initial.desired ?? {});
  twin.desiredVersion += 1;
  twin.lastDesiredUpdate = now();
  bumpTwin(twin);
  return device;
}

/** Device-side reported-properties PATCH (MQTT). Returns the new reported version. */
export function patchReported(hub: HubState, deviceId: string, patch: Record<string, unknown>): number {
  const device = getDevice(hub, deviceId);
  if (!isPlainObject(patch)) throw hubErrors.argument('Reported properties patch must be an object');
  mergePatch(device.twin.reported, patch);
  device.twin.reportedVersion += 1;
  device.twin.lastReportedUpdate = now();
  bumpTwin(device.twin);
  device.lastActivityTime = now();
  return device.twin.reportedVersion;
}

// ---------------------------------------------------------------------------------------------------------------
// Wire shapes

export function deviceToWire(device: DeviceRecord): Record<string, unknown> {
  return {
    deviceId: device.deviceId,
    generationId: device.generationId,
    etag: device.etag,
    connectionState: device.connectionState,
    status: device.status,
    statusReason: device.statusReason,
    connectionStateUpdatedTime: device.connectionStateUpdatedTime,
    statusUpdatedTime: device.statusUpdatedTime,
    lastActivityTime: device.lastActivityTime,
    cloudToDeviceMessageCount: device.cloudToDeviceMessageCount,
    authentication: structuredClone(device.authentication),
    capabilities: { ...device.capabilities },
    ...(device.deviceScope ? { deviceScope: device.deviceScope } : {}),
    parentScopes: [...device.parentScopes],
  };
}

function withMetadata(props: TwinProperties, version: number, lastUpdated: string): Record<string, unknown> {
  return {
    ...structuredClone(props),
    $metadata: { $lastUpdated: lastUpdated, ...(version > 1 ? { $lastUpdatedVersion: version } : {}) },
    $version: version,
  };
}

/** Twin document as GET /twins/{id} and device queries return it. */
export function twinToWire(device: DeviceRecord): Record<string, unknown> {
  const twin = device.twin;
  return {
    deviceId: device.deviceId,
    etag: twin.etag,
    deviceEtag: device.etag,
    status: device.status,
    statusReason: device.statusReason,
    statusUpdateTime: device.statusUpdatedTime,
    connectionState: device.connectionState,
    lastActivityTime: device.lastActivityTime,
    cloudToDeviceMessageCount: device.cloudToDeviceMessageCount,
    authenticationType: device.authentication.type,
    x509Thumbprint: { ...device.authentication.x509Thumbprint },
    modelId: '',
    version: twin.version,
    tags: structuredClone(twin.tags),
    properties: {
      desired: withMetadata(twin.desired, twin.desiredVersion, twin.lastDesiredUpdate),
      reported: withMetadata(twin.reported, twin.reportedVersion, twin.lastReportedUpdate),
    },
    capabilities: { ...device.capabilities },
  };
}
