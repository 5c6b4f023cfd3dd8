import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';

const RESERVED = '/proc/sys/net/ipv4/ip_local_reserved_ports';

/**
 * The API's and the emulator's ports (33000, 384xx) lie in Linux's ephemeral range (32768–60999), from which the
 * kernel picks the source port of every outgoing connection — the Temporal server's ~40 connections to PostgreSQL
 * took 38480 in a test run, and the emulator could not listen. As root, the ports are added to
 * net.ipv4.ip_local_reserved_ports (kept until reboot; it only stops the kernel handing them out). Returns the
 * ports added; none when not permitted, where the restart on EADDRINUSE has to do.
 */
export function reserveEphemeralPorts(ports: number[]): number[] {
  try {
    const current = readFileSync(RESERVED, 'utf8').trim();
    const ranges = current
      .split(',')
      .filter(Boolean)
      .map((r) => r.split('-').map(Number))
      .map(([from, to]) => [from, to ?? from]);
    const missing = ports.filter((p) => !ranges.some(([from, to]) => p >= from && p <= to));
    if (missing.length) writeFileSync(RESERVED, [current, ...missing].filter(Boolean).join(','));
    return missing;
  } catch {
    return [];
  }
}

/** Something accepts connections on the port (a TIME_WAIT remnant does not count). */
export function portListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
