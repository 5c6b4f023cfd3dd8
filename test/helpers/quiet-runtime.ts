import { DefaultLogger, Runtime } from '@temporalio/worker';

// Worker lifecycle INFO lines drown jest's output; warnings and errors still show.
Runtime.install({ logger: new DefaultLogger('WARN') });
