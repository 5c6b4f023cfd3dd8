/**
 * DPS device registration over MQTT (api-version 2019-03-31). The broker (mqtt/broker.ts) hands over the clients whose
 * username is `{idScope}/registrations/{registrationId}/api-version=…`; this module authenticates them and
 * answers their two request topics:
 *
 *   $dps/registrations/PUT/iotdps-register/?$rid={rid}                              → res/202 (assigning)
 *   $dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={op}  → res/200 (final state)
 *
 * on `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`. As on Azure, a bad credential does not
 * refuse the CONNECT: it is answered with a 401 on the response topic.
 */
import type { TLSSocket } from 'node:tls';
import { evaluateLimits, type OperationContext } from '../limits/decide';
import { peerCertificateChain } from '../security/certs';
import type { EmulatorState } from '../state';
import { DpsError, dpsErrorBody, dpsErrors } from './errors';
import { getOperationStatus, registerDevice, type DeviceCredential, type RegistrationAnswer } from './registration';

export interface DpsMqttConnect {
  clientId: string;
  username: string;
  /** The SAS token of a symmetric-key device; absent for X.509 devices. */
  password?: Buffer | string | null;
  /** The TLS socket, for the client certificate of X.509 devices. */
  socket?: TLSSocket;
}

export interface DpsMqttSession {
  /**
   * Handles one PUBLISH of the client. Returns true when the topic is a DPS request (then it must not be
   * forwarded); `reply` delivers a PUBLISH to this client only and may be called later.
   */
  publish(topic: string, payload: Buffer, reply: (topic: string, payload: Buffer) => void): boolean;
  close(): void;
}

export type DpsMqttConnectResult = { ok: true; session: DpsMqttSession } | { ok: false; returnCode: 4 | 5 };

export interface DpsMqttHandler {
  /** Whether a CONNECT username belongs to DPS (`{idScope}/registrations/{regId}/…`) rather than a hub. */
  matches(username: string | undefined): boolean;
  connect(info: DpsMqttConnect): DpsMqttConnectResult;
}

/** ID scopes have no dots, hub host names do: that tells DPS clients from hub clients. */
const USERNAME = /^([^/.]+)\/registrations\/([^/]+)\/(.*)$/i;
const REGISTER = /^\$dps\/registrations\/PUT\/iotdps-register\/\?(.*)$/i;
const OPERATION_STATUS = /^\$dps\/registrations\/GET\/iotdps-get-operationstatus\/\?(.*)$/i;

function responseTopic(status: number, rid: string, retryAfterSeconds?: number): string {
  const retry = retryAfterSeconds !== undefined ? `&retry-after=${retryAfterSeconds}` : '';
  return `$dps/registrations/res/${status}/?$rid=${encodeURIComponent(rid)}${retry}`;
}

function parseBody(payload: Buffer): unknown {
  const text = payload.toString('utf8').trim();
  if (!text) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw dpsErrors.badRequest('The request payload is not valid JSON');
  }
}

export function createDpsMqttHandler(state: EmulatorState): DpsMqttHandler {
  return {
    matches(username) {
      return !!username && USERNAME.test(username);
    },

    connect(info) {
      const match = USERNAME.exec(info.username);
      if (!match) return { ok: false, returnCode: 4 };
      const [, idScope, rawRegistrationId, rest] = match;
      if (!/api-version=/i.test(rest)) return { ok: false, returnCode: 4 };
      if (idScope.toLowerCase() !== state.dps.idScope.toLowerCase()) return { ok: false, returnCode: 5 };
      const registrationId = decodeURIComponent(rawRegistrationId);

      const password = info.password === undefined || info.password === null ? '' : info.password.toString();
      const chain = password ? [] : peerCertificateChain(info.socket).map((cert) => cert.toString());
      const credential: DeviceCredential = password
        ? { kind: 'sas', token: password }
        : chain.length
          ? { kind: 'x509', chainPem: chain }
          : { kind: 'none' };

      const timers = new Set<NodeJS.Timeout>();
      let closed = false;

      const answer = (
        rid: string,
        reply: (topic: string, payload: Buffer) => void,
        ctx: OperationContext,
        run: () => RegistrationAnswer,
      ): void => {
        const decision = evaluateLimits(state, ctx);
        let status: number;
        let body: unknown;
        let retryAfter: number | undefined;
        if (decision.kind === 'throttle') {
          status = 429;
          retryAfter = decision.retryAfterSeconds;
          body = dpsErrorBody(new DpsError(429, 429001, 'Operations are being throttled: quota exceeded'));
        } else if (decision.kind === 'fault') {
          status = decision.status;
          body = dpsErrorBody(
            new DpsError(status, status * 1000 + 1, decision.message ?? `Injected fault for ${ctx.operation}`),
          );
        } else {
          try {
            const result = run();
            status = result.status;
            body = result.body;
            retryAfter = result.retryAfterSeconds;
          } catch (err) {
            if (!(err instanceof DpsError)) throw err;
            status = err.status;
            body = dpsErrorBody(err);
          }
        }
        const send = (): void => {
          if (!closed) reply(responseTopic(status, rid, retryAfter), Buffer.from(JSON.stringify(body)));
        };
        // Answer after the broker has acknowledged the request, as a service round trip would.
        const timer = setTimeout(() => {
          timers.delete(timer);
          send();
        }, decision.delayMs);
        timers.add(timer);
      };

      const session: DpsMqttSession = {
        publish(topic, payload, reply) {
          const register = REGISTER.exec(topic);
          const status = register ? undefined : OPERATION_STATUS.exec(topic);
          if (!register && !status) return false;
          const params = new URLSearchParams((register ?? status)![1]);
          const rid = params.get('$rid') ?? '';
          if (register) {
            answer(rid, reply, { surface: 'dpsDevice', operation: 'register', quotaClass: 'dpsRegistration' }, () =>
              registerDevice(state, idScope, registrationId, parseBody(payload), credential),
            );
          } else {
            const operationId = params.get('operationId') ?? '';
            answer(
              rid,
              reply,
              { surface: 'dpsDevice', operation: 'operationStatus', quotaClass: 'dpsStatusPoll', key: registrationId },
              () => getOperationStatus(state, idScope, registrationId, operationId, credential),
            );
          }
          return true;
        },
        close() {
          closed = true;
          for (const timer of timers) clearTimeout(timer);
          timers.clear();
        },
      };
      return { ok: true, session };
    },
  };
}
