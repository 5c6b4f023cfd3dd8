/** A fleet of simulated devices sharing one configuration, with staggered starts and a summary view. */
import { setTimeout as sleep } from 'node:timers/promises';
import { SimulatedDevice, type Attestation, type SimulatedDeviceOptions, type SimulatorPhase } from './device';

/** `<prefix>-<n>` for n from 1 to `count`, zero-padded to the width of `count`. */
export function numberedRegistrationIds(prefix: string, count: number): string[] {
  const width = String(count).length;
  return Array.from({ length: count }, (_, i) => `${prefix}-${String(i + 1).padStart(width, '0')}`);
}

export interface FleetOptions extends Omit<SimulatedDeviceOptions, 'registrationId' | 'attestation'> {
  registrationIds: string[];
  /** Attestation of each device (e.g. one group key for all, or a certificate per device). */
  attestationFor: (registrationId: string, index: number) => Attestation;
  /** Pause between device starts, to spread the connection load (default 0). */
  startIntervalMs?: number;
}

export interface FleetSummary {
  total: number;
  connected: number;
  /** Devices the hub accepts: connected over MQTT, or active over HTTPS (which never connect). */
  active: number;
  phases: Partial<Record<SimulatorPhase, number>>;
  /** Connected devices per assigned hub host name. */
  connectedByHub: Record<string, number>;
  /** Active devices (see `active`) per assigned hub host name. */
  activeByHub: Record<string, number>;
}

export class Fleet {
  readonly devices: SimulatedDevice[];
  private starting?: Promise<void>;
  private stopped = false;

  constructor(private readonly options: FleetOptions) {
    const { registrationIds, attestationFor, startIntervalMs: _interval, ...common } = options;
    this.devices = registrationIds.map(
      (registrationId, i) =>
        new SimulatedDevice({ ...common, registrationId, attestation: attestationFor(registrationId, i) }),
    );
  }

  /** Starts every device (staggered); resolves once all have been started. */
  start(): Promise<void> {
    this.starting ??= (async () => {
      for (const device of this.devices) {
        if (this.stopped) return;
        device.start();
        if (this.options.startIntervalMs) await sleep(this.options.startIntervalMs);
      }
    })();
    return this.starting;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.starting;
    await Promise.all(this.devices.map((d) => d.stop()));
  }

  summary(): FleetSummary {
    const summary: FleetSummary = {
      total: this.devices.length,
      connected: 0,
      active: 0,
      phases: {},
      connectedByHub: {},
      activeByHub: {},
    };
    for (const { state } of this.devices) {
      summary.phases[state.phase] = (summary.phases[state.phase] ?? 0) + 1;
      if (state.connected && state.assignedHub) {
        summary.connected += 1;
        summary.connectedByHub[state.assignedHub] = (summary.connectedByHub[state.assignedHub] ?? 0) + 1;
      }
      if (state.active && state.assignedHub) {
        summary.active += 1;
        summary.activeByHub[state.assignedHub] = (summary.activeByHub[state.assignedHub] ?? 0) + 1;
      }
    }
    return summary;
  }

  /** Resolves when `predicate(summary)` holds; rejects after `timeoutMs`. */
  async waitUntil(
    predicate: (summary: FleetSummary) => boolean,
    timeoutMs = 60_000,
    pollMs = 100,
  ): Promise<FleetSummary> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const summary = this.summary();
      if (predicate(summary)) return summary;
      if (Date.now() > deadline)
        throw new Error(`fleet condition not reached in ${timeoutMs} ms: ${JSON.stringify(summary)}`);
      await sleep(pollMs);
    }
  }
}

export function startFleet(options: FleetOptions): Fleet {
  const fleet = new Fleet(options);
  void fleet.start();
  return fleet;
}
