/**
 * Event Grid for the emulated IoT hubs: webhook event subscriptions per hub, Azure's validation handshake, and
 * delivery of Microsoft.Devices.DeviceCreated / DeviceDeleted / DeviceConnected / DeviceDisconnected events in the
 * Event Grid schema with retries.
 *
 * What a subscriber sees (as from Azure):
 * - On `subscribe`, one POST with `aeg-event-type: SubscriptionValidation` and a
 *   `Microsoft.EventGrid.SubscriptionValidationEvent`; the subscription exists only if the endpoint answers 2xx with
 *   `{"validationResponse": "<validationCode>"}`.
 * - Then one POST per event (maxEventsPerBatch 1): a JSON array holding the event, headers `aeg-event-type:
 *   Notification`, `aeg-subscription-name`, `aeg-delivery-count` (0 on the first attempt), `aeg-data-version`,
 *   `aeg-metadata-version`.
 * - Connection events carry `data.deviceConnectionStateEventInfo.sequenceNumber`: a 64-character upper-case hex
 *   string that increases per hub (compare as strings, as Azure documents).
 * - A subscription's optional `secret` is sent with every request (the handshake included) in two places, so the
 *   receiver may check either: the query parameter `code` (Azure's convention for secrets in webhook URLs) and the
 *   header `x-eventgrid-secret` (an Azure "static delivery property" marked secret).
 * - Deliveries that fail (network error, timeout, non-2xx) are retried with exponential back-off up to
 *   `maxDeliveryAttempts`; 400 and 413 are not retried (as on Azure). Events that are given up are kept as
 *   dead letters. Per subscription, events are delivered one at a time in the order they happened.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { twinToWire } from '../hub/registry';
import type { DeviceEvent, EmulatorState } from '../state';

export const IOT_HUB_EVENT_TYPES = [
  'Microsoft.Devices.DeviceCreated',
  'Microsoft.Devices.DeviceDeleted',
  'Microsoft.Devices.DeviceConnected',
  'Microsoft.Devices.DeviceDisconnected',
] as const;
export type IotHubEventType = (typeof IOT_HUB_EVENT_TYPES)[number];

export const SECRET_HEADER = 'x-eventgrid-secret';
export const SECRET_QUERY_PARAMETER = 'code';

export interface EventGridOptions {
  /** Attempts per event, the first included (Azure's default is 30). */
  maxDeliveryAttempts: number;
  /** Delay before the second attempt; doubles after each failure up to `maxRetryDelayMs`. */
  initialRetryDelayMs: number;
  maxRetryDelayMs: number;
  /** How long one delivery (or the handshake) may take before it counts as failed. */
  requestTimeoutMs: number;
  /** Used in each event's `topic` (`/SUBSCRIPTIONS/<id>/RESOURCEGROUPS/<group>/…`). */
  azureSubscriptionId: string;
  resourceGroup: string;
}

export const DEFAULT_EVENT_GRID_OPTIONS: EventGridOptions = {
  maxDeliveryAttempts: 30,
  initialRetryDelayMs: 10_000,
  maxRetryDelayMs: 60 * 60_000,
  requestTimeoutMs: 30_000,
  azureSubscriptionId: '00000000-0000-0000-0000-000000000000',
  resourceGroup: 'iot-emulator',
};

export interface EventSubscriptionInput {
  /** Emulator hub name (the key of `state.hubs`). */
  hub: string;
  /** Unique per hub: 3–64 letters, digits and hyphens, as Azure requires. */
  name: string;
  endpointUrl: string;
  secret?: string;
  /** Default: all four device event types. */
  includedEventTypes?: IotHubEventType[];
}

/** A subscription as persisted in the emulator's state file (secret included). */
export interface EventSubscriptionRecord extends EventSubscriptionInput {
  includedEventTypes: IotHubEventType[];
  createdTime: string;
}

export interface EventGridEvent {
  id: string;
  topic: string;
  subject: string;
  eventType: string;
  eventTime: string;
  data: Record<string, unknown>;
  dataVersion: string;
  metadataVersion: string;
}

