/**
 * The subset of the IoT Hub query language the registry answers: `SELECT * FROM devices` and
 * `SELECT COUNT() AS name FROM devices`, with an optional WHERE of comparisons (=, !=, <>, <, >, <=, >=, IN)
 * on twin paths (deviceId, status, connectionState, tags.*, properties.reported.*, …) joined by AND, OR, NOT
 * and parentheses. Anything else is a 400, as Azure answers for queries it cannot parse.
 */
import { hubErrors } from './errors';

type Token = { kind: 'word' | 'string' | 'number' | 'op' | 'punct'; value: string };

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  const re =
    /\s*(?:(\d+(?:\.\d+)?)|'((?:[^']|'')*)'|"((?:[^"]|"")*)"|(<=|>=|<>|!=|=|<|>)|([(),[\]*])|([A-Za-z_$][\w$.]*))/y;
  let index = 0;
  while (index < text.length) {
    if (/^\s*$/.test(text.slice(index))) break;
    re.lastIndex = index;
    const m = re.exec(text);
    if (!m) throw hubErrors.argument(`Query syntax error near '${text.slice(index, index + 20)}'`);
    index = re.lastIndex;
    if (m[1] !== undefined) tokens.push({ kind: 'number', value: m[1] });
    else if (m[2] !== undefined) tokens.push({ kind: 'string', value: m[2].replace(/''/g, "'") });
    else if (m[3] !== undefined) tokens.push({ kind: 'string', value: m[3].replace(/""/g, '"') });
    else if (m[4] !== undefined) tokens.push({ kind: 'op', value: m[4] });
    else if (m[5] !== undefined) tokens.push({ kind: 'punct', value: m[5] });
    else tokens.push({ kind: 'word', value: m[6] });
  }
  return tokens;
}

export type Predicate = (doc: Record<string, unknown>) => boolean;

export interface ParsedQuery {
  /** Undefined for SELECT *; the alias for SELECT COUNT() AS alias. */
  countAlias?: string;
  where: Predicate;
}

function resolve(doc: Record<string, unknown>, path: string): unknown {
  let current: unknown = doc;
  for (const part of path.split('.')) {
    if (typeof current !== 'object' || current === null) return undefined;
    current = (current as Record<string, unknown>)[part];
  }
  return current;
}

function compare(left: unknown, op: string, right: unknown): boolean {
  if (left === undefined) return false;
  switch (op) {
    case '=':
      return left === right;
    case '!=':
    case '<>':
      return left !== right;
  }
  if (typeof left !== typeof right || (typeof left !== 'number' && typeof left !== 'string')) return false;
  const l = left as number | string;
  const r = right as number | string;
  switch (op) {
    case '<':
      return l < r;
    case '>':
      return l > r;
    case '<=':
      return l <= r;
    default:
      return l >= r;
  }
}

class Parser {
  private pos = 0;
  constructor(private readonly tokens: Token[]) {}

  private peek(): Token | undefined {
    return this.tokens[this.pos];
  }

  private isWord(word: string): boolean {
    const t = this.peek();
    return t?.kind === 'word' && t.value.toUpperCase() === word;
  }

  private expectWord(word: string): void {
    if (!this.isWord(word)) throw hubErrors.argument(`Query syntax error: expected ${word}`);
    this.pos += 1;
  }

  private expectPunct(p: string): void {
    const t = this.peek();
    if (t?.kind !== 'punct' || t.value !== p) throw hubErrors.argument(`Query syntax error: expected '${p}'`);
    this.pos += 1;
  }

  parse(): ParsedQuery {
    this.expectWord('SELECT');
    let countAlias: string | undefined;
    const t = this.peek();
    if (t?.kind === 'punct' && t.value === '*') {
      this.pos += 1;
    } else if (this.isWord('COUNT')) {
      this.pos += 1;
      this.expectPunct('(');
      this.expectPunct(')');
      countAlias = 'count';
      if (this.isWord('AS')) {
        this.pos += 1;
        const alias = this.peek();
        if (alias?.kind !== 'word') throw hubErrors.argument('Query syntax error: expected an alias');
        countAlias = alias.value;
        this.pos += 1;
      }
    } else {
      throw hubErrors.argument('Only SELECT * and SELECT COUNT() are supported');
    }
    this.expectWord('FROM');
    const from = this.peek();
    if (from?.kind !== 'word' || from.value.toLowerCase() !== 'devices') {
      throw hubErrors.argument('Only FROM devices is supported');
    }
    this.pos += 1;
    let where: Predicate = () => true;
    if (this.isWord('WHERE')) {
      this.pos += 1;
      where = this.orExpr();
    }
    if (this.pos !== this.tokens.length) throw hubErrors.argument('Query syntax error: unexpected trailing input');
    return { countAlias, where };
  }

  private orExpr(): Predicate {
    let left = this.andExpr();
    while (this.isWord('OR')) {
      this.pos += 1;
      const a = left;
      const b = this.andExpr();
      left = (doc) => a(doc) || b(doc);
    }
    return left;
  }

  private andExpr(): Predicate {
    let left = this.notExpr();
    while (this.isWord('AND')) {
      this.pos += 1;
      const a = left;
      const b = this.notExpr();
      left = (doc) => a(doc) && b(doc);
    }
    return left;
  }

  private notExpr(): Predicate {
    if (this.isWord('NOT')) {
      this.pos += 1;
      const inner = this.notExpr();
      return (doc) => !inner(doc);
    }
    const t = this.peek();
    if (t?.kind === 'punct' && t.value === '(') {
      this.pos += 1;
      const inner = this.orExpr();
      this.expectPunct(')');
      return inner;
    }
    return this.comparison();
  }

  private literal(): unknown {
    const t = this.peek();
    this.pos += 1;
    if (t?.kind === 'string') return t.value;
    if (t?.kind === 'number') return Number(t.value);
    if (t?.kind === 'word') {
      const v = t.value.toLowerCase();
      if (v === 'true') return true;
      if (v === 'false') return false;
      if (v === 'null') return null;
    }
    throw hubErrors.argument('Query syntax error: expected a literal');
  }

  private comparison(): Predicate {
    const field = this.peek();
    if (field?.kind !== 'word') throw hubErrors.argument('Query syntax error: expected a property');
    this.pos += 1;
    const path = field.value;
    if (this.isWord('IN')) {
      this.pos += 1;
      this.expectPunct('[');
      const values: unknown[] = [this.literal()];
      while (this.peek()?.value === ',') {
        this.pos += 1;
        values.push(this.literal());
      }
      this.expectPunct(']');
      return (doc) => values.includes(resolve(doc, path));
    }
    const op = this.peek();
    if (op?.kind !== 'op') throw hubErrors.argument('Query syntax error: expected a comparison');
    this.pos += 1;
    const value = this.literal();
    return (doc) => compare(resolve(doc, path), op.value, value);
  }
}

export function parseDeviceQuery(text: unknown): ParsedQuery {
  if (typeof text !== 'string' || !text.trim()) throw hubErrors.argument('The query is missing');
  return new Parser(tokenize(text)).parse();
}
