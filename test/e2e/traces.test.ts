/**
 * Traces through the real stack: the API and the worker as processes of their own (the build under test), configured
 * by OTEL_EXPORTER_OTLP_ENDPOINT to export to a local OTLP receiver, the emulator behind them. One request's trace
 * must hold the API's server span, the workflow it started and the workflow's activities, and the API's log line of
 * that request must carry its trace id.
 */
import { randomBytes } from 'node:crypto';
import request from 'supertest';
import { hashApiKey } from '../../api/auth/api-keys';
import { ConfigError, loadConfig } from '../../common/config';
import { freePort } from '../../common/temporal-server';
import { startTracing, tracesUrl } from '../../common/tracing';
import { as, TEST_KEYS } from '../helpers/credentials';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../helpers/otlp-receiver';
import { startStack, type Stack } from '../helpers/stack';
import { startLoggedProcess, stopGracefully, workerEnv, type LoggedProcess } from '../helpers/worker-process';

jest.setTimeout(180_000);

let stack: Stack;
let receiver: OtlpReceiver;
let api: LoggedProcess;
let worker: LoggedProcess;
let apiUrl: string;
const eventGridSecret = randomBytes(16).toString('hex');

beforeAll(async () => {
  receiver = await startOtlpReceiver();
  stack = await startStack();
  // The worker process takes the stack's task queue over.
  await stack.stopWorker();
  const env = await workerEnv(stack);
  const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url };
  worker = startLoggedProcess('worker', { ...env, ...otel, LOG_LEVEL: 'debug' });
  const port = await freePort();
  apiUrl = `http://127.0.0.1:${port}`;
  api = startLoggedProcess('api', {
    PATH: env.PATH,
    TEMPORAL_ADDRESS: env.TEMPORAL_ADDRESS,
    TASK_QUEUE: stack.taskQueue,
    API_PORT: String(port),
    API_KEYS: JSON.stringify([{ id: 'ops', role: 'operator', sha256: hashApiKey(TEST_KEYS.operator) }]),
    LOG_LEVEL: 'info',
    EVENT_GRID_SECRET: eventGridSecret,
    ...otel,
  });
  await Promise.all([
    worker.waitForLine((l) => l.includes('"worker started"'), 120_000),
    api.waitForLine((l) => l.includes('"API listening"'), 60_000),
  ]);
});
afterAll(async () => {
  await Promise.all([api && stopGracefully(api.child), worker && stopGracefully(worker.child)]);
  await stack?.stop();
  await receiver?.close();
});

