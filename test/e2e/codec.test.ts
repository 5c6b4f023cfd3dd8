import { randomBytes, randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import request from 'supertest';
import { Client } from '@temporalio/client';
import { Worker } from '@temporalio/worker';
import { historyFromJSON, historyToJSON } from '@temporalio/common/lib/proto-utils';
import type { SimulatedDevice } from '../../emulator/simulator/device';
import { promotionWorkflowId } from '../../common/messages';
import type { PromotionResult } from '../../common/promotion';
import { AesGcmPayloadCodec, dataConverterWith } from '../../common/payload-codec';
import { workflowsPath } from '../../worker/worker';
import { createApp } from '../../api/app';
import { createLogger } from '../../common/logger';
import { as, authed, testSecurity } from '../helpers/credentials';
import { historiesDir, workflowIdFile } from '../helpers/histories';
import { connectedTo, enrollDevice, simulate, startStack, type Stack } from '../helpers/stack';

/**
 * With the payload codec on, a promotion's history holds its twin values as ciphertext only; the API (same codec)
 * still answers in clear, the codec endpoint shows them to a viewer, and histories recorded without the codec replay.
 */

jest.setTimeout(120_000);

const codec = new AesGcmPayloadCodec([
  { id: 'k2', key: randomBytes(32) },
  { id: 'k1', key: randomBytes(32) },
]);
let stack: Stack;
const devices: SimulatedDevice[] = [];

beforeAll(async () => {
  stack = await startStack({ codec });
});
afterAll(async () => {
  await Promise.all(devices.map((d) => d.stop()));
  await stack?.stop();
});

/** Every encrypted payload in a history's JSON, as the UI would send it to the codec endpoint. */
function encryptedPayloads(json: string): Array<{ metadata: Record<string, string>; data: string }> {
  const found: Array<{ metadata: Record<string, string>; data: string }> = [];
  const encrypted = Buffer.from('binary/encrypted').toString('base64');
  JSON.parse(json, (_key, value) => {
    if (value && typeof value === 'object' && value.metadata?.encoding === encrypted) found.push(value);
    return value;
  });
  return found;
}

/** The data of every payload in a history's JSON, decoded from base64: what anyone reading the history sees. */
function payloadTexts(json: string): string {
  const texts: string[] = [];
  JSON.parse(json, (_key, value) => {
    if (value && typeof value === 'object' && typeof value.data === 'string' && value.metadata) {
      texts.push(Buffer.from(value.data, 'base64').toString('latin1'));
    }
    return value;
  });
  return texts.join('\n');
}

describe('the payload codec', () => {
  it('keeps twin tags and desired properties out of the history, while the API and the codec endpoint show them', async () => {
    const enrolled = await enrollDevice(stack, 'symmetricKey');
    const id = enrolled.registrationId;
    const device = simulate(stack, enrolled);
    devices.push(device);
    await connectedTo(device, stack.hosts.test);
    const tag = `tag-${randomUUID()}`;
    const desired = `desired-${randomUUID()}`;
    await stack.registries.test.updateTwin(
      id,
      { tags: { customer: tag }, properties: { desired: { setting: desired } } },
      '*',
    );

    await authed(stack.app, 'operator')
      .post('/v1/promotions')
      .send({ registrationId: id, pollInterval: '1s' })
      .expect(202);
    const handle = stack.temporal.client.workflow.getHandle(promotionWorkflowId(id));
    const result = (await handle.result()) as PromotionResult;
    expect(result.outcome).toBe('promoted');
    // The twin did travel through the workflow: it was migrated and checked on the target.
    const twin = (await stack.registries.production.getTwin(id)).responseBody;
    expect(twin.tags).toMatchObject({ customer: tag });

    const json = historyToJSON(await handle.fetchHistory());
    const seen = payloadTexts(json);
    expect(seen.length).toBeGreaterThan(1_000);
    for (const value of [tag, desired]) {
      expect(json).not.toContain(value);
      expect(seen).not.toContain(value);
    }
    const payloads = encryptedPayloads(json);
    expect(payloads.length).toBeGreaterThan(5);

    // The API decodes with the same codec.
    const detail = await authed(stack.app, 'viewer').get(`/v1/promotions/${id}`).expect(200);
    expect(detail.body).toMatchObject({ status: 'completed', result: { outcome: 'promoted' } });

    // An API without the key (a rotated key dropped too early, another deployment) still describes the run, and
    // says what it could not read, rather than failing (found by the contract fuzzer on a shared server).
    const keyless = createApp({
      security: testSecurity(),
      client: new Client({ connection: stack.temporal.connection, namespace: 'default' }),
      taskQueue: stack.taskQueue,
      log: createLogger('silent'),
      environments: stack.hosts,
    });
    const unread = await authed(keyless, 'viewer').get(`/v1/promotions/${id}`).expect(200);
    expect(unread.body).toMatchObject({ status: 'completed', registrationId: id });
    expect(unread.body.undecodable).toMatch(/binary\/encrypted|TEMPORAL_CODEC_KEYS/);
    expect(unread.body.result).toBeUndefined();
    // Nor do the routes that act on a run: they read its state, not its memo, and answer as for any closed run.
    for (const action of ['cancel', 'retry-compensation']) {
      const closed = await authed(keyless, 'operator').post(`/v1/promotions/${id}/${action}`).expect(409);
      expect(closed.body).toMatchObject({ type: '/problems/not-running', executionStatus: 'completed' });
    }

    // The codec endpoint: a viewer sees the values; without credentials nothing.
    const decoded = await request(stack.app).post('/codec/decode').set(as('viewer')).send({ payloads }).expect(200);
    const clear = decoded.body.payloads.map((p: { data: string }) => Buffer.from(p.data, 'base64').toString()).join('');
    expect(clear).toContain(tag);
    expect(clear).toContain(desired);
    const refused = await request(stack.app).post('/codec/decode').send({ payloads });
    expect(refused.status).toBe(401);
    expect(JSON.stringify(refused.body)).not.toContain(tag);

    // And the encrypted history replays with the codec.
    await Worker.runReplayHistory(
      { workflowsPath, dataConverter: dataConverterWith(codec) },
      historyFromJSON(JSON.parse(json)),
    );
  });

  it('decodes only its own payloads: recorded plain histories replay with the codec on', async () => {
    const histories = await Promise.all(
      (await readdir(historiesDir))
        .filter((f) => f.endsWith('.json'))
        .map(async (file) => {
          const name = path.basename(file, '.json');
          return {
            history: historyFromJSON(JSON.parse(await readFile(path.join(historiesDir, file), 'utf8'))),
            // A fleet operation names its chunks after its own id: replay under the id it was recorded with.
            workflowId: await readFile(workflowIdFile(name), 'utf8').then(
              (id) => id.trim(),
              () => name,
            ),
          };
        }),
    );
    const failed: string[] = [];
    for await (const result of Worker.runReplayHistories(
      { workflowsPath, dataConverter: dataConverterWith(codec) },
      histories,
    )) {
      if (result.error) failed.push(`${result.workflowId}: ${result.error.message}`);
    }
    expect(failed).toEqual([]);
  }, 180_000);

  it('decrypts with every configured key (rotation) and refuses a payload of an unknown key or tampered with', async () => {
    const [sealed] = await new AesGcmPayloadCodec([
      { id: 'k1', key: (codec as unknown as { keys: Array<{ key: Buffer }> }).keys[1].key },
    ]).encode([{ metadata: { encoding: Buffer.from('json/plain') }, data: Buffer.from('"old"') }]);
    const [plain] = await codec.decode([sealed]);
    expect(Buffer.from(plain.data!).toString()).toBe('"old"');
    const stranger = new AesGcmPayloadCodec([{ id: 'k9', key: randomBytes(32) }]);
    await expect(stranger.decode([sealed])).rejects.toThrow(/key "k1"/);
    const tampered = { ...sealed, data: Buffer.from(sealed.data!).fill(0, 20, 21) };
    await expect(codec.decode([tampered])).rejects.toThrow();
  });
});
