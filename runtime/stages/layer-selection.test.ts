import { describe, expect, it } from 'vitest';
import { BadRequestError } from '../../core/errors.js';
import { earlyExitLayers, keptLayerCount, middleBlockLayers, unifiedLayers } from './layer-selection.js';

describe('unifiedLayers (Unified Layer Skipping)', () => {
  it('matches the reference code on 30 layers: 2× keeps 15, 5× keeps [0,6,12,18,24,29]', () => {
    const two = unifiedLayers(30, 2);
    expect(two).toHaveLength(15);
    expect(two).toEqual([0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 29]);
    expect(unifiedLayers(30, 5)).toEqual([0, 6, 12, 18, 24, 29]);
    expect(unifiedLayers(32, 2)).toHaveLength(16);
  });

  it('keeps every layer at target 1 and always the first and last otherwise', () => {
    expect(unifiedLayers(8, 1)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    for (const L of [2, 3, 5, 8, 12, 30]) {
      for (const r of [1.5, 2, 3, 5, 10, 64]) {
        const kept = unifiedLayers(L, r);
        expect(kept[0]).toBe(0);
        expect(kept.at(-1)).toBe(L - 1);
        expect(kept).toHaveLength(keptLayerCount(L, r));
        expect(new Set(kept).size).toBe(kept.length);
        expect([...kept].sort((a, b) => a - b)).toEqual(kept);
      }
    }
  });

  it('guards the small-k cases the reference divides by zero on', () => {
    expect(unifiedLayers(30, 30)).toEqual([0, 29]); // k would be 1
    expect(unifiedLayers(30, 64)).toEqual([0, 29]); // k would be 0
    expect(unifiedLayers(1, 4)).toEqual([0]);
    expect(unifiedLayers(3, 2)).toEqual([0, 2]);
  });

  it('refuses a target below 1 with a typed error naming the field', () => {
    expect(() => unifiedLayers(30, 0.5)).toThrow(BadRequestError);
    expect(() => unifiedLayers(30, Number.NaN)).toThrow(/targetSpeedup/);
  });
});

describe('baselines at the same layer count', () => {
  it('early exit keeps the first k, the middle block drops a centred run', () => {
    expect(earlyExitLayers(30, 2)).toEqual(Array.from({ length: 15 }, (_, l) => l));
    const mid = middleBlockLayers(30, 2);
    expect(mid).toHaveLength(15);
    expect(mid).toEqual([0, 1, 2, 3, 4, 5, 6, 22, 23, 24, 25, 26, 27, 28, 29]);
    expect(middleBlockLayers(8, 2)).toEqual([0, 1, 6, 7]);
  });
});
