/**
 * DPS service REST (api-version 2021-10-01): individual enrollments, enrollment groups, bulk enrollment
 * operations, queries with paging and registration states, authenticated with the DPS shared access policies.
 * Routes match case-insensitively (the SDK mixes `/enrollmentGroups/` and `/enrollmentgroups/`).
 */
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import {
  bulkEnrollments,
  deleteEnrollment,
  deleteEnrollmentGroup,
  deleteRegistrationState,
  getEnrollment,
  getEnrollmentAttestation,
  getEnrollmentGroup,
  getEnrollmentGroupAttestation,
  getRegistrationState,
  idKey,
  putEnrollment,
  putEnrollmentGroup,
  queryEnrollmentGroups,
  queryEnrollments,
  queryGroupRegistrations,
  type QueryPage,
} from './enrollments';
import { SasError, authorizeWithPolicy, requestResource, type AccessRight } from '../security/sas';
import type { DpsWriteOperation } from '../counters';
import type { EmulatorState } from '../state';
import { DpsError, dpsErrors, sendDpsError } from './errors';

/** Service api-versions DPS accepts (the SDK sends 2021-10-01). */
const API_VERSIONS = new Set([
  '2017-08-31-preview',
  '2017-11-15',
  '2018-04-01',
  '2019-03-31',
  '2021-06-01',
  '2021-10-01',
]);

function sendError(res: Response, err: DpsError): void {
  res.setHeader('x-ms-error-code', String(err.errorCode));
  sendDpsError(res, err.status, err.errorCode, err.message);
}

function ifMatch(req: Request): string | undefined {
  const value = req.header('if-match');
  return value === undefined || value === '' ? undefined : value;
}

function sendPage(res: Response, result: QueryPage, itemType: string): void {
  res.setHeader('x-ms-item-type', itemType);
  if (result.continuationToken) res.setHeader('x-ms-continuation', result.continuationToken);
  res.status(200).json(result.items);
}

function queryOptions(req: Request): { pageSize?: number; continuationToken?: string } {
  const size = req.header('x-ms-max-item-count');
  let pageSize: number | undefined;
  if (size !== undefined && size !== '') {
    pageSize = Number(size);
    if (!Number.isInteger(pageSize) || pageSize < 1)
      throw dpsErrors.badRequest('x-ms-max-item-count must be a positive integer');
  }
  return { pageSize, continuationToken: req.header('x-ms-continuation') || undefined };
}

export function dpsServiceRouter(state: EmulatorState): Router {
  const router = express.Router({ caseSensitive: false });

  // Every call is signed with a DPS policy whose `sr` covers the call (the DPS host name, or a prefix of the path)
  // and carries a supported api-version.
  const authorize =
    (...rights: AccessRight[]) =>
    (req: Request, _res: Response, next: NextFunction): void => {
      const version = req.query['api-version'];
      if (typeof version !== 'string' || !API_VERSIONS.has(version)) {
        throw dpsErrors.badRequest(`The api-version ${String(version)} is missing or not supported`);
      }
      try {
        authorizeWithPolicy(req.header('authorization'), state.dps.policies, {
          resource: requestResource(state.dps.hostName, req.path),
          ignoreCase: true,
          anyOf: rights,
        });
      } catch (err) {
        if (err instanceof SasError) throw dpsErrors.unauthorized(err.message);
        throw err;
      }
      next();
    };
  const read = authorize('EnrollmentRead');
  const write = authorize('EnrollmentWrite');
  const statusRead = authorize('RegistrationStatusRead');
  const statusWrite = authorize('RegistrationStatusWrite');

  router.use(express.json({ limit: '96kb' }));

  // Individual enrollments
  router.post('/enrollments/query', read, (req, res) => {
    sendPage(res, queryEnrollments(state, req.body, queryOptions(req)), 'Enrollment');
  });
  const count = (operation: DpsWriteOperation, id?: string): void =>
    state.counters.record({ surface: 'dps', operation, ...(id !== undefined ? { id } : {}) });
  const exists = (records: Map<string, unknown>, id: string): boolean => records.has(idKey(id));

  router.post('/enrollments', write, (req, res) => {
    const operations = { create: 'enrollmentCreate', update: 'enrollmentUpdate', delete: 'enrollmentDelete' } as const;
    const result = bulkEnrollments(state, req.body, (applied, id) => count(operations[applied], id));
    count('enrollmentBulk');
    res.status(200).json(result);
  });
  router.post('/enrollments/:id/attestationmechanism', read, (req, res) => {
    res.status(200).json(getEnrollmentAttestation(state, req.params.id as string));
  });
  router.put('/enrollments/:id', write, (req, res) => {
    const id = req.params.id as string;
    const existed = exists(state.dps.enrollments, id);
    const enrollment = putEnrollment(state, id, req.body, ifMatch(req));
    count(existed ? 'enrollmentUpdate' : 'enrollmentCreate', id);
    res.status(200).json(enrollment);
  });
  router.get('/enrollments/:id', read, (req, res) => {
    res.status(200).json(getEnrollment(state, req.params.id as string));
  });
  router.delete('/enrollments/:id', write, (req, res) => {
    deleteEnrollment(state, req.params.id as string, ifMatch(req));
    count('enrollmentDelete', req.params.id as string);
    res.status(204).end();
  });

  // Enrollment groups
  router.post('/enrollmentGroups/query', read, (req, res) => {
    sendPage(res, queryEnrollmentGroups(state, req.body, queryOptions(req)), 'EnrollmentGroup');
  });
  router.post('/enrollmentGroups/:id/attestationmechanism', read, (req, res) => {
    res.status(200).json(getEnrollmentGroupAttestation(state, req.params.id as string));
  });
  router.put('/enrollmentGroups/:id', write, (req, res) => {
    const id = req.params.id as string;
    const existed = exists(state.dps.enrollmentGroups, id);
    const group = putEnrollmentGroup(state, id, req.body, ifMatch(req));
    count(existed ? 'enrollmentGroupUpdate' : 'enrollmentGroupCreate', id);
    res.status(200).json(group);
  });
  router.get('/enrollmentGroups/:id', read, (req, res) => {
    res.status(200).json(getEnrollmentGroup(state, req.params.id as string));
  });
  router.delete('/enrollmentGroups/:id', write, (req, res) => {
    deleteEnrollmentGroup(state, req.params.id as string, ifMatch(req));
    count('enrollmentGroupDelete', req.params.id as string);
    res.status(204).end();
  });

  // Registration states
  router.post('/registrations/:groupId/query', statusRead, (req, res) => {
    sendPage(
      res,
      queryGroupRegistrations(state, req.params.groupId as string, req.body, queryOptions(req)),
      'DeviceRegistration',
    );
  });
  router.get('/registrations/:id', statusRead, (req, res) => {
    res.status(200).json(getRegistrationState(state, req.params.id as string));
  });
  router.delete('/registrations/:id', statusWrite, (req, res) => {
    deleteRegistrationState(state, req.params.id as string, ifMatch(req));
    count('registrationStateDelete', req.params.id as string);
    res.status(204).end();
  });

  router.use((req: Request, res: Response) => {
    sendError(res, new DpsError(404, 404000, `${req.method} ${req.path} is not a DPS service operation`));
  });

  router.use((err: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) {
      next(err);
      return;
    }
    if (err instanceof DpsError) {
      sendError(res, err);
      return;
    }
    // Body parser failures (bad JSON, too large) carry an HTTP status.
    const status = (err as { status?: unknown })?.status;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      sendError(res, new DpsError(status, status * 1000 + 4, (err as Error).message));
      return;
    }
    next(err);
  });
  return router;
}
