/**
 * What self-speculative decoding costs on this machine, so that a sequence drafts only as
 * many tokens as pay (SequenceShape.selfSpecCost): a full-depth forward of 1 + k new rows
 * and a one-row shallow forward (the kept layers, on the adapted model where there is one),
 * each relative to a one-row full-depth forward, timed after a short past. With them and a
 * sequence's acceptance so far, bestDrafts picks the chain length of the best expected
 * speedup (speculation-ceiling.ts), none where no chain beats plain decoding — on this
 * 2-vCPU CPU a verification row costs ~0.2 of a step and an r = 2 draft ~0.6, so drafts
 * accepted ~60 % of the time lose (0.77–0.88× in bench stages) and never drafting is better.
 */
import * as tf from '@tensorflow/tfjs-core';
import { forward } from '../model/forward.js';
import type { LoadedModel } from '../model/types.js';
import { rowCostFrom, type RowCost } from './draft-budget.js';
import { speculationCeiling } from './speculation-ceiling.js';

export interface SelfSpecCost {
  /** A full-depth forward of n new rows, in one-row forwards. */
  rowCost: RowCost;
  /** A one-row shallow forward (a draft), in one-row full-depth forwards. */
  shallow: number;
}

const PAST = 128;
const REPS = 5;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/**
 * Runs `body` with a timer of forwards after a short past (PAST tokens, fewer where the
 * model's context is short): `time(n)` a full-depth forward of n new rows, `time(1, layers,
 * model)` a one-row forward on those layers (of that model). The past's tensors are freed after.
 */
function withPast<T>(model: LoadedModel, rows: number, body: (time: (n: number, layers?: readonly number[], on?: LoadedModel) => number) => T): T {
  const vocab = Math.max(2, model.config.vocabSize - 1);
  const past = Array.from({ length: Math.min(PAST, Math.max(1, model.config.maxPositionEmbeddings - rows - 1)) }, (_, i) => 1 + (i % vocab));
  const [pre] = forward(model, [{ ids: past, logits: 'none' }]);
  const kv = pre!.newKv.map((e) => ({ k: [e!.k], v: [e!.v] }));
  const ids = Array.from({ length: rows }, (_, i) => past[i % past.length]!);
  try {
    return body((n, layers, on) => {
      const t = performance.now();
      const [r] = layers !== undefined ? forward(on ?? model, [{ ids: ids.slice(0, n), past: kv }], { layers: [...layers] }) : forward(model, [{ ids: ids.slice(0, n), past: kv, logits: 'all' }]);
      const ms = performance.now() - t;
      for (const e of r!.newKv) if (e) tf.dispose([e.k, e.v]);
      return ms;
    });
  } finally {
    for (const e of pre!.newKv) if (e) tf.dispose([e.k, e.v]);
  }
}

/**
 * A full-depth forward of each of `widths` new rows (ascending, from 1) after a short past:
 * the median milliseconds and the median ratio to a one-row forward timed right before it
 * (paired ratios: this machine's speed drifts), over `reps` after `warmups` rounds: what the
 * batch's cost model for speculative heads weighs rows by (and `skein train heads` shapes
 * their trees with, heads-train.ts measureCostTable).
 */
export function measureForwardCost(model: LoadedModel, widths: readonly number[], reps = REPS, warmups = 1): { rows: number[]; ms: number[]; relative: number[] } {
  return withPast(model, Math.max(...widths), (time) => forwardCost(time, widths, reps, warmups));
}

/** measureForwardCost on a timer withPast made. */
function forwardCost(time: (n: number) => number, widths: readonly number[], reps: number, warmups: number): { rows: number[]; ms: number[]; relative: number[] } {
  for (let w = 0; w < warmups; w++) for (const n of widths) time(n); // prepared weights, scratch memory, the JIT
  const times = widths.map(() => [] as number[]);
  const ratios = widths.map(() => [] as number[]);
  for (let rep = 0; rep < reps; rep++) {
    widths.forEach((n, i) => {
      const one = time(1);
      const t = n === 1 ? one : time(n);
      times[i]!.push(t);
      ratios[i]!.push(t / one);
    });
  }
  return { rows: [...widths], ms: times.map(median), relative: ratios.map(median) };
}

/**
 * Times the forwards a self-speculative sequence runs: full depth at 1 .. drafts + 1 rows and
 * one shallow row on `layers` (on `decodeModel` where given), each against a one-row full
 * forward timed right before it, medians of REPS after a warm-up. ~0.5 s on SmolLM2 here,
 * once per model and layer set (the engine caches it).
 */
export function measureSelfSpecCost(model: LoadedModel, layers: readonly number[], drafts: number, decodeModel?: LoadedModel): SelfSpecCost {
  const widths = Array.from({ length: drafts + 1 }, (_, i) => i + 1);
  return withPast(model, drafts + 1, (time) => {
    const full = forwardCost(time, widths, REPS, 1);
    time(1, layers, decodeModel); // warm-up
    const shallow: number[] = [];
    for (let rep = 0; rep < REPS; rep++) {
      const one = time(1);
      shallow.push(time(1, layers, decodeModel) / one);
    }
    return { rowCost: rowCostFrom({ rows: full.rows, relative: full.relative }), shallow: median(shallow) };
  });
}

/**
 * The chain length (0 .. maxDrafts) with the best expected speedup for a sequence whose
 * drafts have been accepted at rate `acceptance` (each draft given the ones before it), and
 * that speedup; 0 drafts (speedup 1) where no chain beats plain decoding.
 */
export function bestDrafts(cost: SelfSpecCost, acceptance: number, maxDrafts: number): { drafts: number; speedup: number } {
  if (maxDrafts < 1) return { drafts: 0, speedup: 1 };
  const c = speculationCeiling({ rowMs: cost.rowCost, batch: 1, draftMs: (k) => k * cost.shallow, maxDrafts, acceptance });
  return { drafts: c.drafts, speedup: c.speedup };
}
