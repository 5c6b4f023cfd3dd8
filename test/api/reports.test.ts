/** Report writing (api/reports.ts): RFC 4180 CSV with formula cells guarded, and JSON with streamed rows. */
import { PassThrough } from 'node:stream';
import { parse as parseCsv } from 'csv-parse/sync';
import { CSV_COLUMNS, guardCell, writeCsv, writeJson, type Report, type ReportRow } from '../../api/reports';

function report(rows: ReportRow[]): Report {
  return {
    kind: 'revocations',
    id: 'dev-1',
    workflowId: 'revoke/dev-1',
    runId: 'r1',
    status: 'completed',
    outcome: 'revoked',
    startedAt: '2025-06-01T00:00:00.000Z',
    summary: { devices: rows.length },
    rows: (async function* () {
      yield* rows;
    })(),
  };
}

async function written(write: (r: Report, out: PassThrough) => Promise<void>, r: Report): Promise<string> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  await write(r, out);
  out.end();
  return Buffer.concat(chunks).toString('utf8');
}

describe('report CSV', () => {
  it('guards cells a spreadsheet would run as formulas, and leaves the rest alone', () => {
    for (const cell of ['=HYPERLINK("x")', '+1', '-2+3', '@SUM(A1)', '\tx', '\rx'])
      expect(guardCell(cell)).toBe(`'${cell}`);
    for (const cell of ['dev-1', 'a=b', '', 'disabled (Disconnected)']) expect(guardCell(cell)).toBe(cell);
  });

  it('writes RFC 4180: a header, CRLF line ends, quotes around commas, quotes and line breaks; formulas guarded', async () => {
    const text = await written(
      writeCsv,
      report([
        {
          registrationId: 'dev-1',
          deviceId: 'dev-1',
          hub: 'dps',
          before: 'enabled',
          after: 'disabled',
          action: 'disabled',
        },
        {
          registrationId: 'dev-2',
          deviceId: '=cmd|"/c calc"!A1',
          hub: 'h, "quoted"',
          before: 'line\nbreak',
          outcome: 'notRevoked',
          problems: ['enabled in h', '@risk'],
        },
      ]),
    );
    const lines = text.split('\r\n');
    expect(lines[0]).toBe(CSV_COLUMNS.join(','));
    expect(text.endsWith('\r\n')).toBe(true);
    expect(text).toContain('"h, ""quoted"""');
    const records = parseCsv(text, { columns: true }) as Array<Record<string, string>>;
    expect(records).toHaveLength(2);
    expect(records[0]).toMatchObject({ kind: 'revocations', id: 'dev-1', hub: 'dps', after: 'disabled', problems: '' });
    expect(records[1]).toMatchObject({
      deviceId: `'=cmd|"/c calc"!A1`,
      hub: 'h, "quoted"',
      before: 'line\nbreak',
      problems: 'enabled in h; @risk',
    });
  });

  it('writes a header line alone for a report without rows', async () => {
    expect(await written(writeCsv, report([]))).toBe(`${CSV_COLUMNS.join(',')}\r\n`);
  });
});

describe('report JSON', () => {
  it('writes the header and every row as one JSON document', async () => {
    const rows = Array.from({ length: 1_000 }, (_, i) => ({ deviceId: `dev-${i}`, outcome: 'stale' }));
    const parsed = JSON.parse(await written(writeJson, report(rows))) as Record<string, unknown>;
    expect(parsed).toMatchObject({ kind: 'revocations', id: 'dev-1', summary: { devices: 1_000 } });
    expect(parsed.rows).toEqual(rows);
    expect(JSON.parse(await written(writeJson, report([])))).toMatchObject({ rows: [] });
  });
});
