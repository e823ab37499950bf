/**
 * The projection of head outputs onto tokens: the model's own LM head, either whole or
 * only the rows of the heads' vocabulary (HeadsMeta.vocab, the most frequent tokens of the
 * distilled continuations). The reduced one multiplies by vocab.length rows instead of
 * vocabSize (8,192 of SmolLM2's 49,152: 6× fewer multiply-adds per head row), and it is
 * lossless for decoding: a candidate only proposes, the model verifies every draft.
 *
 * On the block-kernel path the selected rows are copied out of the LM head's blocks in the
 * kernels' memory, as they are (same quantization, so a head logit is the model's own for
 * that token), and uploaded once per model and vocabulary; they live as long as the model's
 * kernels. On the tfjs path they are a gathered (hidden, V') tensor the projection owns.
 *
 * @example
 * const p = headProjection(model, heads.meta.vocab);
 * const logits = p.logits(z); // (rows, V'): column j is token p.ids[j]
 * p.dispose();
 */
import * as tf from '@tensorflow/tfjs-core';
import { rowBytes, type BlockMatrix } from '../kernels/blocks.js';
import type { KernelWeight, MatmulKernels } from '../kernels/matmul.js';
import { blockLinear } from '../model/block-linear.js';
import { lmHeadLogits, prepareModel } from '../model/forward.js';
import type { LoadedModel } from '../model/types.js';

export interface HeadProjection {
  /** Logits of hidden rows z (R, hidden): (R, V'). */
  logits(z: tf.Tensor2D): tf.Tensor2D;
  /** On the block-kernel path, the projection's matrix in the kernels' memory (V' rows of hidden), for callers that stay off tfjs; else null. */
  readonly kernel: { kernels: MatmulKernels; weight: KernelWeight } | null;
  /** The token id of each logit column; null: column j is token j (the whole vocabulary). */
  readonly ids: Int32Array | null;
  dispose(): void;
}

/** Uploaded row selections of an LM head, per kernel memory and vocabulary (they cannot be freed on their own, so they are made once). */
const uploaded = new WeakMap<MatmulKernels, Map<string, KernelWeight>>();

export function headProjection(model: LoadedModel, vocab?: readonly number[]): HeadProjection {
  const prep = prepareModel(model);
  const head = prep.blocks?.lmHead;
  if (vocab === undefined) {
    // The forward's LM head op applies no norm of its own (its rows arrive normalised), so its weight alone is the projection.
    const kernel = head !== undefined && head.norm === null ? { kernels: head.kernels, weight: head.outputs[0]![0]!.weight } : null;
    return { logits: (z) => lmHeadLogits(model, z), kernel, ids: null, dispose: () => {} };
  }
  const ids = Int32Array.from(vocab);
  if (head !== undefined) {
    const { kernels } = head;
    const weight = selectedRows(kernels, head.outputs[0]![0]!.weight, ids);
    const op = { kernels, norm: null, outputs: [[{ weight }]] };
    return { logits: (z) => blockLinear(z, op)[0]!, kernel: { kernels, weight }, ids, dispose: () => {} };
  }
  const sub = tf.tidy(() => tf.gather(model.weights.lmHead, tf.tensor1d(ids, 'int32'), 1) as tf.Tensor2D); // (hidden, V')
  return { logits: (z) => tf.matMul(z, sub), kernel: null, ids, dispose: () => sub.dispose() };
}

/** Rows `ids` of an uploaded matrix (out rows = tokens), uploaded as a matrix of their own. */
function selectedRows(kernels: MatmulKernels, full: KernelWeight, ids: Int32Array): KernelWeight {
  const key = `${full.offset}:${ids.join(',')}`;
  let byKey = uploaded.get(kernels);
  if (byKey === undefined) uploaded.set(kernels, (byKey = new Map()));
  const cached = byKey.get(key);
  if (cached !== undefined) return cached;
  const rb = rowBytes(full.type, full.cols);
  const data = new Uint8Array(ids.length * rb);
  ids.forEach((id, r) => data.set(kernels.read(full, id, id + 1).data, r * rb));
  const m: BlockMatrix = { type: full.type, rows: ids.length, cols: full.cols, data };
  const weight = kernels.upload(m);
  byKey.set(key, weight);
  return weight;
}
