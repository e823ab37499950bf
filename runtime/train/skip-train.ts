/**
 * Adapting a model to its kept layers (Unified Layer Skipping, TECHNIQUES §3): LoRA on the
 * q/k/v/o/gate/up/down projections of the layers a target r keeps, trained by
 * self-distillation so that the kept-layers-only forward matches the FULL model's
 * next-token distribution (KL(full ‖ kept), temperature 1) on the model's own greedy
 * continuations of the project's instruction prompts (skip-data.ts).
 *
 * The student sees exactly what decoding gives it at run time. A sample is split at a
 * position s: the prefix [0, s) is the full model's (its KV at every kept layer comes from
 * the runtime's own forward, the teacher, as constants), and the student computes the
 * next `window` tokens on the kept layers only, attending to that prefix KV and to its own.
 * s = the prompt length is lossy decoding (prefill at full depth, every generated token
 * shallow); s inside the continuation is a self-speculative draft (the verified prefix is
 * the full model's). Half the samples of a step take each.
 *
 * Why LoRA and not a full fine-tune: 15 kept layers of SmolLM2 hold 53M parameters; Adam's
 * moments for them do not fit the time (nor the wasm heap) of a CPU session, LoRA rank 8
 * holds 1.2M. The base weights are frozen: their products get a gradient for the input
 * only (x·W's dW would cost as much as the forward and is never used).
 *
 * Resumable and bit-identical: the LoRA factors, Adam's moments and the step are
 * checkpointed; sample order and splits depend only on the seed and the step.
 *
 * @example
 * const run = trainSkip(model, train, heldOut, { targetSpeedup: 2, steps: 100, stateDir: '.skein/skip/smollm2/r2' });
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { readSafetensors, writeSafetensors, type FloatTensor } from '../checkpoint/safetensors.js';
import { forward } from '../model/forward.js';
import { mulberry32 } from '../model/random.js';
import { inverseFrequencies, ropeTables } from '../model/rope.js';
import type { LoadedModel } from '../model/types.js';
import { LORA_PROJECTIONS, projectionShape, type LoraProjection, type SkipAdapter, type SkipTraining } from '../adapters/skip-adapter.js';
import { unifiedLayers } from '../stages/layer-selection.js';
import { attention, matmul, rmsNorm } from './forward.js';
import { adamMoments, restoreAdam, shuffle, variable } from './heads-train.js';
import './gradients.js';

/** A prompt and the full model's greedy continuation of it. */
export interface SkipSample {
  ids: number[];
  promptLength: number;
}

export interface SkipTrainOptions {
  targetSpeedup: number;
  steps: number;
  /** Samples per step (default 4). */
  batch?: number;
  /** Tokens the student runs per sample (default 48). */
  window?: number;
  rank?: number;
  /** LoRA's alpha: A·B is scaled by alpha / rank (default 2·rank). */
  alpha?: number;
  lr?: number;
  seed?: number;
  stateDir: string;
  checkpointEvery?: number;
  onStep?: (step: number, kl: number) => void;
}

/** Defaults with their reason: rank 8 is LoRA's usual; 48 tokens cover a draft run and most of a short answer. */
const DEFAULTS = { batch: 4, window: 48, rank: 8, lr: 1e-3, seed: 1, checkpointEvery: 10 };

/** One sample's part of a step: where it splits and how many tokens the student runs. */
interface Piece {
  ids: number[];
  split: number;
  rows: number;
}

/** The trainable factors: per kept layer, per projection. */
type Lora = Record<LoraProjection, { a: tf.Variable; b: tf.Variable }>[];

/** Frozen tensors the student reads (the base model's own, plus transposes made once). */
interface Frozen {
  layers: number[];
  /** Per kept layer and projection, Wᵀ (out, in): the input gradient is dy·Wᵀ. */
  transposed: Record<LoraProjection, tf.Tensor2D>[];
  lmHeadT: tf.Tensor2D; // (vocab, hidden)
  rot: tf.Tensor2D; // (headDim, headDim): x·R = rotate_half(x)
  inv: Float64Array;
}

