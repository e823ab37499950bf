import { describe, expect, it } from 'vitest';
import { BadRequestError } from '../../core/errors.js';
import { mulberry32 } from '../model/random.js';
import { DEFAULT_SCHEDULE, defaultPruneLayers, defaultSchedule, keepCounts, lazySchedule, randomKeep, tokenLayerShare, topKeep } from './lazy-schedule.js';

describe('lazySchedule', () => {
  it('scales the paper stages (9, 19, 28 of 32) to the model depth', () => {
    expect(defaultPruneLayers(32)).toEqual([9, 19, 28]);
    expect(defaultPruneLayers(30)).toEqual([8, 18, 26]);
    expect(defaultPruneLayers(8)).toEqual([2, 5, 7]);
    expect(defaultPruneLayers(2)).toEqual([1]);
  });

  it('spreads one ratio geometrically: more kept early, the ratio reached at the last stage', () => {
    const s = lazySchedule(30, { keepRatio: 0.5 });
    expect(s.layers).toEqual([8, 18, 26]);
    expect(s.keep.map((k) => Number(k.toFixed(3)))).toEqual([0.794, 0.63, 0.5]);
    expect(keepCounts(s, 100)).toEqual([80, 63, 50]);
    expect(keepCounts(lazySchedule(30, { keepRatio: 1 }), 7)).toEqual([7, 7, 7]);
  });

  it('takes per-stage shares and custom layers, and keeps at least the last token', () => {
    const s = lazySchedule(8, { keepRatio: [0.6, 0.1], layers: [3, 6] });
    expect(s).toEqual({ layers: [3, 6], keep: [0.6, 0.1], revive: 4 });
    expect(keepCounts(s, 5)).toEqual([3, 1]);
    expect(keepCounts(s, 1)).toEqual([1, 1]);
  });

  it('without keepRatio takes DEFAULT_SCHEDULE scaled to the depth; layers alone are refused', () => {
    const s = lazySchedule(30);
    expect(s.layers).toEqual(defaultSchedule(30).layers);
    // SmolLM2's 30 layers: pruning from layer 14 on (from 8, the paper's depth, lost 28 points of passage-QA accuracy).
    expect(s.layers).toEqual([14, 22, 27]);
    expect(tokenLayerShare(s, 30)).toBeCloseTo(20.1 / 30, 12);
    expect(s.keep).toEqual([...DEFAULT_SCHEDULE.keep]);
    expect(s.revive).toBe(4);
    expect(lazySchedule(30, { revive: 0 }).revive).toBe(0);
    // a shallow model where two default depths land on one layer keeps the later share
    const tiny = defaultSchedule(2);
    expect(tiny.layers).toEqual([1]);
    expect(tiny.keep).toEqual([DEFAULT_SCHEDULE.keep.at(-1)]);
    expect(() => lazySchedule(30, { layers: [4, 8] })).toThrow(/keepRatio.*needed with layers/);
  });

  it('tokenLayerShare: full depth before the first stage, each span at its share', () => {
    expect(tokenLayerShare({ layers: [8, 18, 26], keep: [1, 1, 1] }, 30)).toBe(1);
    expect(tokenLayerShare({ layers: [10], keep: [0.5] }, 30)).toBeCloseTo((10 + 20 * 0.5) / 30, 12);
    expect(tokenLayerShare({ layers: [4, 10, 20], keep: [0.5, 0.3, 0.2] }, 30)).toBeCloseTo(0.4, 12);
  });

  it('refuses bad schedules with the field named', () => {
    expect(() => lazySchedule(8, { keepRatio: 0 })).toThrow(BadRequestError);
    expect(() => lazySchedule(8, { keepRatio: 0.5, layers: [0] })).toThrow(/layers\/0.*outside 1\.\.7/);
    expect(() => lazySchedule(8, { keepRatio: 0.5, layers: [4, 4] })).toThrow(/ascending/);
    expect(() => lazySchedule(8, { keepRatio: 0.5, layers: [8] })).toThrow(/outside/);
    expect(() => lazySchedule(8, { keepRatio: [0.5, 0.6], layers: [2, 4] })).toThrow(/must not increase/);
    expect(() => lazySchedule(8, { keepRatio: [0.5], layers: [2, 4] })).toThrow(/2 pruning layers/);
    expect(() => lazySchedule(1, { keepRatio: 0.5 })).toThrow(/no layer to prune/);
  });
});

describe('topKeep', () => {
  it('keeps the best-scored tokens and always the last, ascending, ties to the earlier', () => {
    const scores = [0.1, 0.5, 0.2, 0.5, 0.05, 0.01];
    expect(topKeep(scores, [0, 1, 2, 3, 4, 5], 3)).toEqual([1, 3, 5]);
    expect(topKeep(scores, [0, 1, 2, 3, 4, 5], 2)).toEqual([1, 5]);
    expect(topKeep(scores, [0, 2, 4, 5], 2)).toEqual([2, 5]);
    expect(topKeep(scores, [0, 2, 4, 5], 1)).toEqual([5]);
    expect(topKeep(scores, [0, 2, 4, 5], 9)).toEqual([0, 2, 4, 5]);
  });

  it('random pruning keeps the same count, the last included', () => {
    const rng = mulberry32(3);
    const kept = randomKeep([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 4, rng);
    expect(kept).toHaveLength(4);
    expect(kept.at(-1)).toBe(9);
    expect([...kept].sort((a, b) => a - b)).toEqual(kept);
  });
});
