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
 * predicted while all still run in one pass. Heads trained with `pendingToken` also read
 * the embedding of the token the base model chose from h (the tree's root), [h; e; …].
 * `headOutputs` is shared with training (runtime/train/heads), so both run the same maths.
 *
 * @example
 * const heads = new SpeculativeHeads(model, readHeads(dir, model.config));
 * const [perHead] = heads.candidates([hiddenRow], [3, 2, 1], [pendingToken]); // perHead[k]: head k's top tokens
 * heads.dispose();
 */
import * as tf from '@tensorflow/tfjs-core';
import { quantizeMatrix } from '../kernels/blocks.js';
import type { KernelWeight, MatmulKernels } from '../kernels/matmul.js';
import { embedTokens } from '../model/kernels.js';
import type { LoadedModel } from '../model/types.js';
import type { HeadsData, HeadsKind, HeadsMeta } from './files.js';
import { headProjection, type HeadProjection } from './projection.js';

/**
 * Every head's output for hidden rows h (R, hidden): K × (R, hidden). `pending` (R, hidden):
 * the pending tokens' embeddings, for heads that read them (HeadsMeta.pendingToken); null
 * otherwise. Training passes a matMul with its own gradient.
 */
export function headOutputs(
  kind: HeadsKind,
  h: tf.Tensor2D,
  weights: readonly tf.Tensor2D[],
  biases: readonly tf.Tensor1D[],
  matMul: (x: tf.Tensor2D, w: tf.Tensor2D) => tf.Tensor2D = tf.matMul,
  pending: tf.Tensor2D | null = null,
): tf.Tensor2D[] {
  const outs: tf.Tensor2D[] = [];
  weights.forEach((w, k) => {
    const parts = [h, ...(pending === null ? [] : [pending]), ...(kind === 'cerberus' && k > 0 ? [outs[k - 1]!] : [])];
    const input = parts.length === 1 ? h : (tf.concat(parts, 1) as tf.Tensor2D); // (R, in)
    const a = tf.add(matMul(input, w), biases[k]!) as tf.Tensor2D; // (R, hidden)
    outs.push(tf.add(h, tf.mul(a, tf.sigmoid(a))) as tf.Tensor2D); // (R, hidden): h + SiLU(a)
  });
  return outs;
}

/** Head weights uploaded to a kernel memory, per weight array (uploads cannot be freed on their own, so each is made once). */
const uploaded = new WeakMap<MatmulKernels, WeakMap<Float32Array, KernelWeight>>();

/**
 * A head's (in, out) f32 weight as the kernels' (out rows, in cols) Q8_0 matrix, uploaded
 * once per kernel memory. Q8_0, not f32: a step streams every used head's weight from
 * memory, and four Cerberus heads reading the pending token are 14.6 MB in f32 (~2 ms a
 * step at this machine's ~7.5 GB/s) against 3.9 MB in Q8_0. Drafts only propose (the
 * model verifies each), so the rounding (~0.5 % per weight) changes speed, never output.
 */
function uploadHead(kernels: MatmulKernels, w: Float32Array, out: number): KernelWeight {
  let byArray = uploaded.get(kernels);
  if (byArray === undefined) uploaded.set(kernels, (byArray = new WeakMap()));
  const cached = byArray.get(w);
  if (cached !== undefined) return cached;
  const inputs = w.length / out;
  const t = new Float32Array(w.length);
  for (let i = 0; i < inputs; i++) for (let o = 0; o < out; o++) t[o * inputs + i] = w[i * out + o]!;
  const weight = kernels.upload(quantizeMatrix(t, out, inputs, 'q8_0'));
  byArray.set(w, weight);
  return weight;
}

/** The `top` largest columns of each of `rows` rows of x (rows × width), best first; ties to the lower column. */
export function topColumns(x: Float32Array, rows: number, width: number, top: number): Int32Array {
  const out = new Int32Array(rows * top);
  const vals = new Float32Array(top);
  for (let r = 0; r < rows; r++) {
    const o = r * top;
    vals.fill(-Infinity);
    out.fill(-1, o, o + top);
    for (let j = 0; j < width; j++) {
      const v = x[r * width + j]!;
      if (!(v > vals[top - 1]!)) continue;
      let i = top - 1;
      while (i > 0 && v > vals[i - 1]!) {
        vals[i] = vals[i - 1]!;
        out[o + i] = out[o + i - 1]!;
        i--;
      }
      vals[i] = v;
      out[o + i] = j;
    }
  }
  return out;
}

export class SpeculativeHeads {
  readonly meta: HeadsMeta;
  private readonly weights: tf.Tensor2D[];
  private readonly biases: tf.Tensor1D[];
  private readonly projection: HeadProjection;
  private readonly embed: LoadedModel['weights']['embed'];
  /**
   * On the block-kernel path, the heads run off tfjs: their matrices in the kernels'
   * memory (Q8_0, uploadHead), SiLU and residual in JS, top-k in JS. Measured here
   * (SmolLM2-135M, 4 Cerberus heads reading the pending token, one row): on tfjs the
   * heads took 3.2 ms a step (the wasm matMul packs its weight operand on every call), the
   * projection 1.4 ms and top-k 0.4 ms, against a 27 ms one-row forward; here all of it
   * takes 1.7 ms.
   */
  private readonly onKernels: { kernels: MatmulKernels; weights: KernelWeight[]; biases: readonly Float32Array[]; project: KernelWeight } | null;

  constructor(model: LoadedModel, data: HeadsData) {
    this.meta = data.meta;
    this.embed = model.weights.embed;
    this.projection = headProjection(model, data.meta.vocab);
    const d = data.meta.hiddenSize;
    const k = this.projection.kernel;
    this.onKernels =
      k === null ? null : { kernels: k.kernels, weights: data.weights.map((w) => uploadHead(k.kernels, w, d)), biases: data.biases, project: k.weight };
    // The tfjs copies serve the path without kernels only.
    this.weights = this.onKernels !== null ? [] : data.weights.map((w) => tf.tensor2d(w, [w.length / d, d]));
    this.biases = this.onKernels !== null ? [] : data.biases.map((b) => tf.tensor1d(b));
  }

  get numHeads(): number {
    return this.meta.numHeads;
  }

  /**
   * For each hidden row, each head's top `ranks[k]` tokens, best first: result[row][head].
   * `pending[row]`: the token the base model chose from that row (read by heads trained
   * with it). Heads asked for no candidates (rank 0) are not projected.
   */
  candidates(hidden: readonly Float32Array[], ranks: readonly number[], pending: readonly number[]): number[][][] {
    const R = hidden.length;
    if (pending.length !== R) throw new RangeError(`${R} hidden rows but ${pending.length} pending tokens`);
    const d = this.meta.hiddenSize;
    const used = ranks.reduce((n, r, k) => (r > 0 ? k + 1 : n), 0);
    if (R === 0 || used === 0) return hidden.map(() => ranks.map(() => []));
    const top = Math.max(...ranks);
    const flat = new Float32Array(R * d);
    hidden.forEach((row, i) => flat.set(row, i * d));
    const columns = this.onKernels !== null ? this.kernelColumns(flat, R, used, top, pending) : this.tfjsColumns(flat, R, used, top, pending);
    const vocab = this.projection.ids;
    const ids = vocab === null ? columns : columns.map((j) => vocab[j]!);
    return hidden.map((_, row) =>
      ranks.map((k, head) => (head < used ? Array.from(ids.subarray((head * R + row) * top, (head * R + row) * top + k)) : [])),
    );
  }

  /** Every used head's top columns (used·R rows, head-major) on the block kernels. */
  private kernelColumns(flat: Float32Array, R: number, used: number, top: number, pending: readonly number[]): Int32Array {
    const { kernels, weights, biases, project } = this.onKernels!;
    const d = this.meta.hiddenSize;
    const e = this.meta.pendingToken === true ? this.embedRows(pending) : null;
    const z = new Float32Array(used * R * d); // head-major: head k's rows at k·R·d
    for (let k = 0; k < used; k++) {
      const parts = [flat, ...(e === null ? [] : [e]), ...(this.meta.kind === 'cerberus' && k > 0 ? [z.subarray((k - 1) * R * d, k * R * d)] : [])];
      const width = parts.length * d;
      const input = parts.length === 1 ? flat : new Float32Array(R * width);
      if (parts.length > 1) for (let r = 0; r < R; r++) parts.forEach((p, j) => input.set(p.subarray(r * d, (r + 1) * d), r * width + j * d));
      const a = kernels.matmul(weights[k]!, input, R); // (R, hidden)
      const b = biases[k]!;
      const out = z.subarray(k * R * d, (k + 1) * R * d);
      for (let i = 0; i < R * d; i++) {
        const x = a[i]! + b[i % d]!;
        out[i] = flat[i]! + x / (1 + Math.exp(-x)); // h + SiLU(a)
      }
    }
    const logits = kernels.matmul(project, z, used * R); // (used·R, V')
    return topColumns(logits, used * R, project.rows, top);
  }

  /** The same on tfjs (the f32 path without block kernels). */
  private tfjsColumns(flat: Float32Array, R: number, used: number, top: number, pending: readonly number[]): Int32Array {
    const d = this.meta.hiddenSize;
    const indices = tf.tidy(() => {
      const h = tf.tensor2d(flat, [R, d]); // (R, hidden)
      const e = this.meta.pendingToken === true ? embedTokens(this.embed, [...pending]) : null; // (R, hidden)
      const outs = headOutputs(this.meta.kind, h, this.weights.slice(0, used), this.biases.slice(0, used), tf.matMul, e);
      const logits = this.projection.logits(tf.concat(outs, 0) as tf.Tensor2D); // (used·R, V'), head-major
      return tf.topk(logits, top).indices; // (used·R, top)
    });
    const columns = indices.dataSync() as Int32Array;
    indices.dispose();
    return columns;
  }

  private embedRows(ids: readonly number[]): Float32Array {
    const t = embedTokens(this.embed, [...ids]);
    const rows = t.dataSync() as Float32Array;
    t.dispose();
    return rows;
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
