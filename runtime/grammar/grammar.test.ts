import { Ajv } from 'ajv';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GrammarError } from '../../core/errors.js';
import { ModelTokenizer } from '../checkpoint/tokenizer.js';
import { mulberry32 } from '../model/random.js';
import { compileNfa, DEAD, LazyDfa } from './automaton.js';
import { compileGrammar, constraintToRx, TokenVocabulary, type TokenGrammar } from './index.js';
import { integerRange, schemaToRx } from './json-schema.js';
import { patternToRx } from './pattern.js';

const tokenizer = ModelTokenizer.fromDir('models/skein-mini');
const vocab = TokenVocabulary.fromTokenizer(tokenizer, tokenizer.vocabSize);

const closing = Array.from({ length: vocab.size }, (_, i) => /["\]}]/.test(vocab.text(i) ?? ''));
const dfaOf = (rx: Parameters<typeof compileNfa>[0]) => new LazyDfa(compileNfa(rx));
const fullMatch = (dfa: LazyDfa, text: string) => dfa.accepting(dfa.walk(dfa.start, text));

/**
 * A "model" with random logits: greedy over noise, nudged towards tokens that close
 * strings and brackets so random outputs end in a few hundred tokens.
 */
function decodeRandom(grammar: TokenGrammar, seed: number, maxSteps = 600): { text: string; finished: boolean } {
  const rand = mulberry32(seed);
  const cursor = grammar.cursor();
  const logits = new Float32Array(vocab.size);
  const bytes: number[] = [];
  const text = () => new TextDecoder().decode(Uint8Array.from(bytes));
  for (let step = 0; step < maxSteps; step++) {
    for (let i = 0; i < logits.length; i++) logits[i] = rand() * 4 + (closing[i] ? 3 : 0);
    cursor.maskLogits(logits);
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
    if (grammar.isEos(best)) return { text: text(), finished: cursor.accept(best) };
    bytes.push(...vocab.bytes(best)!);
    if (cursor.accept(best)) return { text: text(), finished: true };
  }
  return { text: text(), finished: false };
}

describe('regex → automaton', () => {
  const cases: [string, string[]][] = [
    ['a|bc*', ['a', 'b', 'bcc', 'ac', '', 'bcb']],
    ['[a-c]{2,3}x?', ['ab', 'abc', 'abcx', 'a', 'abcd', 'aax']],
    ['(?:yes|no)!+', ['yes!', 'no!!', 'yes', 'maybe!']],
    ['\\d{3}-\\d{4}', ['555-1234', '55-1234', '5551234']],
    ['[^"]*', ['', 'abc', 'a"b']],
    ['\\w+@\\w+\\.com', ['me@x.com', 'me@.com']],
    ['\\p{Lu}\\p{Ll}+', ['Ab', 'ab', 'Émile']],
  ];
  it.each(cases)('%s matches exactly what RegExp matches', (source, samples) => {
    const dfa = dfaOf(patternToRx(source, { context: 'raw', anchored: true, pointer: '' }));
    const re = new RegExp(`^(?:${source})$`, 'u');
    for (const s of samples) expect(fullMatch(dfa, s), s).toBe(re.test(s));
  });

  it('agrees with RegExp on random strings', () => {
    const source = '(?:ab|a)*c?[b-d]{0,2}';
    const dfa = dfaOf(patternToRx(source, { context: 'raw', anchored: true, pointer: '' }));
    const re = new RegExp(`^(?:${source})$`, 'u');
    fc.assert(fc.property(fc.stringMatching(/^[abcde]{0,8}$/), (s) => fullMatch(dfa, s) === re.test(s)), { numRuns: 500 });
  });

  it('JSON Schema patterns search (unanchored) and escape " and \\ inside the string', () => {
    const dfa = dfaOf(schemaToRx({ type: 'string', pattern: 'x"y' }));
    expect(fullMatch(dfa, '"ax\\"yb"')).toBe(true);
    expect(fullMatch(dfa, '"x"y"')).toBe(false);
    expect(fullMatch(dfa, '"xy"')).toBe(false);
  });

  it('integer ranges are exact, without leading zeros or -0', () => {
    fc.assert(
      fc.property(fc.integer({ min: -1200, max: 1200 }), fc.integer({ min: 0, max: 300 }), (lo, width) => {
        const hi = lo + width;
        const dfa = dfaOf(integerRange(lo, hi));
        for (let v = lo - 15; v <= hi + 15; v++) if (fullMatch(dfa, String(v)) !== (v >= lo && v <= hi)) return false;
        return !fullMatch(dfa, '-0') && !fullMatch(dfa, `0${Math.max(lo, 1)}`);
      }),
      { numRuns: 60 },
    );
  });
});

describe('token masks', () => {
  it('allow exactly the tokens whose text keeps the output matchable, and EOS only when accepting', () => {
    const grammar = compileGrammar({ schema: { type: 'object', properties: { a: { type: 'string', maxLength: 3 }, n: { type: 'number' } }, required: ['a'] } }, vocab);
    // Walk a valid output token by token and check each state's mask against a plain walk of every token.
    const ids = tokenizer.encode('{"a":"xy", "n":-1.5}');
    let state = grammar.dfa.start;
    for (const id of [...ids, -1]) {
      const mask = grammar.mask(state);
      for (let t = 0; t < vocab.size; t++) {
        const bit = (mask[t >>> 5]! >>> (t & 31)) & 1;
        const expected = grammar.isEos(t) ? grammar.dfa.accepting(state) : grammar.next(state, t) !== DEAD;
        if (bit !== Number(expected)) throw new Error(`token ${t} ${JSON.stringify(vocab.text(t))} in state ${state}: mask ${bit}`);
      }
      if (id >= 0) state = grammar.next(state, id);
    }
    expect(grammar.dfa.accepting(state)).toBe(true);
  });

  it('choices: greedy decoding picks one of them whatever the logits', () => {
    const grammar = compileGrammar({ choices: ['A', 'B', 'C'] }, vocab);
    for (let seed = 1; seed <= 20; seed++) {
      const { text, finished } = decodeRandom(grammar, seed);
      expect(finished).toBe(true);
      expect(['A', 'B', 'C']).toContain(text);
    }
  });

  it('a cursor refuses a token outside the mask and an early end of sequence', () => {
    const cursor = compileGrammar({ regex: 'ab' }, vocab).cursor();
    expect(() => cursor.accept(tokenizer.encode('b')[0]!)).toThrow(GrammarError);
    expect(() => cursor.accept(vocab.eosIds[0]!)).toThrow(/before the output was complete/);
  });
});

describe('unsupported schemas are refused with their JSON pointer', () => {
  const refusals: [unknown, RegExp][] = [
    [{ type: 'integer', multipleOf: 3 }, /at \/multipleOf: keyword multipleOf/],
    [{ type: 'array', items: { type: 'string' }, uniqueItems: true }, /\/uniqueItems/],
    [{ type: 'object', properties: { n: { $ref: '#' } } }, /recursive \$ref/],
    [{ type: 'string', pattern: '(a)\\1' }, /backreference/],
    [{ type: 'string', pattern: 'a(?=b)' }, /lookahead/],
    [{ type: 'object', properties: { a: { type: 'wat' } } }, /at \/properties\/a\/type: unknown type/],
    [{ type: 'object', required: ['x'], properties: {} }, /required property "x"/],
    [false, /accepts no value/],
  ];
  it.each(refusals)('%j', (schema, message) => {
    expect(() => constraintToRx({ schema: schema as object })).toThrow(message);
    expect(() => constraintToRx({ schema: schema as object })).toThrow(GrammarError);
  });
});

// Random schemas from the subset agent frameworks emit; leaves keep strings short.
const key = fc.constantFrom('id', 'name', 'city', 'tags', 'score', 'ok', 'kind', 'a b', 'é"q');
const leaf = fc.oneof(
  fc.constant({ type: 'boolean' }),
  fc.constant({ type: 'null' }),
  fc.tuple(fc.nat(4), fc.nat(8)).map(([min, extra]) => ({ type: 'string', minLength: min, maxLength: min + extra })),
  fc.constantFrom('^[a-z]{1,6}$', '^\\d{3}-\\d{4}$', '^(?:yes|no|maybe)$', '^[A-Z][a-z]*$').map((pattern) => ({ type: 'string', pattern })),
  fc.record({ type: fc.constant('integer'), minimum: fc.integer({ min: -500, max: 500 }) }, { requiredKeys: ['type'] }),
  fc.tuple(fc.integer({ min: -50, max: 50 }), fc.nat(200)).map(([lo, w]) => ({ type: 'integer', minimum: lo, maximum: lo + w })),
  fc.tuple(fc.double({ min: -10, max: 10, noNaN: true }), fc.double({ min: 0.5, max: 20, noNaN: true })).map(([lo, w]) => ({ type: 'number', minimum: lo, exclusiveMaximum: lo + w })),
  fc.constant({ type: 'number' }),
  fc.uniqueArray(fc.oneof(fc.constantFrom('red', 'green', 'x"y'), fc.integer({ min: -3, max: 3 }), fc.constant(null)), { minLength: 1, maxLength: 4 }).map((e) => ({ enum: e })),
  fc.constantFrom({ const: 'fixed' }, { const: 42 }, { type: ['string', 'null'], maxLength: 4 }, { type: 'string', format: 'date' }),
);
const { schema: randomSchema } = fc.letrec<{ schema: object; object: object; array: object; anyOf: object }>((tie) => ({
  schema: fc.oneof({ maxDepth: 3, depthIdentifier: 'schema' }, leaf, tie('object'), tie('array'), tie('anyOf')),
  object: fc
    .dictionary(key, tie('schema'), { minKeys: 0, maxKeys: 4 })
    .chain((properties) => fc.subarray(Object.keys(properties)).map((required) => ({ type: 'object', properties, required, additionalProperties: false }))),
  array: fc.tuple(tie('schema'), fc.nat(2), fc.nat(3)).map(([items, min, extra]) => ({ type: 'array', items, minItems: min, maxItems: min + extra })),
  anyOf: fc.array(tie('schema'), { minLength: 2, maxLength: 3 }).map((anyOf) => ({ anyOf })),
}));

describe('property: decoding with a random model under a random schema gives valid JSON', () => {
  const ajv = new Ajv({ strict: false, validateFormats: false });
  it('every finished output parses and validates (ajv)', () => {
    let finished = 0;
    let runs = 0;
    let refused = 0;
    fc.assert(
      fc.property(randomSchema, fc.nat(1_000_000), (schema, seed) => {
        runs++;
        let grammar: TokenGrammar;
        try {
          grammar = compileGrammar({ schema }, vocab);
        } catch (err) {
          // A typed refusal (e.g. number bounds narrower than one unit) is allowed; counted below.
          if (!(err instanceof GrammarError)) throw err;
          refused++;
          return true;
        }
        const out = decodeRandom(grammar, seed);
        if (!out.finished) return true;
        finished++;
        const value = JSON.parse(out.text);
        const valid = ajv.validate(schema, value);
        if (!valid) throw new Error(`${out.text} is invalid for ${JSON.stringify(schema)}: ${ajv.errorsText()}`);
        return true;
      }),
      { numRuns: 120, seed: 15 },
    );
    // The nudged random model ends almost every output well within its budget.
    expect(finished / (runs - refused)).toBeGreaterThan(0.9);
    expect(refused / runs).toBeLessThan(0.1);
  });
});
