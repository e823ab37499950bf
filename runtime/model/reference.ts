/**
 * The reference forward pass: the whole Llama-family model in one function, read top to
 * bottom, no cache and no batching (karpathy/llama2.c run.c, nanoGPT model.py). It is the
 * oracle the optimised forward (forward.ts) is tested against, so it favours being
 * obviously right over being fast. Hugging Face conventions throughout: RMSNorm
 * x·rsqrt(mean(x²)+eps)·w, rotary with rotate_half (first half / second half, not
 * interleaved), GQA by repeating kv heads, softmax scale 1/sqrt(headDim), SwiGLU MLP.
 *
 * @example
 * const out = referenceForward(model, [1, 5, 9]); // out.logits[t]: Float32Array(vocab)
 */
import * as tf from '@tensorflow/tfjs-core';
import { floatToHalf, halfToFloat } from '../kernels/blocks.js';
import { kvAsF16 } from './kv-mirror.js';
import { inverseFrequencies, ropeTables } from './rope.js';
import type { LoadedModel } from './types.js';

export interface ReferenceOptions {
  /** Rotary positions; default 0..ids.length-1. */
  positions?: number[];
  /** Layers to run (a skipped layer is the identity); default all. */
  layers?: number[];
  /** LazyLLM pruning: before layer fromLayer, keep only these token indices (into ids). */
  prune?: { fromLayer: number; keep: number[] }[];
  /**
   * Pairs that may not attend on top of causality: true when token `query` must not see
   * token `key` at `layer` (indices into ids). It states which tokens ran before another
   * was revived (LazyLLM's Aux Cache: the earlier ones never saw its later-layer keys).
   */
  blind?: (layer: number, query: number, key: number) => boolean;
  /**
   * Round keys (after rotary) and values to f16 before attention, as the forward's KV
   * mirror keeps them for models on quantized blocks (kv-mirror.ts kvAsF16); default: as
   * the forward does for this model.
   */
  kvF16?: boolean;
}

/** A plain object (no Map), so that it may be returned from tf.tidy. */
export type ReferenceResult = {
  /** Logits (vocab) for each token still live after the last layer, in order. */
  logits: Float32Array[];
  /** Final hidden states (after the final norm), same rows. */
  hidden: Float32Array[];
  /** Indices (into ids) of the rows above. */
  tokenIndices: number[];
  /** Per run layer (by layer index): the last token's attention over the live tokens, mean over heads. */
  attention: Record<number, Float32Array>;
};

function rmsNorm(x: tf.Tensor2D, w: tf.Tensor1D, eps: number): tf.Tensor2D {
  // x: (T, hidden) -> (T, hidden)
  const ms = tf.mean(tf.square(x), -1, true); // (T, 1)
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, eps))), w) as tf.Tensor2D;
}

/** Each value rounded to the nearest f16 (ties to even), clamped to ±65504 as MatmulKernels.store does. */
function roundToHalf(x: tf.Tensor3D): tf.Tensor3D {
  const d = Float32Array.from(x.dataSync(), (a) => halfToFloat(floatToHalf(Math.max(-65504, Math.min(65504, a)))));
  return tf.tensor3d(d, x.shape);
}

function rotateHalf(x: tf.Tensor3D): tf.Tensor3D {
  // x: (heads, T, D) -> cat(-x[..., D/2:], x[..., :D/2])
  const d = x.shape[2];
  const [x1, x2] = tf.split(x, [d / 2, d / 2], 2); // each (heads, T, D/2)
  return tf.concat([tf.neg(x2!), x1!], 2) as tf.Tensor3D;
}

function linear(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D | null): tf.Tensor2D {
  // x: (T, in), w: (in, out), b: (out) -> (T, out)
  const y = tf.matMul(x, w) as tf.Tensor2D;
  return b === null ? y : (tf.add(y, b) as tf.Tensor2D);
}

