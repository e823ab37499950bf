/**
 * The training forward pass: the same maths as the runtime's reference forward
 * (runtime/model/reference.ts, Hugging Face Llama conventions) over a batch of windows
 * that all start at position 0, returning the (weighted) mean next-token cross-entropy.
 *
 * Four ops get hand-written gradients because of what the wasm backend does fast and
 * slow (ARCHITECTURE.md, and measured here on [4,1024,64]·[4,64,512]: the batched matMul
 * kernel 1.9 GFLOP/s, a loop of 2-D matMuls 33 GFLOP/s):
 * - matMul: the built-in gradient uses transposeA/B, 10–40× slower than an explicit
 *   transpose and a plain matMul;
 * - attention: per-block 2-D matMuls, no batched matMul, and no big transposes;
 * - the embedding lookup: gather's gradient needs UnsortedSegmentSum, which wasm lacks,
 *   so the rows are scatter-added in JS;
 * - the tied head with the loss: fused softmax, then softmax − one-hot in JS.
 *
 * @example
 * const loss = lossFn(cfg, params, batch, [0, 1, 2]); // scalar tensor
 */
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core's Node bundle registers no gradients; training needs them.
import './gradients.js';
import type { TrainModelConfig } from './config.js';

export type ParamTensors = Map<string, tf.Tensor>;

/** A batch of `rows` windows of `seqLen` input ids with their next-token targets. */
export interface Batch {
  rows: number;
  seqLen: number;
  ids: Int32Array; // (rows*seqLen)
  targets: Int32Array; // (rows*seqLen); -1 = no loss at this position
  /** Loss weight per target (e.g. down-weighted chat prompts); default 1. */
  weights?: Float32Array;
}

interface GradResult {
  value: tf.Tensor;
  gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor | tf.Tensor[];
}

/** tf.customGrad with the argument types this file uses (tfjs types them as a loose union). */
function custom(f: (...args: never[]) => GradResult): (...args: tf.Tensor[]) => tf.Tensor {
  return tf.customGrad(f as unknown as Parameters<typeof tf.customGrad>[0]) as (...args: tf.Tensor[]) => tf.Tensor;
}

/** a·b for rank-2 tensors; the gradient uses explicit transposes and plain matMuls. */
export const matmul = custom((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [sa, sb] = saved;
      return [tf.matMul(dy as tf.Tensor2D, tf.transpose(sb) as tf.Tensor2D), tf.matMul(tf.transpose(sa) as tf.Tensor2D, dy as tf.Tensor2D)];
    },
  };
}) as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor;

/**
 * Causal attention over (B·kvHeads) independent blocks, as one op with a hand-written
 * gradient: q (n, g·T, hd) already scaled by 1/√hd, k and v (n, T, hd), mask (g·T, T).
 * Each block is a 2-D matMul (wasm's batched matMul, Pack and Unpack are slow), and the
 * backward is arranged so that only (T, hd)-sized operands are ever transposed:
 * dVᵀ = dOᵀ·P and dKᵀ = Qᵀ·dS, never Pᵀ.
 */
