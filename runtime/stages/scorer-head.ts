/**
 * The compress scorer's head: a token's self-information −log p(token | row) from final-
 * normed hidden rows, computed in the tensor backend (only one number per row comes back
 * to JS, not a vocabulary-wide logit row).
 *
 * Two vocabularies:
 * - `full`: the model's LM head, every id (the textbook self-information). On SmolLM2 the
 *   tied 49,152 × 576 head is ~28 M multiply-adds per token, as much as 8 of its 30 layers,
 *   so a scorer that runs it at every prompt position pays a quarter of a full prefill
 *   for the head alone (measured: 3.5 s of a 14.2 s 1,024-token prefill's CPU time).
 * - `context`: the softmax restricted to the ids that occur in the prompt being compressed
 *   (its LM-head rows only): −log p(t) = −(z_t − logΣ_{v∈prompt} e^{z_v}). Each row's
 *   normaliser drops the mass on ids the prompt never uses; the ranking LLMLingua needs
 *   (which units are predictable from the text before them) is measured against the full
 *   head in `skein bench stages --arg parts=stacked` (runtime/bench/HISTORY.md). A 1k-token prompt has a few
 *   hundred distinct ids, so the head costs ~1 % of the full one.
 *
 * @example
 * const head = new ScorerHead(model, 'context', promptIds);
 * const info = head.information(normed, targets); // Float64Array, nats
 * head.dispose();
 */
import * as tf from '@tensorflow/tfjs-core';
import { dequantizeMatrix, rowBytes } from '../kernels/blocks.js';
import { lmHeadLogits } from '../model/forward.js';
import type { LoadedModel } from '../model/types.js';

export type ScorerVocab = 'full' | 'context';

export class ScorerHead {
  /** context: the head's columns for the prompt's distinct ids, (hidden, n). */
  private readonly sub: tf.Tensor2D | null = null;
  /** context: id → its column in `sub`. */
  private readonly column = new Map<number, number>();

  constructor(
    private readonly model: LoadedModel,
    readonly vocab: ScorerVocab,
    promptIds: readonly number[],
  ) {
    if (vocab === 'full') return;
    const ids = [...new Set(promptIds)].sort((a, b) => a - b);
    ids.forEach((id, j) => this.column.set(id, j));
    this.sub = headColumns(model, ids);
  }

  /** −log p(targets[i] | rows[i]) in nats; every target must be in the vocabulary (a prompt id for `context`). */
  information(rows: tf.Tensor2D, targets: readonly number[]): Float64Array {
    if (targets.length === 0) return new Float64Array(0);
    const cols = this.vocab === 'full' ? targets : targets.map((t) => this.columnOf(t));
    const out = tf.tidy(() => {
      const logits = this.sub === null ? lmHeadLogits(this.model, rows) : (tf.matMul(rows, this.sub) as tf.Tensor2D); // (R, V)
      const V = logits.shape[1];
      const lse = tf.logSumExp(logits, 1); // (R)
      const flat = tf.reshape(logits, [-1]);
      const picked = tf.gather(flat, tf.tensor1d(cols.map((c, i) => i * V + c), 'int32')); // (R)
      return tf.sub(lse, picked);
    });
    const data = out.dataSync();
    out.dispose();
    return Float64Array.from(data);
  }

  private columnOf(id: number): number {
    const c = this.column.get(id);
    if (c === undefined) throw new RangeError(`ScorerHead: token ${id} is not among the prompt's ids`);
    return c;
  }

  dispose(): void {
    this.sub?.dispose();
  }
}

/**
 * The LM head's columns for `ids`, (hidden, n): rows of the quantized head blocks
 * dequantized (GGUF checkpoints hold no f32 head unless asked), or a gather from the f32 head.
 */
function headColumns(model: LoadedModel, ids: readonly number[]): tf.Tensor2D {
  const blocks = model.blockWeights?.lmHead;
  if (blocks === undefined) return tf.tidy(() => tf.gather(model.weights.lmHead, tf.tensor1d(ids as number[], 'int32'), 1) as tf.Tensor2D);
  const rb = rowBytes(blocks.type, blocks.cols);
  const data = new Uint8Array(ids.length * rb);
  const src = blocks.data;
  ids.forEach((id, r) => data.set(src.subarray(id * rb, (id + 1) * rb), r * rb));
  const rows = dequantizeMatrix({ type: blocks.type, rows: ids.length, cols: blocks.cols, data }); // (n, hidden)
  return tf.tidy(() => tf.transpose(tf.tensor2d(rows, [ids.length, blocks.cols])) as tf.Tensor2D);
}
