/** How the jest global setup hands the dev server's address to the test files. */
export const HARNESS_ENV = {
  address: 'IOT_LIFECYCLE_TEST_TEMPORAL_ADDRESS',
  /** `dist` when jest.dist.config.js runs the suite against the compiled build. */
  build: 'IOT_LIFECYCLE_TEST_BUILD',
} as const;
