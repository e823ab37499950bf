/**
 * LazyLLM's pruning schedule and token selection (Fu et al. 2024, arXiv 2407.14057).
 * At each pruning layer l the prompt tokens still live are scored by the attention the
 * last token pays them at the layer run before l, averaged over heads; the top share is
 * kept (the paper's "above the k-th percentile": the same set, ties to the earlier token)
 * and the last token always is. Pruning is progressive: each stage keeps a subset of the
 * previous stage's tokens, so later layers see fewer.
 *
 * A schedule is a list of pruning layers and, per layer, the CUMULATIVE share of the
 * prompt tokens kept from that layer on (non-increasing). The default, derived from the
 * paper's Llama-2-7B figure (stages at layers 9, 19 and 28 of 32), scales those depths to
 * the model: round(L·9/32), round(L·19/32), round(L·28/32) — 8, 18, 26 for SmolLM2's 30
 * layers. One `keepRatio` r is the share left after the last stage; stage i of n keeps
 * r^((i+1)/n) (0.5 over three stages: 79 %, 63 %, 50 %), so more is kept early and more
 * pruned late. A list gives each stage its own cumulative share. No ratio at all takes
 * DEFAULT_SCHEDULE, the one measured for long prompts (50 %, 30 %, 20 % from later depths:
 * 14, 22, 27 of SmolLM2's 30).
 *
 * Revival (the Aux Cache, runtime/kv/aux-cache.ts): `revive` tokens per pruning layer per
 * later step at most (the rule: SequenceShape.prune in the scheduler). DEFAULT_REVIVE says
 * why 4.
 *
 * @example
 * const s = lazySchedule(30, { keepRatio: 0.5 }); // { layers: [8, 18, 26], keep: [0.79, 0.63, 0.5], revive: 4 }
 * keepCounts(s, 100); // [80, 63, 50]
 * topKeep(scores, [0, 1, 2, 3], 2); // the best-scored of 0..2, and 3 (the last)
 */
import { BadRequestError } from '../../core/errors.js';

export interface LazyOptions {
  /** Share of the prompt kept after the last stage, or one cumulative share per stage; absent: DEFAULT_SCHEDULE. */
  keepRatio?: number | readonly number[];
  /** Pruning layers, ascending, each in 1..L−1 (layer 0 has no earlier layer to score with). */
  layers?: readonly number[];
  /** Aux Cache tokens revived per pruning layer per later step at most; 0 prunes statically. */
  revive?: number;
}

export interface LazySchedule {
  layers: number[];
  /** Cumulative share of the prompt's tokens kept from layers[i] on. */
  keep: number[];
  /** Aux Cache tokens revived per pruning layer per later step at most (0: none). */
  revive: number;
}

/**
 * Revived tokens per pruning layer per step by default: a 1-token decode step with up to 3×4
 * resumed rows stays a small forward (the block kernels read the weights once for all
 * rows); revival then catches up with what the asking tokens need within a few steps. `skein bench stages
 * --arg parts=lazy` measures it against static pruning.
 */
export const DEFAULT_REVIVE = 4;

/** The paper's stage depths (9, 19, 28 of 32 layers), scaled to `numLayers`, distinct and ≥ 1. */
export function defaultPruneLayers(numLayers: number): number[] {
  const out: number[] = [];
  for (const f of [9 / 32, 19 / 32, 28 / 32]) {
    const l = Math.min(numLayers - 1, Math.max(1, Math.round(numLayers * f)));
    if (l > (out.at(-1) ?? 0)) out.push(l);
  }
  return out;
}

/**
 * The schedule when no keepRatio is given, for long prompts: 50 %, 30 % and 20 % of the
 * prompt kept from 14/30, 22/30 and 27/30 of the depth on (layers 14, 22, 27 of SmolLM2's
 * 30): 67 % of the token-layers (tokenLayerShare: 14 + 8·0.5 + 5·0.3 + 3·0.2 of 30), and
 * attention's quadratic part shrinks more.
 *
 * How it was chosen (`skein bench stages --arg parts=lazy --arg tokens=2048`, SmolLM2-135M,
 * passage QA — exact code words and numbers copied from one passage among many — runtime/bench/HISTORY.md):
 * the previous default, the same shares from the paper's depths (9, 19, 28 of 32: layers 8,
 * 18, 26, 54 % of the token-layers), gave TTFT 2.06× and lost 28 points of accuracy over
 * 120 items (full 65/120, pruned 31/120: 39 answers lost, 4 gained) — 6 items had read Δ 0.
 * Side by side on 32 of those items (full 17/32): these later depths 1.57× at −3 points
 * (1 gained, 2 lost; answer NLL +0.66), 70/50/35 % at the paper's depths 1.58× at −3
 * (2 gained, 3 lost; +0.69), one stage at layer 20 keeping 30 % 1.29× at +6 (2 gained,
 * none lost; +0.02), the old default 2.04× at −25 (1 gained, 9 lost; +1.26). Pruning half
 * the prompt at layer 8 is what lost the answers; a default should not, so it prunes later
 * and trades the 2× for ~1.6×. `keepRatio` and `layers` take a faster schedule back. At 4k
 * tokens (20 items, full 14/20) the two lost the same 2 answers: this one at 1.63×, the old
 * one at 2.26× — the old schedule's cost shows on the 120 items at 2k, not on these 20.
 * (Those ratios are against the full prefill of the time; once attention's scores came from
 * a transposed key tile, which a full prefill has more rows to gain on, this schedule read
 * 1.35× at Δ 0 on 6 of the items.)
 */
