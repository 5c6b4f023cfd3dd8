import { Client, Connection } from '@temporalio/client';
import { loadConfig } from '../common/config';
import { createLogger } from '../common/logger';
import { searchAttributeKeys } from '../common/search-attributes';
import { createApp } from '../api/app';
import { WORKFLOW_TYPES } from '../common/messages';
import type { checkConnectivity } from '../workflows/connectivity';
import { connectToHarness, uniqueTaskQueue, withProjectWorker, type TemporalTestContext } from './helpers/temporal';
import { freePort } from '../common/temporal-server';
import { authed, testSecurity } from './helpers/credentials';

describe('test harness and foundation', () => {
  let ctx: TemporalTestContext;
  beforeAll(async () => {
    ctx = await connectToHarness();
  });
  afterAll(async () => {
    await ctx.close();
  });

  it('runs a workflow on the harness dev server with the project worker and real activities', async () => {
    const taskQueue = uniqueTaskQueue('harness');
    const report = await withProjectWorker(ctx, taskQueue, { azure: { hubs: new Map() } }, () =>
      ctx.client.workflow.execute<typeof checkConnectivity>(WORKFLOW_TYPES.checkConnectivity, {
        taskQueue,
        workflowId: `harness-${taskQueue}`,
        workflowExecutionTimeout: '1 minute',
      }),
    );
    // With no Azure configured the only probe is DPS, reported as not configured.
    expect(report).toEqual({
      allReachable: false,
      endpoints: [{ kind: 'dps', hostName: '', reachable: false, detail: 'DPS is not configured' }],
    });
  });

  it('registered the project search attributes on the dev server', async () => {
    const { customAttributes } = await ctx.connection.operatorService.listSearchAttributes({ namespace: 'default' });
    for (const key of searchAttributeKeys) {
      expect(Object.keys(customAttributes ?? {})).toContain(key.name);
    }
  });

  it('answers /readyz 200 when Temporal is reachable', async () => {
    const app = createApp({
      security: testSecurity(),
      client: ctx.client,
      taskQueue: 'unused',
      log: createLogger('silent'),
    });
    await authed(app).get('/healthz').expect(200, { status: 'ok' });
    await authed(app).get('/readyz').expect(200, { status: 'ready' });
  });

  it('answers /readyz 503 with the reason when Temporal is down', async () => {
    const deadPort = await freePort();
    const connection = Connection.lazy({ address: `127.0.0.1:${deadPort}`, connectTimeout: 500 });
    const client = new Client({ connection, namespace: 'default' });
    const app = createApp({ security: testSecurity(), client, taskQueue: 'unused', log: createLogger('silent') });
    const res = await authed(app).get('/readyz').expect(503);
    expect(res.body.status).toBe('unavailable');
    expect(res.body.reason).toContain(`127.0.0.1:${deadPort}`);
    await authed(app).get('/healthz').expect(200);
  });
});

describe('configuration', () => {
  it('applies defaults when nothing is set', () => {
    const config = loadConfig({});
    expect(config.TEMPORAL_NAMESPACE).toBe('default');
    expect(config.TASK_QUEUE).toBe('iot-lifecycle');
    expect(config.API_PORT).toBe(3000);
  });

  it('names every bad variable', () => {
    expect(() =>
      loadConfig({ TEMPORAL_ADDRESS: 'nohost', API_PORT: '99999', AZURE_HUB_CONNECTION_STRINGS: '{nope' }),
    ).toThrow(/TEMPORAL_ADDRESS[\s\S]*API_PORT[\s\S]*AZURE_HUB_CONNECTION_STRINGS/);
  });

  it('parses hub connection strings by environment', () => {
    const config = loadConfig({
      AZURE_HUB_CONNECTION_STRINGS: JSON.stringify({ test: 'HostName=t.azure-devices.net;SharedAccessKey=x' }),
    });
    expect(config.AZURE_HUB_CONNECTION_STRINGS).toEqual({ test: 'HostName=t.azure-devices.net;SharedAccessKey=x' });
  });
});
