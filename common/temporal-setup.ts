import { isGrpcServiceError, type Connection } from '@temporalio/client';
import {
  encodeSearchAttributeIndexedValueType,
  type SearchAttributeKey,
  type SearchAttributeType,
} from '@temporalio/common/lib/search-attributes';
import { msToTs } from '@temporalio/common/lib/time';
import type { Duration } from '@temporalio/common/lib/time';
import { searchAttributeKeys } from './search-attributes';

/** gRPC status codes (a stable part of the gRPC spec; @temporalio/client does not re-export grpc-js's enum). */
const GRPC = { INVALID_ARGUMENT: 3, NOT_FOUND: 5, ALREADY_EXISTS: 6, PERMISSION_DENIED: 7, UNAUTHENTICATED: 16 };
const searchAttributeTypes = ['TEXT', 'KEYWORD', 'INT', 'DOUBLE', 'BOOL', 'DATETIME', 'KEYWORD_LIST'] as const;

/**
 * What a Temporal cluster needs before the workers and the API can use it: the namespace and the project's custom
 * search attributes. The dev server gets both from its start flags; a real cluster (self-hosted or Temporal Cloud)
 * gets them here. Idempotent: existing ones are left alone, and a search attribute with the same name but another
 * type is reported, never changed.
 */
export interface SetupReport {
  namespaceCreated: boolean;
  searchAttributesAdded: string[];
}

export interface SetupOptions {
  namespace: string;
  /** Retention of closed workflows, for a namespace this creates (an existing one keeps its own). */
  retention?: Duration;
  keys?: SearchAttributeKey<SearchAttributeType>[];
  /** How long to keep trying while the frontend is still coming up or the namespace is not yet visible. */
  timeoutMs?: number;
}

export async function setUpTemporal(connection: Connection, options: SetupOptions): Promise<SetupReport> {
  const { namespace } = options;
  const keys = options.keys ?? searchAttributeKeys;
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);

  const namespaceCreated = await retrying(deadline, () => ensureNamespace(connection, namespace, options.retention));
  const existing = await retrying(deadline, () => listCustomSearchAttributes(connection, namespace));
  const conflicts = keys.filter((k) => existing.has(k.name) && existing.get(k.name) !== k.type);
  if (conflicts.length) {
    throw new Error(
      `search attributes already exist with another type in namespace ${namespace}: ` +
        conflicts.map((k) => `${k.name} is ${existing.get(k.name)}, expected ${k.type}`).join('; '),
    );
  }
  const missing = keys.filter((k) => !existing.has(k.name));
  if (missing.length) {
    await retrying(deadline, () =>
      connection.operatorService.addSearchAttributes({
        namespace,
        searchAttributes: Object.fromEntries(missing.map((k) => [k.name, indexedValueType(k.type)])),
      }),
    );
    // Visible to the frontend once listed (the server caches them per namespace).
    await retrying(deadline, async () => {
      const now = await listCustomSearchAttributes(connection, namespace);
      const absent = missing.filter((k) => !now.has(k.name)).map((k) => k.name);
      if (absent.length) throw new Error(`search attributes not visible yet: ${absent.join(', ')}`);
    });
  }
  return { namespaceCreated, searchAttributesAdded: missing.map((k) => k.name) };
}

function indexedValueType(type: SearchAttributeType) {
  const encoded = encodeSearchAttributeIndexedValueType(type);
  if (encoded === undefined) throw new Error(`no indexed value type for search attribute type ${type}`);
  return encoded;
}

async function ensureNamespace(connection: Connection, namespace: string, retention: Duration = '72h') {
  try {
    await connection.workflowService.describeNamespace({ namespace });
    return false;
  } catch (err) {
    if (!isGrpcServiceError(err) || err.code !== GRPC.NOT_FOUND) throw err;
  }
  try {
    await connection.workflowService.registerNamespace({
      namespace,
      workflowExecutionRetentionPeriod: msToTs(retention),
    });
  } catch (err) {
    // Another setup run created it meanwhile.
    if (!isGrpcServiceError(err) || err.code !== GRPC.ALREADY_EXISTS) throw err;
    return false;
  }
  // The frontend serves a new namespace once its namespace cache has refreshed.
  await connection.workflowService.describeNamespace({ namespace });
  return true;
}

async function listCustomSearchAttributes(connection: Connection, namespace: string) {
  const { customAttributes } = await connection.operatorService.listSearchAttributes({ namespace });
  return new Map(
    Object.entries(customAttributes ?? {}).map(([name, indexed]) => [
      name,
      searchAttributeTypes.find((type) => encodeSearchAttributeIndexedValueType(type) === indexed) ?? String(indexed),
    ]),
  );
}

/** Retries while the cluster is still starting (Unavailable, namespace not yet in the frontend's cache, …). */
async function retrying<T>(deadline: number, fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      const permanent =
        isGrpcServiceError(err) &&
        [GRPC.INVALID_ARGUMENT, GRPC.PERMISSION_DENIED, GRPC.UNAUTHENTICATED].includes(err.code);
      if (permanent || Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}
