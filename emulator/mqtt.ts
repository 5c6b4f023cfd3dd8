/**
 * MQTT over TLS for devices (hub connections and DPS registration). Placeholder owned by the MQTT module: it
 * listens and refuses every connection until filled in.
 */
import tls from 'node:tls';
import type { EmulatorState } from './state';

export interface MqttOptions {
  state: EmulatorState;
  /** 0 for an ephemeral port. */
  port: number;
  host: string;
  /** Server key/cert and the CA (for optional client-certificate requests). */
  tls: { key: string; cert: string; ca: string };
}

export interface MqttListener {
  port: number;
  close(): Promise<void>;
}

export async function startMqtt(options: MqttOptions): Promise<MqttListener> {
  const server = tls.createServer({ key: options.tls.key, cert: options.tls.cert }, (socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : options.port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
