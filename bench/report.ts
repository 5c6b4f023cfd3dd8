/**
 * One line per measurement — the figure, the target it is compared with and where that target comes from, the
 * ratio measured/target, and whether it meets it — plus the same results as JSON under `.data/bench/`.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export interface Measurement {
  /** e.g. `registry.create`. */
  name: string;
  value: number;
  unit: string;
  /** Throughputs must reach the target; times and memory must stay under it. */
  better: 'higher' | 'lower';
  target: number;
  /** Where the target comes from, short enough for the line (the module's comments give the full reasoning). */
  targetSource: string;
  /** Supporting figures: counts, elapsed times, raw memory, … (JSON only, plus a short printed note). */
  details?: Record<string, number | string | boolean>;
  note?: string;
}

export interface Result extends Measurement {
  ratio: number;
  meets: boolean;
}

export interface MeasurementError {
  suite: string;
  error: string;
}

export function judge(m: Measurement): Result {
  // A target of 0 ("no device fails"): met by 0 only; the ratio is then 0, otherwise infinite.
  if (m.target === 0) {
    const meets = m.better === 'higher' ? m.value >= 0 : m.value <= 0;
    return { ...m, ratio: m.value === 0 ? 0 : Infinity, meets };
  }
  const ratio = m.value / m.target;
  return { ...m, ratio, meets: m.better === 'higher' ? ratio >= 1 : ratio <= 1 };
}

/** Three significant figures or so, without exponents. */
export function figure(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const abs = Math.abs(n);
  if (abs >= 100) return Math.round(n).toString();
  if (abs >= 10) return n.toFixed(1);
  if (abs >= 1) return n.toFixed(2);
  return n.toPrecision(2);
}

const NAME_WIDTH = 26;

export function formatLine(r: Result): string {
  const verdict = r.meets ? 'ok' : 'MISSED';
  const line =
    `${r.name.padEnd(NAME_WIDTH)} ${figure(r.value)} ${r.unit}  ` +
    `target ${r.better === 'lower' ? '<= ' : ''}${figure(r.target)} ${r.unit} (${r.targetSource})  ` +
    `ratio ${figure(r.ratio)}  ${verdict}`;
  return r.note ? `${line}\n${' '.repeat(NAME_WIDTH + 1)}${r.note}` : line;
}

export function formatError(e: MeasurementError): string {
  return `${e.suite.padEnd(NAME_WIDTH)} ERROR  ${e.error}`;
}

export interface Report {
  startedAt: string;
  finishedAt: string;
  machine: { node: string; platform: string; cpus: number; cpuModel: string; totalMemoryMiB: number };
  gcExposed: boolean;
  options: Record<string, unknown>;
  results: Result[];
  errors: MeasurementError[];
}

export function machine(): Report['machine'] {
  const cpus = os.cpus();
  return {
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    totalMemoryMiB: Math.round(os.totalmem() / 2 ** 20),
  };
}

/** Writes `<dir>/<timestamp>.json` and returns its path. */
export async function writeReport(dir: string, report: Report): Promise<string> {
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `${report.startedAt.replace(/[:.]/g, '-')}.json`);
  await writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
  return file;
}
