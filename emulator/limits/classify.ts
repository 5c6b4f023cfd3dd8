/**
 * Names every REST call of the emulated surfaces with an operation (what fault rules match on) and the quota class
 * Azure counts it under.
 */
import type { QuotaClass } from '../state';

export interface Classified {
  operation: string;
  quotaClass?: QuotaClass;
  key?: string;
}

/** IoT hub registry REST (paths without the query string). */
export function classifyHubRequest(method: string, path: string): Classified {
  const p = path.replace(/\/+$/, '').toLowerCase();
  if (p === '/devices/query') return { operation: 'queryDevices', quotaClass: 'query' };
  if (p === '/devices') {
    return method === 'POST'
      ? { operation: 'bulkDevices', quotaClass: 'registry' }
      : { operation: 'listDevices', quotaClass: 'registry' };
  }
  if (/^\/devices\/[^/]+$/.test(p)) {
    const op = { PUT: 'createOrUpdateDevice', GET: 'getDevice', DELETE: 'deleteDevice' }[method] ?? 'device';
    return { operation: op, quotaClass: 'registry' };
  }
  if (/^\/twins\/[^/]+\/methods$/.test(p)) return { operation: 'invokeDeviceMethod' };
  if (/^\/twins\/[^/]+$/.test(p)) {
    return method === 'GET'
      ? { operation: 'getTwin', quotaClass: 'twinRead' }
      : { operation: 'updateTwin', quotaClass: 'twinUpdate' };
  }
  if (p === '/statistics/devices') return { operation: 'getStatistics', quotaClass: 'registry' };
  if (p.startsWith('/jobs')) return { operation: 'jobs', quotaClass: 'registry' };
  return { operation: 'other' };
}

/** DPS service REST. */
export function classifyDpsServiceRequest(method: string, path: string): Classified {
  const p = path.replace(/\/+$/, '').toLowerCase();
  const verb = { PUT: 'createOrUpdate', GET: 'get', DELETE: 'delete', POST: 'post' }[method] ?? method;
  const dps = (operation: string): Classified => ({ operation, quotaClass: 'dpsOperation' });
  if (p === '/enrollments') return dps('bulkEnrollments');
  if (p === '/enrollments/query') return dps('queryEnrollments');
  if (p === '/enrollmentgroups/query') return dps('queryEnrollmentGroups');
  if (/^\/enrollments\/[^/]+\/attestationmechanism$/.test(p)) return dps('getEnrollmentAttestation');
  if (/^\/enrollmentgroups\/[^/]+\/attestationmechanism$/.test(p)) return dps('getEnrollmentGroupAttestation');
  if (/^\/enrollments\/[^/]+$/.test(p)) return dps(`${verb}Enrollment`);
  if (/^\/enrollmentgroups\/[^/]+$/.test(p)) return dps(`${verb}EnrollmentGroup`);
  if (/^\/registrations\/[^/]+\/query$/.test(p)) return dps('queryRegistrations');
  if (/^\/registrations\/[^/]+$/.test(p)) return dps(`${verb}Registration`);
  return { operation: 'other' };
}

/** DPS device registration REST (`/{idScope}/registrations/{regId}/…`). */
export function classifyDpsDeviceRequest(method: string, path: string): Classified {
  const register = /^\/[^/]+\/registrations\/([^/]+)\/register$/i.exec(path);
  if (register) return { operation: 'register', quotaClass: 'dpsRegistration' };
  const poll = /^\/[^/]+\/registrations\/([^/]+)\/operations\/[^/]+$/i.exec(path);
  if (poll) return { operation: 'operationStatus', quotaClass: 'dpsStatusPoll', key: decodeURIComponent(poll[1]) };
  const get = /^\/[^/]+\/registrations\/([^/]+)$/i.exec(path);
  if (get) return { operation: 'deviceRegistrationStatus', quotaClass: 'dpsOperation' };
  return { operation: method === 'GET' ? 'other' : 'other' };
}