export function attention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, mask: tf.Tensor): tf.Tensor {
  const f = custom((qq: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor, save: tf.GradSaveFunc) => {
    const n = qq.shape[0];
    const ks0 = tf.unstack(kk) as tf.Tensor2D[];
    const probs = tf.unstack(qq).map((qi, i) =>
      tf.tidy(() => tf.softmax(tf.add(tf.matMul(qi as tf.Tensor2D, tf.transpose(ks0[i]) as tf.Tensor2D), mask)) as tf.Tensor2D),
    );
    const vs0 = tf.unstack(vv) as tf.Tensor2D[];
    const value = tf.stack(probs.map((p, i) => tf.matMul(p, vs0[i])));
    // Tensors made here are disposed after the forward unless saved.
    save([qq, kk, vv, ...probs]);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const qs = tf.unstack(saved[0]) as tf.Tensor2D[];
        const ks = tf.unstack(saved[1]) as tf.Tensor2D[];
        const vs = tf.unstack(saved[2]) as tf.Tensor2D[];
        const probs = saved.slice(3, 3 + n) as tf.Tensor2D[];
        const dos = tf.unstack(dy) as tf.Tensor2D[];
        const dq: tf.Tensor[] = [];
        const dk: tf.Tensor[] = [];
        const dv: tf.Tensor[] = [];
        probs.forEach((p, i) => {
          // One block at a time, so a long window's (g·T, T) temporaries never pile up.
          const [a, b, c] = tf.tidy(() => {
            const doT = tf.transpose(dos[i]) as tf.Tensor2D; // (hd, g·T)
            const dvi = tf.transpose(tf.matMul(doT, p)); // (T, hd)
            const dp = tf.matMul(dos[i], tf.transpose(vs[i]) as tf.Tensor2D); // (g·T, T)
            const ds = tf.mul(p, tf.sub(dp, tf.sum(tf.mul(dp, p), -1, true))) as tf.Tensor2D;
            return [tf.matMul(ds, ks[i]), tf.transpose(tf.matMul(tf.transpose(qs[i]) as tf.Tensor2D, ds)), dvi];
          });
          dq.push(a); // (g·T, hd)
          dk.push(b); // (T, hd)
          dv.push(c); // (T, hd)
        });
        return [tf.stack(dq), tf.stack(dk), tf.stack(dv)];
      },
    };
  });
  return f(q, k, v) as tf.Tensor;
}

/** Rows of `table` (vocab, hidden) for `ids`; the gradient scatter-adds rows in JS. */
export function embed(table: tf.Tensor, ids: Int32Array): tf.Tensor2D {
  const [vocab, hidden] = table.shape;
  const f = custom((t: tf.Tensor) => ({
    value: tf.gather(t, tf.tensor1d(ids, 'int32')),
    gradFunc: (dy: tf.Tensor) => {
      const d = dy.dataSync() as Float32Array;
      const g = new Float32Array(vocab * hidden);
      for (let i = 0; i < ids.length; i++) {
        const src = i * hidden;
        const dst = ids[i] * hidden;
        for (let j = 0; j < hidden; j++) g[dst + j] += d[src + j];
      }
      return tf.tensor2d(g, [vocab, hidden]);
    },
  }));
  return f(table) as tf.Tensor2D;
}

/** Columns per block of the head's weight gradient: wide matMul outputs are slow on wasm. */
const HEAD_BLOCK = 512;

/**
 * The tied output head and the weighted mean cross-entropy in one op: logits =
 * hidden·embedᵀ, softmax on the backend, the loss and (softmax − one-hot) in JS (wasm's
 * exp over a (tokens, vocab) tensor is slower than its fused softmax). The loss is
 * Σ wᵢ·nllᵢ / Σ wᵢ; targets −1 count as weight 0.
 */
export function headLoss(hidden: tf.Tensor2D, table: tf.Tensor2D, targets: Int32Array, weights?: Float32Array): tf.Scalar {
  const [n] = hidden.shape;
  const [vocab] = table.shape;
  const w = new Float32Array(n);
  let wsum = 0;
  for (let i = 0; i < n; i++) {
    w[i] = targets[i] >= 0 ? (weights?.[i] ?? 1) : 0;
    wsum += w[i];
  }
  const denom = wsum > 0 ? wsum : 1;
  const f = custom((h: tf.Tensor, e: tf.Tensor, save: tf.GradSaveFunc) => {
    const probs = tf.softmax(tf.matMul(h as tf.Tensor2D, tf.transpose(e) as tf.Tensor2D));
    const p = probs.dataSync() as Float32Array;
    let loss = 0;
    for (let i = 0; i < n; i++) if (w[i] > 0) loss -= w[i] * Math.log(Math.max(p[i * vocab + targets[i]], 1e-30));
    save([h, e]);
    return {
      value: tf.scalar(loss / denom),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sh, se] = saved;
        const scale = dy.dataSync()[0] / denom;
        for (let i = 0; i < n; i++) {
          const row = p.subarray(i * vocab, (i + 1) * vocab);
          if (w[i] === 0) {
            row.fill(0);
            continue;
          }
          row[targets[i]] -= 1;
          const s = scale * w[i];
          for (let j = 0; j < vocab; j++) row[j] *= s;
        }
        const g = tf.tensor2d(p, [n, vocab]);
        const dh = tf.matMul(g, se as tf.Tensor2D);
        const hT = tf.transpose(sh) as tf.Tensor2D;
        const blocks: tf.Tensor[] = [];
        for (let c = 0; c < vocab; c += HEAD_BLOCK) {
          const width = Math.min(HEAD_BLOCK, vocab - c);
          const gc = new Float32Array(n * width);
          for (let i = 0; i < n; i++) gc.set(p.subarray(i * vocab + c, i * vocab + c + width), i * width);
          blocks.push(tf.matMul(hT, tf.tensor2d(gc, [n, width])));
        }
        return [dh, tf.transpose(tf.concat(blocks, 1))];
      },
    };
  });
  return f(hidden, table) as tf.Scalar;
}

