import { DefaultLogger, Runtime } from '@temporalio/worker';

// Worker lifecycle INFO lines drown jest's output; errors still show (retried activity failures are expected in fault tests).
Runtime.install({ logger: new DefaultLogger('ERROR') });
