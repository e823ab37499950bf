import { describe, expect, it } from 'vitest';
import { fnv1a32, isHeldOut, makeRng, shuffled } from './util.js';

describe('data utilities', () => {
  it('hashes and splits deterministically at about the requested fraction', () => {
    expect(fnv1a32('abc')).toBe(fnv1a32('abc'));
    expect(fnv1a32('abc')).not.toBe(fnv1a32('abd'));
    const ids = Array.from({ length: 20_000 }, (_, i) => `doc:${i}`);
    const held = ids.filter((id) => isHeldOut(id, 0.02));
    expect(held.length / ids.length).toBeGreaterThan(0.015);
    expect(held.length / ids.length).toBeLessThan(0.025);
    expect(ids.filter((id) => isHeldOut(id, 0.02))).toEqual(held);
  });

  it('seeded rng repeats its sequence', () => {
    const a = makeRng(7);
    const b = makeRng(7);
    const xs = Array.from({ length: 5 }, a);
    expect(xs).toEqual(Array.from({ length: 5 }, b));
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
    expect(shuffled(makeRng(1), [1, 2, 3, 4, 5])).toEqual(shuffled(makeRng(1), [1, 2, 3, 4, 5]));
  });
});