/** Per-position negative log-likelihoods (no gradient), for evaluation. */
export function tokenNll(hidden: tf.Tensor2D, table: tf.Tensor2D, targets: Int32Array): Float32Array {
  const [n] = hidden.shape;
  const [vocab] = table.shape;
  const p = tf.tidy(() => tf.softmax(tf.matMul(hidden, tf.transpose(table) as tf.Tensor2D))).dataSync() as Float32Array;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = targets[i] >= 0 ? -Math.log(Math.max(p[i * vocab + targets[i]], 1e-30)) : 0;
  return out;
}

export function rmsNorm(x: tf.Tensor, w: tf.Tensor, eps: number): tf.Tensor {
  const ms = tf.mean(tf.square(x), -1, true);
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, eps))), w);
}

/**
 * cos and sin tables (seqLen, 1, headDim) in the rotate_half layout [freqs, freqs], and
 * the (headDim, headDim) matrix R with x·R = rotate_half(x) = [−x2, x1]: one small matMul
 * replaces two slices and a concat, which are slow on wasm for rank-4 tensors.
 */
export function ropeTables(cfg: TrainModelConfig, seqLen: number): { cos: tf.Tensor; sin: tf.Tensor; rot: tf.Tensor2D } {
  const hd = cfg.headDim;
  const half = hd / 2;
  const cos = new Float32Array(seqLen * hd);
  const sin = new Float32Array(seqLen * hd);
  for (let p = 0; p < seqLen; p++) {
    for (let i = 0; i < half; i++) {
      const invFreq = 1 / Math.pow(cfg.ropeTheta, (2 * i) / hd);
      const a = p * invFreq;
      cos[p * hd + i] = cos[p * hd + i + half] = Math.cos(a);
      sin[p * hd + i] = sin[p * hd + i + half] = Math.sin(a);
    }
  }
  const rot = new Float32Array(hd * hd);
  for (let i = 0; i < half; i++) {
    rot[(i + half) * hd + i] = -1; // out[i] = −x[i+half]
    rot[i * hd + i + half] = 1; // out[i+half] = x[i]
  }
  return { cos: tf.tensor3d(cos, [seqLen, 1, hd]), sin: tf.tensor3d(sin, [seqLen, 1, hd]), rot: tf.tensor2d(rot, [hd, hd]) };
}

/** Rotary embedding of x (B, T, heads, hd). */
function rope(x: tf.Tensor, k: ForwardConsts): tf.Tensor {
  const [B, T, H, hd] = x.shape;
  const rotated = tf.reshape(matmul(tf.reshape(x, [B * T * H, hd]), k.rot), [B, T, H, hd]);
  return tf.add(tf.mul(x, k.cos), tf.mul(rotated, k.sin));
}

