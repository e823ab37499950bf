/**
 * The candidate tree of speculative heads (Medusa's sparse tree, TECHNIQUES §4).
 *
 * Shape: `buildTree` picks the paths with the highest expected acceptance from the heads'
 * measured per-rank accuracies, as Medusa derives its `medusa_choices`: a path's value is
 * the product of its ranks' accuracies at each depth (accuracies taken as independent), and
 * since that product only falls along a path, the best N paths always include their
 * parents. The expected accepted length of a tree is the sum of its paths' values.
 * `treeFromRows` does the same from held-out rows directly (each path's measured share),
 * which training uses: the heads' hits are far from independent.
 *
 * Layout: `treeInput` turns a tree and the heads' ranked candidates into one verification
 * input, the pending token as the root followed by every node, with the tree attention
 * mask (a node sees itself and its ancestors) and each node's depth (its rotary offset).
 * `acceptPath` walks it with the base model's picks: from the root, while the token the
 * base model picks at a node is one of that node's children, go on.
 *
 * @example
 * const tree = buildTree([[0.6, 0.1], [0.4, 0.1]], 4); // [[0], [0, 0], [1], [0, 1]]
 * const input = treeInput(tree, pending, [[5, 9], [7, 3]]); // ids [pending, 5, 7, 9, 3]
 */

export interface TreeInput {
  /** The pending token, then one token per node. */
  ids: number[];
  /** Per row, its depth (0 for the root): position = first position + depth. */
  depth: number[];
  /** Per row, its parent row (-1 for the root). */
  parent: number[];
  /** mask[i][j]: row i attends to row j (j is i or an ancestor of i). */
  mask: boolean[][];
}

/** The `nodes` paths with the highest expected acceptance, parents first. `rankAccuracy[k][i]`: head k's target is its i-th candidate. */
export function buildTree(rankAccuracy: readonly (readonly number[])[], nodes: number): number[][] {
  const tree: number[][] = [];
  const frontier: { path: number[]; value: number }[] = (rankAccuracy[0] ?? []).map((a, i) => ({ path: [i], value: a }));
  while (tree.length < nodes && frontier.length > 0) {
    let best = 0;
    for (let i = 1; i < frontier.length; i++) if (frontier[i]!.value > frontier[best]!.value) best = i;
    const { path, value } = frontier.splice(best, 1)[0]!;
    tree.push(path);
    const next = rankAccuracy[path.length];
    if (next !== undefined) next.forEach((a, i) => frontier.push({ path: [...path, i], value: value * a }));
  }
  return tree;
}

/**
 * Each path's measured acceptance on held-out rows: the share of rows whose targets sit at
 * exactly that path's ranks in every head along it (`rowRanks[row][k]`: the rank of the
 * row's target among head k's candidates, -1 beyond those measured). Unlike the products
 * of per-head accuracies, this keeps what the heads get right together: a later head is
 * far more often right where the earlier ones were (they read the same hidden state).
 */
export function measuredPathValues(rowRanks: readonly ArrayLike<number>[]): Map<string, { path: number[]; value: number }> {
  const values = new Map<string, { path: number[]; value: number }>();
  const share = 1 / Math.max(1, rowRanks.length);
  for (const ranks of rowRanks) {
    const path: number[] = [];
    for (let k = 0; k < ranks.length && ranks[k]! >= 0; k++) {
      path.push(ranks[k]!);
      const key = path.join(',');
      const v = values.get(key);
      if (v === undefined) values.set(key, { path: [...path], value: share });
      else v.value += share;
    }
  }
  return values;
}

/**
 * The `nodes` paths with the highest measured acceptance (measuredPathValues), best first,
 * each with its value; with the tree's expected accepted drafts (the sum of the values,
 * exact on those rows). A path's value never exceeds its parent's and ties go to the
 * shorter path (then the lower ranks), so best-first order is parents-first: any prefix of
 * the tree is a tree, the best one of its size (what the scheduler's trimming keeps).
 */
export function treeFromRows(rowRanks: readonly ArrayLike<number>[], nodes: number): { tree: number[][]; values: number[]; expected: number } {
  const ranked = [...measuredPathValues(rowRanks).values()].sort(
    (a, b) => b.value - a.value || a.path.length - b.path.length || a.path.join(',').localeCompare(b.path.join(','), 'en', { numeric: true }),
  );
  const chosen = ranked.slice(0, nodes);
  return { tree: chosen.map((p) => p.path), values: chosen.map((p) => p.value), expected: chosen.reduce((sum, p) => sum + p.value, 0) };
}

/** The expected accepted drafts of a tree under the accuracies it was built from. */
export function expectedAccepted(tree: readonly (readonly number[])[], rankAccuracy: readonly (readonly number[])[]): number {
  return tree.reduce((sum, p) => sum + p.reduce((v, c, d) => v * (rankAccuracy[d]?.[c] ?? 0), 1), 0);
}

/** The widest rank each head is asked for by a tree (its top-k). */
export function ranksPerHead(tree: readonly (readonly number[])[], numHeads: number): number[] {
  const k = new Array<number>(numHeads).fill(0);
  for (const p of tree) p.forEach((c, d) => (k[d] = Math.max(k[d]!, c + 1)));
  return k;
}

/** The verification input for `tree`, its nodes filled from `candidates[head][rank]`. */
export function treeInput(tree: readonly (readonly number[])[], pending: number, candidates: readonly (readonly number[])[]): TreeInput {
  const ids = [pending];
  const depth = [0];
  const parent = [-1];
  const rowOf = new Map<string, number>([['', 0]]);
  for (const p of tree) {
    const head = p.length - 1;
    const token = candidates[head]?.[p[head]!];
    const up = rowOf.get(p.slice(0, -1).join(','));
    if (token === undefined || up === undefined) continue; // the head gave fewer candidates, or the parent was dropped
    rowOf.set(p.join(','), ids.length);
    ids.push(token);
    depth.push(p.length);
    parent.push(up);
  }
  const mask = ids.map((_, i) => {
    const row = new Array<boolean>(ids.length).fill(false);
    for (let j = i; j >= 0; j = parent[j]!) row[j] = true;
    return row;
  });
  return { ids, depth, parent, mask };
}

/**
 * The accepted rows, root first, and the tokens picked on the way (one more than the
 * accepted drafts: the last pick is the base model's own next token). `pick(row, taken)`
 * is the base model's choice at a row, given the tokens picked before it; `stop(token)`
 * ends the walk after a token (end of sequence).
 */
export function acceptPath(input: TreeInput, pick: (row: number, taken: readonly number[]) => number, stop: (token: number) => boolean): { rows: number[]; picked: number[] } {
  const rows = [0];
  const picked: number[] = [];
  for (;;) {
    const at = rows.at(-1)!;
    const token = pick(at, picked);
    picked.push(token);
    if (stop(token)) break;
    let child = -1;
    for (let j = at + 1; j < input.ids.length; j++) {
      if (input.parent[j] === at && input.ids[j] === token) {
        child = j;
        break;
      }
    }
    if (child < 0) break;
    rows.push(child);
  }
  return { rows, picked };
}

/** The first `rows` rows of a tree input (rows are parents-first, so every kept node keeps its ancestors). */
export function trimTree(input: TreeInput, rows: number): TreeInput {
  const n = Math.max(1, Math.min(rows, input.ids.length));
  if (n === input.ids.length) return input;
  return {
    ids: input.ids.slice(0, n),
    depth: input.depth.slice(0, n),
    parent: input.parent.slice(0, n),
    mask: input.mask.slice(0, n).map((r) => r.slice(0, n)),
  };
}
