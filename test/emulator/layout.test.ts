/**
 * The emulator's layout rules (docs: /work/shared/notes/conventions.md, "Layout"): product code never imports the
 * emulator, and the emulator's modules import each other without circles (type-only imports included, since a
 * circle of types still ties the modules together).
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(__dirname, '../..');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return sourceFiles(full);
    return full.endsWith('.ts') ? [full] : [];
  });
}

/** Relative module specifiers of every import/export-from in a file, resolved to files. */
function localImports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specifiers = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"]*?from\s+'([^']+)'/g)].map((m) => m[1]);
  return specifiers
    .filter((s) => s.startsWith('.'))
    .map((s) => {
      const base = path.resolve(path.dirname(file), s);
      for (const candidate of [`${base}.ts`, path.join(base, 'index.ts')]) {
        try {
          if (statSync(candidate).isFile()) return candidate;
        } catch {
          // try the next form
        }
      }
      throw new Error(`${path.relative(root, file)} imports ${s}, which does not resolve`);
    });
}

function findCycle(files: string[]): string[] | undefined {
  const graph = new Map(files.map((f) => [f, localImports(f).filter((t) => files.includes(t))]));
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (file: string): string[] | undefined => {
    if (state.get(file) === 'done') return undefined;
    if (state.get(file) === 'visiting') return [...stack.slice(stack.indexOf(file)), file];
    state.set(file, 'visiting');
    stack.push(file);
    for (const next of graph.get(file) ?? []) {
      const cycle = visit(next);
      if (cycle) return cycle;
    }
    stack.pop();
    state.set(file, 'done');
    return undefined;
  };
  for (const file of files) {
    const cycle = visit(file);
    if (cycle) return cycle.map((f) => path.relative(root, f));
  }
  return undefined;
}

describe('emulator layout', () => {
  it('keeps product code (api, workflows, activities, worker, common) free of emulator imports', () => {
    const offenders = ['api', 'workflows', 'activities', 'worker', 'common']
      .flatMap((dir) => sourceFiles(path.join(root, dir)))
      .flatMap((file) =>
        localImports(file)
          .filter((target) => path.relative(root, target).startsWith(`emulator${path.sep}`))
          .map((target) => `${path.relative(root, file)} → ${path.relative(root, target)}`),
      );
    expect(offenders).toEqual([]);
  });

  it('has no import circle among the emulator modules', () => {
    expect(findCycle(sourceFiles(path.join(root, 'emulator')))).toBeUndefined();
  });

  it('organises the emulator by the Azure service each part stands in for', () => {
    const folders = readdirSync(path.join(root, 'emulator')).filter((name) =>
      statSync(path.join(root, 'emulator', name)).isDirectory(),
    );
    expect(folders).toEqual(expect.arrayContaining(['hub', 'dps', 'eventgrid', 'mqtt', 'control']));
  });
});
