/**
 * The emulator's shared state: IoT hubs, one DPS instance, quotas and faults, and the event bus that ties them
 * together, plus the write counters. Every service module (hub/, dps/, mqtt/, eventgrid/, control/) works on this;
 * it imports none of them, only the record shapes (hub/model.ts, dps/model.ts), SAS keys and the counters.
 *
 * Node is single-threaded: every read-modify-write of this state must stay synchronous (no `await` between the
 * read and the write), so concurrent requests cannot lose updates.
 */
import { EventEmitter } from 'node:events';
import { WriteCounters } from './counters';
import type { DeviceRecord, HubTier } from './hub/model';
import type { DeviceRegistrationState, EnrollmentGroup, IndividualEnrollment, LinkedHub } from './dps/model';
import { generateKey, type AccessRight, type SharedAccessPolicy } from './security/sas';

// ---------------------------------------------------------------------------------------------------------------
// IoT hub

export interface HubState {
  /** Emulator-side key (e.g. `test`); the Azure hub name is the first label of `hostName`. */
  name: string;
  hostName: string;
  tier: HubTier;
  units: number;
  policies: SharedAccessPolicy[];
  devices: Map<string, DeviceRecord>;
  /** The emulator-wide bus, so hub operations can announce changes without another parameter. */
  events: EmulatorEvents;
}

// ---------------------------------------------------------------------------------------------------------------
// DPS

export interface DpsState {
  name: string;
  hostName: string;
  idScope: string;
  policies: SharedAccessPolicy[];
  linkedHubs: LinkedHub[];
  enrollments: Map<string, IndividualEnrollment>;
  enrollmentGroups: Map<string, EnrollmentGroup>;
  registrations: Map<string, DeviceRegistrationState>;
}

// ---------------------------------------------------------------------------------------------------------------
// Event bus

export interface DeviceEvent {
  hubName: string;
  hubHostName: string;
  deviceId: string;
  /** Snapshot after the change (before it, for deviceDeleted). */
  device: DeviceRecord;
}

export interface DeviceUpdatedEvent extends DeviceEvent {
  previous: DeviceRecord;
}

export interface TwinDesiredUpdatedEvent {
  hubName: string;
  hubHostName: string;
  deviceId: string;
  /** The desired patch as applied (with `$version`), for pushing to connected devices. */
  patch: Record<string, unknown>;
  version: number;
}

/** One device-to-cloud message the hub accepted (a batch over HTTPS gives one event per message). */
export interface DeviceTelemetryEvent {
  hubName: string;
  hubHostName: string;
  deviceId: string;
  protocol: 'mqtt' | 'https';
  body: Buffer;
  /** Application properties: MQTT property-bag keys without `$.`, HTTPS `iothub-app-*` without the prefix. */
  properties: Record<string, string>;
  messageId?: string;
  correlationId?: string;
}

export interface EmulatorEventMap {
  deviceCreated: [DeviceEvent];
  deviceUpdated: [DeviceUpdatedEvent];
  deviceDeleted: [DeviceEvent];
  deviceConnected: [DeviceEvent];
  deviceDisconnected: [DeviceEvent];
  twinDesiredUpdated: [TwinDesiredUpdatedEvent];
  deviceTelemetry: [DeviceTelemetryEvent];
}

export type EmulatorEvents = EventEmitter<EmulatorEventMap>;

// ---------------------------------------------------------------------------------------------------------------
// Quotas and fault injection (configured through the control API; limits/ applies them)

export type Surface = 'hub' | 'dpsService' | 'dpsDevice' | 'mqtt';

export type QuotaClass =
  | 'registry'
  | 'query'
  | 'twinRead'
  | 'twinUpdate'
  | 'connection'
  | 'deviceToCloud'
  | 'cloudToDeviceReceive'
  | 'dpsOperation'
  | 'dpsRegistration'
  | 'dpsStatusPoll';

export interface QuotaConfig {
  enabled: boolean;
  /** Multiplies every rate (and burst): 0.01 makes quotas bite after a few calls in a test. */
  scale: number;
  /** Per-minute rates that replace the Azure formula for a class. */
  overrides: Partial<Record<QuotaClass, number>>;
}

export type FaultPhase = 'before' | 'after';

