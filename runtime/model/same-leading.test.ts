import { describe, expect, it } from 'vitest';
import { sameLeading } from './same-leading.js';

describe('sameLeading', () => {
  it('counts the leading elements two arrays share by reference, up to the shorter one', () => {
    const [a, b, c, d] = [{}, {}, {}, {}];
    expect(sameLeading([a, b, c], [a, b, d])).toBe(2);
    expect(sameLeading([a, b], [a, b, c])).toBe(2);
    expect(sameLeading([a, b, c], [a])).toBe(1);
    expect(sameLeading([a], [{}])).toBe(0);
    expect(sameLeading([], [a])).toBe(0);
  });
});
