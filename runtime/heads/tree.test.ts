/**
 * The candidate tree (runtime/heads/tree.ts): built from per-rank accuracies (or measured
 * per-path shares of held-out rows) parents first and best first; laid out with the tree mask and depths; walked by the base model's picks;
 * trimmed without orphaning a node.
 */
import { describe, expect, it } from 'vitest';
import { acceptPath, buildTree, expectedAccepted, measuredPathValues, ranksPerHead, treeFromRows, treeInput, trimTree } from './tree.js';

const acc = [
  [0.6, 0.2, 0.05],
  [0.5, 0.2],
  [0.3],
];

describe('candidate tree', () => {
  it('takes the paths with the highest expected acceptance, each after its parent', () => {
    expect(buildTree(acc, 5)).toEqual([[0], [0, 0], [1], [0, 1], [1, 0]]);
    expect(expectedAccepted(buildTree(acc, 5), acc)).toBeCloseTo(0.6 + 0.3 + 0.2 + 0.12 + 0.1);
    expect(ranksPerHead(buildTree(acc, 6), 3)).toEqual([2, 2, 1]);
  });

  it('from held-out rows: each path\'s measured share, the best N best first (parents first), E exact on the rows', () => {
    // Head 1 is right exactly where head 0 is (correlated): accuracy products would undervalue [0, 0].
    const rows = [
      [0, 0, -1],
      [0, 0, 0],
      [0, 0, 1],
      [1, -1, -1],
      [-1, 0, 0],
      [2, 1, -1],
      [0, 0, 0],
      [-1, -1, -1],
    ];
    const values = measuredPathValues(rows);
    expect(values.get('0')!.value).toBeCloseTo(4 / 8);
    expect(values.get('0,0')!.value).toBeCloseTo(4 / 8);
    expect(values.get('0,0,0')!.value).toBeCloseTo(2 / 8);
    expect(values.has('-1')).toBe(false);
    const { tree, expected } = treeFromRows(rows, 4);
    expect(tree).toEqual([[0], [0, 0], [0, 0, 0], [1]]);
    expect(treeFromRows(rows, 4).values.map((v) => v * 8)).toEqual([4, 4, 2, 1].map((x) => expect.closeTo(x, 9)));
    expect(expected).toBeCloseTo((4 + 4 + 2 + 1) / 8);
    const acc = [
      [4 / 8, 1 / 8, 1 / 8],
      [5 / 8, 1 / 8],
      [3 / 8, 1 / 8],
    ];
    expect(expectedAccepted([[0], [0, 0]], acc)).toBeLessThan(treeFromRows(rows, 2).expected);
    expect(treeFromRows([], 3)).toEqual({ tree: [], values: [], expected: 0 });
  });

  it('lays a tree out with the pending token as root, depths and an ancestor mask', () => {
    const input = treeInput([[0], [0, 0], [1], [0, 1]], 99, [[5, 6], [7, 8]]);
    expect(input.ids).toEqual([99, 5, 7, 6, 8]);
    expect(input.depth).toEqual([0, 1, 2, 1, 2]);
    expect(input.parent).toEqual([-1, 0, 1, 0, 1]);
    expect(input.mask[2]).toEqual([true, true, true, false, false]);
    expect(input.mask[3]).toEqual([true, false, false, true, false]);
    expect(input.mask[4]).toEqual([true, true, false, false, true]);
  });

  it('accepts while the base model picks a child, and stops at end of sequence', () => {
    const input = treeInput([[0], [0, 0], [1], [0, 1]], 99, [[5, 6], [7, 8]]);
    const picks: Record<number, number> = { 0: 5, 1: 8, 4: 42 };
    expect(acceptPath(input, (row) => picks[row]!, () => false)).toEqual({ rows: [0, 1, 4], picked: [5, 8, 42] });
    expect(acceptPath(input, () => 6, () => false)).toEqual({ rows: [0, 3], picked: [6, 6] });
    expect(acceptPath(input, () => 5, (t) => t === 5)).toEqual({ rows: [0], picked: [5] });
  });

  it('trims to the first rows, every kept node keeping its parent', () => {
    const input = treeInput([[0], [0, 0], [1], [0, 1]], 99, [[5, 6], [7, 8]]);
    const t = trimTree(input, 3);
    expect(t.ids).toEqual([99, 5, 7]);
    expect(t.mask).toEqual([
      [true, false, false],
      [true, true, false],
      [true, true, true],
    ]);
    expect(trimTree(input, 0).ids).toEqual([99]);
  });
});
