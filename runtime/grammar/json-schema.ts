/**
 * JSON Schema to a regular grammar of JSON texts that are valid against it. Covers the
 * subset agent frameworks emit (zod-to-json-schema, pydantic, OpenAI strict mode):
 * objects with properties / required / additionalProperties, arrays with items /
 * minItems / maxItems, enum, const, strings with minLength / maxLength / pattern / a few
 * formats, integers and numbers with bounds, booleans, null, anyOf, type lists, and
 * non-recursive `$ref`s into the document. A keyword that would constrain the value in a
 * way the grammar does not enforce (multipleOf, uniqueItems, not, …) is refused with a
 * GrammarError naming its JSON pointer, so an accepted schema's output is always valid.
 *
 * The JSON is compact with one optional space after `:` and `,`; properties come in the
 * schema's order; keys beyond `properties` are never generated (valid, if allowed, since
 * omitting them is). A schema with no type (`{}`, `true`) accepts any JSON value, nested
 * at most `anyDepth` levels, so the language stays regular.
 *
 * @example
 * const rx = schemaToRx({ type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] });
 */
import { GrammarError } from '../../core/errors.js';
import { classIn, patternToRx } from './pattern.js';
import { alt, chars, EMPTY, lit, MAX_CODE_POINT, opt, range, rep, seq, set, star, type Rx } from './rx.js';

export interface JsonGrammarOptions {
  /** Nesting allowed in values of unconstrained type (default 3). */
  anyDepth?: number;
}

type Schema = Record<string, unknown>;

const ANNOTATIONS = new Set(['title', 'description', 'default', 'examples', '$schema', '$id', '$comment', 'deprecated', 'readOnly', 'writeOnly', '$defs', 'definitions']);
const COMMON = new Set(['type', 'enum', 'const', 'anyOf', 'oneOf', 'allOf', '$ref']);
const BY_TYPE: Record<string, string[]> = {
  string: ['minLength', 'maxLength', 'pattern', 'format'],
  number: ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'],
  integer: ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'],
  array: ['items', 'minItems', 'maxItems'],
  object: ['properties', 'required', 'additionalProperties'],
  boolean: [],
  null: [],
};
const TYPES = Object.keys(BY_TYPE);

const WS = opt(lit(' '));
const DIGIT = set(range('0', '9'));
const digits = (min: number, max: number) => rep(DIGIT, min, max);
/** Largest magnitude a generated number's integer part may have: 15 digits stay exact in a double. */
const MAX_INT = 10 ** 15 - 1;

/** One character of a JSON string body: unescaped, or a short escape (no \u, see stringRx). */
const STRING_CHAR = alt([classIn('json-string', [0, MAX_CODE_POINT]), seq([lit('\\'), set(chars('/bfnrt'))])]);

const FORMATS: Record<string, Rx> = {
  date: seq([digits(4, 4), lit('-'), alt([seq([lit('0'), set(range('1', '9'))]), seq([lit('1'), set(range('0', '2'))])]), lit('-'), alt([seq([lit('0'), set(range('1', '9'))]), seq([set(range('1', '2')), DIGIT]), seq([lit('3'), set(range('0', '1'))])])]),
  time: seq([alt([seq([set(range('0', '1')), DIGIT]), seq([lit('2'), set(range('0', '3'))])]), lit(':'), set(range('0', '5')), DIGIT, lit(':'), set(range('0', '5')), DIGIT, opt(seq([lit('.'), digits(1, 6)])), alt([lit('Z'), seq([set(chars('+-')), digits(2, 2), lit(':'), digits(2, 2)])])]),
  uuid: (() => {
    const hex = set([...range('0', '9'), ...range('a', 'f')]);
    return seq([rep(hex, 8, 8), lit('-'), rep(hex, 4, 4), lit('-'), rep(hex, 4, 4), lit('-'), rep(hex, 4, 4), lit('-'), rep(hex, 12, 12)]);
  })(),
};
FORMATS['date-time'] = seq([FORMATS.date!, lit('T'), FORMATS.time!]);

/** Same-length digit strings lo..hi (lo ≤ hi) as a tree: the classic split on the first differing digit. */
function digitSpan(lo: string, hi: string): Rx {
  if (lo.length === 0) return EMPTY;
  if (/^0*$/.test(lo) && /^9*$/.test(hi)) return digits(lo.length, lo.length);
  if (lo[0] === hi[0]) return seq([lit(lo[0]!), digitSpan(lo.slice(1), hi.slice(1))]);
  const n = lo.length - 1;
  const arms = [seq([lit(lo[0]!), digitSpan(lo.slice(1), '9'.repeat(n))])];
  const a = Number(lo[0]) + 1;
  const b = Number(hi[0]) - 1;
  if (a <= b) arms.push(seq([set([48 + a, 48 + b]), digits(n, n)]));
  arms.push(seq([lit(hi[0]!), digitSpan('0'.repeat(n), hi.slice(1))]));
  return alt(arms);
}

