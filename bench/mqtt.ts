/**
 * 3. MQTT connections: N simulated devices (emulator/simulator/fleet.ts, on the real device SDKs) started at
 * once. Each one registers through DPS (HTTP, `retry-after: 0`) and then opens its MQTT-over-TLS connection to
 * the assigned hub. Figures: the time until all N are connected, and the resident memory each connected
 * device costs this process.
 *
 * Targets:
 * - Time to all connected: what Azure would allow for the same bring-up. Every device registers with DPS and then
 *   opens a new hub connection; DPS takes 1,000 registrations/min (16.7/s) and an S1 hub max(100/s, 12/s/unit)
 *   new connections (/work/shared/notes/azure-wire.md "Quotas"), so DPS binds first: N / 16.7 s.
 * - Memory: the notes give no figure, so this is the project's own budget: 1 MiB of RSS per connected device,
 *   so that a 1,000-device rehearsal (emulator and devices in one process, as here) fits in 1 GiB on a laptop.
 *   Both sides of every connection live in this process and are counted: the device SDK client and its TLS
 *   socket, and the emulator's broker session and socket. Readings are taken after a full GC when node runs
 *   with --expose-gc (`npm run bench` does); without it they include garbage and are marked so.
 */
import https from 'node:https';
import type { RunningEmulator } from '../emulator/server';
import { numberedRegistrationIds, startFleet } from '../emulator/simulator/fleet';
import { enrollSymmetricKeyGroup, gcExposed, settledMemory, type Defer } from './harness';
import type { Measurement } from './report';

const DPS_REGISTRATIONS_PER_S = 1_000 / 60;
const RSS_BUDGET_KIB = 1024;

export interface MqttBenchOptions {
  devices: number;
  timeoutMs: number;
}

export async function benchMqtt(
  emulator: RunningEmulator,
  options: MqttBenchOptions,
  defer: Defer,
): Promise<Measurement[]> {
  const n = options.devices;
  const groupKey = await enrollSymmetricKeyGroup(emulator, 'bench-fleet');
  const address = `127.0.0.1:${emulator.mqttPort}`;

  const before = await settledMemory();
  const start = performance.now();
  const fleet = startFleet({
    registrationIds: numberedRegistrationIds('bench-mqtt', n),
    attestationFor: () => ({ type: 'symmetricKeyGroup', groupKey }),
    idScope: emulator.idScope,
    hubMqttAddress: address,
    dpsMqttAddress: address,
    ca: emulator.caPem,
    // Only a device that fails (none should) waits; short, so a hiccup shows as time rather than a stall.
    backoff: { initialMs: 100, maxMs: 2_000 },
  });
  defer(() => fleet.stop());
  await fleet.waitUntil((s) => s.connected === n, options.timeoutMs, 20);
  const seconds = (performance.now() - start) / 1000;

  // The emulator's own view: every device is in its hub and connected.
  const hub = emulator.state.hubs.get('test')!;
  const connectedInHub = [...hub.devices.values()].filter((d) => d.connectionState === 'Connected').length;
  if (connectedInHub !== n) throw new Error(`the fleet reports ${n} connected, the hub ${connectedInHub}`);
  const failures = fleet.devices.reduce(
    (sum, d) =>
      sum + d.state.history.filter((e) => e.type === 'connectFailed' || e.type === 'provisioningFailed').length,
    0,
  );

  // Let the SDK clients finish their post-connect work (subscriptions) before reading memory, and drop the idle
  // keep-alive sockets of the DPS registrations: they would close by themselves after the agent's 5 s idle
  // timeout and are no part of what a connected device costs.
  await new Promise((resolve) => setTimeout(resolve, 500));
  https.globalAgent.destroy();
  const after = await settledMemory();
  const rssKiB = (after.rss - before.rss) / 1024 / n;
  const heapKiB = (after.heapUsed - before.heapUsed) / 1024 / n;
  const mib = (bytes: number) => Math.round(bytes / 2 ** 20);

  return [
    {
      name: `mqtt.connectAll (${n})`,
      value: seconds,
      unit: 's',
      better: 'lower',
      target: n / DPS_REGISTRATIONS_PER_S,
      targetSource: 'Azure DPS 1,000 reg/min, binding before S1 100 conn/s',
      details: { devices: n, seconds, connectionsPerSecond: n / seconds, retriedFailures: failures },
      note: `${Math.round(n / seconds)} devices/s registered + connected, ${failures} failed attempts retried`,
    },
    {
      name: 'mqtt.rssPerDevice',
      value: rssKiB,
      unit: 'KiB',
      better: 'lower',
      target: RSS_BUDGET_KIB,
      targetSource: 'project budget: 1,000 devices in 1 GiB; device + broker side',
      details: {
        devices: n,
        gcExposed,
        rssBeforeMiB: mib(before.rss),
        rssAfterMiB: mib(after.rss),
        heapUsedPerDeviceKiB: heapKiB,
      },
      note:
        `RSS ${mib(before.rss)} → ${mib(after.rss)} MiB, JS heap ${Math.round(heapKiB)} KiB/device` +
        (gcExposed ? ', after GC' : ', without GC (run with --expose-gc for settled figures)'),
    },
  ];
}