/** Trains (or resumes) the LoRA for one target; returns the adapter with held-out figures before and after. */
export function trainSkip(model: LoadedModel, train: SkipSample[], heldOut: SkipSample[], o: SkipTrainOptions): SkipAdapter {
  const c = model.config;
  const layers = unifiedLayers(c.numLayers, o.targetSpeedup);
  const rank = o.rank ?? DEFAULTS.rank;
  const scale = (o.alpha ?? 2 * rank) / rank;
  const B = o.batch ?? DEFAULTS.batch;
  const window = o.window ?? DEFAULTS.window;
  const seed = o.seed ?? DEFAULTS.seed;
  const usable = train.filter((s) => s.ids.length - s.promptLength >= 2);
  if (usable.length === 0) throw new RangeError('no training sample has a continuation of 2 or more tokens');
  const frozen = freeze(model, layers);
  const state = loadState(o.stateDir, model, layers, rank, seed);
  const lora = state.lora;
  const vars = lora.flatMap((pairs) => LORA_PROJECTIONS.flatMap((p) => [pairs[p].a, pairs[p].b]));
  const optimizer = tf.train.adam(o.lr ?? DEFAULTS.lr);
  if (state.adam !== null) restoreAdam(optimizer, vars, state.adam);
  const before = state.before ?? evaluateSkip(model, heldOut, null, frozen, scale, window);
  const order = shuffle(usable.length, seed);
  let step = state.step;
  let clock = performance.now();
  let wall = state.wallSeconds;
  for (; step < o.steps; step++) {
    const pieces = piecesOf(usable, order, step, B, window, seed);
    const teacher = teach(model, pieces, layers);
    const loss = optimizer.minimize(() => klLoss(studentHidden(model, frozen, lora, scale, pieces, teacher.past), model, frozen, teacher.probs), true, vars)!;
    const kl = loss.dataSync()[0]!;
    tf.dispose([loss, ...teacher.tensors]);
    o.onStep?.(step + 1, kl);
    if ((step + 1) % (o.checkpointEvery ?? DEFAULTS.checkpointEvery) === 0) {
      wall += (performance.now() - clock) / 1000;
      clock = performance.now();
      saveState(o.stateDir, step + 1, wall, layers, lora, optimizer, vars, before);
    }
  }
  wall += (performance.now() - clock) / 1000;
  saveState(o.stateDir, step, wall, layers, lora, optimizer, vars, before);
  const after = evaluateSkip(model, heldOut, lora, frozen, scale, window);
  const adapter: SkipAdapter = {
    meta: {
      format: 'skein-skip-adapter',
      base: { file: path.basename(model.source), sha256: '' },
      targetSpeedup: o.targetSpeedup,
      numLayers: c.numLayers,
      layers,
      rank,
      scale,
      projections: [...LORA_PROJECTIONS],
      training: {
        samples: usable.length,
        heldOutSamples: heldOut.length,
        steps: step,
        wallSeconds: Math.round(wall),
        klBefore: round4(before.kl),
        klAfter: round4(after.kl),
        pplBefore: round4(before.ppl),
        pplAfter: round4(after.ppl),
        pplFull: round4(after.pplFull),
        agreementBefore: round4(before.agreement),
        agreementAfter: round4(after.agreement),
      } satisfies SkipTraining,
    },
    lora: lora.map((pairs) => {
      const out = {} as SkipAdapter['lora'][number];
      for (const p of LORA_PROJECTIONS) out[p] = { a: pairs[p].a.dataSync().slice() as Float32Array, b: pairs[p].b.dataSync().slice() as Float32Array };
      return out;
    }),
  };
  tf.dispose(vars);
  optimizer.dispose();
  disposeFrozen(frozen);
  return adapter;
}

const round4 = (x: number) => Number(x.toFixed(4));

/** The samples and splits of one step: a function of the seed and the step only (so resume repeats it). */
function piecesOf(samples: SkipSample[], order: number[], step: number, batch: number, window: number, seed: number): Piece[] {
  const rng = mulberry32((seed * 1_000_003 + step) >>> 0);
  return Array.from({ length: batch }, (_, i) => {
    const s = samples[order[(step * batch + i) % samples.length]!]!;
    const last = s.ids.length - 1; // the last token has no next token in the sample: never a student row
    // Even pieces: lossy decoding (split at the prompt). Odd: a draft inside the continuation.
    const split = i % 2 === 0 ? s.promptLength : s.promptLength + Math.floor(rng() * Math.max(1, last - s.promptLength));
    return { ids: s.ids, split, rows: Math.max(1, Math.min(window, last - split)) };
  });
}

