import { updateAbortedByServer, updateWithRetry } from '../../api/updates';

/** A gRPC error as @grpc/grpc-js raises it, wrapped the way the Temporal client wraps it. */
function grpcError(code: number, details: string): Error {
  const grpc = Object.assign(new Error(`${code} ${details}`), { code, details, metadata: {} });
  return new Error('Workflow Update failed', { cause: grpc });
}
const aborted = () =>
  grpcError(9, 'Unable to perform workflow execution update due to unexpected workflow task failure.');

describe('updateWithRetry', () => {
  it('asks again with the same update id while the server aborts the update, then answers its result', async () => {
    const ids: string[] = [];
    const result = await updateWithRetry(async (updateId) => {
      ids.push(updateId);
      if (ids.length < 3) throw aborted();
      return 'applied';
    });
    expect(result).toBe('applied');
    expect(ids).toHaveLength(3);
    expect(new Set(ids).size).toBe(1);
  });

  it('passes any other error on at once', async () => {
    let calls = 0;
    const other = grpcError(9, 'no poller seen for task queue recently');
    await expect(
      updateWithRetry(async () => {
        calls += 1;
        throw other;
      }),
    ).rejects.toBe(other);
    expect(calls).toBe(1);
  });

  it('gives up after a bounded number of attempts', async () => {
    let calls = 0;
    await expect(
      updateWithRetry(async () => {
        calls += 1;
        throw aborted();
      }),
    ).rejects.toThrow('Workflow Update failed');
    expect(calls).toBe(8);
  }, 15_000);

  it('tells an aborted update from a refused one', () => {
    expect(updateAbortedByServer(aborted())).toBe(true);
    expect(updateAbortedByServer(grpcError(14, 'workflow update was aborted'))).toBe(true);
    expect(updateAbortedByServer(grpcError(5, 'workflow execution already completed'))).toBe(false);
    expect(updateAbortedByServer(new Error('unexpected workflow task failure'))).toBe(false);
  });
});
