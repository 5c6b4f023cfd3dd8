import { spawnSync } from 'node:child_process';
import type { ClusterSettings } from './settings';
import type { TemporalBinaries } from './temporal-binary';

/**
 * PostgreSQL for Temporal: a Debian cluster of its own (pg_createcluster, started and stopped with pg_ctlcluster),
 * a login role for the server, and the two databases with Temporal's schema. pg_createcluster and pg_ctlcluster
 * need root; psql talks to the socket as `postgres` (peer authentication), the server and its SQL tool over TCP
 * with the role's password.
 */
type PostgresSettings = ClusterSettings['postgres'];

interface DebianCluster {
  version: number;
  cluster: string;
  port: string;
  running: 0 | 1;
  config?: { max_connections?: string };
}

export function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new Error(
      'the local cluster manages its own PostgreSQL cluster with pg_createcluster/pg_ctlcluster, which need root ' +
        '(CI runs as root; elsewhere use sudo, or point the workers at an existing Temporal with TEMPORAL_ADDRESS)',
    );
  }
}

function listClusters(): DebianCluster[] {
  const result = spawnSync('pg_lsclusters', ['--json'], { encoding: 'utf8' });
  if (result.error || result.status !== 0) {
    throw new Error('pg_lsclusters not found: install Debian’s postgresql (apt-get install postgresql-15)');
  }
  return JSON.parse(result.stdout) as DebianCluster[];
}

function findCluster(pg: PostgresSettings): DebianCluster | undefined {
  return listClusters().find((c) => String(c.version) === pg.version && c.cluster === pg.cluster);
}

/** Creates the cluster on first use, starts it, and makes sure the server's role exists. Returns max_connections. */
export function startPostgres(pg: PostgresSettings, say: (line: string) => void): { maxConnections: number } {
  requireRoot();
  let cluster = findCluster(pg);
  if (!cluster) {
    const clash = listClusters().find((c) => c.port === String(pg.port));
    if (clash) throw new Error(`port ${pg.port} belongs to PostgreSQL cluster ${clash.version}/${clash.cluster}`);
    say(`creating PostgreSQL cluster ${pg.version}/${pg.cluster} on port ${pg.port}`);
    // manual: it starts when the cluster command starts it, not at boot.
    sh('pg_createcluster', [pg.version, pg.cluster, '--port', String(pg.port), '--start-conf', 'manual']);
    cluster = findCluster(pg)!;
  } else if (cluster.port !== String(pg.port)) {
    throw new Error(`PostgreSQL cluster ${pg.version}/${pg.cluster} listens on ${cluster.port}, not ${pg.port}`);
  }
  if (!cluster.running) sh('pg_ctlcluster', [pg.version, pg.cluster, 'start']);
  sh('pg_isready', ['-q', '-h', '127.0.0.1', '-p', String(pg.port), '-t', '30']);

  const role = psql(pg, `SELECT 1 FROM pg_roles WHERE rolname = ${literal(pg.user)}`);
  if (!role) {
    psql(pg, `CREATE ROLE ${ident(pg.user)} LOGIN CREATEDB PASSWORD ${literal(pg.password)}`);
  }
  return { maxConnections: Number(psql(pg, 'SHOW max_connections')) };
}

export function stopPostgres(pg: PostgresSettings, mode: 'fast' | 'immediate' = 'fast'): void {
  const cluster = findCluster(pg);
  if (cluster?.running) sh('pg_ctlcluster', [pg.version, pg.cluster, 'stop', '-m', mode]);
}

export function postgresRunning(pg: PostgresSettings): boolean {
  return !!findCluster(pg)?.running;
}

/**
 * Temporal's two databases with the schema of the pinned server version: created and set up when missing,
 * upgraded by `update-schema` (a no-op when current) otherwise; dropped first when `fresh`.
 */
export function setUpSchema(pg: PostgresSettings, binaries: TemporalBinaries, say: (line: string) => void): void {
  const env = {
    ...process.env,
    SQL_PLUGIN: 'postgres12',
    SQL_HOST: '127.0.0.1',
    SQL_PORT: String(pg.port),
    SQL_USER: pg.user,
    SQL_PASSWORD: pg.password,
  };
  const schemas = [
    { database: pg.database, dir: 'temporal' },
    { database: pg.visibilityDatabase, dir: 'visibility' },
  ];
  for (const { database, dir } of schemas) {
    if (pg.fresh) psql(pg, `DROP DATABASE IF EXISTS ${ident(database)} WITH (FORCE)`);
    const exists = psql(pg, `SELECT 1 FROM pg_database WHERE datname = ${literal(database)}`);
    const tool = (...args: string[]) => sh(binaries.sqlTool, ['--db', database, ...args], env);
    if (!exists) {
      say(`creating database ${database}`);
      tool('create-database');
      tool('setup-schema', '-v', '0.0');
    }
    tool('update-schema', '-d', `${binaries.schemaDir}/${dir}/versioned`);
  }
}

/** Ends every backend of the Temporal databases, as a failover or a DBA would; returns how many were ended. */
export function terminateTemporalConnections(pg: PostgresSettings): number {
  const databases = [pg.database, pg.visibilityDatabase].map(literal).join(', ');
  return Number(
    psql(
      pg,
      `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity ` +
        `WHERE datname IN (${databases}) AND pid <> pg_backend_pid()`,
    ),
  );
}

export function temporalConnectionCount(pg: PostgresSettings): number {
  const databases = [pg.database, pg.visibilityDatabase].map(literal).join(', ');
  return Number(psql(pg, `SELECT count(*) FROM pg_stat_activity WHERE datname IN (${databases})`));
}

function psql(pg: PostgresSettings, sql: string): string {
  return sh('runuser', [
    '-u',
    'postgres',
    '--',
    'psql',
    '-X',
    '-q',
    '-t',
    '-A',
    '-v',
    'ON_ERROR_STOP=1',
    '-p',
    String(pg.port),
    '-c',
    sql,
  ]).trim();
}

function sh(command: string, args: string[], env?: NodeJS.ProcessEnv): string {
  const result = spawnSync(command, args, { encoding: 'utf8', env, maxBuffer: 64 * 1024 * 1024 });
  if (result.error) throw new Error(`${command}: ${result.error.message}`);
  if (result.status !== 0) {
    // The SQL tool logs every statement; the last lines say what failed.
    const output = `${result.stdout}\n${result.stderr}`.trim().split('\n').slice(-15).join('\n');
    throw new Error(`${command} ${args.slice(0, 4).join(' ')} … failed (exit ${result.status}):\n${output}`);
  }
  return result.stdout;
}

const literal = (value: string) => `'${value.replace(/'/g, "''")}'`;
const ident = (value: string) => `"${value.replace(/"/g, '""')}"`;