export interface EventSubscriptionView {
  hub: string;
  name: string;
  /** Without the secret. */
  endpointUrl: string;
  hasSecret: boolean;
  includedEventTypes: IotHubEventType[];
  provisioningState: 'Succeeded';
  createdTime: string;
  delivered: number;
  /** Events waiting for (re)delivery, the one in flight included. */
  pending: number;
  deadLettered: number;
  lastDeliveryError?: string;
}

export interface DeadLetter {
  hub: string;
  subscription: string;
  event: EventGridEvent;
  attempts: number;
  lastError: string;
  deadLetteredTime: string;
}

/** Thrown by `subscribe` for invalid input (status 400), an unknown hub (404) or a duplicate name (409). */
export class EventGridError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'EventGridError';
  }
}

interface Pending {
  event: EventGridEvent;
  attempts: number;
}

interface Subscription {
  input: Required<Omit<EventSubscriptionInput, 'secret'>> & { secret?: string };
  createdTime: string;
  queue: Pending[];
  running: boolean;
  delivered: number;
  deadLettered: number;
  lastDeliveryError?: string;
  abort: AbortController;
}

class DeliveryFailure extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

const NAME_PATTERN = /^[A-Za-z0-9-]{3,64}$/;

/** Windows FILETIME (100 ns ticks since 1601) of `ms`, as 16 hex digits: Azure's sequence numbers embed one. */
function fileTimeHex(ms: number): string {
  const ticks = (BigInt(ms) + 11_644_473_600_000n) * 10_000n;
  return ticks.toString(16).toUpperCase().padStart(16, '0');
}

function azureHubName(hostName: string): string {
  return hostName.split('.')[0];
}

export class EventGrid {
  private currentOptions: EventGridOptions;
  private readonly subscriptions = new Map<string, Map<string, Subscription>>();
  private readonly deadLetterList: DeadLetter[] = [];
  private readonly sequenceCounters = new Map<string, bigint>();
  private readonly sequencePrefix = '0'.repeat(16) + fileTimeHex(Date.now());
  private readonly idleWaiters: Array<() => void> = [];
  private readonly listeners: Array<[string, (e: DeviceEvent) => void]>;
  private closed = false;

  constructor(
    private readonly state: EmulatorState,
    options: Partial<EventGridOptions> = {},
  ) {
    this.currentOptions = { ...DEFAULT_EVENT_GRID_OPTIONS, ...options };
    this.listeners = [
      ['deviceCreated', (e) => this.publish(e, 'Microsoft.Devices.DeviceCreated')],
      ['deviceDeleted', (e) => this.publish(e, 'Microsoft.Devices.DeviceDeleted')],
      ['deviceConnected', (e) => this.publish(e, 'Microsoft.Devices.DeviceConnected')],
      ['deviceDisconnected', (e) => this.publish(e, 'Microsoft.Devices.DeviceDisconnected')],
    ];
    for (const [name, listener] of this.listeners) {
      state.events.on(name as 'deviceCreated', listener);
    }
  }

  get options(): EventGridOptions {
    return { ...this.currentOptions };
  }

  /** Changes delivery settings (retries in progress pick them up at their next attempt). */
  configure(options: Partial<EventGridOptions>): EventGridOptions {
    this.currentOptions = { ...this.currentOptions, ...options };
    return this.options;
  }

