import type { DevServer } from '../common/temporal-server';

export default async function globalTeardown(): Promise<void> {
  const server = (globalThis as { __temporalDevServer?: DevServer }).__temporalDevServer;
  if (server) await server.stop();
}
