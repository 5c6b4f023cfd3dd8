/**
 * DPS device registration REST (api-version 2019-03-31), served on `global.azure-devices-provisioning.net` and on
 * the DPS host name. Symmetric-key devices authenticate with a SAS in `Authorization`; X.509 devices with their
 * TLS client certificate (the HTTPS server requests one without rejecting unknown issuers).
 */
import type { TLSSocket } from 'node:tls';
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import { peerCertificateChain } from '../security/certs';
import type { EmulatorState } from '../state';
import { DpsError, dpsErrors, sendDpsError } from './errors';
import {
  getDeviceRegistrationStatus,
  getOperationStatus,
  registerDevice,
  type DeviceCredential,
  type RegistrationAnswer,
} from './registration';

const API_VERSIONS = new Set(['2017-11-15', '2018-04-01', '2018-11-01', '2019-03-31', '2021-06-01']);

function credentialOf(req: Request): DeviceCredential {
  const authorization = req.header('authorization');
  if (authorization) return { kind: 'sas', token: authorization };
  const chain = peerCertificateChain(req.socket as TLSSocket).map((cert) => cert.toString());
  return chain.length ? { kind: 'x509', chainPem: chain } : { kind: 'none' };
}

function send(res: Response, answer: RegistrationAnswer): void {
  if (answer.retryAfterSeconds !== undefined) res.setHeader('retry-after', String(answer.retryAfterSeconds));
  res.status(answer.status).json(answer.body);
}

export function dpsDeviceRouter(state: EmulatorState): Router {
  const router = express.Router({ caseSensitive: false });

  const checkVersion = (req: Request, _res: Response, next: NextFunction): void => {
    const version = req.query['api-version'];
    if (typeof version !== 'string' || !API_VERSIONS.has(version)) {
      throw dpsErrors.badRequest(`The api-version ${String(version)} is missing or not supported`);
    }
    next();
  };

  // The SDK sends JSON bodies (a `{}` even on GET); some clients omit the content type.
  router.use(express.json({ limit: '96kb', type: () => true }));

  router.put('/:idScope/registrations/:registrationId/register', checkVersion, (req, res) => {
    const { idScope, registrationId } = req.params as Record<string, string>;
    send(res, registerDevice(state, idScope, registrationId, req.body, credentialOf(req)));
  });
  router.get('/:idScope/registrations/:registrationId/operations/:operationId', checkVersion, (req, res) => {
    const { idScope, registrationId, operationId } = req.params as Record<string, string>;
    send(res, getOperationStatus(state, idScope, registrationId, operationId, credentialOf(req)));
  });
  router.post('/:idScope/registrations/:registrationId', checkVersion, (req, res) => {
    const { idScope, registrationId } = req.params as Record<string, string>;
    send(res, getDeviceRegistrationStatus(state, idScope, registrationId, credentialOf(req)));
  });

  router.use((req: Request, res: Response) => {
    sendDpsError(res, 404, 404000, `${req.method} ${req.path} is not a DPS device operation`);
  });

  router.use((err: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) {
      next(err);
      return;
    }
    if (err instanceof DpsError) {
      sendDpsError(res, err.status, err.errorCode, err.message);
      return;
    }
    const status = (err as { status?: unknown })?.status;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      sendDpsError(res, status, status * 1000 + 4, (err as Error).message);
      return;
    }
    next(err);
  });
  return router;
}