/** Additive causal mask (groups*seqLen, seqLen): row r is query position r mod seqLen. */
function causalMask(seqLen: number, groups: number): tf.Tensor2D {
  const m = new Float32Array(groups * seqLen * seqLen);
  for (let g = 0; g < groups; g++) {
    for (let i = 0; i < seqLen; i++) {
      const row = (g * seqLen + i) * seqLen;
      for (let j = i + 1; j < seqLen; j++) m[row + j] = -1e9;
    }
  }
  return tf.tensor2d(m, [groups * seqLen, seqLen]);
}

/** Per-call constants, built once per window length and reused across steps. */
export interface ForwardConsts {
  seqLen: number;
  cos: tf.Tensor; // (seqLen, 1, headDim)
  sin: tf.Tensor; // (seqLen, 1, headDim)
  rot: tf.Tensor2D; // (headDim, headDim)
  mask: tf.Tensor2D; // (groups*seqLen, seqLen)
}

export function forwardConsts(cfg: TrainModelConfig, seqLen: number): ForwardConsts {
  return { seqLen, ...ropeTables(cfg, seqLen), mask: causalMask(seqLen, cfg.numHeads / cfg.numKvHeads) };
}

/**
 * Final hidden states (rows*seqLen, hidden) after the final norm, running only `layers`.
 * Skipped layers are the identity (LayerSkip's layer dropout), no rescaling.
 */
export function hiddenStates(cfg: TrainModelConfig, p: ParamTensors, batch: Batch, layers: number[], k: ForwardConsts): tf.Tensor2D {
  const B = batch.rows;
  const T = batch.seqLen;
  const nh = cfg.numHeads;
  const nkv = cfg.numKvHeads;
  const g = nh / nkv;
  const hd = cfg.headDim;
  const P = (name: string) => p.get(name)!;
  let x: tf.Tensor = embed(P('embed'), batch.ids); // (B*T, hidden)
  for (const l of layers) {
    const h = rmsNorm(x, P(`layers.${l}.inputNorm`), cfg.rmsNormEps);
    // q heads are grouped by their kv head (HF: head i reads kv head floor(i/g)), so each
    // kv head's g query heads become one (g*T)-row block: no key/value repetition.
    const q = rope(tf.reshape(matmul(h, P(`layers.${l}.wq`)), [B, T, nh, hd]), k); // (B, T, nh, hd)
    const kk = rope(tf.reshape(matmul(h, P(`layers.${l}.wk`)), [B, T, nkv, hd]), k); // (B, T, nkv, hd)
    const v = tf.reshape(matmul(h, P(`layers.${l}.wv`)), [B, T, nkv, hd]);
    const q3 = tf.reshape(tf.transpose(tf.reshape(q, [B, T, nkv, g, hd]), [0, 2, 3, 1, 4]), [B * nkv, g * T, hd]);
    const k3 = tf.reshape(tf.transpose(kk, [0, 2, 1, 3]), [B * nkv, T, hd]);
    const v3 = tf.reshape(tf.transpose(v, [0, 2, 1, 3]), [B * nkv, T, hd]);
    const o = tf.reshape(attention(tf.mul(q3, 1 / Math.sqrt(hd)), k3, v3, k.mask), [B, nkv, g, T, hd]);
    const o2 = tf.reshape(tf.transpose(o, [0, 3, 1, 2, 4]), [B * T, nh * hd]);
    x = tf.add(x, matmul(o2, P(`layers.${l}.wo`)));
    const h2 = rmsNorm(x, P(`layers.${l}.postNorm`), cfg.rmsNormEps);
    const gate = matmul(h2, P(`layers.${l}.wGate`));
    const up = matmul(h2, P(`layers.${l}.wUp`));
    const act = tf.mul(tf.mul(gate, tf.sigmoid(gate)), up);
    x = tf.add(x, matmul(act, P(`layers.${l}.wDown`)));
  }
  return rmsNorm(x, P('finalNorm'), cfg.rmsNormEps) as tf.Tensor2D;
}

export function lossFn(cfg: TrainModelConfig, p: ParamTensors, batch: Batch, layers: number[], k: ForwardConsts): tf.Scalar {
  return headLoss(hiddenStates(cfg, p, batch, layers, k), p.get('embed')! as tf.Tensor2D, batch.targets, batch.weights);
}
