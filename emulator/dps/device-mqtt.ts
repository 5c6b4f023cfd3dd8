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
   * forwarded); `reply` delivers a PUBLISH to this client only and may be called later; `drop` closes the client's
   * connection (an injected fault with status 0).
   */
  publish(topic: string, payload: Buffer, reply: (topic: string, payload: Buffer) => void, drop: () => void): boolean;
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
        drop: () => void,
        ctx: OperationContext,
        run: () => RegistrationAnswer,
      ): void => {
        const decision = evaluateLimits(state, ctx);
        const later = (ms: number, fn: () => void): void => {
          const timer = setTimeout(() => {
            timers.delete(timer);
            if (!closed) fn();
          }, ms);
          timers.add(timer);
        };
        const send = (status: number, body: unknown, retryAfter?: number): void =>
          reply(responseTopic(status, rid, retryAfter), Buffer.from(JSON.stringify(body)));
        const fault = (status: number, message: string | undefined): void => {
          if (status === 0) drop();
          else
            send(
              status,
              dpsErrorBody(new DpsError(status, status * 1000 + 1, message ?? `Injected fault for ${ctx.operation}`)),
            );
        };
        // The answer always comes after the broker has acknowledged the request, as a service round trip would.
        later(decision.delayMs, () => {
          if (decision.kind === 'throttle') {
            const throttled = new DpsError(429, 429001, 'Operations are being throttled: quota exceeded');
            send(429, dpsErrorBody(throttled), decision.retryAfterSeconds);
            return;
          }
          if (decision.kind === 'fault') {
            fault(decision.status, decision.message);
            return;
          }
          let result: RegistrationAnswer;
          try {
            result = run();
          } catch (err) {
            if (!(err instanceof DpsError)) throw err;
            decision.after?.settle(false);
            send(err.status, dpsErrorBody(err));
            return;
          }
          const after = decision.after?.settle(result.status < 300);
          const deliver = (): void => {
            if (after?.status !== undefined) fault(after.status, after.message);
            else send(result.status, result.body, result.retryAfterSeconds);
          };
          if (after?.latencyMs) later(after.latencyMs, deliver);
          else deliver();
        });
      };

      const session: DpsMqttSession = {
        publish(topic, payload, reply, drop) {
          const register = REGISTER.exec(topic);
          const status = register ? undefined : OPERATION_STATUS.exec(topic);
          if (!register && !status) return false;
          const params = new URLSearchParams((register ?? status)![1]);
          const rid = params.get('$rid') ?? '';
          if (register) {
            answer(
              rid,
              reply,
              drop,
              { surface: 'dpsDevice', operation: 'register', write: 'register', quotaClass: 'dpsRegistration' },
              () => registerDevice(state, idScope, registrationId, parseBody(payload), credential),
            );
          } else {
            const operationId = params.get('operationId') ?? '';
            answer(
              rid,
              reply,
              drop,
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
