/**
 * Shared access signatures as Azure IoT Hub and DPS check them.
 *
 * Token: `SharedAccessSignature sr=<resource>&sig=<urlencoded base64 HMAC>&se=<epoch seconds>[&skn=<policy>]`.
 * The signature is HMAC-SHA256 (key base64-decoded) over `sr + "\n" + se`, with `sr` exactly as it appears in the
 * token (service SDKs send a raw host name, device SDKs an url-encoded `host/devices/id`, DPS devices an unencoded
 * `idScope/registrations/regId`).
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** Azure's shared-access rights (IoT Hub and DPS use different subsets). */
export type AccessRight =
  | 'RegistryRead'
  | 'RegistryWrite'
  | 'ServiceConnect'
  | 'DeviceConnect'
  | 'ServiceConfig'
  | 'EnrollmentRead'
  | 'EnrollmentWrite'
  | 'RegistrationStatusRead'
  | 'RegistrationStatusWrite';

export interface SharedAccessPolicy {
  keyName: string;
  primaryKey: string;
  secondaryKey: string;
  rights: AccessRight[];
}

export interface ParsedSas {
  /** `sr` as it appears in the token (signed form). */
  sr: string;
  /** `sr` url-decoded: the resource the token is for. */
  resource: string;
  /** Decoded base64 signature. */
  sig: string;
  se: number;
  skn?: string;
}

export function findPolicy(policies: SharedAccessPolicy[], keyName: string): SharedAccessPolicy | undefined {
  // Azure matches policy names case-insensitively.
  const wanted = keyName.toLowerCase();
  return policies.find((p) => p.keyName.toLowerCase() === wanted);
}

export type SasFailure =
  | 'missing'
  | 'malformed'
  | 'expired'
  | 'wrongResource'
  | 'unknownPolicy'
  | 'badSignature'
  | 'insufficientRights'
  | 'policyRequired';

export class SasError extends Error {
  constructor(
    readonly reason: SasFailure,
    message: string,
  ) {
    super(message);
    this.name = 'SasError';
  }
}

function decode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw new SasError('malformed', 'Malformed SharedAccessSignature: bad url-encoding');
  }
}

/** Parses a `SharedAccessSignature …` string (the Authorization header or an MQTT password). */
export function parseSasToken(token: string | undefined): ParsedSas {
  if (!token) throw new SasError('missing', 'Missing SharedAccessSignature');
  const match = /^\s*SharedAccessSignature\s+(.+?)\s*$/.exec(token);
  if (!match) throw new SasError('malformed', 'Malformed SharedAccessSignature');
  const fields = new Map<string, string>();
  for (const part of match[1].split('&')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new SasError('malformed', 'Malformed SharedAccessSignature field');
    fields.set(part.slice(0, eq).toLowerCase(), part.slice(eq + 1));
  }
  const sr = fields.get('sr');
  const sig = fields.get('sig');
  const se = fields.get('se');
  if (!sr || !sig || !se) throw new SasError('malformed', 'SharedAccessSignature must have sr, sig and se');
  if (!/^\d+$/.test(se)) throw new SasError('malformed', 'SharedAccessSignature se must be an integer');
  const skn = fields.get('skn');
  return {
    sr,
    resource: decode(sr),
    sig: decode(sig),
    se: Number(se),
    skn: skn === undefined || skn === '' ? undefined : decode(skn),
  };
}

/** base64(HMAC-SHA256(base64decode(key), sr + "\n" + se)). */
export function signSas(srAsSent: string, se: number, keyBase64: string): string {
  return createHmac('sha256', Buffer.from(keyBase64, 'base64')).update(`${srAsSent}\n${se}`).digest('base64');
}

export interface CreateSasOptions {
  /** The resource, unencoded; it is url-encoded in the token unless `encode` is false (the DPS device form). */
  resource: string;
  key: string;
  keyName?: string;
  /** Epoch seconds; default one hour from now. */
  expiry?: number;
  encode?: boolean;
}

/** Builds a token the way the Azure SDKs do (used by tests and tools). */
export function createSasToken(options: CreateSasOptions): string {
  const se = options.expiry ?? Math.ceil(Date.now() / 1000) + 3600;
  const sr = options.encode === false ? options.resource : encodeURIComponent(options.resource);
  const sig = encodeURIComponent(signSas(sr, se, options.key));
  const skn = options.keyName ? `&skn=${encodeURIComponent(options.keyName)}` : '';
  return `SharedAccessSignature sr=${sr}&sig=${sig}&se=${se}${skn}`;
}

/**
 * Whether a token's resource covers `resource` (e.g. `host` or `host/devices/id`): case-insensitive host,
 * then path-segment prefix, as Azure does (`host` covers `host/devices/x`; `host/devices/a` does not cover
 * `host/devices/ab`). `ignoreCase` also compares the path case-insensitively (DPS, whose ids and routes are).
 */
