import { DefaultLogger, Runtime } from '@temporalio/worker';

// Worker lifecycle INFO lines drown jest's output; errors still show (retried activity failures are expected in
// fault tests). Core's own WARN lines (e.g. the replay suite's negative control, which must fail with a
// nondeterminism error) are not errors of the run: only ERROR reaches the output.
Runtime.install({
  logger: new DefaultLogger('ERROR'),
  telemetryOptions: { logging: { filter: { core: 'ERROR', other: 'ERROR' } } },
});
