import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { loadConfig } from '../common/config';
import { StartupError } from '../common/startup';
import { temporalConnectionOptions } from '../common/temporal-connection';
import { mintCertificate, type MintedCert } from '../emulator/security/certs';
import { harnessAddress } from './helpers/temporal';

/**
 * TLS and mTLS to Temporal from the configuration, for the API's client and the worker's native connection alike:
 * through a TLS-terminating proxy in front of the harness dev server that requires a client certificate of its CA.
 */
describe('the Temporal connection over TLS and mTLS', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'temporal-tls-'));
  let proxy: tls.Server;
  let address: string;
  let ca: MintedCert;
  const handshakes: Array<{ authorized: boolean; servername?: string | false | null }> = [];
  const file = (name: string, pem: string) => {
    const target = path.join(dir, name);
    writeFileSync(target, pem);
    return target;
  };

  beforeAll(async () => {
    ca = mintCertificate({ commonName: 'temporal test CA', isCa: true });
    const server = mintCertificate({
      commonName: 'temporal.test.internal',
      issuer: ca,
      usage: 'server',
      altNames: ['temporal.test.internal'],
    });
    const [host, port] = harnessAddress().split(':');
    proxy = tls.createServer(
      {
        key: server.keyPem,
        cert: server.certPem,
        ca: ca.certPem,
        requestCert: true,
        rejectUnauthorized: true,
        ALPNProtocols: ['h2'],
      },
      (socket) => {
        handshakes.push({ authorized: socket.authorized, servername: socket.servername });
        const upstream = net.connect(Number(port), host);
        socket.pipe(upstream).pipe(socket);
        const close = () => {
          socket.destroy();
          upstream.destroy();
        };
        socket.on('error', close);
        upstream.on('error', close);
      },
    );
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    address = `127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => proxy.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  function settings(client?: MintedCert, caPem = ca.certPem) {
    return loadConfig({
      TEMPORAL_TLS_CA_FILE: file(`ca-${handshakes.length}.pem`, caPem),
      TEMPORAL_TLS_SERVER_NAME: 'temporal.test.internal',
      ...(client
        ? {
            TEMPORAL_TLS_CERT_FILE: file('client.pem', client.certPem),
            TEMPORAL_TLS_KEY_FILE: file('client.key', client.keyPem),
          }
        : {}),
    });
  }

  it('connects the client and the worker with the configured CA, server name and client certificate', async () => {
    const client = mintCertificate({ commonName: 'iot-lifecycle worker', issuer: ca, usage: 'client' });
    const options = temporalConnectionOptions(settings(client), address);

    const connection = await Connection.connect({ ...options, connectTimeout: 5_000 });
    try {
      const info = await connection.workflowService.getSystemInfo({});
      expect(info.serverVersion).toBeTruthy();
    } finally {
      await connection.close();
    }
    const native = await NativeConnection.connect(options);
    await native.close();
    expect(handshakes.length).toBeGreaterThanOrEqual(2);
    expect(handshakes.every((h) => h.authorized && h.servername === 'temporal.test.internal')).toBe(true);
  });

  it('is refused without a client certificate, or when the server is not of the configured CA', async () => {
    const noClientCert = temporalConnectionOptions(settings(), address);
    await expect(
      Connection.connect({ ...noClientCert, connectTimeout: 3_000 }).then((c) =>
        c.workflowService.getSystemInfo({}).finally(() => c.close()),
      ),
    ).rejects.toThrow();
    const otherCa = mintCertificate({ commonName: 'another CA', isCa: true });
    const client = mintCertificate({ commonName: 'iot-lifecycle worker', issuer: ca, usage: 'client' });
    await expect(
      NativeConnection.connect(temporalConnectionOptions(settings(client, otherCa.certPem), address)),
    ).rejects.toThrow();
  });

  it('sends an API key over TLS only, and says so when TLS is turned off', () => {
    expect(temporalConnectionOptions(loadConfig({ TEMPORAL_API_KEY: 'k' }), 'x.tmprl.cloud:7233')).toEqual({
      address: 'x.tmprl.cloud:7233',
      tls: {},
      apiKey: 'k',
    });
    expect(() =>
      temporalConnectionOptions(loadConfig({ TEMPORAL_API_KEY: 'k', TEMPORAL_TLS: 'false' }), 'a:1'),
    ).toThrow(StartupError);
    expect(temporalConnectionOptions(loadConfig({}), '127.0.0.1:7233')).toEqual({ address: '127.0.0.1:7233' });
    expect(() => loadConfig({ TEMPORAL_TLS_CERT_FILE: '/x.pem' })).toThrow(/TEMPORAL_TLS_KEY_FILE: required/);
  });
});
