/**
 * A model with a skip adapter merged into its kept layers: W' = W + scale·A·B, made once
 * at load. It shares everything else with the base model (config, embedding, norms, lm
 * head, the other layers' tensors and blocks) and owns only the merged projections.
 *
 * Block weights (GGUF): a merged projection is re-quantized to `blockType` for the
 * forward's kernels, by default its own base type ('same'): lossy skipping is there for
 * speed, and a batch-1 decode step streams its weights, so q8_0 rows (1.7× the bytes of
 * Q4_1 ones) would leave SmolLM2's 15 kept layers reading 86 MB per token against 96 MB
 * for all 30 (runtime/stages/decode-bytes.ts): a 1.1× bound instead of 1.5×. The price:
 * a Q4 step rounds away part of the LoRA update. `skein bench stages` measures both: on
 * the 2-core dev box, where wasm decode is compute-bound rather than memory-bound, q8_0
 * decoded 8 % slower and about halved the kept layers' perplexity (280 vs 493, full 26.4).
 * The f32 tensors of a merged layer are the dequantized blocks, so the reference forward
 * runs on exactly what the kernels multiply by. Memory (SmolLM2-135M, r = 2, 15 layers):
 * the f32 tensors of the merged layers (~213 MB of tensor heap) and the forward's own
 * copy of the view's blocks in kernel memory (prepared per model, like the base's).
 *
 * Which forwards may run on it (the scheduler's rule, runtime/scheduler): only shallow
 * ones — lossy decode steps, whose KV taints their table so no other sequence adopts it,
 * and self-speculative drafts, whose KV lives outside the pool and is dropped at
 * verification. The full model's KV never comes from the adapted weights.
 *
 * @example
 * const view = adaptedModel(model, readSkipAdapter(file, model.config, sha));
 * forward(view, [{ ids, past }], { layers: view.adaptedLayers });
 * view.dispose(); // the merged tensors only; the base model stays
 */
import * as tf from '@tensorflow/tfjs-core';
import { dequantizeMatrix, quantizeMatrix, type BlockType } from '../kernels/blocks.js';
import type { BlockWeights, LayerBlockWeights, LayerWeights, LoadedModel } from '../model/types.js';
import { loraDelta, projectionShape, type SkipAdapter } from './skip-adapter.js';

export interface AdaptedModel extends LoadedModel {
  /** The layers the adapter changed (the kept layers of its target). */
  adaptedLayers: number[];
  /** Bytes of merged weights this view owns: f32 tensors and re-quantized blocks. */
  ownedBytes: { tensors: number; blocks: number };
}

export interface AdaptOptions {
  /** Block type of merged projections on a block-weight model: 'same' (default) keeps each projection's own. */
  blockType?: BlockType | 'same';
}

export function adaptedModel(base: LoadedModel, adapter: SkipAdapter, o: AdaptOptions = {}): AdaptedModel {
  const c = base.config;
  const { meta } = adapter;
  const owned: tf.Tensor[] = [];
  let blockBytes = 0;
  const layers: LayerWeights[] = base.weights.layers.slice();
  const blockLayers: LayerBlockWeights[] | undefined = base.blockWeights?.layers.slice();
  meta.layers.forEach((l, i) => {
    const L: LayerWeights = { ...base.weights.layers[l]! };
    const B: LayerBlockWeights | undefined = blockLayers ? { ...blockLayers[l]! } : undefined;
    for (const p of meta.projections) {
      const [inDim, outDim] = projectionShape(c, p);
      const merged = L[p].dataSync().slice() as Float32Array; // (in, out)
      const delta = loraDelta(adapter.lora[i]![p], inDim, outDim, meta.rank, meta.scale);
      for (let j = 0; j < merged.length; j++) merged[j]! += delta[j]!;
      if (B !== undefined) {
        const type = o.blockType === undefined || o.blockType === 'same' ? B[p].type : o.blockType;
        const blocks = quantizeMatrix(transpose(merged, inDim, outDim), outDim, inDim, type); // (out, in)
        B[p] = blocks;
        blockBytes += blocks.data.byteLength;
        L[p] = tf.tensor2d(transpose(dequantizeMatrix(blocks), outDim, inDim), [inDim, outDim]);
      } else {
        L[p] = tf.tensor2d(merged, [inDim, outDim]);
      }
      owned.push(L[p]);
    }
    layers[l] = L;
    if (B !== undefined) blockLayers![l] = B;
  });
  const blockWeights: BlockWeights | undefined = blockLayers ? { layers: blockLayers, lmHead: base.blockWeights!.lmHead } : undefined;
  let disposed = false;
  return {
    config: c,
    weights: { ...base.weights, layers },
    ...(blockWeights ? { blockWeights } : {}),
    source: `${base.source} + skip-r${meta.targetSpeedup} adapter`,
    adaptedLayers: [...meta.layers],
    ownedBytes: { tensors: owned.reduce((n, t) => n + 4 * t.size, 0), blocks: blockBytes },
    dispose() {
      if (disposed) return;
      disposed = true;
      tf.dispose(owned);
    },
  };
}

/** (rows, cols) row-major → (cols, rows). */
function transpose(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) out[k * rows + r] = x[r * cols + k]!;
  return out;
}
