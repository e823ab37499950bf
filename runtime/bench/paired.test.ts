import { describe, expect, it } from 'vitest';
import { pairedDelta } from './paired.js';

describe('pairedDelta', () => {
  it('counts the items each side alone gets right and the mean difference', () => {
    const d = pairedDelta([1, 0, 1, 1, 0], [1, 1, 0, 0, 0]);
    expect(d).toMatchObject({ n: 5, gained: 2, lost: 1, delta: 0.2 });
  });

  it('gives the 95 % interval of the mean paired difference', () => {
    // Differences +1, −1, 0, 0: mean 0, sample variance 2/3, standard error sqrt(2/3 / 4).
    const d = pairedDelta([1, 0, 1, 0], [0, 1, 1, 0]);
    expect(d.delta).toBe(0);
    expect(d.ci95[1]).toBeCloseTo(1.96 * Math.sqrt(2 / 3 / 4), 10);
    expect(d.ci95[0]).toBeCloseTo(-d.ci95[1], 10);
    // The same difference over ten times the items: an interval ~√10 narrower.
    const wide = pairedDelta(Array.from({ length: 40 }, (_, i) => [1, 0, 1, 0][i % 4]!), Array.from({ length: 40 }, (_, i) => [0, 1, 1, 0][i % 4]!));
    expect(wide.ci95[1]).toBeLessThan(d.ci95[1] / 3);
  });

  it('has no width where no item differs, and refuses lists of different lengths', () => {
    expect(pairedDelta([1, 1, 0], [1, 1, 0]).ci95).toEqual([0, 0]);
    expect(pairedDelta([], []).n).toBe(0);
    expect(() => pairedDelta([1], [1, 0])).toThrow(/1 variant results for 2 baseline/);
  });
});