/** Non-negative integers lo..hi without leading zeros. */
function naturalRange(lo: number, hi: number): Rx {
  const arms: Rx[] = [];
  for (let len = String(lo).length; len <= String(hi).length; len++) {
    const from = Math.max(lo, len === 1 ? 0 : 10 ** (len - 1));
    const to = Math.min(hi, 10 ** len - 1);
    if (from <= to) arms.push(digitSpan(String(from), String(to)));
  }
  return alt(arms);
}

/** Integers lo..hi as JSON (no "-0"). */
export function integerRange(lo: number, hi: number): Rx {
  const arms: Rx[] = [];
  if (lo < 0) arms.push(seq([lit('-'), naturalRange(Math.max(1, -Math.min(hi, -1)), -lo)]));
  if (hi >= 0) arms.push(naturalRange(Math.max(0, lo), hi));
  return alt(arms);
}

export function schemaToRx(root: unknown, options: JsonGrammarOptions = {}): Rx {
  const anyDepth = options.anyDepth ?? 3;
  const resolving: string[] = [];

  const anyValue = (depth: number): Rx => {
    const scalars = [stringRx({}, ''), numberRx({}, ''), lit('true'), lit('false'), lit('null')];
    if (depth <= 0) return alt(scalars);
    const inner = anyValue(depth - 1);
    const array = seq([lit('['), opt(seq([inner, star(seq([lit(','), WS, inner]))])), lit(']')]);
    const pair = seq([stringRx({}, ''), lit(':'), WS, inner]);
    const object = seq([lit('{'), opt(seq([pair, star(seq([lit(','), WS, pair]))])), lit('}')]);
    return alt([...scalars, array, object]);
  };

  const resolveRef = (ref: string, pointer: string): unknown => {
    if (!ref.startsWith('#')) throw new GrammarError(pointer, `only local $refs are supported, not ${JSON.stringify(ref)}`);
    let target: unknown = root;
    for (const raw of ref.slice(1).split('/').slice(1)) {
      const key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
      if (target === null || typeof target !== 'object' || !Object.hasOwn(target, key)) throw new GrammarError(pointer, `$ref ${ref} points nowhere`);
      target = (target as Schema)[key];
    }
    return target;
  };

  const value = (schema: unknown, pointer: string): Rx => {
    if (schema === true) return anyValue(anyDepth);
    if (schema === false) throw new GrammarError(pointer, 'the schema `false` accepts no value');
    if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) throw new GrammarError(pointer, 'a schema must be an object or a boolean');
    const s = schema as Schema;
    if (typeof s.$ref === 'string') {
      if (resolving.includes(s.$ref)) throw new GrammarError(pointer, `recursive $ref ${s.$ref} is not supported (the grammar must stay finite)`);
      const others = Object.keys(s).filter((k) => k !== '$ref' && !ANNOTATIONS.has(k));
      if (others.length > 0) throw new GrammarError(pointer, `$ref beside ${others.join(', ')} is not supported`);
      resolving.push(s.$ref);
      try {
        return value(resolveRef(s.$ref, pointer), `${pointer}/$ref`);
      } finally {
        resolving.pop();
      }
    }
    if ('const' in s) return lit(JSON.stringify(s.const));
    if (Array.isArray(s.enum)) {
      if (s.enum.length === 0) throw new GrammarError(`${pointer}/enum`, 'an empty enum accepts no value');
      return alt(s.enum.map((v) => lit(JSON.stringify(v))));
    }
    for (const key of ['anyOf', 'oneOf'] as const) {
      if (s[key] === undefined) continue;
      const arms = s[key];
      if (!Array.isArray(arms) || arms.length === 0) throw new GrammarError(`${pointer}/${key}`, 'must be a non-empty array');
      const rest = Object.keys(s).filter((k) => k !== key && !ANNOTATIONS.has(k));
      if (rest.length > 0) throw new GrammarError(pointer, `${key} beside ${rest.join(', ')} is not supported; move them into each arm`);
      // oneOf is compiled as anyOf: the arms frameworks emit (a type each, or tagged objects) do not overlap.
      return alt(arms.map((arm, i) => value(arm, `${pointer}/${key}/${i}`)));
    }
    if (s.allOf !== undefined) {
      if (!Array.isArray(s.allOf) || s.allOf.length !== 1) throw new GrammarError(`${pointer}/allOf`, 'only a one-element allOf is supported');
      return value(s.allOf[0], `${pointer}/allOf/0`);
    }
    const types = typesOf(s, pointer);
    for (const key of Object.keys(s)) {
      if (ANNOTATIONS.has(key) || COMMON.has(key)) continue;
      if (!types.some((t) => BY_TYPE[t]!.includes(key))) throw new GrammarError(`${pointer}/${key}`, `keyword ${key} is not supported for type ${types.join('|')}`);
    }
    return alt(types.map((t) => typed(t, s, pointer)));
  };

  const typed = (type: string, s: Schema, pointer: string): Rx => {
    switch (type) {
      case 'string':
        return stringRx(s, pointer);
      case 'number':
        return numberRx(s, pointer);
      case 'integer':
        return integerRx(s, pointer);
      case 'boolean':
        return alt([lit('true'), lit('false')]);
      case 'null':
        return lit('null');
      case 'array':
        return arrayRx(s, pointer);
      case 'object':
        return objectRx(s, pointer);
      default:
        throw new GrammarError(`${pointer}/type`, `unknown type ${type}`);
    }
  };

  const arrayRx = (s: Schema, pointer: string): Rx => {
    const min = count(s, 'minItems', pointer) ?? 0;
    const max = count(s, 'maxItems', pointer) ?? Infinity;
    if (min > max) throw new GrammarError(pointer, `minItems ${min} is above maxItems ${max}`);
    if (max === 0) return lit('[]');
    if (Array.isArray(s.items)) throw new GrammarError(`${pointer}/items`, 'tuple items (an array) are not supported');
    const item = s.items === undefined ? anyValue(anyDepth - 1) : value(s.items, `${pointer}/items`);
    const more = seq([lit(','), WS, item]);
    const body = min === 0 ? opt(seq([item, rep(more, 0, max - 1)])) : seq([item, rep(more, min - 1, max - 1)]);
    return seq([lit('['), body, lit(']')]);
  };

  const objectRx = (s: Schema, pointer: string): Rx => {
    const props = (s.properties ?? {}) as Schema;
    if (typeof props !== 'object' || props === null) throw new GrammarError(`${pointer}/properties`, 'must be an object');
    const required = new Set((s.required ?? []) as string[]);
    for (const name of required) {
      if (!Object.hasOwn(props, name)) throw new GrammarError(`${pointer}/required`, `required property ${JSON.stringify(name)} has no schema in properties`);
    }
    const names = Object.keys(props);
    if (names.length === 0 && s.additionalProperties !== false) {
      // A map: any keys, values of additionalProperties' schema.
      const inner = s.additionalProperties === undefined || s.additionalProperties === true ? anyValue(anyDepth - 1) : value(s.additionalProperties, `${pointer}/additionalProperties`);
      const pair = seq([stringRx({}, ''), lit(':'), WS, inner]);
      return seq([lit('{'), opt(seq([pair, star(seq([lit(','), WS, pair]))])), lit('}')]);
    }
    const member = names.map((name) => seq([lit(JSON.stringify(name)), lit(':'), WS, value(props[name], `${pointer}/properties/${name.replace(/~/g, '~0').replace(/\//g, '~1')}`)]));
    // Properties in schema order; an optional one may be left out. Each arm starts with a
    // different first present property, so a comma never leads.
    const arms: Rx[] = [];
    for (let first = 0; first < names.length; first++) {
      const tail = names.slice(first + 1).map((name, j) => {
        const m = seq([lit(','), WS, member[first + 1 + j]!]);
        return required.has(name) ? m : opt(m);
      });
      arms.push(seq([member[first]!, ...tail]));
      if (required.has(names[first]!)) break;
    }
    if (!names.some((n) => required.has(n))) arms.push(EMPTY);
    return seq([lit('{'), alt(arms), lit('}')]);
  };

  return value(root, '');
}

