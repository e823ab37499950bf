/**
 * The batch's cost model for speculative trees (runtime/scheduler/draft-budget.ts): costs
 * interpolate between measured widths; nodes are kept best first while they raise the
 * step's expected tokens per cost, so a memory-bound one-row step takes every node and an
 * arithmetic-bound batch only those accepted often enough; the draft budget caps them.
 */
import { describe, expect, it } from 'vitest';
import { affordableDrafts, rowCostFrom, worthProposing } from './draft-budget.js';

// This machine's shape (SmolLM2-135M, native kernels): flat to 2 rows, then about linear.
const cost = rowCostFrom({ rows: [1, 2, 4, 8, 16, 32], relative: [1, 1, 1.3, 2.1, 3.3, 6.3] });

describe('draft budget', () => {
  it('interpolates between measured widths and extends the last slope', () => {
    expect(cost(1)).toBe(1);
    expect(cost(3)).toBeCloseTo(1.15);
    expect(cost(12)).toBeCloseTo(2.7);
    expect(cost(48)).toBeCloseTo(6.3 + 3 * 16 / 16);
    expect(rowCostFrom({ rows: [4], relative: [2] })(8)).toBeCloseTo(4);
  });

  it('at batch 1 keeps every node that pays, best first across trees', () => {
    expect(affordableDrafts(1, [{ values: [0.4, 0.3, 0.25], max: 3 }], cost)).toEqual([3]);
    // 1.4 tokens for 1 beat 1.6 for 1.15: a 0.2 node does not pay at the third row.
    expect(affordableDrafts(1, [{ values: [0.4, 0.2, 0.1], max: 3 }], cost)).toEqual([1]);
    // Two trees: the better nodes first, whichever tree they are in (free to 4 rows, then a quarter step a row).
    const flat4 = rowCostFrom({ rows: [1, 4, 8], relative: [1, 1, 2] });
    expect(affordableDrafts(2, [{ values: [0.5, 0.05], max: 2 }, { values: [0.3, 0.25], max: 2 }], flat4)).toEqual([1, 1]);
  });

  it('at batch 8 keeps only nodes accepted more often than a row costs', () => {
    // From 8 rows a row adds 0.15 of a 2.1 step: a node must be accepted ≥ 8·0.15/2.1 ≈ 0.57 of the time.
    const trees = Array.from({ length: 8 }, (_, i) => ({ values: [i === 0 ? 0.9 : 0.35, 0.2], max: 2 }));
    expect(affordableDrafts(8, trees, cost)).toEqual([1, 0, 0, 0, 0, 0, 0, 0]);
    expect(worthProposing(8, 0.35, cost)).toBe(false);
    expect(worthProposing(8, 0.9, cost)).toBe(true);
    expect(worthProposing(1, 0.05, cost)).toBe(true);
  });

  it('stops at the budget and at each tree\'s own size', () => {
    expect(affordableDrafts(1, [{ values: [0.4, 0.3, 0.2], max: 3 }, { values: [0.35], max: 1 }], cost, 2)).toEqual([1, 1]);
    expect(affordableDrafts(1, [{ values: [0.4, 0.3, 0.2], max: 1 }], cost)).toEqual([1]);
    expect(affordableDrafts(1, [], cost)).toEqual([]);
  });

  it('takes nothing where every row costs a whole step', () => {
    const linear = rowCostFrom({ rows: [1, 2], relative: [1, 2] });
    expect(affordableDrafts(1, [{ values: [0.99, 0.9], max: 2 }], linear)).toEqual([0]);
  });
});
