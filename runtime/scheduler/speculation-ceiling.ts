/**
 * The most draft-and-verify decoding can give on a machine's measured forward costs: the
 * verified rows' forward plus the drafting against the tokens the step yields. With every
 * draft accepted it is a ceiling no drafter (heads, skipped layers) can pass on that machine;
 * with a per-draft acceptance it is the chain's expected speedup. Where a forward of n rows
 * costs about n one-row forwards (compute-bound: a CPU running a small model), the ceiling
 * sits near 1 whatever the drafts; where it costs about one (memory-bound: a GPU running a
 * 7B model) it grows with the drafts — why the published speedups are GPU figures.
 */
export interface CeilingInputs {
  /** Milliseconds of a forward of `rows` new rows (the batch's, after its past). */
  rowMs: (rows: number) => number;
  /** Sequences stepping together. */
  batch: number;
  /** Milliseconds of drafting k tokens a sequence for the whole batch (the heads, or k steps of the kept layers). */
  draftMs: (k: number) => number;
  /** The longest chain of drafts to consider. */
  maxDrafts: number;
  /** Chance that each draft is accepted given the ones before it (omitted: every draft accepted). */
  acceptance?: number;
}

export interface Ceiling {
  /** Tokens per millisecond against plain decoding's. */
  speedup: number;
  /** Drafts a sequence a step that reach it. */
  drafts: number;
}

/** Tokens a chain of k drafts yields a step: k + 1 when all are accepted, else the expected count under a per-draft acceptance. */
export function chainTokens(k: number, acceptance?: number): number {
  if (acceptance === undefined || acceptance >= 1) return k + 1;
  return (1 - acceptance ** (k + 1)) / (1 - acceptance);
}

/** The best speedup over chains of 1..maxDrafts drafts (1 with no drafts when none pays). */
export function speculationCeiling(o: CeilingInputs): Ceiling {
  if (!(o.batch >= 1) || !(o.maxDrafts >= 1)) throw new RangeError('speculationCeiling: batch and maxDrafts must be at least 1');
  const plain = o.rowMs(o.batch);
  let best: Ceiling = { speedup: 1, drafts: 0 };
  for (let k = 1; k <= o.maxDrafts; k++) {
    const speedup = (chainTokens(k, o.acceptance) * plain) / (o.rowMs(o.batch * (k + 1)) + o.draftMs(k));
    if (speedup > best.speedup) best = { speedup, drafts: k };
  }
  return best;
}