interface Teacher {
  /** Per piece, per kept layer index: the prefix's keys and values as (kvHeads, prefix, headDim). */
  past: { k: tf.Tensor3D; v: tf.Tensor3D }[][];
  /** Per piece: the full model's next-token probabilities at each student row, (rows, vocab) flat. */
  probs: Float32Array[];
  tensors: tf.Tensor[];
}

/** The full model on every piece (the runtime's own forward): prefix KV and next-token distributions. */
function teach(model: LoadedModel, pieces: Piece[], layers: number[]): Teacher {
  const c = model.config;
  const pre = forward(model, pieces.map((p) => ({ ids: p.ids.slice(0, p.split), logits: 'none' as const })));
  const post = forward(
    model,
    pieces.map((p, i) => ({
      ids: p.ids.slice(p.split, p.split + p.rows),
      past: pre[i]!.newKv.map((e) => ({ k: [e!.k], v: [e!.v] })),
      logits: 'all' as const,
    })),
  );
  const tensors: tf.Tensor[] = [];
  const past = pre.map((r) =>
    layers.map((l) => {
      const e = r.newKv[l]!;
      const P = e.k.shape[0];
      const heads = (t: tf.Tensor2D) => tf.tidy(() => tf.transpose(tf.reshape(t, [P, c.numKvHeads, c.headDim]), [1, 0, 2]) as tf.Tensor3D);
      const kv = { k: heads(e.k), v: heads(e.v) };
      tensors.push(kv.k, kv.v);
      return kv;
    }),
  );
  for (const r of [...pre, ...post]) for (const e of r.newKv) if (e) tf.dispose([e.k, e.v]);
  const probs = post.map((r) => {
    const V = c.vocabSize;
    const out = new Float32Array(r.logits.length * V);
    r.logits.forEach((row, t) => softmaxInto(row, out.subarray(t * V, (t + 1) * V)));
    return out;
  });
  return { past, probs, tensors };
}

function softmaxInto(logits: Float32Array, out: Float32Array): void {
  let max = -Infinity;
  for (const x of logits) if (x > max) max = x;
  let sum = 0;
  for (let j = 0; j < logits.length; j++) sum += out[j] = Math.exp(logits[j]! - max);
  for (let j = 0; j < logits.length; j++) out[j]! /= sum;
}

function freeze(model: LoadedModel, layers: number[]): Frozen {
  const c = model.config;
  const D = c.headDim;
  const r = new Float32Array(D * D);
  for (let j = 0; j < D / 2; j++) {
    r[(j + D / 2) * D + j] = -1; // out[j] = −x[j + D/2]
    r[j * D + j + D / 2] = 1; // out[j + D/2] = x[j]
  }
  return {
    layers,
    transposed: layers.map((l) => {
      const L = model.weights.layers[l]!;
      const out = {} as Record<LoraProjection, tf.Tensor2D>;
      for (const p of LORA_PROJECTIONS) out[p] = tf.transpose(L[p]);
      return out;
    }),
    lmHeadT: tf.transpose(model.weights.lmHead),
    rot: tf.tensor2d(r, [D, D]),
    inv: inverseFrequencies(c),
  };
}

function disposeFrozen(f: Frozen): void {
  for (const t of f.transposed) tf.dispose(Object.values(t));
  tf.dispose([f.lmHeadT, f.rot]);
}

/** x·W for a frozen W: the gradient reaches x only (dy·Wᵀ with Wᵀ made once). */
function frozenLinear(x: tf.Tensor2D, w: tf.Tensor2D, wT: tf.Tensor2D): tf.Tensor2D {
  const f = tf.customGrad(((xx: tf.Tensor2D) => ({
    value: tf.matMul(xx, w),
    gradFunc: (dy: tf.Tensor2D) => tf.matMul(dy, wT),
  })) as unknown as Parameters<typeof tf.customGrad>[0]);
  return f(x) as tf.Tensor2D;
}