function typesOf(s: Schema, pointer: string): string[] {
  if (s.type === undefined) {
    // No type: the keywords present say which types they constrain; none means any value.
    const implied = TYPES.filter((t) => BY_TYPE[t]!.some((k) => k in s));
    return implied.length > 0 ? implied : TYPES;
  }
  const list = Array.isArray(s.type) ? s.type : [s.type];
  for (const t of list) if (typeof t !== 'string' || !TYPES.includes(t)) throw new GrammarError(`${pointer}/type`, `unknown type ${JSON.stringify(t)}`);
  if (list.length === 0) throw new GrammarError(`${pointer}/type`, 'an empty type list accepts no value');
  return list as string[];
}

function count(s: Schema, key: string, pointer: string): number | undefined {
  const v = s[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new GrammarError(`${pointer}/${key}`, 'must be a non-negative integer');
  return v;
}

function stringRx(s: Schema, pointer: string): Rx {
  const min = count(s, 'minLength', pointer);
  const max = count(s, 'maxLength', pointer);
  if (min !== undefined && max !== undefined && min > max) throw new GrammarError(pointer, `minLength ${min} is above maxLength ${max}`);
  let body: Rx;
  if (s.pattern !== undefined) {
    if (typeof s.pattern !== 'string') throw new GrammarError(`${pointer}/pattern`, 'must be a string');
    if (min !== undefined || max !== undefined || s.format !== undefined) {
      throw new GrammarError(pointer, 'pattern together with minLength/maxLength/format is not supported; put the length in the pattern');
    }
    body = patternToRx(s.pattern, { context: 'json-string', anchored: false, pointer: `${pointer}/pattern` });
  } else if (s.format !== undefined) {
    const f = FORMATS[s.format as string];
    if (!f) throw new GrammarError(`${pointer}/format`, `format ${JSON.stringify(s.format)} is not supported (supported: ${Object.keys(FORMATS).join(', ')})`);
    if (min !== undefined || max !== undefined) throw new GrammarError(pointer, 'format together with minLength/maxLength is not supported');
    body = f;
  } else {
    // \u escapes are left out: a surrogate pair would count as two characters here and one for validators.
    body = rep(STRING_CHAR, min ?? 0, max ?? Infinity);
  }
  return seq([lit('"'), body, lit('"')]);
}

interface Bounds {
  lo: number;
  hi: number;
  loExclusive: boolean;
  hiExclusive: boolean;
}

function boundsOf(s: Schema, pointer: string): Bounds | null {
  const num = (key: string): number | undefined => {
    const v = s[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new GrammarError(`${pointer}/${key}`, 'must be a finite number');
    return v;
  };
  const min = num('minimum');
  const max = num('maximum');
  const xmin = num('exclusiveMinimum');
  const xmax = num('exclusiveMaximum');
  if (min === undefined && max === undefined && xmin === undefined && xmax === undefined) return null;
  const loIncl = min ?? -MAX_INT;
  const hiIncl = max ?? MAX_INT;
  const b: Bounds = {
    lo: Math.max(loIncl, xmin ?? -Infinity),
    hi: Math.min(hiIncl, xmax ?? Infinity),
    loExclusive: xmin !== undefined && xmin >= loIncl,
    hiExclusive: xmax !== undefined && xmax <= hiIncl,
  };
  if (Math.abs(b.lo) > MAX_INT || Math.abs(b.hi) > MAX_INT) throw new GrammarError(pointer, `bounds beyond ±${MAX_INT} are not supported`);
  return b;
}

/** Smallest and largest integers inside the bounds. */
function integerSpan(b: Bounds): [number, number] {
  const lo = b.loExclusive ? Math.floor(b.lo) + 1 : Math.ceil(b.lo);
  const hi = b.hiExclusive ? Math.ceil(b.hi) - 1 : Math.floor(b.hi);
  return [lo, hi];
}

function integerRx(s: Schema, pointer: string): Rx {
  const b = boundsOf(s, pointer);
  if (b === null) return seq([opt(lit('-')), alt([lit('0'), seq([set(range('1', '9')), digits(0, 14)])])]);
  const [lo, hi] = integerSpan(b);
  if (lo > hi) throw new GrammarError(pointer, 'no integer lies within the bounds');
  return integerRange(lo, hi);
}

/**
 * Numbers: unbounded ones in full JSON syntax (exponent included); bounded ones as an
 * integer in range, or an integer part followed by a fraction that is never zero
 * (`\.\d*[1-9]`), so that k.f lies strictly between k and k±1 and the bound check is one
 * on k: a subset of the valid numbers, every one of them valid.
 */
function numberRx(s: Schema, pointer: string): Rx {
  const fraction = seq([lit('.'), digits(0, 14), set(range('1', '9'))]);
  const b = boundsOf(s, pointer);
  if (b === null) {
    const intPart = alt([lit('0'), seq([set(range('1', '9')), digits(0, 14)])]);
    return seq([opt(lit('-')), intPart, opt(seq([lit('.'), digits(1, 15)])), opt(seq([set(chars('eE')), opt(set(chars('+-'))), digits(1, 2)]))]);
  }
  const arms: Rx[] = [];
  const [lo, hi] = integerSpan(b);
  if (lo <= hi) arms.push(integerRange(lo, hi));
  // Positive fractions k.f (k ≥ 0) lie in (k, k+1): valid when k ≥ lo and k+1 ≤ hi.
  const posLo = Math.max(0, Math.ceil(b.lo));
  const posHi = Math.floor(b.hi) - 1;
  if (posLo <= posHi) arms.push(seq([integerRange(posLo, posHi), fraction]));
  // Negative fractions -k.f lie in (-(k+1), -k): valid when -(k+1) ≥ lo and -k ≤ hi.
  const negLo = Math.max(0, Math.ceil(-b.hi));
  const negHi = Math.floor(-b.lo) - 1;
  if (negLo <= negHi) arms.push(seq([lit('-'), integerRange(negLo, negHi), fraction]));
  if (arms.length === 0) throw new GrammarError(pointer, 'no number lies within the bounds');
  return alt(arms);
}
