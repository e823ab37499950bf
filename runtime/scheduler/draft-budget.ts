/**
 * How many tree nodes a step can afford (issue #13: "the batch's cost model decides how
 * many draft tokens it can afford"). A draft row is worth its measured acceptance (the
 * share of held-out steps on which that tree node was accepted: HeadsMeta.paths) and costs
 * what one more row adds to the step's forward (HeadsMeta.forwardCost, measured on the
 * machine the heads were trained on, relative to a one-row forward). At batch 1 the
 * forward is bound by reading the weights, so the first rows are nearly free; at batch 8
 * it is bound by arithmetic and each row costs about an eighth of the step, so only nodes
 * accepted more often than that pay for themselves.
 *
 * `affordableDrafts` adds nodes best first (each tree's in its own order, parents first)
 * while a node raises the step's expected tokens per unit of cost, (T + v) / (C + Δ) > T / C,
 * i.e. v·C > T·Δ; every decoding sequence's own token counts 1 in T.
 *
 * @example
 * affordableDrafts(1, [{ values: [0.4, 0.2], max: 2 }], cost) // [2]: both nodes pay at batch 1
 */

/** A speculating sequence's tree: each node's measured acceptance in tree order, and the most nodes it may run. */
export interface DraftTree {
  values: readonly number[];
  max: number;
}

/** Forward cost of n rows relative to one row, interpolated between measured widths (linear past the last). */
export type RowCost = (rows: number) => number;

export function rowCostFrom(measured: { rows: readonly number[]; relative: readonly number[] }): RowCost {
  const { rows, relative } = measured;
  return (n) => {
    const i = rows.findIndex((w) => w >= n);
    if (i === 0) return relative[0]!;
    if (i < 0) {
      const last = rows.length - 1;
      const slope = last > 0 ? (relative[last]! - relative[last - 1]!) / (rows[last]! - rows[last - 1]!) : relative[last]! / rows[last]!;
      return relative[last]! + slope * (n - rows[last]!);
    }
    const f = (n - rows[i - 1]!) / (rows[i]! - rows[i - 1]!);
    return relative[i - 1]! + f * (relative[i]! - relative[i - 1]!);
  };
}

/**
 * Nodes kept per tree for a step with `plainRows` rows besides the drafts (each decoding
 * sequence's pending token; prefill rows), at most `budget` drafts over all trees.
 */
export function affordableDrafts(plainRows: number, trees: readonly DraftTree[], cost: RowCost, budget = Infinity): number[] {
  const kept = trees.map(() => 0);
  let tokens = trees.length > 0 ? Math.max(1, plainRows) : 0;
  let rows = Math.max(1, plainRows);
  for (let taken = 0; taken < budget; taken++) {
    let best = -1;
    trees.forEach((t, i) => {
      if (kept[i]! < Math.min(t.max, t.values.length) && (best < 0 || t.values[kept[i]!]! > trees[best]!.values[kept[best]!]!)) best = i;
    });
    if (best < 0) break;
    const v = trees[best]!.values[kept[best]!]!;
    const c = cost(rows);
    const delta = cost(rows + 1) - c;
    if (!(v * c > tokens * delta)) break;
    kept[best]!++;
    tokens += v;
    rows++;
  }
  return kept;
}

/** Whether a tree whose best node is worth `value` could pay for itself in a step of `plainRows` rows: worth running the heads for. */
export function worthProposing(plainRows: number, value: number, cost: RowCost): boolean {
  return affordableDrafts(plainRows, [{ values: [value], max: 1 }], cost)[0] === 1;
}