/**
 * The student: the pieces' window tokens through the kept layers with LoRA (null: none),
 * each attending to its prefix's full-model KV; final-normed hidden rows, pieces packed
 * in order, (Σ rows, hidden).
 */
function studentHidden(model: LoadedModel, f: Frozen, lora: Lora | null, scale: number, pieces: Piece[], past: Teacher['past']): tf.Tensor2D {
  const c = model.config;
  const nh = c.numHeads;
  const nkv = c.numKvHeads;
  const g = nh / nkv;
  const hd = c.headDim;
  const ids = pieces.flatMap((p) => p.ids.slice(p.split, p.split + p.rows));
  const positions = pieces.flatMap((p) => Array.from({ length: p.rows }, (_, t) => p.split + t));
  const N = ids.length;
  const { cos, sin } = rope2(f.inv, positions, hd); // (N, 1, hd)
  const rope = (x: tf.Tensor2D, heads: number) => {
    const x3 = tf.reshape(x, [N * heads, hd]);
    const rotated = tf.reshape(matmul(x3, f.rot), [N, heads, hd]);
    return tf.add(tf.mul(tf.reshape(x, [N, heads, hd]), cos), tf.mul(rotated, sin)) as tf.Tensor3D; // (N, heads, hd)
  };
  const E = model.weights.embed;
  let x: tf.Tensor2D = E instanceof tf.Tensor ? tf.gather(E, tf.tensor1d(ids, 'int32')) : tf.tensor2d(E.rows(ids), [N, c.hiddenSize]);
  f.layers.forEach((l, i) => {
    const L = model.weights.layers[l]!;
    const lin = (h: tf.Tensor2D, p: LoraProjection, bias: tf.Tensor1D | null) => {
      let y = frozenLinear(h, L[p], f.transposed[i]![p]);
      if (lora !== null) y = tf.add(y, tf.mul(matmul(matmul(h, lora[i]![p].a), lora[i]![p].b), scale));
      return (bias === null ? y : tf.add(y, bias)) as tf.Tensor2D;
    };
    const h = rmsNorm(x, L.inputNorm, c.rmsNormEps) as tf.Tensor2D;
    const q = rope(lin(h, 'wq', L.bq), nh);
    const k = rope(lin(h, 'wk', L.bk), nkv);
    const v = tf.reshape(lin(h, 'wv', L.bv), [N, nkv, hd]);
    let row = 0;
    const outs = pieces.map((p, j) => {
      const T = p.rows;
      const P = past[j]![i]!.k.shape[1];
      const qi = tf.reshape(tf.transpose(tf.reshape(tf.slice(q, [row, 0, 0], [T, nh, hd]), [T, nkv, g, hd]), [1, 2, 0, 3]), [nkv, g * T, hd]);
      const ki = tf.concat([past[j]![i]!.k, tf.transpose(tf.slice(k, [row, 0, 0], [T, nkv, hd]), [1, 0, 2])], 1); // (nkv, P+T, hd)
      const vi = tf.concat([past[j]![i]!.v, tf.transpose(tf.slice(v, [row, 0, 0], [T, nkv, hd]), [1, 0, 2])], 1);
      const o = attention(tf.mul(qi, 1 / Math.sqrt(hd)), ki, vi, windowMask(g, T, P)); // (nkv, g·T, hd)
      row += T;
      return tf.reshape(tf.transpose(tf.reshape(o, [nkv, g, T, hd]), [2, 0, 1, 3]), [T, nh * hd]);
    });
    const attn = (outs.length === 1 ? outs[0]! : tf.concat(outs, 0)) as tf.Tensor2D;
    x = tf.add(x, lin(attn, 'wo', L.bo));
    const h2 = rmsNorm(x, L.postNorm, c.rmsNormEps) as tf.Tensor2D;
    const gate = lin(h2, 'wGate', null);
    const act = tf.mul(tf.mul(gate, tf.sigmoid(gate)), lin(h2, 'wUp', null)) as tf.Tensor2D;
    x = tf.add(x, lin(act, 'wDown', null));
  });
  return rmsNorm(x, model.weights.finalNorm, c.rmsNormEps) as tf.Tensor2D;
}