export function resourceCovers(
  tokenResource: string,
  resource: string,
  options: { ignoreCase?: boolean } = {},
): boolean {
  const norm = (r: string): string[] =>
    r
      .replace(/^[a-z]+:\/\//i, '')
      .replace(/\/+$/, '')
      .split('/')
      .map((seg, i) => (i === 0 || options.ignoreCase ? seg.toLowerCase() : seg));
  const granted = norm(tokenResource);
  const wanted = norm(resource);
  if (granted.length > wanted.length) return false;
  return granted.every((seg, i) => seg === wanted[i]);
}

/**
 * The resource a REST call touches, as `sr` names it: the host name followed by the request path (url-decoded,
 * without query string or trailing slash), e.g. `myhub.azure-devices.net/devices/dev-1` for `PUT /devices/dev-1`.
 * IoT Hub's SAS documentation (iot-hub-dev-guide-sas, "Use security tokens from service components") has
 * `sr=myhub.azure-devices.net%2fdevices` with `skn=registryRead` grant access to the device identities.
 */
export function requestResource(host: string, path: string): string {
  const segments = path
    .split('?')[0]
    .split('/')
    .filter((segment) => segment !== '')
    .map((segment) => {
      try {
        return decodeURIComponent(segment);
      } catch {
        return segment;
      }
    });
  return [host, ...segments].join('/');
}

function sameSignature(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Checks the signature against any of `keys` (primary/secondary). */
export function signatureMatches(parsed: ParsedSas, keys: Array<string | null | undefined>): boolean {
  return keys.some((key) => !!key && sameSignature(signSas(parsed.sr, parsed.se, key), parsed.sig));
}

export interface VerifyOptions {
  /** What the request touches, e.g. the hub host name or `host/devices/id`. */
  resource: string;
  /** Compare the path of `resource` case-insensitively (DPS). */
  ignoreCase?: boolean;
  /** Epoch seconds; default now. */
  now?: number;
}

function checkResourceAndExpiry(parsed: ParsedSas, options: VerifyOptions): void {
  const now = options.now ?? Date.now() / 1000;
  if (parsed.se <= now) throw new SasError('expired', 'SharedAccessSignature is expired');
  if (!resourceCovers(parsed.resource, options.resource, { ignoreCase: options.ignoreCase })) {
    throw new SasError('wrongResource', 'SharedAccessSignature is not valid for this resource');
  }
}

/**
 * Validates a policy-signed token (`skn` required) and returns the policy. With `anyOf`, the policy must hold at
 * least one of those rights. Throws SasError with the reason otherwise.
 */
export function authorizeWithPolicy(
  token: string | undefined,
  policies: SharedAccessPolicy[],
  options: VerifyOptions & { anyOf?: AccessRight[] },
): SharedAccessPolicy {
  const parsed = parseSasToken(token);
  checkResourceAndExpiry(parsed, options);
  if (!parsed.skn) throw new SasError('policyRequired', 'SharedAccessSignature has no policy (skn)');
  const policy = findPolicy(policies, parsed.skn);
  if (!policy) throw new SasError('unknownPolicy', `Unknown shared access policy ${parsed.skn}`);
  if (!signatureMatches(parsed, [policy.primaryKey, policy.secondaryKey])) {
    throw new SasError('badSignature', 'SharedAccessSignature signature does not match');
  }
  if (options.anyOf && !options.anyOf.some((right) => policy.rights.includes(right))) {
    throw new SasError('insufficientRights', `Policy ${policy.keyName} lacks the rights for this operation`);
  }
  return policy;
}

/** Validates a token signed with an entity's own keys (a device key, an enrollment key). */
export function authorizeWithKeys(
  token: string | undefined,
  keys: Array<string | null | undefined>,
  options: VerifyOptions,
): ParsedSas {
  const parsed = parseSasToken(token);
  checkResourceAndExpiry(parsed, options);
  if (!signatureMatches(parsed, keys)) {
    throw new SasError('badSignature', 'SharedAccessSignature signature does not match');
  }
  return parsed;
}

/** DPS group-derived device key: base64(HMAC-SHA256(base64decode(groupKey), utf8(registrationId))). */
export function deriveDeviceKey(groupKeyBase64: string, registrationId: string): string {
  return createHmac('sha256', Buffer.from(groupKeyBase64, 'base64')).update(registrationId, 'utf8').digest('base64');
}

/** A random base64 key (IoT Hub generates 32-byte keys; DPS 64-byte ones). */
export function generateKey(bytes = 32): string {
  return randomBytes(bytes).toString('base64');
}

/** Azure accepts symmetric keys that are base64 of 16 to 64 bytes. */
export function isValidSymmetricKey(key: string): boolean {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(key) || key.length % 4 !== 0) return false;
  const length = Buffer.from(key, 'base64').length;
  return length >= 16 && length <= 64;
}
