import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { METADATA_ENCODING_KEY, type Payload, type PayloadCodec } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import type { Config } from './config';

/**
 * Payload encryption for Temporal (the samples' encryption-codec pattern): every payload the worker and the API
 * write (workflow and activity inputs and results, signals, queries, memos) is stored as AES-256-GCM ciphertext of
 * the whole serialized payload, so twin tags and desired properties in snapshots are not plain text in histories.
 *
 * - Keys come from TEMPORAL_CODEC_KEYS, `id:base64key` pairs; the first encrypts, all decrypt, so a key is rotated
 *   by putting a new one first and dropping the old one once no open run or retained history uses it.
 * - Decoding touches only payloads with this codec's encoding and passes every other payload through, so histories
 *   recorded without the codec (and runs started before it was turned on) still decode and replay.
 * - The key id and cipher are in the payload's metadata; the key never is.
 */

export const ENCRYPTED_ENCODING = 'binary/encrypted';
export const KEY_ID_METADATA = 'encryption-key-id';
const CIPHER = 'aes-256-gcm';
const IV_BYTES = 12;
const TAG_BYTES = 16;

const { Payload: PayloadMessage } = temporal.api.common.v1;
const text = (value: string) => new TextEncoder().encode(value);
const fromBytes = (bytes: Uint8Array | null | undefined) => (bytes ? Buffer.from(bytes).toString('utf8') : undefined);

export interface CodecKey {
  id: string;
  key: Buffer;
}

export class AesGcmPayloadCodec implements PayloadCodec {
  private readonly byId: Map<string, Buffer>;

  /** `keys[0]` encrypts; every key decrypts. */
  constructor(private readonly keys: readonly CodecKey[]) {
    if (keys.length === 0) throw new Error('AesGcmPayloadCodec needs at least one key');
    for (const { id, key } of keys) {
      if (key.length !== 32) throw new Error(`codec key ${id} must be 32 bytes (AES-256), not ${key.length}`);
    }
    this.byId = new Map(keys.map(({ id, key }) => [id, key]));
  }

  async encode(payloads: Payload[]): Promise<Payload[]> {
    const { id, key } = this.keys[0];
    return payloads.map((payload) => {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv(CIPHER, key, iv);
      // The key id is authenticated too: a payload cannot be relabelled to another key.
      cipher.setAAD(Buffer.from(id, 'utf8'));
      const plain = PayloadMessage.encode(payload).finish();
      const sealed = Buffer.concat([iv, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
      return {
        metadata: { [METADATA_ENCODING_KEY]: text(ENCRYPTED_ENCODING), [KEY_ID_METADATA]: text(id) },
        data: sealed,
      };
    });
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((payload) => {
      if (fromBytes(payload.metadata?.[METADATA_ENCODING_KEY]) !== ENCRYPTED_ENCODING) return payload;
      const id = fromBytes(payload.metadata?.[KEY_ID_METADATA]) ?? '';
      const key = this.byId.get(id);
      if (!key) throw new Error(`payload encrypted with key "${id}", which TEMPORAL_CODEC_KEYS does not hold`);
      const sealed = Buffer.from(payload.data ?? new Uint8Array());
      const decipher = createDecipheriv(CIPHER, key, sealed.subarray(0, IV_BYTES));
      decipher.setAAD(Buffer.from(id, 'utf8'));
      decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
      const plain = Buffer.concat([
        decipher.update(sealed.subarray(IV_BYTES, sealed.length - TAG_BYTES)),
        decipher.final(),
      ]);
      return PayloadMessage.decode(plain);
    });
  }
}

/** The codec TEMPORAL_CODEC_KEYS asks for, or undefined (payloads stay plain). */
export function payloadCodecFrom(config: Pick<Config, 'TEMPORAL_CODEC_KEYS'>): AesGcmPayloadCodec | undefined {
  return config.TEMPORAL_CODEC_KEYS ? new AesGcmPayloadCodec(config.TEMPORAL_CODEC_KEYS) : undefined;
}

/** The data converter of every client and worker of the process: the codec, when configured. */
export function dataConverterWith(codec: PayloadCodec | undefined): { payloadCodecs?: PayloadCodec[] } {
  return codec ? { payloadCodecs: [codec] } : {};
}