/** cos and sin (rows, 1, headDim) in the rotate-half layout, for arbitrary positions. */
function rope2(inv: Float64Array, positions: number[], hd: number): { cos: tf.Tensor3D; sin: tf.Tensor3D } {
  const half = hd / 2;
  const { cos: c0, sin: s0 } = ropeTables(inv, positions);
  const cos = new Float32Array(positions.length * hd);
  const sin = new Float32Array(positions.length * hd);
  for (let t = 0; t < positions.length; t++) {
    for (let i = 0; i < half; i++) {
      cos[t * hd + i] = cos[t * hd + half + i] = c0[t * half + i]!;
      sin[t * hd + i] = sin[t * hd + half + i] = s0[t * half + i]!;
    }
  }
  return { cos: tf.tensor3d(cos, [positions.length, 1, hd]), sin: tf.tensor3d(sin, [positions.length, 1, hd]) };
}

/** Additive mask (g·T, P+T): the whole prefix is visible, the window causally. */
function windowMask(g: number, T: number, P: number): tf.Tensor2D {
  const m = new Float32Array(g * T * (P + T));
  for (let gi = 0; gi < g; gi++) {
    for (let t = 0; t < T; t++) {
      const row = (gi * T + t) * (P + T);
      for (let j = P + t + 1; j < P + T; j++) m[row + j] = -1e9;
    }
  }
  return tf.tensor2d(m, [g * T, P + T]);
}

/**
 * Mean KL(teacher ‖ student) over the rows, as one op: the student's logits through the
 * frozen LM head, softmax on the backend, the KL and its gradient (p_student − p_teacher)
 * in JS.
 */
