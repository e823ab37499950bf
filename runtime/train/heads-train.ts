/**
 * Training speculative heads on a frozen backbone (Medusa-1 / Cerberus, TECHNIQUES §4),
 * on tfjs, from cached self-distillation rows (heads-data.ts). Each head is
 * `x + SiLU(W x + b)` with W and b zero-initialised (a fresh head repeats the base model's
 * own prediction), projected by the base model's frozen LM head; the loss is head k's
 * cross-entropy against the token k+2 positions ahead, weighted 0.8^k (Medusa's decay).
 *
 * The frozen LM head's gradient is a custom one through its pre-transposed copy: wasm
 * matMul with transposeB is 10–40× slower than a plain one (ARCHITECTURE), and this
 * product, (rows·K, vocab)·(vocab, hidden), is the step's largest.
 *
 * After training: per-head top-1 / top-5 and per-rank accuracy on held-out rows, the
 * candidate tree chosen for the best measured tokens per second (the forward's cost for
 * 1 + N rows timed on this machine), and the entropy gate threshold calibrated the same
 * way on held-out rows.
 *
 * @example
 * const run = await trainHeads(model, train, heldOut, { kind: 'medusa', steps: 300, out: '.skein/heads' });
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { readSafetensors, writeSafetensors } from '../checkpoint/safetensors.js';
import { embedTokens } from '../model/kernels.js';
import type { LoadedModel } from '../model/types.js';
import { headInput, type HeadsData, type HeadsKind, type HeadsMeta } from '../heads/files.js';
import { entropy, headOutputs, SpeculativeHeads } from '../heads/heads.js';
import { treeFromRows } from '../heads/tree.js';
import { rowCostFrom, type RowCost } from '../scheduler/draft-budget.js';
import { measureForwardCost } from '../scheduler/self-spec-cost.js';
import type { DistilledRows } from './heads-data.js';
import './gradients.js';

export interface HeadsTrainOptions {
  kind: HeadsKind;
  steps: number;
  /** Rows per step (default 64). */
  batch?: number;
  lr?: number;
  seed?: number;
  /** Folder for the resumable state (weights, Adam moments, step). */
  stateDir: string;
  checkpointEvery?: number;
  /** Ranks measured per head on held-out rows (the tree's widest choice). */
  ranks?: number;
  /**
   * Size of the heads' vocabulary (HeadsMeta.vocab): the most frequent tokens of the
   * training continuations; the softmax runs over these alone. Default 8192; the model's
   * vocabulary size or more: the whole vocabulary.
   */
  vocab?: number;
  onStep?: (step: number, loss: number) => void;
  /** Start from these heads' weights instead of zeros (fine-tuning heads on new rows; a checkpoint in stateDir still wins). */
  init?: HeadsData;
  /** Heads that also read the pending token's embedding (HeadsMeta.pendingToken). */
  pendingToken?: boolean;
}

const DECAY = 0.8;

