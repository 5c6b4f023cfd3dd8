/**
 * npm run test:cluster: the cluster drills (test/cluster), each file on a production topology of its own
 * (scripts/cluster). Needs root (PostgreSQL via pg_createcluster), Go for the first build of the Temporal server,
 * and `npm run build` unless CLUSTER_BUILD=source.
 */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test/cluster'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }] },
  globalSetup: '<rootDir>/test/cluster/global-setup.ts',
  testTimeout: 900_000,
};