function klLoss(hidden: tf.Tensor2D, model: LoadedModel, f: Frozen, teacher: Float32Array[]): tf.Scalar {
  const V = model.config.vocabSize;
  const pt = concatRows(teacher);
  const n = hidden.shape[0];
  const op = tf.customGrad(((h: tf.Tensor2D) => {
    const ps = tf.tidy(() => tf.softmax(tf.matMul(h, model.weights.lmHead))).dataSync() as Float32Array;
    let kl = 0;
    for (let i = 0; i < pt.length; i++) if (pt[i]! > 0) kl += pt[i]! * (Math.log(pt[i]!) - Math.log(Math.max(ps[i]!, 1e-30)));
    return {
      value: tf.scalar(kl / n),
      gradFunc: (dy: tf.Scalar) => {
        const s = dy.dataSync()[0]! / n;
        const grad = new Float32Array(n * V);
        for (let i = 0; i < grad.length; i++) grad[i] = (ps[i]! - pt[i]!) * s;
        return tf.matMul(tf.tensor2d(grad, [n, V]), f.lmHeadT);
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(hidden) as tf.Scalar;
}

function concatRows(parts: Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export interface SkipEvaluation {
  kl: number;
  /** exp(mean NLL) of the student on the continuation tokens; the full model's beside. */
  ppl: number;
  pplFull: number;
  agreement: number;
  positions: number;
}

/**
 * Held-out figures in the lossy setting (prefix = the prompt at full depth, the
 * continuation on the kept layers, teacher-forced): KL, the perplexity of the
 * continuation tokens and argmax agreement with the full model. `lora` null: unadapted.
 */
export function evaluateSkip(model: LoadedModel, samples: SkipSample[], lora: Lora | null, f: Frozen, scale: number, window: number): SkipEvaluation {
  const V = model.config.vocabSize;
  let kl = 0;
  let nll = 0;
  let nllFull = 0;
  let agree = 0;
  let n = 0;
  for (const s of samples) {
    const last = s.ids.length - 1;
    if (last - s.promptLength < 1) continue;
    const piece: Piece = { ids: s.ids, split: s.promptLength, rows: Math.min(window, last - s.promptLength) };
    const teacher = teach(model, [piece], f.layers);
    const probs = tf.tidy(() => tf.softmax(tf.matMul(studentHidden(model, f, lora, scale, [piece], teacher.past), model.weights.lmHead)));
    const ps = probs.dataSync() as Float32Array;
    tf.dispose([probs, ...teacher.tensors]);
    const pt = teacher.probs[0]!;
    for (let t = 0; t < piece.rows; t++) {
      const next = s.ids[piece.split + t + 1]!;
      const a = pt.subarray(t * V, (t + 1) * V);
      const b = ps.subarray(t * V, (t + 1) * V);
      for (let j = 0; j < V; j++) if (a[j]! > 0) kl += a[j]! * (Math.log(a[j]!) - Math.log(Math.max(b[j]!, 1e-30)));
      nll -= Math.log(Math.max(b[next]!, 1e-30));
      nllFull -= Math.log(Math.max(a[next]!, 1e-30));
      if (argmax(a) === argmax(b)) agree++;
      n++;
    }
  }
  const d = Math.max(1, n);
  return { kl: kl / d, ppl: Math.exp(nll / d), pplFull: Math.exp(nllFull / d), agreement: agree / d, positions: n };
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

// ------------------------------------------------------------------ resumable state

interface SkipState {
  step: number;
  wallSeconds: number;
  lora: Lora;
  adam: Float32Array[] | null;
  before: SkipEvaluation | null;
}

const STATE = 'skip-state';

/** Fresh factors: A uniform in ±1/√in (LoRA's Kaiming-uniform), B zero, so training starts at the base model. */
function loadState(dir: string, model: LoadedModel, layers: number[], rank: number, seed: number): SkipState {
  const c = model.config;
  const file = path.join(dir, `${STATE}.safetensors`);
  const metaFile = path.join(dir, `${STATE}.json`);
  const saved = fs.existsSync(file) && fs.existsSync(metaFile) ? readSafetensors(file) : null;
  const meta = saved ? (JSON.parse(fs.readFileSync(metaFile, 'utf8')) as { step: number; wallSeconds: number; adam: number; rank: number; layers: number[]; before: SkipEvaluation }) : null;
  if (meta !== null && (meta.rank !== rank || JSON.stringify(meta.layers) !== JSON.stringify(layers))) {
    throw new RangeError(`${metaFile} is for rank ${meta.rank} and layers [${meta.layers.join(', ')}]: use another --state folder`);
  }
  const rng = mulberry32(seed);
  const lora: Lora = layers.map((l) => {
    const pairs = {} as Lora[number];
    for (const p of LORA_PROJECTIONS) {
      const [inDim, outDim] = projectionShape(c, p);
      const bound = 1 / Math.sqrt(inDim);
      const a = saved?.[`layers.${l}.${p}.a`]?.data ?? Float32Array.from({ length: inDim * rank }, () => (2 * rng() - 1) * bound);
      const b = saved?.[`layers.${l}.${p}.b`]?.data ?? new Float32Array(rank * outDim);
      pairs[p] = { a: variable(tf.tensor2d(a, [inDim, rank])), b: variable(tf.tensor2d(b, [rank, outDim])) };
    }
    return pairs;
  });
  return {
    step: meta?.step ?? 0,
    wallSeconds: meta?.wallSeconds ?? 0,
    lora,
    adam: meta ? Array.from({ length: meta.adam }, (_, i) => saved![`adam.${i}`]!.data) : null,
    before: meta?.before ?? null,
  };
}

function saveState(dir: string, step: number, wallSeconds: number, layers: number[], lora: Lora, optimizer: tf.AdamOptimizer, vars: tf.Variable[], before: SkipEvaluation): void {
  const tensors: Record<string, FloatTensor> = {};
  lora.forEach((pairs, i) => {
    for (const p of LORA_PROJECTIONS) {
      const { a, b } = pairs[p];
      tensors[`layers.${layers[i]}.${p}.a`] = { shape: a.shape, data: a.dataSync() as Float32Array };
      tensors[`layers.${layers[i]}.${p}.b`] = { shape: b.shape, data: b.dataSync() as Float32Array };
    }
  });
  const adam = adamMoments(optimizer, vars);
  adam.forEach((m, i) => (tensors[`adam.${i}`] = { shape: [m.length], data: m }));
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, `${STATE}.safetensors`), tensors);
  const rank = lora[0]?.wq.a.shape[1] ?? 0;
  fs.writeFileSync(path.join(dir, `${STATE}.json`), JSON.stringify({ step, wallSeconds, adam: adam.length, rank, layers, before }));
}

export const _internal = { studentHidden, teach, freeze, disposeFrozen, klLoss };
