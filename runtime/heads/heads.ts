/**
 * Speculative heads at decode time: from the base model's final hidden state at the last
 * accepted position, each head proposes its ranked candidates for a token further ahead
 * (head k: the token k+2 positions after that state; the base model's own logits give the
 * one right after). One call serves every speculating sequence of a scheduler step: the
 * heads run on all their rows at once and the model's LM head projects every head output
 * in one (rows·K, hidden)·(hidden, V') product, on the forward's own path (block kernels
 * for GGUF weights), V' being the heads' vocabulary when they have one (projection.ts).
 *
 * Medusa head k: z_k = h + SiLU(h·W_k + b_k). Cerberus head k > 0 also reads head k−1's
 * output: z_k = h + SiLU([h; z_{k−1}]·W_k + b_k), so later heads know what earlier ones
 * predicted while all still run in one pass. `headOutputs` is shared with training
 * (runtime/train/heads), so both run the same maths.
 *
 * @example
 * const heads = new SpeculativeHeads(model, readHeads(dir, model.config));
 * const [perHead] = heads.candidates([hiddenRow], [3, 2, 1]); // perHead[k]: head k's top tokens
 * heads.dispose();
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LoadedModel } from '../model/types.js';
import type { HeadsData, HeadsKind, HeadsMeta } from './files.js';
import { headProjection, type HeadProjection } from './projection.js';

/** Every head's output for hidden rows h (R, hidden): K × (R, hidden). Training passes a matMul with its own gradient. */
export function headOutputs(
  kind: HeadsKind,
  h: tf.Tensor2D,
  weights: readonly tf.Tensor2D[],
  biases: readonly tf.Tensor1D[],
  matMul: (x: tf.Tensor2D, w: tf.Tensor2D) => tf.Tensor2D = tf.matMul,
): tf.Tensor2D[] {
  const outs: tf.Tensor2D[] = [];
  weights.forEach((w, k) => {
    const input = kind === 'cerberus' && k > 0 ? (tf.concat([h, outs[k - 1]!], 1) as tf.Tensor2D) : h; // (R, in)
    const a = tf.add(matMul(input, w), biases[k]!) as tf.Tensor2D; // (R, hidden)
    outs.push(tf.add(h, tf.mul(a, tf.sigmoid(a))) as tf.Tensor2D); // (R, hidden): h + SiLU(a)
  });
  return outs;
}

export class SpeculativeHeads {
  readonly meta: HeadsMeta;
  private readonly weights: tf.Tensor2D[];
  private readonly biases: tf.Tensor1D[];
  private readonly projection: HeadProjection;

  constructor(model: LoadedModel, data: HeadsData) {
    this.meta = data.meta;
    this.projection = headProjection(model, data.meta.vocab);
    const d = data.meta.hiddenSize;
    this.weights = data.weights.map((w) => tf.tensor2d(w, [w.length / d, d]));
    this.biases = data.biases.map((b) => tf.tensor1d(b));
  }

  get numHeads(): number {
    return this.meta.numHeads;
  }

  /**
   * For each hidden row, each head's top `ranks[k]` tokens, best first: result[row][head].
   * Heads asked for no candidates (rank 0) are not projected.
   */
  candidates(hidden: readonly Float32Array[], ranks: readonly number[]): number[][][] {
    const R = hidden.length;
    const d = this.meta.hiddenSize;
    const used = ranks.reduce((n, r, k) => (r > 0 ? k + 1 : n), 0);
    if (R === 0 || used === 0) return hidden.map(() => ranks.map(() => []));
    const top = Math.max(...ranks);
    const flat = new Float32Array(R * d);
    hidden.forEach((row, i) => flat.set(row, i * d));
    const indices = tf.tidy(() => {
      const h = tf.tensor2d(flat, [R, d]); // (R, hidden)
      const outs = headOutputs(this.meta.kind, h, this.weights.slice(0, used), this.biases.slice(0, used));
      const logits = this.projection.logits(tf.concat(outs, 0) as tf.Tensor2D); // (used·R, V'), head-major
      return tf.topk(logits, top).indices; // (used·R, top)
    });
    const columns = indices.dataSync() as Int32Array;
    indices.dispose();
    const vocab = this.projection.ids;
    const ids = vocab === null ? columns : columns.map((j) => vocab[j]!);
    return hidden.map((_, row) =>
      ranks.map((k, head) => (head < used ? Array.from(ids.subarray((head * R + row) * top, (head * R + row) * top + k)) : [])),
    );
  }

  dispose(): void {
    tf.dispose([...this.weights, ...this.biases]);
    this.projection.dispose();
  }
}

/** Entropy (nats) of softmax(logits): the Cerberus gate's measure of how unsure the base model is. */
export function entropy(logits: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let z = 0;
  let s = 0;
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i]! - max;
    if (x === -Infinity) continue; // a token masked out has p = 0 and adds nothing
    const e = Math.exp(x);
    z += e;
    s += e * x;
  }
  return Math.log(z) - s / z;
}
