/**
 * Write counters: every successful state-changing call the emulated services receive, per surface, hub, operation
 * and resource. They let tests assert "exactly once" on what Azure would have done (e.g. "device X was deleted
 * exactly once in hub Y") rather than on Temporal events, which a retried activity repeats.
 *
 * What counts: calls on the Azure surfaces (REST, and device registrations over HTTP or MQTT) that changed state.
 * A call answered with an error wrote nothing and is not counted; a call whose answer was lost after the write
 * (fault rule with phase `after`) is counted. What DPS does to hubs on its own (creating the device at
 * registration, removing it from the previous hub) is not a call on the hub surface and is not counted there.
 */

export const HUB_WRITE_OPERATIONS = [
  'deviceCreate',
  'deviceUpdate',
  'deviceDelete',
  'twinUpdate',
  'twinReplace',
  /** The bulk call itself (`POST /devices`); each device in it is also counted under its own operation. */
  'deviceBulk',
] as const;

export const DPS_WRITE_OPERATIONS = [
  'enrollmentCreate',
  'enrollmentUpdate',
  'enrollmentDelete',
  'enrollmentGroupCreate',
  'enrollmentGroupUpdate',
  'enrollmentGroupDelete',
  /** The bulk call itself (`POST /enrollments`); each enrollment in it is also counted under its own operation. */
  'enrollmentBulk',
  'registrationStateDelete',
  /** A device registration DPS accepted (any outcome: assigned, failed or disabled), per registration id. */
  'register',
] as const;

export type HubWriteOperation = (typeof HUB_WRITE_OPERATIONS)[number];
export type DpsWriteOperation = (typeof DPS_WRITE_OPERATIONS)[number];
export type WriteOperation = HubWriteOperation | DpsWriteOperation;
export type CounterSurface = 'hub' | 'dps';

export type WriteKey =
  | { surface: 'hub'; hub: string; operation: HubWriteOperation; id?: string }
  | { surface: 'dps'; operation: DpsWriteOperation; id?: string };

export interface CounterFilter {
  surface?: CounterSurface;
  /** Hub name (the emulator's key, e.g. `test`). */
  hub?: string;
  operation?: WriteOperation;
  /** Device id, registration id or enrollment group id (DPS ids match case-insensitively, as DPS does). */
  id?: string;
}

export interface CounterEntry {
  surface: CounterSurface;
  hub?: string;
  operation: WriteOperation;
  id?: string;
  count: number;
}

/** Counts at one moment, for {@link WriteCounters.diff}. */
export interface CounterSnapshot {
  readonly counts: ReadonlyMap<string, number>;
}

interface Slot {
  key: WriteKey;
  count: number;
}

/** DPS ids are case-insensitive; device ids are not. */
function normalisedId(surface: CounterSurface, id: string | undefined): string {
  if (id === undefined) return '';
  return surface === 'dps' ? id.toLowerCase() : id;
}

function slotKey(surface: CounterSurface, hub: string | undefined, operation: string, id: string | undefined): string {
  return JSON.stringify([surface, hub ?? '', operation, normalisedId(surface, id)]);
}

function matches(key: WriteKey, filter: CounterFilter): boolean {
  if (filter.surface !== undefined && filter.surface !== key.surface) return false;
  if (filter.hub !== undefined && (key.surface !== 'hub' || filter.hub !== key.hub)) return false;
  if (filter.operation !== undefined && filter.operation !== key.operation) return false;
  if (filter.id !== undefined && normalisedId(key.surface, filter.id) !== normalisedId(key.surface, key.id)) {
    return false;
  }
  return true;
}

function toEntry(slot: Slot, count = slot.count): CounterEntry {
  return {
    surface: slot.key.surface,
    ...(slot.key.surface === 'hub' ? { hub: slot.key.hub } : {}),
    operation: slot.key.operation,
    ...(slot.key.id !== undefined ? { id: slot.key.id } : {}),
    count,
  };
}

export class WriteCounters {
  private readonly slots = new Map<string, Slot>();

  /** Counts one successful write. */
  record(key: WriteKey): void {
    const hub = key.surface === 'hub' ? key.hub : undefined;
    const k = slotKey(key.surface, hub, key.operation, key.id);
    const slot = this.slots.get(k);
    if (slot) slot.count += 1;
    else this.slots.set(k, { key: { ...key }, count: 1 });
  }

  /** The number of writes matching every field given (all writes with no filter). */
  get(filter: CounterFilter = {}): number {
    let total = 0;
    for (const slot of this.slots.values()) if (matches(slot.key, filter)) total += slot.count;
    return total;
  }

  /** Every counter matching the filter, in a stable order. */
  list(filter: CounterFilter = {}): CounterEntry[] {
    return [...this.slots.entries()]
      .filter(([, slot]) => matches(slot.key, filter))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, slot]) => toEntry(slot));
  }

  snapshot(): CounterSnapshot {
    return { counts: new Map([...this.slots].map(([k, slot]) => [k, slot.count])) };
  }

  /** What was written since `since`: each counter that grew, with `count` the growth. */
  diff(since: CounterSnapshot, filter: CounterFilter = {}): CounterEntry[] {
    return [...this.slots.entries()]
      .filter(([, slot]) => matches(slot.key, filter))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .flatMap(([k, slot]) => {
        const grown = slot.count - (since.counts.get(k) ?? 0);
        return grown > 0 ? [toEntry(slot, grown)] : [];
      });
  }

  reset(): void {
    this.slots.clear();
  }
}
