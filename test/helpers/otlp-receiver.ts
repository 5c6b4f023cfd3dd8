import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
// The protobuf messages the OTLP exporter itself encodes with (@opentelemetry/exporter-trace-otlp-proto).
import otlpRoot from '@opentelemetry/otlp-transformer/build/src/generated/root';

export interface ReceivedSpan {
  service: string;
  name: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  attributes: Record<string, unknown>;
}

interface DecodedRequest {
  resourceSpans: Array<{
    resource?: { attributes: KeyValue[] };
    scopeSpans: Array<{
      spans: Array<{
        name: string;
        traceId: Uint8Array;
        spanId: Uint8Array;
        parentSpanId?: Uint8Array;
        attributes: KeyValue[];
      }>;
    }>;
  }>;
}
interface KeyValue {
  key: string;
  value: { stringValue?: string; intValue?: unknown; boolValue?: boolean };
}
interface MessageType {
  decode(bytes: Uint8Array): unknown;
}

const ExportTraceServiceRequest = (
  otlpRoot as unknown as {
    opentelemetry: { proto: { collector: { trace: { v1: { ExportTraceServiceRequest: MessageType } } } } };
  }
).opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;

const hex = (bytes?: Uint8Array) => Buffer.from(bytes ?? []).toString('hex');
const valueOf = (v: KeyValue['value']) => v.stringValue ?? v.boolValue ?? (v.intValue as unknown);
const attributesOf = (kvs: KeyValue[] = []) => Object.fromEntries(kvs.map((kv) => [kv.key, valueOf(kv.value)]));

/** A local OTLP/HTTP traces receiver (protobuf, POST /v1/traces), as a collector would be: it keeps every span. */
export interface OtlpReceiver {
  url: string;
  spans: ReceivedSpan[];
  close(): Promise<void>;
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end();
        return;
      }
      const request = ExportTraceServiceRequest.decode(Buffer.concat(chunks)) as DecodedRequest;
      for (const resourceSpans of request.resourceSpans) {
        const service = String(attributesOf(resourceSpans.resource?.attributes)['service.name']);
        for (const scope of resourceSpans.scopeSpans) {
          for (const span of scope.spans) {
            spans.push({
              service,
              name: span.name,
              traceId: hex(span.traceId),
              spanId: hex(span.spanId),
              parentSpanId: hex(span.parentSpanId),
              attributes: attributesOf(span.attributes),
            });
          }
        }
      }
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    spans,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