  /**
   * Creates a subscription after the validation handshake succeeds. Rejects with EventGridError (400
   * `WebhookValidationFailed`) when the endpoint does not echo the validation code, as Azure fails the creation.
   */
  async subscribe(input: EventSubscriptionInput): Promise<EventSubscriptionView> {
    const hub = this.state.hubs.get(input.hub);
    if (!hub) throw new EventGridError(404, 'HubNotFound', `IoT hub ${input.hub} does not exist`);
    if (!NAME_PATTERN.test(input.name)) {
      throw new EventGridError(400, 'InvalidName', 'Subscription names are 3-64 letters, digits and hyphens');
    }
    let url: URL;
    try {
      url = new URL(input.endpointUrl);
    } catch {
      throw new EventGridError(400, 'InvalidEndpoint', `Invalid webhook endpoint URL ${input.endpointUrl}`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new EventGridError(400, 'InvalidEndpoint', 'The webhook endpoint must be an http(s) URL');
    }
    const types = input.includedEventTypes ?? [...IOT_HUB_EVENT_TYPES];
    const unknown = types.filter((t) => !(IOT_HUB_EVENT_TYPES as readonly string[]).includes(t));
    if (unknown.length > 0) {
      throw new EventGridError(400, 'InvalidEventType', `Unsupported event types: ${unknown.join(', ')}`);
    }
    if (this.hubSubscriptions(input.hub).has(input.name.toLowerCase())) {
      throw new EventGridError(409, 'Conflict', `Event subscription ${input.name} already exists`);
    }
    const subscription: Subscription = {
      input: { hub: input.hub, name: input.name, endpointUrl: input.endpointUrl, includedEventTypes: types },
      createdTime: new Date().toISOString(),
      queue: [],
      running: false,
      delivered: 0,
      deadLettered: 0,
      abort: new AbortController(),
    };
    if (input.secret) subscription.input.secret = input.secret;

    const validationCode = randomUUID().toUpperCase();
    const validationEvent: EventGridEvent = {
      id: randomUUID(),
      topic: this.topic(hub.hostName),
      subject: '',
      eventType: 'Microsoft.EventGrid.SubscriptionValidationEvent',
      eventTime: new Date().toISOString(),
      data: { validationCode },
      dataVersion: '2',
      metadataVersion: '1',
    };
    let answer: unknown;
    try {
      answer = await this.post(subscription, validationEvent, 'SubscriptionValidation', 0);
    } catch (err) {
      throw new EventGridError(
        400,
        'WebhookValidationFailed',
        `Webhook validation handshake failed for ${input.endpointUrl}: ${(err as Error).message}`,
      );
    }
    const echoed = (answer as { validationResponse?: unknown } | undefined)?.validationResponse;
    if (echoed !== validationCode) {
      throw new EventGridError(
        400,
        'WebhookValidationFailed',
        `Webhook validation handshake failed for ${input.endpointUrl}: the response did not contain the validation code`,
      );
    }
    // The handshake awaited: check again so two concurrent creations of one name cannot both succeed.
    const existing = this.hubSubscriptions(input.hub);
    if (existing.has(input.name.toLowerCase())) {
      throw new EventGridError(409, 'Conflict', `Event subscription ${input.name} already exists`);
    }
    existing.set(input.name.toLowerCase(), subscription);
    return this.view(subscription);
  }

  /** Every subscription with its secret, for the emulator's state file. */
  exportSubscriptions(): EventSubscriptionRecord[] {
    const records: EventSubscriptionRecord[] = [];
    for (const subs of this.subscriptions.values()) {
      for (const { input, createdTime } of subs.values()) {
        records.push({ ...input, includedEventTypes: [...input.includedEventTypes], createdTime });
      }
    }
    return records;
  }

  /** Re-creates a subscription from the state file, without a new handshake (Azure keeps validated ones). */
  restoreSubscription(record: EventSubscriptionRecord): void {
    const subscription: Subscription = {
      input: {
        hub: record.hub,
        name: record.name,
        endpointUrl: record.endpointUrl,
        includedEventTypes: [...record.includedEventTypes],
        ...(record.secret ? { secret: record.secret } : {}),
      },
      createdTime: record.createdTime,
      queue: [],
      running: false,
      delivered: 0,
      deadLettered: 0,
      abort: new AbortController(),
    };
    this.hubSubscriptions(record.hub).set(record.name.toLowerCase(), subscription);
  }

  /** Removes a subscription; pending deliveries are dropped. Returns false if there was none. */
  unsubscribe(hub: string, name: string): boolean {
    const subs = this.subscriptions.get(hub);
    const subscription = subs?.get(name.toLowerCase());
    if (!subs || !subscription) return false;
    subscription.abort.abort();
    subscription.queue.length = 0;
    subs.delete(name.toLowerCase());
    this.notifyIfIdle();
    return true;
  }

  list(hub?: string): EventSubscriptionView[] {
    const views: EventSubscriptionView[] = [];
    for (const [hubName, subs] of this.subscriptions) {
      if (hub !== undefined && hub !== hubName) continue;
      for (const subscription of subs.values()) views.push(this.view(subscription));
    }
    return views;
  }

  get(hub: string, name: string): EventSubscriptionView | undefined {
    const subscription = this.subscriptions.get(hub)?.get(name.toLowerCase());
    return subscription && this.view(subscription);
  }

  deadLetters(hub?: string): DeadLetter[] {
    return this.deadLetterList.filter((d) => hub === undefined || d.hub === hub);
  }

  /** Resolves once no subscription has anything left to deliver (for tests and orderly shutdown). */
  whenIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops listening to the hubs and abandons pending deliveries. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [name, listener] of this.listeners) {
      this.state.events.off(name as 'deviceCreated', listener);
    }
    for (const subs of this.subscriptions.values()) {
      for (const subscription of subs.values()) {
        subscription.abort.abort();
        subscription.queue.length = 0;
      }
    }
    this.subscriptions.clear();
    this.notifyIfIdle();
  }

  private hubSubscriptions(hub: string): Map<string, Subscription> {
    let subs = this.subscriptions.get(hub);
    if (!subs) {
      subs = new Map();
      this.subscriptions.set(hub, subs);
    }
    return subs;
  }

  private topic(hubHostName: string): string {
    const { azureSubscriptionId, resourceGroup } = this.options;
    return (
      `/SUBSCRIPTIONS/${azureSubscriptionId}/RESOURCEGROUPS/${resourceGroup}` +
      `/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/${azureHubName(hubHostName)}`
    ).toUpperCase();
  }

  private nextSequenceNumber(hub: string): string {
    const next = (this.sequenceCounters.get(hub) ?? 0n) + 1n;
    this.sequenceCounters.set(hub, next);
    return this.sequencePrefix + next.toString(16).toUpperCase().padStart(32, '0');
  }

  private publish(e: DeviceEvent, eventType: IotHubEventType): void {
    if (this.closed) return;
    const hubName = azureHubName(e.hubHostName);
    const connection =
      eventType === 'Microsoft.Devices.DeviceConnected' || eventType === 'Microsoft.Devices.DeviceDisconnected';
    // The sequence number is drawn even without subscribers, so it reflects the hub's own ordering.
    const data: Record<string, unknown> = connection
      ? {
          deviceConnectionStateEventInfo: { sequenceNumber: this.nextSequenceNumber(e.hubName) },
          hubName,
          deviceId: e.deviceId,
        }
      : { twin: twinToWire(e.device), hubName, deviceId: e.deviceId };
    const subs = this.subscriptions.get(e.hubName);
    if (!subs) return;
    // One event, same id, for every subscription (as Event Grid fans out one published event).
    const event: EventGridEvent = {
      id: randomUUID(),
      topic: this.topic(e.hubHostName),
      subject: `devices/${e.deviceId}`,
      eventType,
      eventTime: new Date().toISOString(),
      data,
      dataVersion: '1',
      metadataVersion: '1',
    };
    for (const subscription of subs.values()) {
      if (!subscription.input.includedEventTypes.includes(eventType)) continue;
      subscription.queue.push({ event, attempts: 0 });
      if (!subscription.running) void this.drain(subscription);
    }
  }

  private async drain(subscription: Subscription): Promise<void> {
    subscription.running = true;
    const { signal } = subscription.abort;
    try {
      while (subscription.queue.length > 0 && !signal.aborted) {
        const pending = subscription.queue[0];
        try {
          await this.post(subscription, pending.event, 'Notification', pending.attempts);
          pending.attempts += 1;
          subscription.delivered += 1;
          subscription.queue.shift();
        } catch (err) {
          pending.attempts += 1;
          const failure = err instanceof DeliveryFailure ? err : new DeliveryFailure(String(err), true);
          subscription.lastDeliveryError = failure.message;
          if (signal.aborted) break;
          if (!failure.retryable || pending.attempts >= this.currentOptions.maxDeliveryAttempts) {
            subscription.queue.shift();
            subscription.deadLettered += 1;
            this.deadLetterList.push({
              hub: subscription.input.hub,
              subscription: subscription.input.name,
              event: pending.event,
              attempts: pending.attempts,
              lastError: failure.message,
              deadLetteredTime: new Date().toISOString(),
            });
            continue;
          }
          const backoff = Math.min(
            this.currentOptions.initialRetryDelayMs * 2 ** (pending.attempts - 1),
            this.currentOptions.maxRetryDelayMs,
          );
          // Unref'd: a pending retry must not keep the process alive.
          await delay(backoff, undefined, { signal, ref: false }).catch(() => undefined);
        }
      }
    } finally {
      subscription.running = false;
      this.notifyIfIdle();
    }
  }

  /** POSTs `[event]`; resolves with the parsed JSON answer (if any) on 2xx, throws DeliveryFailure otherwise. */
  private async post(
    subscription: Subscription,
    event: EventGridEvent,
    eventType: 'SubscriptionValidation' | 'Notification',
    deliveryCount: number,
  ): Promise<unknown> {
    const url = new URL(subscription.input.endpointUrl);
    const headers: Record<string, string> = {
      'content-type': 'application/json; charset=utf-8',
      'aeg-event-type': eventType,
      'aeg-subscription-name': subscription.input.name.toUpperCase(),
      'aeg-delivery-count': String(deliveryCount),
      'aeg-data-version': event.dataVersion,
      'aeg-metadata-version': event.metadataVersion,
    };
    if (subscription.input.secret) {
      url.searchParams.set(SECRET_QUERY_PARAMETER, subscription.input.secret);
      headers[SECRET_HEADER] = subscription.input.secret;
    }
    const signal = AbortSignal.any([
      AbortSignal.timeout(this.currentOptions.requestTimeoutMs),
      subscription.abort.signal,
    ]);
    let response: Response;
    try {
      response = await fetch(url, { method: 'POST', headers, body: JSON.stringify([event]), signal });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      throw new DeliveryFailure(`${(err as Error).message}${cause ? ` (${cause})` : ''}`, true);
    }
    const text = await response.text().catch(() => '');
    if (response.status < 200 || response.status > 204) {
      throw new DeliveryFailure(`HTTP ${response.status}`, response.status !== 400 && response.status !== 413);
    }
    if (!text) return undefined;
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return undefined;
    }
  }

  private view(subscription: Subscription): EventSubscriptionView {
    const { input } = subscription;
    return {
      hub: input.hub,
      name: input.name,
      endpointUrl: input.endpointUrl,
      hasSecret: input.secret !== undefined,
      includedEventTypes: [...input.includedEventTypes],
      provisioningState: 'Succeeded',
      createdTime: subscription.createdTime,
      delivered: subscription.delivered,
      pending: subscription.queue.length,
      deadLettered: subscription.deadLettered,
      ...(subscription.lastDeliveryError ? { lastDeliveryError: subscription.lastDeliveryError } : {}),
    };
  }

  private isIdle(): boolean {
    for (const subs of this.subscriptions.values()) {
      for (const subscription of subs.values()) {
        if (subscription.running || subscription.queue.length > 0) return false;
      }
    }
    return true;
  }

  private notifyIfIdle(): void {
    if (!this.isIdle()) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}

const instances = new WeakMap<EmulatorState, EventGrid>();

/**
 * The emulator's Event Grid, created on first use (so nothing runs for emulators without subscriptions). `options`
 * apply when it is created; later, use `configure`.
 */
export function eventGridFor(state: EmulatorState, options: Partial<EventGridOptions> = {}): EventGrid {
  let grid = instances.get(state);
  if (!grid) {
    grid = new EventGrid(state, options);
    instances.set(state, grid);
  }
  return grid;
}

/** Stops the emulator's Event Grid, if it was started (startEmulator's stop calls this). */
export function closeEventGrid(state: EmulatorState): void {
  instances.get(state)?.close();
  instances.delete(state);
}

/** The emulator's subscriptions for its state file, without starting an Event Grid that is not running. */
export function exportEventSubscriptions(state: EmulatorState): EventSubscriptionRecord[] {
  return instances.get(state)?.exportSubscriptions() ?? [];
}

export function restoreEventSubscriptions(state: EmulatorState, records: EventSubscriptionRecord[]): void {
  if (records.length === 0) return;
  const grid = eventGridFor(state);
  for (const record of records) grid.restoreSubscription(record);
}
