/**
 * What DPS keeps beside its records (not part of the wire model, and not in the state file except CA
 * certificates): registration operations in flight, verified CA certificates, and settings.
 */
import { parseCertificate } from '../security/certs';
import type { DpsState } from '../state';
import { idKey } from './enrollments';
import { dpsErrors } from './errors';

export type OperationStatus = 'assigning' | 'assigned' | 'failed' | 'disabled';

export interface OperationResult {
  operationId: string;
  status: OperationStatus;
  registrationState?: Record<string, unknown>;
}

export interface DpsCaCertificate {
  name: string;
  certificatePem: string;
  isVerified: boolean;
}

/** A registration DPS answered `assigning`; status polls return its final state. */
export interface Operation {
  operationId: string;
  registrationKey: string;
  /** Re-checked on every status poll: the credential that registered. */
  credential: { kind: 'sas'; keys: string[] } | { kind: 'x509'; sha1: string };
  result: OperationResult;
  createdAt: number;
}

interface DpsRuntime {
  operations: Map<string, Operation>;
  caCertificates: Map<string, DpsCaCertificate>;
  retryAfterSeconds: number;
}

const runtimes = new WeakMap<DpsState, DpsRuntime>();

export function dpsRuntime(dps: DpsState): DpsRuntime {
  let rt = runtimes.get(dps);
  if (!rt) {
    rt = { operations: new Map(), caCertificates: new Map(), retryAfterSeconds: 3 };
    runtimes.set(dps, rt);
  }
  return rt;
}

export interface DpsSettings {
  /**
   * `retry-after` (seconds) DPS sends with `assigning` answers; the SDKs wait that long before polling. Azure
   * sends 3; tests may lower it (0 polls immediately).
   */
  retryAfterSeconds?: number;
}

export function configureDps(dps: DpsState, settings: DpsSettings): void {
  if (settings.retryAfterSeconds !== undefined) dpsRuntime(dps).retryAfterSeconds = settings.retryAfterSeconds;
}

export function dpsSettings(dps: DpsState): Required<DpsSettings> {
  return { retryAfterSeconds: dpsRuntime(dps).retryAfterSeconds };
}

/**
 * Registers a CA certificate with the DPS (Azure: "Certificates" blade), for `caReferences` attestation. Only
 * verified certificates (proof of possession done) authenticate devices, as on Azure.
 */
export function addDpsCaCertificate(dps: DpsState, cert: DpsCaCertificate): void {
  if (!parseCertificate(cert.certificatePem)) throw dpsErrors.badCertificate();
  dpsRuntime(dps).caCertificates.set(idKey(cert.name), { ...cert });
}

export function listDpsCaCertificates(dps: DpsState): DpsCaCertificate[] {
  return [...dpsRuntime(dps).caCertificates.values()].map((c) => ({ ...c }));
}

/** Drops operations and CA certificates, and settings go back to their defaults (state reset). */
export function resetDpsRuntime(dps: DpsState): void {
  runtimes.delete(dps);
}
