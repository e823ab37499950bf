import { describe, expect, it } from 'vitest';
import { BadRequestError } from './errors.js';
import { checkJsonShape, scanJsonText, ShapeLimitError } from './json-shape.js';

const limits = { maxDepth: 3, maxKeys: 4 };
const nested = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);

describe('scanJsonText', () => {
  it('accepts text within the limits and refuses one level deeper, naming the limit', () => {
    expect(() => scanJsonText(nested(3), limits, 'body')).not.toThrow();
    expect(() => scanJsonText('{"a": {"b": [1, 2]}, "c": 3, "d": 4}', limits, 'body')).not.toThrow();
    const err = (() => {
      try {
        scanJsonText(`{"a": ${nested(3)}}`, limits, 'body');
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(ShapeLimitError);
    expect(err).toBeInstanceOf(BadRequestError);
    expect((err as Error).message).toBe('Bad request: body: nests deeper than 3 levels (limit maxDepth = 3)');
  });

  it('counts keys at every level and ignores brackets, colons and escaped quotes inside strings', () => {
    expect(() => scanJsonText('{"a": 1, "b": {"c": 2, "d": {"e": 3}}}', limits, 'body')).toThrow(/more than 4 object keys \(limit maxKeys = 4\)/);
    expect(() => scanJsonText('{"a": "[[[[{{:::\\"[[[["}', limits, 'body')).not.toThrow();
  });

  it('ends a string at a quote after an even run of backslashes, and only there', () => {
    // "x\\\\" is x and one escaped backslash: the string ends there and the depth after it counts.
    expect(() => scanJsonText('{"a": "x\\\\", "b": [[[1]]]}', limits, 'body')).toThrow(/maxDepth/);
    // "x\\\"" escapes the quote: the brackets that follow are inside the string.
    expect(() => scanJsonText('{"a": "x\\\\\\"[[[[" }', limits, 'body')).not.toThrow();
  });

  it('agrees with a walk of the parsed value on random documents full of quotes, backslashes and brackets', () => {
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    const pieces = ['"', '\\', '[', ']', '{', '}', ':', 'a', ' '];
    const value = (depth: number): unknown => {
      const r = rand();
      if (depth > 6 || r < 0.3) return Array.from({ length: Math.floor(rand() * 6) }, () => pieces[Math.floor(rand() * pieces.length)]).join('');
      if (r < 0.65) return Array.from({ length: Math.floor(rand() * 3) }, () => value(depth + 1));
      return Object.fromEntries(Array.from({ length: Math.floor(rand() * 3) }, (_, i) => [`k${i}${pieces[Math.floor(rand() * pieces.length)]}`, value(depth + 1)]));
    };
    const verdict = (f: () => void) => {
      try {
        f();
        return 'ok';
      } catch (e) {
        return (e as ShapeLimitError).limit;
      }
    };
    // One limit at a time: which one trips first depends on the order each walks in.
    const byLimit = [
      { maxDepth: 4, maxKeys: 1e9 },
      { maxDepth: 1e9, maxKeys: 6 },
    ];
    let tripped = 0;
    for (let i = 0; i < 500; i++) {
      const v = value(0);
      for (const l of byLimit) {
        const scanned = verdict(() => scanJsonText(JSON.stringify(v), l, 'v'));
        expect(scanned, JSON.stringify(v)).toBe(verdict(() => checkJsonShape(v, l, 'v')));
        if (scanned !== 'ok') tripped++;
      }
    }
    expect(tripped).toBeGreaterThan(40);
  });

  it('measures a 5,000-deep document without parsing it', () => {
    expect(() => scanJsonText(`{"q": ${nested(5000)}}`, { maxDepth: 64, maxKeys: 100 }, 'input')).toThrow(/input: nests deeper than 64/);
  });
});

describe('checkJsonShape', () => {
  it('walks values without recursion and judges them as their JSON text would be', () => {
    let deep: unknown = 'x';
    for (let i = 0; i < 100_000; i++) deep = [deep];
    expect(() => checkJsonShape(deep, { maxDepth: 64, maxKeys: 10 }, 'tool result')).toThrow(/tool result: nests deeper than 64/);
    expect(() => checkJsonShape({ a: [{ b: 1 }], c: 'x' }, limits, 'v')).not.toThrow();
    expect(() => checkJsonShape({ a: [{ b: { c: 1 } }] }, limits, 'v')).toThrow(/maxDepth/);
    expect(() => checkJsonShape({ a: 1, b: 2, c: { d: 3, e: 4 } }, limits, 'v')).toThrow(/maxKeys/);
    expect(() => checkJsonShape('text', limits, 'v')).not.toThrow();
  });

  it('reports a cycle as too deep instead of looping', () => {
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    expect(() => checkJsonShape(cycle, { maxDepth: 64, maxKeys: 1000 }, 'v')).toThrow(/maxDepth|maxKeys/);
  });
});
