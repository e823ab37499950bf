import { describe, expect, it } from 'vitest';
import { lineCol, locatePointers, syntaxErrorOffset } from './json-location.js';

describe('locatePointers', () => {
  const text = '{\n  "nodes": [\n    { "id": "a", "kind": "input" },\n    { "id": "b/c~d" }\n  ],\n  "n": -1.5e3\n}';
  const spans = locatePointers(text);
  const at = (p: string) => {
    const s = spans.get(p)!;
    return text.slice(s.start, s.end);
  };

  it('finds values by JSON pointer', () => {
    expect(at('/nodes/0/kind')).toBe('"input"');
    expect(at('/nodes/1')).toBe('{ "id": "b/c~d" }');
    expect(at('/n')).toBe('-1.5e3');
    expect(at('')).toBe(text);
  });

  it('finds keys, for problems about a property', () => {
    expect(at('/nodes/0/id#key')).toBe('"id"');
  });

  it('escapes ~ and / in keys as RFC 6901 says', () => {
    const s = locatePointers('{"a/b": {"c~d": 1}}');
    expect(s.has('/a~1b/c~0d')).toBe(true);
  });

  it('keeps what it found before a syntax error', () => {
    const s = locatePointers('{"a": 1, "b": [');
    expect(s.get('/a')).toEqual({ start: 6, end: 7 });
  });
});

describe('positions', () => {
  it('turns offsets into lines and columns', () => {
    expect(lineCol('ab\ncd', 4)).toEqual({ line: 2, col: 2 });
  });

  it('reads the offset from JSON.parse messages', () => {
    const text = '{\n  "a": }';
    let message = '';
    try {
      JSON.parse(text);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(syntaxErrorOffset(text, message)).toBe(text.indexOf('}'));
    expect(syntaxErrorOffset('x\ny', 'Unexpected token (line 2 column 1)')).toBe(2);
    expect(syntaxErrorOffset('[1, 2', 'no position given')).toBe(5);
    expect(syntaxErrorOffset('{"a": tru}', 'no position given')).toBe(6);
    expect(syntaxErrorOffset('{"a": 1} x', '')).toBe(9);
    expect(syntaxErrorOffset('{"a": [1, {"b": null}]}', '')).toBeNull();
  });
});