/** Trains (or resumes) heads; returns them with held-out figures, tree and gate filled in. */
export function trainHeads(model: LoadedModel, train: DistilledRows, heldOut: DistilledRows, o: HeadsTrainOptions): HeadsData {
  const t0 = performance.now();
  const c = model.config;
  const d = c.hiddenSize;
  const K = train.heads;
  const B = o.batch ?? 64;
  const pendingToken = o.pendingToken === true;
  const state = loadState(o.stateDir, o.kind, K, d, pendingToken, o.init);
  const weights = state.weights.map((w, k) => variable(tf.tensor2d(w, [headInput(o.kind, k, d, pendingToken), d])));
  const biases = state.biases.map((b) => variable(tf.tensor1d(b)));
  const vars = [...weights, ...biases];
  const optimizer = tf.train.adam(o.lr ?? 1e-3);
  if (state.adam !== null) restoreAdam(optimizer, vars, state.adam);
  const vocab = chooseVocab(train, o.vocab ?? DEFAULT_VOCAB, c.vocabSize);
  const column = columnsOf(vocab?.ids, c.vocabSize);
  const lm = vocab === null ? model.weights.lmHead : subHead(model, vocab.ids); // (hidden, V')
  const lmT = tf.transpose(lm) as tf.Tensor2D; // (V', hidden)
  const project = tf.customGrad(((z: tf.Tensor2D) => ({
    value: tf.matMul(z, lm),
    gradFunc: (dy: tf.Tensor2D) => tf.matMul(dy, lmT),
  })) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (z: tf.Tensor2D) => tf.Tensor2D;
  // x·W with explicit transposes in its gradient (plain matMuls only, see the header).
  const linear = tf.customGrad(((x: tf.Tensor2D, w: tf.Tensor2D, save: tf.GradSaveFunc) => {
    save([x, w]);
    return {
      value: tf.matMul(x, w),
      gradFunc: (dy: tf.Tensor2D, [xs, ws]: tf.Tensor2D[]) => [tf.matMul(dy, tf.transpose(ws!)), tf.matMul(tf.transpose(xs!), dy)],
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (x: tf.Tensor2D, w: tf.Tensor2D) => tf.Tensor2D;
  const order = shuffle(train.rows, o.seed ?? 1); // the same order on resume: step s reads the same rows
  let step = state.step;
  for (; step < o.steps; step++) {
    const at = (step * B) % Math.max(1, train.rows - B + 1);
    const rows = order.slice(at, at + B);
    const { h, targets } = batchOf(train, rows, column, vocab?.ids.length ?? c.vocabSize);
    const e = pendingToken ? pendingEmbeddings(model, train, rows) : null;
    const loss = optimizer.minimize(() => lossOf(o.kind, h, e, targets, weights, biases, project, linear), true, vars)!;
    const value = loss.dataSync()[0]!;
    tf.dispose([loss, h, ...(e ? [e] : []), ...targets]);
    o.onStep?.(step + 1, value);
    if ((step + 1) % (o.checkpointEvery ?? 50) === 0) saveState(o.stateDir, o.kind, step + 1, weights, biases, optimizer, vars);
  }
  saveState(o.stateDir, o.kind, step, weights, biases, optimizer, vars);
  const data: HeadsData = {
    meta: {
      kind: o.kind,
      numHeads: K,
      hiddenSize: d,
      vocabSize: c.vocabSize,
      tree: [[0]],
      gateThreshold: null,
      ...(vocab ? { vocab: vocab.ids } : {}),
      ...(pendingToken ? { pendingToken } : {}),
    },
    weights: weights.map((w) => w.dataSync() as Float32Array),
    biases: biases.map((b) => b.dataSync() as Float32Array),
  };
  tf.dispose([...vars, lmT, ...(vocab ? [lm] : [])]);
  optimizer.dispose();
  const evaluation = shapeHeads(model, data, heldOut, o.ranks);
  data.meta = {
    ...data.meta,
    training: {
      tokens: train.rows,
      heldOutTokens: heldOut.rows,
      steps: step,
      wallSeconds: Math.round(state.wallSeconds + (performance.now() - t0) / 1000),
      top1: evaluation.top1,
      top5: evaluation.top5,
      rankAccuracy: evaluation.rankAccuracy.map((r) => r.map((a) => Number(a.toFixed(4)))),
      vocabCoverage: vocab?.coverage ?? 1,
      ...(o.init?.meta.training ? { startedFrom: { tokens: o.init.meta.training.tokens, steps: o.init.meta.training.steps } } : {}),
    },
  };
  return data;
}

/**
 * Fills in what depends on held-out rows and on this machine's speeds: the measured paths,
 * the tree with the best expected tokens per millisecond, the gate threshold, and the
 * forward's relative cost by rows (HeadsMeta.paths, tree, gateThreshold, gateRate,
 * forwardCost). `skein train heads --reshape` runs it alone on trained heads, so a machine
 * unlike the one they were trained on gets trees and a cost model of its own.
 */
export function shapeHeads(model: LoadedModel, data: HeadsData, heldOut: DistilledRows, ranks = 8): HeadsEvaluation {
  const evaluation = evaluateHeads(model, data, heldOut, ranks);
  const table = measureCostTable(model);
  const costs = rowCostFrom({ rows: table.rows, relative: table.relative.map((r) => r * table.ms[0]!) });
  const headsMs = measureHeads(model, data);
  const shaped = chooseTree(evaluation.ranks, costs, headsMs);
  const gate = calibrateGate(evaluation, shaped.tree, costs, headsMs);
  const best = treeFromRows(evaluation.ranks, PATHS_KEPT);
  data.meta = {
    ...data.meta,
    tree: shaped.tree,
    paths: best.tree.map((p, i) => ({ path: p, share: Number(best.values[i]!.toFixed(5)) })),
    forwardCost: { rows: table.rows, relative: table.relative.map((x) => Number(x.toFixed(4))) },
    gateThreshold: gate.threshold,
    gateRate: gate.rate,
  };
  return evaluation;
}

const DEFAULT_VOCAB = 8192;
/** Measured paths kept in the heads' file (HeadsMeta.paths): enough for any tree a request asks for. */
const PATHS_KEPT = 64;

/**
 * The `size` most frequent tokens of the rows' continuations (targets and the model's own
 * next tokens), ascending ids, with the share of the head targets they cover; null when
 * `size` spans the whole vocabulary. Ties (tokens the rows never saw, when they are few)
 * go to the lower id: a BPE vocabulary's earlier merges, frequent in the tokenizer's corpus.
 */
export function chooseVocab(data: DistilledRows, size: number, vocabSize: number): { ids: number[]; coverage: number } | null {
  if (size >= vocabSize) return null;
  const counts = new Float64Array(vocabSize);
  for (const t of data.targets) if (t >= 0) counts[t]++;
  for (const t of data.next) counts[t]++;
  const order = Array.from({ length: vocabSize }, (_, i) => i).sort((a, b) => counts[b]! - counts[a]! || a - b);
  const ids = order.slice(0, size).sort((a, b) => a - b);
  const inside = new Set(ids);
  let covered = 0;
  let total = 0;
  for (const t of data.targets) {
    if (t < 0) continue;
    total++;
    if (inside.has(t)) covered++;
  }
  return { ids, coverage: Number((covered / Math.max(1, total)).toFixed(4)) };
}

/** Per token id, its column in the heads' vocabulary (-1: outside it); null: the whole vocabulary. */
function columnsOf(ids: readonly number[] | undefined, vocabSize: number): Int32Array | null {
  if (ids === undefined) return null;
  const column = new Int32Array(vocabSize).fill(-1);
  ids.forEach((id, j) => (column[id] = j));
  return column;
}

/** The LM head's columns of the heads' vocabulary: (hidden, V'). */
function subHead(model: LoadedModel, ids: readonly number[]): tf.Tensor2D {
  return tf.tidy(() => tf.gather(model.weights.lmHead, tf.tensor1d(Int32Array.from(ids), 'int32'), 1) as tf.Tensor2D);
}

/** The embeddings of the base model's own next token at `rows` (the pending token the heads read): (rows, hidden). */
function pendingEmbeddings(model: LoadedModel, data: DistilledRows, rows: readonly number[]): tf.Tensor2D {
  return embedTokens(model.weights.embed, rows.map((r) => data.next[r]!));
}

/** Weighted cross-entropy of every head over one batch. */
function lossOf(
  kind: HeadsKind,
  h: tf.Tensor2D,
  e: tf.Tensor2D | null,
  targets: tf.Tensor2D[],
  weights: tf.Tensor2D[],
  biases: tf.Tensor1D[],
  project: (z: tf.Tensor2D) => tf.Tensor2D,
  linear: (x: tf.Tensor2D, w: tf.Tensor2D) => tf.Tensor2D,
): tf.Scalar {
  const outs = headOutputs(kind, h, weights, biases, linear, e);
  let total: tf.Scalar = tf.scalar(0);
  let weightSum = 0;
  outs.forEach((z, k) => {
    const logp = tf.logSoftmax(project(z)); // (B, vocab)
    // targets[k]: one-hot rows, all zero where the continuation ended (gather's gradient is missing on wasm).
    const ce = tf.neg(tf.sum(tf.mul(logp, targets[k]!))); // summed over rows
    total = tf.add(total, tf.mul(ce, DECAY ** k / h.shape[0])) as tf.Scalar;
    weightSum += DECAY ** k;
  });
  return tf.div(total, weightSum) as tf.Scalar;
}

/** A batch of rows; targets as one-hot rows over the heads' vocabulary (a target outside it adds nothing to the loss). */
function batchOf(data: DistilledRows, rows: number[], column: Int32Array | null, vocab: number): { h: tf.Tensor2D; targets: tf.Tensor2D[] } {
  const d = data.hiddenSize;
  const flat = new Float32Array(rows.length * d);
  rows.forEach((r, i) => flat.set(data.hidden.subarray(r * d, (r + 1) * d), i * d));
  const h = tf.tensor2d(flat, [rows.length, d]);
  const targets = Array.from({ length: data.heads }, (_, k) => {
    const ids = Int32Array.from(rows, (r) => {
      const t = data.targets[r * data.heads + k]!;
      return t < 0 || column === null ? t : column[t]!;
    });
    // oneHot of -1 is an all-zero row: that position adds nothing to head k's loss.
    return tf.tidy(() => tf.cast(tf.oneHot(tf.tensor1d(ids, 'int32'), vocab), 'float32') as tf.Tensor2D);
  });
  return { h, targets };
}

export interface HeadsEvaluation {
  top1: number[];
  top5: number[];
  /** rankAccuracy[k][i]: head k's target was its i-th candidate. */
  rankAccuracy: number[][];
  /** Per held-out row: per head, the rank of the target among its candidates (-1: beyond the ranks measured or no target). */
  ranks: Int16Array[];
  /** Per held-out row: the base model's next-token entropy (nats). */
  entropy: Float32Array;
}

/** Per-head accuracies and ranks on held-out rows, and the base model's entropy at each. */
export function evaluateHeads(model: LoadedModel, heads: HeadsData, data: DistilledRows, ranks: number): HeadsEvaluation {
  const K = data.heads;
  const d = data.hiddenSize;
  const hits = Array.from({ length: K }, () => new Float64Array(ranks));
  const counted = new Float64Array(K);
  const top5 = new Float64Array(K);
  const rowRanks = Array.from({ length: data.rows }, () => new Int16Array(K).fill(-1));
  const ent = new Float32Array(data.rows);
  const weights = heads.weights.map((w, k) => tf.tensor2d(w, [headInput(heads.meta.kind, k, d, heads.meta.pendingToken), d]));
  const biases = heads.biases.map((b) => tf.tensor1d(b));
  const vocab = heads.meta.vocab;
  const lm = vocab === undefined ? model.weights.lmHead : subHead(model, vocab); // (hidden, V')
  const chunk = 32;
  for (let at = 0; at < data.rows; at += chunk) {
    const n = Math.min(chunk, data.rows - at);
    const { top, base } = tf.tidy(() => {
      const h = tf.tensor2d(data.hidden.subarray(at * d, (at + n) * d), [n, d]);
      const e = heads.meta.pendingToken === true ? pendingEmbeddings(model, data, Array.from({ length: n }, (_, i) => at + i)) : null;
      const outs = headOutputs(heads.meta.kind, h, weights, biases, tf.matMul, e);
      const logits = tf.matMul(tf.concat(outs, 0), lm); // (K·n, V')
      return { top: tf.topk(logits, ranks).indices, base: tf.matMul(h, model.weights.lmHead) };
    });
    const columns = top.dataSync() as Int32Array;
    const ids = vocab === undefined ? columns : columns.map((j) => vocab[j]!);
    const baseRows = base.dataSync() as Float32Array;
    tf.dispose([top, base]);
    const V = model.config.vocabSize;
    for (let i = 0; i < n; i++) {
      const row = at + i;
      ent[row] = entropy(baseRows.subarray(i * V, (i + 1) * V));
      for (let k = 0; k < K; k++) {
        const target = data.targets[row * K + k]!;
        if (target < 0) continue;
        counted[k]++;
        const cands = ids.subarray((k * n + i) * ranks, (k * n + i + 1) * ranks);
        const r = cands.indexOf(target);
        if (r >= 0) {
          hits[k]![r]++;
          rowRanks[row]![k] = r;
          if (r < 5) top5[k]++;
        }
      }
    }
  }
  tf.dispose([...weights, ...biases, ...(vocab === undefined ? [] : [lm])]);
  const rankAccuracy = hits.map((h, k) => Array.from(h, (x) => x / Math.max(1, counted[k]!)));
  return {
    top1: rankAccuracy.map((r) => Number(r[0]!.toFixed(4))),
    top5: Array.from(top5, (x, k) => Number((x / Math.max(1, counted[k]!)).toFixed(4))),
    rankAccuracy,
    ranks: rowRanks,
    entropy: ent,
  };
}

/** Milliseconds of one forward of n new rows after a 128-token past, n = 1 + tree nodes; measured here. */
export type CostModel = RowCost;

/** Times the forward at a few widths (after a 128-token past) and interpolates between them. */
export function measureCosts(model: LoadedModel): CostModel {
  const table = measureCostTable(model);
  return rowCostFrom({ rows: table.rows, relative: table.relative.map((r) => r * table.ms[0]!) });
}

/**
 * Milliseconds of a forward of each of a few widths of new rows after a 128-token past,
 * and each width's cost relative to one row: the median over 9 reps of the width's time
 * over a one-row forward timed right before it. Paired ratios, because this machine's
 * speed drifts by ±15 % from one second to the next (lone medians read 2 rows at 1.10 and
 * 1.18 one-row forwards in two runs a minute apart), and the draft budget needs the shape.
 */
export function measureCostTable(model: LoadedModel): { rows: number[]; ms: number[]; relative: number[] } {
  return measureForwardCost(model, [1, 2, 4, 8, 16, 32], 9, 2);
}

/**
 * Milliseconds the heads take to propose for one sequence (one hidden row, projection and
 * top-4 included), by how many heads a tree uses: result[u − 1] for the first u heads (a
 * tree of depth u runs only those). What a speculating step pays on top of its forward.
 * Interleaved, median of 9 after a warm-up.
 */
export function measureHeads(model: LoadedModel, data: HeadsData): number[] {
  const heads = new SpeculativeHeads(model, data);
  const row = [new Float32Array(data.meta.hiddenSize).fill(0.1)];
  const K = data.meta.numHeads;
  const ranks = (used: number) => Array.from({ length: K }, (_, k) => (k < used ? 4 : 0));
  const times = Array.from({ length: K }, () => [] as number[]);
  for (let rep = 0; rep < 11; rep++) {
    for (let used = 1; used <= K; used++) {
      const t = performance.now();
      heads.candidates(row, ranks(used), [0]);
      if (rep > 1) times[used - 1]!.push(performance.now() - t); // the first calls build the projection and warm up
    }
  }
  heads.dispose();
  return times.map((t) => t.sort((a, b) => a - b)[4]!);
}

/** What a tree's heads cost: `headsMs[u − 1]` for a tree u deep (measureHeads); 0 without figures. */
function headsCost(tree: readonly (readonly number[])[], headsMs: readonly number[]): number {
  const depth = Math.max(0, ...tree.map((p) => p.length));
  return depth === 0 ? 0 : (headsMs[Math.min(depth, headsMs.length) - 1] ?? 0);
}

/**
 * The tree with the most expected tokens per millisecond, (1 + E[accepted]) / (cost(1 +
 * nodes) + heads), among trees of `sizes` nodes built from held-out rows (treeFromRows:
 * each path's measured share, E exact on those rows).
 */
export function chooseTree(rowRanks: readonly ArrayLike<number>[], cost: CostModel, headsMs: readonly number[] = [], sizes = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]): { tree: number[][]; speedup: number } {
  let best = { tree: [[0]], speedup: 0 };
  for (const n of sizes) {
    const { tree, expected } = treeFromRows(rowRanks, n);
    if (tree.length === 0) continue;
    const speedup = ((1 + expected) / (cost(1 + tree.length) + headsCost(tree, headsMs))) * cost(1);
    if (speedup > best.speedup) best = { tree, speedup };
  }
  return best;
}

/** Tokens accepted at a held-out row by a tree: the deepest path whose every rank matches the row's target ranks. */
function acceptedAt(ranks: Int16Array, tree: number[][]): number {
  let best = 0;
  for (const p of tree) if (p.length > best && p.every((c, dpt) => ranks[dpt] === c)) best = p.length;
  return best;
}

/**
 * The entropy threshold with the best simulated tokens per millisecond on held-out rows:
 * a row above it decodes plainly (1 token at cost(1)), one below it verifies the tree
 * (1 + accepted tokens at cost(1 + nodes)); null when gating nothing is best.
 */
export function calibrateGate(e: HeadsEvaluation, tree: number[][], cost: CostModel, headsMsByDepth: readonly number[] = []): { threshold: number | null; rate: number } {
  const rows = e.entropy.length;
  const headsMs = headsCost(tree, headsMsByDepth);
  const accepted = e.ranks.map((r) => acceptedAt(r, tree));
  const sorted = Array.from(e.entropy).sort((a, b) => a - b);
  const speed = (threshold: number) => {
    let tokens = 0;
    let ms = 0;
    for (let i = 0; i < rows; i++) {
      if (e.entropy[i]! > threshold) {
        tokens += 1;
        ms += cost(1);
      } else {
        tokens += 1 + accepted[i]!;
        ms += cost(1 + tree.length) + headsMs;
      }
    }
    return tokens / ms;
  };
  let best = { threshold: Infinity, value: speed(Infinity) };
  for (let q = 0.05; q < 1; q += 0.05) {
    const t = sorted[Math.floor(q * rows)]!;
    const v = speed(t);
    if (v > best.value * 1.0001) best = { threshold: t, value: v };
  }
  if (!Number.isFinite(best.threshold)) return { threshold: null, rate: 0 };
  const gated = e.entropy.filter((x) => x > best.threshold).length;
  return { threshold: Number(best.threshold.toFixed(4)), rate: Number((gated / Math.max(1, rows)).toFixed(4)) };
}

// ------------------------------------------------------------------ resumable state

interface TrainState {
  step: number;
  wallSeconds: number;
  weights: Float32Array[];
  biases: Float32Array[];
  adam: Float32Array[] | null;
}

function loadState(dir: string, kind: HeadsKind, K: number, d: number, pendingToken: boolean, init?: HeadsData): TrainState {
  const file = path.join(dir, `${kind}-state.safetensors`);
  const meta = path.join(dir, `${kind}-state.json`);
  if (!fs.existsSync(file) || !fs.existsSync(meta)) {
    const initReads = init?.meta.pendingToken === true;
    if (init !== undefined && (init.meta.kind !== kind || init.meta.numHeads !== K || init.meta.hiddenSize !== d || initReads !== pendingToken)) {
      const reads = (yes: boolean) => (yes ? ' reading the pending token' : '');
      throw new RangeError(`cannot start ${K} ${kind} heads of width ${d}${reads(pendingToken)} from ${init.meta.numHeads} ${init.meta.kind} heads of width ${init.meta.hiddenSize}${reads(initReads)}`);
    }
    return {
      step: 0,
      wallSeconds: 0,
      weights: Array.from({ length: K }, (_, k) => Float32Array.from(init?.weights[k] ?? new Float32Array(headInput(kind, k, d, pendingToken) * d))),
      biases: Array.from({ length: K }, (_, k) => Float32Array.from(init?.biases[k] ?? new Float32Array(d))),
      adam: null,
    };
  }
  const t = readSafetensors(file);
  const m = JSON.parse(fs.readFileSync(meta, 'utf8')) as { step: number; wallSeconds: number; adam: number };
  return {
    step: m.step,
    wallSeconds: m.wallSeconds,
    weights: Array.from({ length: K }, (_, k) => t[`heads.${k}.weight`]!.data),
    biases: Array.from({ length: K }, (_, k) => t[`heads.${k}.bias`]!.data),
    adam: Array.from({ length: m.adam }, (_, i) => t[`adam.${i}`]!.data),
  };
}

let stateClock = performance.now();

function saveState(dir: string, kind: HeadsKind, step: number, weights: tf.Variable[], biases: tf.Variable[], optimizer: tf.AdamOptimizer, vars: tf.Variable[]): void {
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  weights.forEach((w, k) => (tensors[`heads.${k}.weight`] = { shape: w.shape, data: w.dataSync() as Float32Array }));
  biases.forEach((b, k) => (tensors[`heads.${k}.bias`] = { shape: b.shape, data: b.dataSync() as Float32Array }));
  const adam = adamMoments(optimizer, vars);
  adam.forEach((a, i) => (tensors[`adam.${i}`] = { shape: [a.length], data: a }));
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, `${kind}-state.safetensors`), tensors);
  const prev = fs.existsSync(path.join(dir, `${kind}-state.json`)) ? (JSON.parse(fs.readFileSync(path.join(dir, `${kind}-state.json`), 'utf8')) as { wallSeconds: number }).wallSeconds : 0;
  const now = performance.now();
  fs.writeFileSync(path.join(dir, `${kind}-state.json`), JSON.stringify({ step, wallSeconds: prev + (now - stateClock) / 1000, adam: adam.length }));
  stateClock = now;
}

/**
 * Adam's moments, read through the optimizer's own slots (tfjs keeps them as
 * `accumulatedFirstMoment` / `accumulatedSecondMoment` per variable, in `vars` order), and
 * its step count as the last entry.
 */
interface AdamSlots {
  accumulatedFirstMoment: { variable: tf.Variable }[];
  accumulatedSecondMoment: { variable: tf.Variable }[];
  accBeta1: tf.Variable;
  accBeta2: tf.Variable;
}

export function adamMoments(optimizer: tf.AdamOptimizer, vars: tf.Variable[]): Float32Array[] {
  const s = optimizer as unknown as AdamSlots;
  if (s.accumulatedFirstMoment.length !== vars.length) return [];
  return [
    ...s.accumulatedFirstMoment.map((m) => m.variable.dataSync() as Float32Array),
    ...s.accumulatedSecondMoment.map((m) => m.variable.dataSync() as Float32Array),
    Float32Array.from([s.accBeta1.dataSync()[0]!, s.accBeta2.dataSync()[0]!]),
  ];
}

export function restoreAdam(optimizer: tf.AdamOptimizer, vars: tf.Variable[], saved: Float32Array[]): void {
  if (saved.length !== 2 * vars.length + 1) return;
  const s = optimizer as unknown as AdamSlots;
  s.accumulatedFirstMoment = vars.map((v, i) => ({ originalName: `${v.name}/m`, variable: variable(tf.tensor(saved[i]!, v.shape), false) })) as AdamSlots['accumulatedFirstMoment'];
  s.accumulatedSecondMoment = vars.map((v, i) => ({ originalName: `${v.name}/v`, variable: variable(tf.tensor(saved[vars.length + i]!, v.shape), false) })) as AdamSlots['accumulatedSecondMoment'];
  tf.tidy(() => {
    s.accBeta1.assign(tf.scalar(saved.at(-1)![0]!));
    s.accBeta2.assign(tf.scalar(saved.at(-1)![1]!));
  });
}

/** A variable owning its value (the tensor it was made from is released). */
export function variable<R extends tf.Rank>(t: tf.Tensor<R>, trainable = true): tf.Variable<R> {
  const v = tf.variable(t, trainable);
  t.dispose();
  return v;
}

export function shuffle(n: number, seed: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  let s = seed >>> 0 || 1;
  for (let i = n - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

export type { HeadsMeta };
