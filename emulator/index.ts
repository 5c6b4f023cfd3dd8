/** Public entry of the emulator for tests and tools. */
export { startEmulator, hubConnectionString, dpsConnectionString } from './server';
export type { EmulatorOptions, RunningEmulator } from './server';
export { mintCertificate, thumbprints, certificateInfo } from './certs';
export type { MintedCert, Issuer, MintOptions } from './certs';
export { createSasToken, deriveDeviceKey } from './sas';
export { StateFileError } from './persistence';
export type * from './state';
