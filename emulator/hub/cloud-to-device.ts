/**
 * IoT Hub's per-device cloud-to-device queues, shared by the device protocols: MQTT pushes to a subscribed device,
 * HTTPS devices poll, lock and settle. The message lifecycle is the one "Understand cloud-to-device messaging"
 * (iot-hub-devguide-messages-c2d) describes: a message is Enqueued; a receive makes it Invisible under a lock token
 * for one minute ("the value of this timeout is one minute and can't be changed"); complete removes it, reject
 * dead-letters it, abandon puts it back; a lock that runs out puts it back too. After the maximum delivery count
 * (10 by default) it is dead-lettered instead of delivered again, and it expires after its time to live (default
 * one hour). Dead-lettered and expired messages are dropped: feedback to the service side is not emulated.
 *
 * Everything is synchronous, like the registry, so concurrent calls cannot interleave a read and a write.
 */
import { randomUUID } from 'node:crypto';

export interface CloudToDeviceMessage {
  payload: string | Buffer;
  messageId?: string;
  correlationId?: string;
  properties?: Record<string, string>;
}

/** A message an HTTPS device received: locked until completed, rejected, abandoned, or the lock runs out. */
export interface ReceivedCloudToDeviceMessage extends CloudToDeviceMessage {
  lockToken: string;
  sequenceNumber: number;
  enqueuedTime: string;
  expiryTime: string;
  deliveryCount: number;
}

export const LOCK_TIMEOUT_MS = 60_000;
export const MAX_DELIVERY_COUNT = 10;
export const DEFAULT_TTL_MS = 60 * 60_000;

interface Entry {
  message: CloudToDeviceMessage;
  sequenceNumber: number;
  enqueuedAt: number;
  expiresAt: number;
  deliveryCount: number;
  lock?: { token: string; until: number };
}

export type Settlement = 'complete' | 'reject' | 'abandon';

export class CloudToDeviceQueues {
  private readonly queues = new Map<string, Entry[]>();
  private sequence = 0;

  enqueue(hubName: string, deviceId: string, message: CloudToDeviceMessage, now = Date.now()): void {
    const key = this.key(hubName, deviceId);
    const queue = this.queues.get(key) ?? [];
    this.sequence += 1;
    queue.push({
      message,
      sequenceNumber: this.sequence,
      enqueuedAt: now,
      expiresAt: now + DEFAULT_TTL_MS,
      deliveryCount: 0,
    });
    this.queues.set(key, queue);
  }

  /** Whether a message is waiting to be delivered (enqueued, not locked by a receive). */
  hasReady(hubName: string, deviceId: string, now = Date.now()): boolean {
    return this.ready(this.key(hubName, deviceId), now).length > 0;
  }

  /**
   * Removes and returns every message ready for delivery: MQTT delivery, where the device's PUBACK completes the
   * message. Messages an HTTPS receive has locked stay until that lock is settled or runs out.
   */
  takeReady(hubName: string, deviceId: string, now = Date.now()): CloudToDeviceMessage[] {
    const key = this.key(hubName, deviceId);
    const ready = this.ready(key, now);
    if (ready.length) this.remove(key, (entry) => ready.includes(entry));
    return ready.map((entry) => entry.message);
  }

  /** HTTPS receive: locks the oldest ready message and returns it, or undefined when none is waiting. */
  receive(hubName: string, deviceId: string, now = Date.now()): ReceivedCloudToDeviceMessage | undefined {
    const key = this.key(hubName, deviceId);
    for (const entry of this.ready(key, now)) {
      if (entry.deliveryCount >= MAX_DELIVERY_COUNT) {
        this.remove(key, (e) => e === entry);
        continue;
      }
      entry.deliveryCount += 1;
      entry.lock = { token: randomUUID(), until: now + LOCK_TIMEOUT_MS };
      return {
        ...entry.message,
        lockToken: entry.lock.token,
        sequenceNumber: entry.sequenceNumber,
        enqueuedTime: new Date(entry.enqueuedAt).toISOString(),
        expiryTime: new Date(entry.expiresAt).toISOString(),
        deliveryCount: entry.deliveryCount,
      };
    }
    return undefined;
  }

  /**
   * Settles a received message by its lock token: complete and reject remove it (reject dead-letters it), abandon
   * makes it ready again. False when no message holds that lock any more (settled, lock run out, expired).
   */
  settle(hubName: string, deviceId: string, lockToken: string, settlement: Settlement, now = Date.now()): boolean {
    const key = this.key(hubName, deviceId);
    const entry = this.queues
      .get(key)
      ?.find((e) => e.lock?.token === lockToken && e.lock.until > now && e.expiresAt > now);
    if (!entry) return false;
    if (settlement === 'abandon') entry.lock = undefined;
    else this.remove(key, (e) => e === entry);
    return true;
  }

  /** Drops a device's queue (the device was deleted). */
  drop(hubName: string, deviceId: string): void {
    this.queues.delete(this.key(hubName, deviceId));
  }

  clear(): void {
    this.queues.clear();
  }

  private key(hubName: string, deviceId: string): string {
    return `${hubName}/${deviceId}`;
  }

  /** Ready entries in order; expired ones are dropped on the way. */
  private ready(key: string, now: number): Entry[] {
    const queue = this.queues.get(key);
    if (!queue) return [];
    this.remove(key, (entry) => entry.expiresAt <= now);
    return (this.queues.get(key) ?? []).filter((entry) => !entry.lock || entry.lock.until <= now);
  }

  private remove(key: string, which: (entry: Entry) => boolean): void {
    const queue = this.queues.get(key);
    if (!queue) return;
    const kept = queue.filter((entry) => !which(entry));
    if (kept.length) this.queues.set(key, kept);
    else this.queues.delete(key);
  }
}
