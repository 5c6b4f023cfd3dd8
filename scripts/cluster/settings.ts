import path from 'node:path';

/** Everything `npm run cluster` and the drills start, and where. Ports follow ../shared/notes/temporal-cluster.md. */
export interface ClusterSettings {
  /** Logs, the emulator's CA and state, the process table. */
  dataDir: string;
  /** One Temporal server process per service (the production shape), or all four services in one. */
  topology: 'per-service' | 'all-in-one';
  /** Worker processes (each a separate `node dist/worker/main.js`). */
  workers: number;
  /** `dist`: the compiled build run by node (production); `source`: the TypeScript run by tsx (development). */
  build: 'dist' | 'source';
  /** Where the compiled build lives (`dist`, or another `npm run build -- --out-dir` output). */
  distDir: string;
  postgres: {
    /** A Debian cluster of its own (pg_createcluster), so the machine's default cluster is left alone. */
    version: string;
    cluster: string;
    port: number;
    user: string;
    password: string;
    database: string;
    visibilityDatabase: string;
    /** Drop and re-create both databases first (the drills start from an empty Temporal). */
    fresh: boolean;
  };
  temporal: {
    version: string;
    namespace: string;
    historyShards: number;
    /** Connections each server process may open to the default store (visibility gets a tenth of it). */
    maxConns: number;
    logLevel: 'debug' | 'info' | 'warn' | 'error';
    ports: {
      frontend: number;
      frontendMembership: number;
      frontendHttp: number;
      history: number;
      historyMembership: number;
      matching: number;
      matchingMembership: number;
      worker: number;
      workerMembership: number;
      /** First Prometheus port; per-service processes take this one and the next three. */
      metrics: number;
    };
  };
  taskQueue: string;
  apiPort: number;
  emulator: { httpsPort: number; mqttPort: number; controlPort: number };
  /** Simulated devices on the emulator's test hub, ready to promote (0: none). */
  devices: number;
  /** Seconds a worker gets to finish its activities on SIGTERM. */
  shutdownGraceSeconds: number;
  /** AZURE_QUOTAS for the workers and the API (JSON, common/quotas.ts); unset: S1 with one unit. */
  azureQuotas?: string;
}

export const projectRoot = path.resolve(__dirname, '..', '..');

export const TEMPORAL_SERVER_VERSION = '1.32.2';
export const TEMPORAL_SERVICES = ['history', 'matching', 'frontend', 'worker'] as const;
export type TemporalService = (typeof TEMPORAL_SERVICES)[number];

export function defaultSettings(overrides: Partial<ClusterSettings> = {}): ClusterSettings {
  return {
    dataDir: path.join(projectRoot, '.data', 'cluster'),
    topology: 'per-service',
    workers: 2,
    build: 'dist',
    distDir: path.join(projectRoot, 'dist'),
    postgres: {
      version: '15',
      cluster: 'iot-lifecycle',
      port: 5433,
      user: 'temporal',
      password: 'temporal',
      database: 'temporal',
      visibilityDatabase: 'temporal_visibility',
      fresh: false,
    },
    temporal: {
      version: TEMPORAL_SERVER_VERSION,
      namespace: 'default',
      historyShards: 4,
      maxConns: 20,
      logLevel: 'warn',
      ports: {
        frontend: 7333,
        frontendMembership: 7334,
        frontendHttp: 7343,
        history: 7335,
        historyMembership: 7336,
        matching: 7337,
        matchingMembership: 7338,
        worker: 7339,
        workerMembership: 7340,
        metrics: 7350,
      },
    },
    taskQueue: 'iot-lifecycle',
    apiPort: 33000,
    emulator: { httpsPort: 38443, mqttPort: 38883, controlPort: 38480 },
    devices: 3,
    shutdownGraceSeconds: 10,
    ...overrides,
  };
}

export function frontendAddress(settings: ClusterSettings): string {
  return `127.0.0.1:${settings.temporal.ports.frontend}`;
}
