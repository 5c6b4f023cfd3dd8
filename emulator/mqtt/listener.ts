/**
 * MQTT over TLS for devices: one listener for IoT hub device connections and DPS registration over MQTT. It reads
 * each connection's CONNECT before a broker takes the socket, and hands the connection to the DeviceBroker.
 */
import tls from 'node:tls';
import mqttPacket, { type IConnectPacket } from 'mqtt-packet';
import type { EmulatorState } from '../state';
import { DeviceBroker } from './broker';

export interface MqttOptions {
  state: EmulatorState;
  /** 0 for an ephemeral port. */
  port: number;
  host: string;
  /** Server key/cert and the CA (for optional client-certificate requests). */
  tls: { key: string; cert: string; ca: string };
  /** How long a new connection may take to send CONNECT (default 30 s). */
  connectTimeoutMs?: number;
  /** Called for every request a device publishes (twin, DPS registration, telemetry), e.g. to save state. */
  onActivity?: () => void;
}

export interface MqttListener {
  port: number;
  broker: DeviceBroker;
  close(): Promise<void>;
}

/** Reads the first MQTT packet of a connection without consuming it from the socket. */
function peekConnect(socket: tls.TLSSocket, timeoutMs: number): Promise<IConnectPacket> {
  return new Promise((resolve, reject) => {
    const parser = mqttPacket.parser();
    const chunks: Buffer[] = [];
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      parser.removeAllListeners();
      socket.pause();
      socket.unshift(Buffer.concat(chunks));
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      parser.parse(chunk);
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const onClose = (): void => onError(new Error('connection closed before CONNECT'));
    const timer = setTimeout(() => onError(new Error('CONNECT did not arrive in time')), timeoutMs);
    parser.on('packet', (packet) => {
      cleanup();
      if (packet.cmd === 'connect') resolve(packet);
      else reject(new Error(`first packet was ${packet.cmd}, not connect`));
    });
    parser.on('error', onError);
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
  });
}

const brokers = new WeakMap<EmulatorState, DeviceBroker>();

/** The running emulator's device broker (for direct methods, C2D, connection inspection). */
export function deviceBroker(state: EmulatorState): DeviceBroker | undefined {
  return brokers.get(state);
}

export async function startMqtt(options: MqttOptions): Promise<MqttListener> {
  const broker = new DeviceBroker(options.state, options.onActivity);
  brokers.set(options.state, broker);
  const sockets = new Set<tls.TLSSocket>();
  // Client certificates are requested but judged by the broker (thumbprints, hub CAs), not by TLS.
  const server = tls.createServer(
    { key: options.tls.key, cert: options.tls.cert, requestCert: true, rejectUnauthorized: false },
    (socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
      peekConnect(socket, options.connectTimeoutMs ?? 30_000).then(
        (connect) => broker.accept(socket, connect),
        () => socket.destroy(),
      );
    },
  );
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : options.port,
    broker,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await broker.close();
      for (const socket of sockets) socket.destroy();
      await closed;
      brokers.delete(options.state);
    },
  };
}
