/** Public entry of the emulator for tests and tools (Azure host routing lives in common/azure-routing.ts). */
export { startEmulator, hubConnectionString, dpsConnectionString } from './server';
export type { EmulatorOptions, RunningEmulator } from './server';
export { mintCertificate, thumbprints, certificateInfo } from './security/certs';
export type { MintedCert, Issuer, MintOptions } from './security/certs';
export { createSasToken, deriveDeviceKey } from './security/sas';
export { StateFileError } from './persistence/state-file';
export { persistCa, readPersistedCa } from './persistence/ca';
export type * from './state';
export type * from './hub/model';
export type * from './dps/model';
export { WriteCounters, HUB_WRITE_OPERATIONS, DPS_WRITE_OPERATIONS } from './counters';
export type * from './counters';
export type { FaultRuleInput } from './limits/decide';
