/**
 * Names every REST call of the emulated surfaces with an operation (what fault rules match on) and the quota class
 * Azure counts it under. A write also answers to the name its write counter uses (emulator/counters.ts), so a rule
 * can say `deviceDelete` as well as `deleteDevice`.
 */
import type { WriteOperation } from '../counters';
import type { QuotaClass } from '../state';

export interface Classified {
  operation: string;
  /** The write counter's name for the same call, if it writes. */
  write?: WriteOperation;
  quotaClass?: QuotaClass;
  key?: string;
}

/**
 * IoT hub REST (paths without the query string): the registry, where `ifMatch` tells a device create from an update,
 * and the device endpoints of HTTPS devices, where `query` tells a reject (`?reject`) from a complete.
 */
export function classifyHubRequest(
  method: string,
  path: string,
  ifMatch?: string,
  query: Record<string, unknown> = {},
): Classified {
  const p = path.replace(/\/+$/, '').toLowerCase();
  if (/^\/devices\/[^/]+\/messages\/events$/.test(p))
    return { operation: 'deviceTelemetry', quotaClass: 'deviceToCloud' };
  if (/^\/devices\/[^/]+\/messages\/devicebound$/.test(p)) {
    return { operation: 'receiveCloudToDevice', quotaClass: 'cloudToDeviceReceive' };
  }
  if (/^\/devices\/[^/]+\/messages\/devicebound\/[^/]+\/abandon$/.test(p)) return { operation: 'abandonCloudToDevice' };
  if (/^\/devices\/[^/]+\/messages\/devicebound\/[^/]+$/.test(p)) {
    return { operation: 'reject' in query ? 'rejectCloudToDevice' : 'completeCloudToDevice' };
  }
  if (p === '/devices/query') return { operation: 'queryDevices', quotaClass: 'query' };
  if (p === '/devices') {
    return method === 'POST'
      ? { operation: 'bulkDevices', write: 'deviceBulk', quotaClass: 'registry' }
      : { operation: 'listDevices', quotaClass: 'registry' };
  }
  if (/^\/devices\/[^/]+$/.test(p)) {
    if (method === 'PUT') {
      const write = ifMatch ? 'deviceUpdate' : 'deviceCreate';
      return { operation: 'createOrUpdateDevice', write, quotaClass: 'registry' };
    }
    if (method === 'DELETE') return { operation: 'deleteDevice', write: 'deviceDelete', quotaClass: 'registry' };
    return { operation: method === 'GET' ? 'getDevice' : 'device', quotaClass: 'registry' };
  }
  if (/^\/twins\/[^/]+\/methods$/.test(p)) return { operation: 'invokeDeviceMethod' };
  if (/^\/twins\/[^/]+$/.test(p)) {
    if (method === 'GET') return { operation: 'getTwin', quotaClass: 'twinRead' };
    const write = method === 'PUT' ? 'twinReplace' : 'twinUpdate';
    return { operation: 'updateTwin', write, quotaClass: 'twinUpdate' };
  }
  if (p === '/statistics/devices') return { operation: 'getStatistics', quotaClass: 'registry' };
  if (p.startsWith('/jobs')) return { operation: 'jobs', quotaClass: 'registry' };
  return { operation: 'other' };
}

/** DPS service REST; `ifMatch` tells a create from an update (DPS refuses a PUT over an existing record without). */
export function classifyDpsServiceRequest(method: string, path: string, ifMatch?: string): Classified {
  const p = path.replace(/\/+$/, '').toLowerCase();
  const verb = { PUT: 'createOrUpdate', GET: 'get', DELETE: 'delete', POST: 'post' }[method] ?? method;
  const dps = (operation: string, write?: WriteOperation): Classified => ({
    operation,
    ...(write ? { write } : {}),
    quotaClass: 'dpsOperation',
  });
  const writeOf = (kind: 'enrollment' | 'enrollmentGroup'): WriteOperation | undefined => {
    if (method === 'DELETE') return `${kind}Delete`;
    if (method === 'PUT') return ifMatch ? `${kind}Update` : `${kind}Create`;
    return undefined;
  };
  if (p === '/enrollments') return dps('bulkEnrollments', method === 'POST' ? 'enrollmentBulk' : undefined);
  if (p === '/enrollments/query') return dps('queryEnrollments');
  if (p === '/enrollmentgroups/query') return dps('queryEnrollmentGroups');
  if (/^\/enrollments\/[^/]+\/attestationmechanism$/.test(p)) return dps('getEnrollmentAttestation');
  if (/^\/enrollmentgroups\/[^/]+\/attestationmechanism$/.test(p)) return dps('getEnrollmentGroupAttestation');
  if (/^\/enrollments\/[^/]+$/.test(p)) return dps(`${verb}Enrollment`, writeOf('enrollment'));
  if (/^\/enrollmentgroups\/[^/]+$/.test(p)) return dps(`${verb}EnrollmentGroup`, writeOf('enrollmentGroup'));
  if (/^\/registrations\/[^/]+\/query$/.test(p)) return dps('queryRegistrations');
  if (/^\/registrations\/[^/]+$/.test(p)) {
    return dps(`${verb}Registration`, method === 'DELETE' ? 'registrationStateDelete' : undefined);
  }
  return { operation: 'other' };
}

/** DPS device registration REST (`/{idScope}/registrations/{regId}/…`). */
export function classifyDpsDeviceRequest(method: string, path: string): Classified {
  const register = /^\/[^/]+\/registrations\/([^/]+)\/register$/i.exec(path);
  if (register) return { operation: 'register', write: 'register', quotaClass: 'dpsRegistration' };
  const poll = /^\/[^/]+\/registrations\/([^/]+)\/operations\/[^/]+$/i.exec(path);
  if (poll) return { operation: 'operationStatus', quotaClass: 'dpsStatusPoll', key: decodeURIComponent(poll[1]) };
  const get = /^\/[^/]+\/registrations\/([^/]+)$/i.exec(path);
  if (get) return { operation: 'deviceRegistrationStatus', quotaClass: 'dpsOperation' };
  return { operation: method === 'GET' ? 'other' : 'other' };
}