export const DEFAULT_SCHEDULE: { depths: readonly number[]; keep: readonly number[] } = { depths: [14 / 30, 22 / 30, 27 / 30], keep: [0.5, 0.3, 0.2] };

/** DEFAULT_SCHEDULE's layers for a depth (distinct, in 1..L−1) with their shares. */
export function defaultSchedule(numLayers: number): { layers: number[]; keep: number[] } {
  const layers: number[] = [];
  const keep: number[] = [];
  DEFAULT_SCHEDULE.depths.forEach((f, i) => {
    const l = Math.min(numLayers - 1, Math.max(1, Math.round(numLayers * f)));
    if (l > (layers.at(-1) ?? 0)) layers.push(l), keep.push(DEFAULT_SCHEDULE.keep[i]!);
    else keep[keep.length - 1] = DEFAULT_SCHEDULE.keep[i]!; // two depths on one layer: the later (smaller) share
  });
  return { layers, keep };
}

export function lazySchedule(numLayers: number, options: LazyOptions = {}): LazySchedule {
  if (numLayers < 2) throw new BadRequestError('prunedPrefill', `a model of ${numLayers} layer has no layer to prune at`);
  if (options.keepRatio === undefined) {
    if (options.layers !== undefined) throw new BadRequestError('prunedPrefill.keepRatio', 'is needed with layers (one share, or one per layer)');
    const d = defaultSchedule(numLayers);
    return lazySchedule(numLayers, { layers: d.layers, keepRatio: d.keep, ...(options.revive !== undefined ? { revive: options.revive } : {}) });
  }
  const layers = options.layers !== undefined ? [...options.layers] : defaultPruneLayers(numLayers);
  if (layers.length === 0) throw new BadRequestError('prunedPrefill.layers', 'needs at least one layer');
  layers.forEach((l, i) => {
    if (!Number.isInteger(l) || l < 1 || l >= numLayers) {
      throw new BadRequestError(`prunedPrefill.layers/${i}`, `layer ${l} is outside 1..${numLayers - 1} (the model has ${numLayers} layers)`);
    }
    if (i > 0 && l <= layers[i - 1]!) throw new BadRequestError(`prunedPrefill.layers/${i}`, 'layers must be strictly ascending');
  });
  const ratio = options.keepRatio;
  let keep: number[];
  if (typeof ratio === 'number') {
    checkShare(ratio, 'prunedPrefill.keepRatio');
    keep = layers.map((_, i) => ratio ** ((i + 1) / layers.length));
  } else {
    if (ratio.length !== layers.length) {
      throw new BadRequestError('prunedPrefill.keepRatio', `gives ${ratio.length} shares for ${layers.length} pruning layers`);
    }
    ratio.forEach((r, i) => {
      checkShare(r, `prunedPrefill.keepRatio/${i}`);
      if (i > 0 && r > ratio[i - 1]!) throw new BadRequestError(`prunedPrefill.keepRatio/${i}`, 'shares must not increase (each stage keeps a subset)');
    });
    keep = [...ratio];
  }
  const revive = options.revive ?? DEFAULT_REVIVE;
  if (!(Number.isInteger(revive) && revive >= 0)) throw new BadRequestError('prunedPrefill.revive', `must be a whole number, got ${revive}`);
  return { layers, keep, revive };
}

function checkShare(r: number, field: string): void {
  if (!(Number.isFinite(r) && r > 0 && r <= 1)) throw new BadRequestError(field, `must be in (0, 1], got ${r}`);
}

/**
 * Share of the dense work (token × layer products) a prefill with this schedule computes,
 * before revival: layers below the first stage see every token, each later span its
 * stage's share. It bounds the TTFT gain from the layers' matmuls at 1/share; attention,
 * whose cost also shrinks with the keys pruned, is on top.
 */
export function tokenLayerShare(schedule: { layers: readonly number[]; keep: readonly number[] }, numLayers: number): number {
  let sum = schedule.layers[0] ?? numLayers;
  schedule.layers.forEach((l, i) => (sum += schedule.keep[i]! * ((schedule.layers[i + 1] ?? numLayers) - l)));
  return sum / numLayers;
}

/** Tokens kept per stage out of `n`: ceil(share·n), at least 1 (the last token), non-increasing. */
export function keepCounts(schedule: LazySchedule, n: number): number[] {
  let prev = n;
  return schedule.keep.map((share) => (prev = Math.min(prev, Math.max(1, Math.ceil(share * n - 1e-9)))));
}

/**
 * The `count` best-scored candidates (indices into `scores`), ascending; the last candidate
 * is always among them. Ties go to the earlier token, so the choice is deterministic.
 */
export function topKeep(scores: ArrayLike<number>, candidates: readonly number[], count: number): number[] {
  if (candidates.length === 0) return [];
  const last = candidates.at(-1)!;
  if (count >= candidates.length) return [...candidates];
  const rest = candidates.slice(0, -1).sort((a, b) => scores[b]! - scores[a]! || a - b);
  return [...rest.slice(0, Math.max(0, count - 1)), last].sort((a, b) => a - b);
}

/** Random pruning baseline: `count` candidates drawn uniformly (the last always kept). */
export function randomKeep(candidates: readonly number[], count: number, random: () => number): number[] {
  if (count >= candidates.length) return [...candidates];
  const rest = candidates.slice(0, -1);
  for (let i = rest.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [rest[i], rest[j]] = [rest[j]!, rest[i]!];
  }
  return [...rest.slice(0, Math.max(0, count - 1)), candidates.at(-1)!].sort((a, b) => a - b);
}