async function spansOfTrace(traceId: string, enough: (spans: ReceivedSpan[]) => boolean): Promise<ReceivedSpan[]> {
  // The batch span processors export every few seconds.
  const deadline = Date.now() + 30_000;
  for (;;) {
    const spans = receiver.spans.filter((s) => s.traceId === traceId);
    if (enough(spans) || Date.now() > deadline) return spans;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

const json = (line: string) => JSON.parse(line) as Record<string, unknown>;

describe('traces', () => {
  it('links the API request, the workflow it started and its activities in one trace, whose id the request log carries', async () => {
    const res = await request(apiUrl).post('/v1/diagnostics/connectivity').set(as('operator')).send({});
    expect(res.status).toBe(200);
    const requestId = res.headers['x-correlation-id'] as string;
    const workflowId = res.body.workflowId as string;

    const apiSpan = await new Promise<ReceivedSpan>((resolve, reject) => {
      const deadline = Date.now() + 30_000;
      const look = () => {
        const span = receiver.spans.find((s) => s.service === 'iot-lifecycle-api' && s.name.startsWith('POST '));
        if (span) resolve(span);
        else if (Date.now() > deadline) reject(new Error(`no API server span; got ${JSON.stringify(receiver.spans)}`));
        else setTimeout(look, 250);
      };
      look();
    });
    // Named by the route template, with the template as http.route.
    expect(apiSpan.name).toBe('POST /v1/diagnostics/connectivity');
    expect(apiSpan.attributes['http.route']).toBe('/v1/diagnostics/connectivity');

    const isWorkflowSpan = (s: ReceivedSpan) => s.name === 'RunWorkflow:checkConnectivity';
    const isActivitySpan = (s: ReceivedSpan) => s.name.startsWith('RunActivity:');
    const trace = await spansOfTrace(
      apiSpan.traceId,
      (spans) => spans.some(isWorkflowSpan) && spans.some(isActivitySpan),
    );
    const names = trace.map((s) => `${s.service} ${s.name}`);
    expect(names).toContain('iot-lifecycle-api StartWorkflow:checkConnectivity');
    expect(names).toContain('iot-lifecycle-worker RunWorkflow:checkConnectivity');
    const activities = trace.filter(isActivitySpan);
    expect(activities.map((s) => s.name)).toEqual(
      expect.arrayContaining(['RunActivity:probeDps', 'RunActivity:probeHub']),
    );
    expect(activities.every((s) => s.service === 'iot-lifecycle-worker')).toBe(true);
    expect(activities[0].attributes.temporalWorkflowId).toBe(workflowId);
    // The workflow span descends from the API's: its parent is in the trace, and so is every activity span's.
    const ids = new Set(trace.map((s) => s.spanId));
    expect(trace.filter((s) => s !== apiSpan).every((s) => ids.has(s.parentSpanId))).toBe(true);

    // The probes' HTTPS calls to the emulated Azure endpoints, inside their activities.
    const activityIds = new Set(activities.map((s) => s.spanId));
    const azureCalls = trace.filter((s) => activityIds.has(s.parentSpanId) && s.attributes['http.method']);
    expect(azureCalls.map((s) => s.attributes['net.peer.name'] ?? s.attributes['http.host'])).toEqual(
      expect.arrayContaining([stack.hosts.test, stack.hosts.production]),
    );

    // The request's log line: info, with the template, the status, the duration, the request id and the trace.
    const line = json(await api.waitForLine((l) => l.includes(requestId) && l.includes('"request"')));
    expect(line).toMatchObject({
      level: 30,
      msg: 'request',
      method: 'POST',
      route: '/v1/diagnostics/connectivity',
      status: 200,
      requestId,
      trace_id: apiSpan.traceId,
      span_id: apiSpan.spanId,
    });
    expect(typeof line.durationMs).toBe('number');
    // The worker's lines written inside the workflow's activities carry the same trace, and their activity's span.
    const probed = worker.lines.filter((l) => l.includes(workflowId) && l.includes('"endpoint probed"')).map(json);
    expect(probed).toHaveLength(activities.filter((s) => s.name !== 'RunActivity:listEndpoints').length);
    for (const probe of probed) {
      expect(probe.trace_id).toBe(apiSpan.traceId);
      expect(activities.map((s) => s.spanId)).toContain(probe.span_id);
    }
  });

  it('logs probes at debug and traces none of them', async () => {
    const res = await request(apiUrl).get('/healthz');
    expect(res.status).toBe(200);
    // LOG_LEVEL=info: the probe's line is not written; a later request's is.
    const later = await request(apiUrl).get('/v1/promotions').set(as('operator'));
    const laterId = later.headers['x-correlation-id'] as string;
    await api.waitForLine((l) => l.includes(laterId));
    expect(api.lines.some((l) => l.includes(res.headers['x-correlation-id'] as string))).toBe(false);
    expect(receiver.spans.some((s) => s.name.includes('healthz'))).toBe(false);
  });

  it('keeps the Event Grid secret out of span attributes and log lines', async () => {
    const res = await request(apiUrl).post(`/v1/eventgrid?code=${eventGridSecret}`).send([]);
    const requestId = res.headers['x-correlation-id'] as string;
    await api.waitForLine((l) => l.includes(requestId));
    const span = await new Promise<ReceivedSpan>((resolve) => {
      const look = () => {
        const found = receiver.spans.find((s) => s.name === 'POST /v1/eventgrid');
        if (found) resolve(found);
        else setTimeout(look, 250);
      };
      look();
    });
    expect(span.attributes['http.target']).toBe('/v1/eventgrid?code=[Redacted]');
    expect(JSON.stringify(receiver.spans)).not.toContain(eventGridSecret);
    expect(api.lines.join('\n')).not.toContain(eventGridSecret);
  });
});

describe('tracing configuration', () => {
  it('is off without an endpoint, and off with OTEL_SDK_DISABLED', () => {
    expect(startTracing({ OTEL_SDK_DISABLED: false }, 'x')).toBeUndefined();
    expect(tracesUrl({ OTEL_SDK_DISABLED: true, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' })).toBeUndefined();
    expect(tracesUrl({ OTEL_SDK_DISABLED: false, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/' })).toBe(
      'http://c:4318/v1/traces',
    );
    expect(
      tracesUrl({
        OTEL_SDK_DISABLED: false,
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318',
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://t:4318/traces',
      }),
    ).toBe('http://t:4318/traces');
  });

  it('reads OTEL_EXPORTER_OTLP_HEADERS as key=value pairs and refuses anything else', () => {
    expect(loadConfig({ OTEL_EXPORTER_OTLP_HEADERS: 'api-key=abc, x-tenant=a=b' }).OTEL_EXPORTER_OTLP_HEADERS).toEqual({
      'api-key': 'abc',
      'x-tenant': 'a=b',
    });
    expect(() => loadConfig({ OTEL_EXPORTER_OTLP_HEADERS: 'api-key' })).toThrow(ConfigError);
    expect(() => loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'not a url' })).toThrow(ConfigError);
  });
});
