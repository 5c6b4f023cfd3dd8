/** Shared setup for the registry conformance tests: an in-process emulator reached through the real SDKs. */
import { SharedAccessSignature, anHourFromNow } from 'azure-iot-common';
import { RestApiClient } from 'azure-iot-http-base';

type HttpMethodVerb = Parameters<RestApiClient['executeApiCall']>[0];
import { Registry } from 'azure-iothub';
import { installAzureEndpointRouting } from '../../common/azure-routing';
import { startEmulator, type EmulatorOptions, type RunningEmulator } from '../../emulator/server';
import { controlFetch } from '../helpers/control';

export interface RegistryFixture {
  emulator: RunningEmulator;
  registry: Registry;
  /** iothubowner connection string of the `test` hub. */
  connectionString: string;
  hostName: string;
  control<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
  /** Raw REST call through the SDK's own HTTP client (for shapes the Registry refuses to send). */
  rest(method: HttpMethodVerb, path: string, body?: unknown, headers?: Record<string, string>): Promise<RestAnswer>;
}

export interface RestAnswer {
  status: number;
  body: unknown;
  headers: Record<string, unknown>;
  error?: Error;
}

export function policyOf(
  emulator: RunningEmulator,
  hub: string,
  keyName: string,
): { keyName: string; primaryKey: string } {
  const policy = emulator.state.hubs.get(hub)?.policies.find((p) => p.keyName === keyName);
  if (!policy) throw new Error(`no policy ${keyName} on ${hub}`);
  return policy;
}

/** Starts an emulator with routing installed; call the returned `stop` in afterAll. */
export async function startRegistryFixture(
  options: EmulatorOptions = {},
): Promise<RegistryFixture & { stop(): Promise<void> }> {
  const emulator = await startEmulator(options);
  const uninstall = installAzureEndpointRouting({ address: emulator.address, caPem: emulator.caPem });
  const connectionString = emulator.connectionStrings.hubs.test;
  const hostName = emulator.state.hubs.get('test')!.hostName;
  const registry = Registry.fromConnectionString(connectionString);

  const control = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const res = await controlFetch(emulator, `${emulator.controlUrl}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status >= 300) throw new Error(`control ${method} ${path}: ${res.status} ${await res.text()}`);
    return (res.status === 204 ? undefined : await res.json()) as T;
  };

  const rest = (method: HttpMethodVerb, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const policy = policyOf(emulator, 'test', 'iothubowner');
    const sas = SharedAccessSignature.create(hostName, policy.keyName, policy.primaryKey, anHourFromNow()).toString();
    const client = new RestApiClient({ host: hostName, sharedAccessSignature: sas }, 'registry-conformance-test');
    return new Promise<RestAnswer>((resolve) => {
      client.executeApiCall(
        method,
        path,
        { 'Content-Type': 'application/json; charset=utf-8', ...headers },
        body,
        (err?: Error, result?: unknown, response?: { statusCode?: number; headers: Record<string, unknown> }) => {
          const failed = err as
            | (Error & { response?: { statusCode: number; headers: Record<string, unknown> }; responseBody?: string })
            | undefined;
          if (failed?.response) {
            let parsed: unknown = failed.responseBody;
            try {
              parsed = JSON.parse(failed.responseBody ?? '');
            } catch {
              // keep the raw text
            }
            resolve({
              status: failed.response.statusCode,
              body: parsed,
              headers: failed.response.headers,
              error: failed,
            });
          } else {
            resolve({ status: response?.statusCode ?? 0, body: result, headers: response?.headers ?? {}, error: err });
          }
        },
      );
    });
  };

  return {
    emulator,
    registry,
    connectionString,
    hostName,
    control,
    rest,
    async stop() {
      uninstall();
      await emulator.stop();
    },
  };
}
