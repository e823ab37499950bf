import { describe, expect, it } from 'vitest';
import { chainTokens, speculationCeiling } from './speculation-ceiling.js';

describe('speculationCeiling', () => {
  it('is 1 (no drafts) where n rows cost n one-row forwards, whatever the drafts cost', () => {
    const c = speculationCeiling({ rowMs: (n) => 10 * n, batch: 1, draftMs: () => 0, maxDrafts: 8 });
    expect(c).toEqual({ speedup: 1, drafts: 0 });
  });

  it('grows with the drafts where a forward costs the same at any width (memory-bound), less their cost', () => {
    expect(speculationCeiling({ rowMs: () => 10, batch: 1, draftMs: () => 0, maxDrafts: 4 })).toEqual({ speedup: 5, drafts: 4 });
    // Drafting 2 ms a token: k = 4 gives 5·10 / (10 + 8) = 2.78.
    const c = speculationCeiling({ rowMs: () => 10, batch: 1, draftMs: (k) => 2 * k, maxDrafts: 4 });
    expect(c.drafts).toBe(4);
    expect(c.speedup).toBeCloseTo(50 / 18, 10);
  });

  it('weighs the batch: rows of every sequence in one forward', () => {
    // 8 rows 20 ms, 16 rows 40: one draft each doubles the tokens and the cost.
    const rowMs = (n: number) => (n <= 8 ? 20 : 20 + (n - 8) * 2.5);
    expect(speculationCeiling({ rowMs, batch: 8, draftMs: () => 0, maxDrafts: 1 }).speedup).toBeCloseTo(2 / 2, 10);
  });

  it('takes the expected tokens of a chain under a per-draft acceptance', () => {
    expect(chainTokens(3)).toBe(4);
    expect(chainTokens(2, 0.5)).toBeCloseTo(1 + 0.5 + 0.25, 12);
    expect(chainTokens(5, 0)).toBe(1);
    const c = speculationCeiling({ rowMs: () => 10, batch: 1, draftMs: () => 0, maxDrafts: 3, acceptance: 0.5 });
    expect(c).toEqual({ speedup: chainTokens(3, 0.5), drafts: 3 });
  });

  it('refuses a batch or a chain below one', () => {
    expect(() => speculationCeiling({ rowMs: () => 1, batch: 0, draftMs: () => 0, maxDrafts: 1 })).toThrow(/at least 1/);
    expect(() => speculationCeiling({ rowMs: () => 1, batch: 1, draftMs: () => 0, maxDrafts: 0 })).toThrow(/at least 1/);
  });
});