export interface FaultRule {
  id: string;
  surface?: Surface;
  /** Hub name (emulator key) the rule is limited to. */
  hub?: string;
  /** Operation name as limits/classify.ts gives it, or its write counter's name (counters.ts), or '*'. */
  operation: string;
  /**
   * The answer instead of the real one: an HTTP status (400–599; over MQTT, the status of the response topic), or 0
   * to drop the connection without answering. Omitted: the call is only delayed by `latencyMs`.
   */
  status?: number;
  /** Delay for matching calls only: before the call runs (phase `before`) or before its answer (phase `after`). */
  latencyMs?: number;
  /**
   * `before`: the call is not applied. `after`: the call is applied, and then its answer is replaced, dropped or
   * delayed, so the client cannot tell that its write happened. An `after` rule is used up only by calls that
   * succeeded (a failed call wrote nothing, so it is answered as it is).
   */
  phase: FaultPhase;
  /** Remaining matching calls; the rule is removed when it reaches 0. */
  times: number;
  code?: string;
  message?: string;
}

export interface FaultConfig {
  /** Probability (0–1) that any call fails with `errorStatus`. */
  errorRate: number;
  errorStatus: number;
  /** Added latency for every call, in milliseconds. */
  latencyMs: number;
  rules: FaultRule[];
}

export interface Bucket {
  tokens: number;
  capacity: number;
  perMs: number;
  updatedAt: number;
}

export interface LimitsState {
  quotas: QuotaConfig;
  faults: FaultConfig;
  buckets: Map<string, Bucket>;
  /** Calls answered 429 by a quota, per bucket key (e.g. `hub:test:registry`), since the last reset. */
  throttled: Map<string, number>;
  nextRuleId: number;
}

export function createLimitsState(): LimitsState {
  return {
    quotas: { enabled: false, scale: 1, overrides: {} },
    faults: { errorRate: 0, errorStatus: 500, latencyMs: 0, rules: [] },
    buckets: new Map(),
    throttled: new Map(),
    nextRuleId: 1,
  };
}

// ---------------------------------------------------------------------------------------------------------------

export interface EmulatorState {
  hubs: Map<string, HubState>;
  dps: DpsState;
  events: EmulatorEvents;
  limits: LimitsState;
  /** Successful writes per surface, hub, operation and resource (emulator/counters.ts). */
  counters: WriteCounters;
}

export const DEFAULT_DPS_HOST = 'emulator-dps.azure-devices-provisioning.net';
export const GLOBAL_DPS_HOST = 'global.azure-devices-provisioning.net';
export const DEFAULT_ID_SCOPE = '0ne00000001';

export function defaultHubPolicies(): SharedAccessPolicy[] {
  const policy = (keyName: string, rights: AccessRight[]): SharedAccessPolicy => ({
    keyName,
    primaryKey: generateKey(),
    secondaryKey: generateKey(),
    rights,
  });
  return [
    policy('iothubowner', ['RegistryRead', 'RegistryWrite', 'ServiceConnect', 'DeviceConnect']),
    policy('service', ['ServiceConnect']),
    policy('device', ['DeviceConnect']),
    policy('registryRead', ['RegistryRead']),
    policy('registryReadWrite', ['RegistryRead', 'RegistryWrite']),
  ];
}

export function defaultDpsPolicies(): SharedAccessPolicy[] {
  return [
    {
      keyName: 'provisioningserviceowner',
      primaryKey: generateKey(),
      secondaryKey: generateKey(),
      rights: [
        'ServiceConfig',
        'EnrollmentRead',
        'EnrollmentWrite',
        'RegistrationStatusRead',
        'RegistrationStatusWrite',
      ],
    },
    {
      keyName: 'enrollmentread',
      primaryKey: generateKey(),
      secondaryKey: generateKey(),
      rights: ['EnrollmentRead', 'RegistrationStatusRead'],
    },
  ];
}

export interface DpsOptions {
  name?: string;
  hostName?: string;
  idScope?: string;
}

export function createEmulatorState(dpsOptions: DpsOptions = {}): EmulatorState {
  const events: EmulatorEvents = new EventEmitter<EmulatorEventMap>();
  // Many independent listeners (MQTT sessions, Event Grid subscriptions) are normal here.
  events.setMaxListeners(0);
  const hostName = dpsOptions.hostName ?? DEFAULT_DPS_HOST;
  return {
    hubs: new Map(),
    events,
    limits: createLimitsState(),
    counters: new WriteCounters(),
    dps: {
      name: dpsOptions.name ?? hostName.split('.')[0],
      hostName,
      idScope: dpsOptions.idScope ?? DEFAULT_ID_SCOPE,
      policies: defaultDpsPolicies(),
      linkedHubs: [],
      enrollments: new Map(),
      enrollmentGroups: new Map(),
      registrations: new Map(),
    },
  };
}

/** `HostName=…;SharedAccessKeyName=…;SharedAccessKey=…` for a policy. */
export function policyConnectionString(hostName: string, policy: SharedAccessPolicy): string {
  return `HostName=${hostName};SharedAccessKeyName=${policy.keyName};SharedAccessKey=${policy.primaryKey}`;
}