export function referenceForward(model: LoadedModel, ids: number[], opts: ReferenceOptions = {}): ReferenceResult {
  const c = model.config;
  const W = model.weights;
  const H = c.numHeads;
  const KV = c.numKvHeads;
  const D = c.headDim;
  const layers = opts.layers ?? Array.from({ length: c.numLayers }, (_, l) => l);
  const kvF16 = opts.kvF16 ?? kvAsF16(model);
  const attention: Record<number, Float32Array> = {};
  let live = ids.map((_, i) => i); // indices into ids of the tokens still computed
  const allPositions = opts.positions ?? ids.map((_, i) => i);
  const inv = inverseFrequencies(c);

  const out = tf.tidy(() => {
    let x = (
      W.embed instanceof tf.Tensor ? tf.gather(W.embed, tf.tensor1d(ids, 'int32')) : tf.tensor2d(W.embed.rows(ids), [ids.length, c.hiddenSize])
    ) as tf.Tensor2D; // (T, hidden)
    const attnKept: tf.Tensor1D[] = [];
    for (const l of layers) {
      for (const p of opts.prune ?? []) {
        if (p.fromLayer <= l && live.some((i) => !p.keep.includes(i))) {
          const rows = live.flatMap((i, r) => (p.keep.includes(i) ? [r] : []));
          x = tf.gather(x, tf.tensor1d(rows, 'int32')); // (Tlive, hidden)
          live = rows.map((r) => live[r]!);
        }
      }
      const T = live.length;
      const L = W.layers[l]!;
      // Rotary tables for the live positions, duplicated over both halves: (1, T, D)
      const { cos: c2, sin: s2 } = ropeTables(inv, live.map((i) => allPositions[i]!));
      const cos = tf.reshape(tf.concat([tf.tensor2d(c2, [T, D / 2]), tf.tensor2d(c2, [T, D / 2])], 1), [1, T, D]);
      const sin = tf.reshape(tf.concat([tf.tensor2d(s2, [T, D / 2]), tf.tensor2d(s2, [T, D / 2])], 1), [1, T, D]);

      // Attention block
      const h = rmsNorm(x, L.inputNorm, c.rmsNormEps); // (T, hidden)
      let q = tf.transpose(tf.reshape(linear(h, L.wq, L.bq), [T, H, D]), [1, 0, 2]) as tf.Tensor3D; // (H, T, D)
      let k = tf.transpose(tf.reshape(linear(h, L.wk, L.bk), [T, KV, D]), [1, 0, 2]) as tf.Tensor3D; // (KV, T, D)
      let v = tf.transpose(tf.reshape(linear(h, L.wv, L.bv), [T, KV, D]), [1, 0, 2]) as tf.Tensor3D; // (KV, T, D)
      q = tf.add(tf.mul(q, cos), tf.mul(rotateHalf(q), sin));
      k = tf.add(tf.mul(k, cos), tf.mul(rotateHalf(k), sin));
      if (kvF16) {
        k = roundToHalf(k);
        v = roundToHalf(v);
      }
      // GQA: query head j uses kv head floor(j / (H/KV)).
      const group = tf.tensor1d(Array.from({ length: H }, (_, j) => Math.floor(j / (H / KV))), 'int32');
      k = tf.gather(k, group); // (H, T, D)
      v = tf.gather(v, group); // (H, T, D)
      let scores = tf.div(tf.matMul(q, tf.transpose(k, [0, 2, 1])), Math.sqrt(D)); // (H, T, T)
      const causal = new Float32Array(T * T);
      for (let i = 0; i < T; i++) {
        for (let j = 0; j < T; j++) if (j > i || opts.blind?.(l, live[i]!, live[j]!)) causal[i * T + j] = -Infinity;
      }
      scores = tf.add(scores, tf.tensor2d(causal, [T, T]));
      const probs = tf.softmax(scores); // (H, T, T)
      attnKept.push(tf.mean(tf.slice(probs, [0, T - 1, 0], [H, 1, T]), [0, 1]) as tf.Tensor1D); // (T)
      const y = tf.reshape(tf.transpose(tf.matMul(probs, v), [1, 0, 2]), [T, H * D]); // (T, H*D)
      x = tf.add(x, linear(y as tf.Tensor2D, L.wo, L.bo)); // (T, hidden)

      // MLP block: down(silu(gate(h)) * up(h))
      const h2 = rmsNorm(x, L.postNorm, c.rmsNormEps); // (T, hidden)
      const gate = tf.matMul(h2, L.wGate); // (T, inter)
      const up = tf.matMul(h2, L.wUp); // (T, inter)
      const act = tf.mul(tf.mul(gate, tf.sigmoid(gate)), up); // (T, inter)
      x = tf.add(x, tf.matMul(act, L.wDown)); // (T, hidden)
    }
    const hidden = rmsNorm(x, W.finalNorm, c.rmsNormEps); // (T, hidden)
    const logits = tf.matMul(hidden, W.lmHead); // (T, vocab)
    return { logits, hidden, attnKept };
  });

  const rows = (t: tf.Tensor, n: number): Float32Array[] => {
    const data = t.dataSync() as Float32Array;
    const width = data.length / n;
    return Array.from({ length: n }, (_, r) => data.slice(r * width, (r + 1) * width));
  };
  const result: ReferenceResult = {
    logits: rows(out.logits, live.length),
    hidden: rows(out.hidden, live.length),
    tokenIndices: live,
    attention,
  };
  layers.forEach((l, i) => (attention[l] = out.attnKept[i]!.dataSync() as Float32Array));
  tf.dispose([out.logits, out.hidden, ...out.attnKept]);
  return result;
}
