import { describe, expect, it } from 'vitest';
import { lineCol, locatePointer, syntaxErrorOffset } from './json-location.js';

describe('locatePointer', () => {
  const text = '{\n  "nodes": [\n    { "id": "a", "kind": "input" },\n    { "id": "b/c~d" }\n  ],\n  "n": -1.5e3,\n  "0": true\n}';
  const at = (p: string) => {
    const s = locatePointer(text, p)!;
    return text.slice(s.start, s.end);
  };

  it('finds values by JSON pointer', () => {
    expect(at('/nodes/0/kind')).toBe('"input"');
    expect(at('/nodes/1')).toBe('{ "id": "b/c~d" }');
    expect(at('/n')).toBe('-1.5e3');
    expect(at('/0')).toBe('true');
    expect(at('')).toBe(text);
  });

  it('finds nothing where the text has nothing', () => {
    expect(locatePointer(text, '/nodes/7')).toBeUndefined();
    expect(locatePointer(text, '/nodes/0/kind/x')).toBeUndefined();
    expect(locatePointer(text, '/missing')).toBeUndefined();
  });

  it('unescapes ~1 and ~0 in keys as RFC 6901 says', () => {
    const s = '{"a/b": {"c~d": 1}}';
    expect(locatePointer(s, '/a~1b/c~0d')).toEqual({ start: 16, end: 17 });
  });

  it('keeps what it found before a syntax error', () => {
    expect(locatePointer('{"a": 1, "b": [', '/a')).toEqual({ start: 6, end: 7 });
  });
});

describe('positions', () => {
  it('turns offsets into lines and columns', () => {
    expect(lineCol('ab\ncd', 4)).toEqual({ line: 2, col: 2 });
  });

  it('finds the first syntax error, strictly', () => {
    const text = '{\n  "a": }';
    expect(syntaxErrorOffset(text)).toBe(text.indexOf('}'));
    expect(syntaxErrorOffset('[1, 2')).toBe(5);
    expect(syntaxErrorOffset('{"a": tru}')).toBe(6);
    expect(syntaxErrorOffset('{"a": 1} x')).toBe(9);
    expect(syntaxErrorOffset('[1, 2,]')).toBe(6);
    expect(syntaxErrorOffset('// c\n[]')).toBe(0);
    expect(syntaxErrorOffset('{"a": [1, {"b": null}]}')).toBeNull();
  });
});
