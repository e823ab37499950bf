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
 * runs on exactly what the kernels multiply by; like a GGUF model's own (checkpoint/load.ts)
 * they are made on first read, which the block kernels' forward never does. Memory
 * (SmolLM2-135M, r = 2, 15 layers): the merged blocks, uploaded once into the base's kernel
 * memory beside its own (its other layers and lm head are shared), and ~213 MB of tensor heap
 * only once something reads the f32 tensors. The merge takes ~2.5 s at the first request
 * that needs it, mostly quantizing and uploading the 105 merged matrices (it took ~7 s
 * when the update was summed in JavaScript and the kept layers' f32 tensors were all made).
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
import { defineLazy } from '../checkpoint/load.js';
import { dequantizeMatrix, quantizeMatrix, type BlockType } from '../kernels/blocks.js';
import type { BlockWeights, LayerBlockWeights, LayerWeights, LoadedModel } from '../model/types.js';
import { projectionShape, type SkipAdapter } from './skip-adapter.js';

export interface AdaptedModel extends LoadedModel {
  /** The layers the adapter changed (the kept layers of its target). */
  adaptedLayers: number[];
  /** Bytes of merged weights this view owns: re-quantized blocks, and f32 tensors as far as they have been made (on first read). */
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
  let tensorBytes = 0;
  let disposed = false;
  const layers: LayerWeights[] = base.weights.layers.slice();
  const blockLayers: LayerBlockWeights[] | undefined = base.blockWeights?.layers.slice();
  meta.layers.forEach((l, i) => {
    // The base layer's properties as they are — getters included: a GGUF model's f32
    // tensors are made on first read (checkpoint/load.ts), and spreading the layer would
    // make all seven of each kept layer (~1.9 s and 213 MB for SmolLM2 at r = 2).
    const L = Object.defineProperties({}, descriptors(base.weights.layers[l]!)) as LayerWeights;
    const B: LayerBlockWeights | undefined = blockLayers ? { ...blockLayers[l]! } : undefined;
    for (const p of meta.projections) {
      const [inDim, outDim] = projectionShape(c, p);
      const pair = adapter.lora[i]![p];
      // scale·A·B on the tfjs backend: ~30× faster than the same sums in JavaScript loops
      // (SmolLM2 r = 2: ~850M multiply-adds, 2.4 s of a 7 s first request).
      const delta = (): tf.Tensor2D => tf.mul(tf.matMul(tf.tensor2d(pair.a, [inDim, meta.rank]), tf.tensor2d(pair.b, [meta.rank, outDim])), meta.scale);
      if (B !== undefined) {
        const type = o.blockType === undefined || o.blockType === 'same' ? B[p].type : o.blockType;
        // (out, in) as the blocks lie: the base's values (what its f32 tensor holds, transposed) plus the update.
        const merged = dequantizeMatrix(B[p]);
        const update = tf.tidy(() => tf.transpose(delta()));
        const u = update.dataSync() as Float32Array;
        for (let j = 0; j < merged.length; j++) merged[j]! += u[j]!;
        update.dispose();
        const blocks = quantizeMatrix(merged, outDim, inDim, type);
        B[p] = blocks;
        blockBytes += blocks.data.byteLength;
        defineLazy(L, p, () => {
          if (disposed) throw new RangeError(`adaptedModel: ${p} of layer ${l} read after dispose`);
          const tensor = tf.keep(tf.tidy(() => tf.transpose(tf.tensor2d(dequantizeMatrix(blocks), [outDim, inDim])))) as tf.Tensor2D;
          owned.push(tensor);
          tensorBytes += 4 * tensor.size;
          return tensor;
        });
      } else {
        const t = tf.tidy(() => tf.add(base.weights.layers[l]![p], delta())) as tf.Tensor2D;
        Object.defineProperty(L, p, { enumerable: true, value: t });
        owned.push(t);
        tensorBytes += 4 * t.size;
      }
    }
    layers[l] = L;
    if (B !== undefined) blockLayers![l] = B;
  });
  const blockWeights: BlockWeights | undefined = blockLayers ? { layers: blockLayers, lmHead: base.blockWeights!.lmHead } : undefined;
  return {
    config: c,
    // Descriptors again, not a spread: the base's lm head is an f32 tensor made on first read too.
    weights: Object.defineProperties({}, { ...descriptors(base.weights), layers: { value: layers, enumerable: true } }) as LoadedModel['weights'],
    ...(blockWeights ? { blockWeights } : {}),
    source: `${base.source} + skip-r${meta.targetSpeedup} adapter`,
    adaptedLayers: [...meta.layers],
    get ownedBytes() {
      return { tensors: tensorBytes, blocks: blockBytes };
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      tf.dispose(owned);
    },
  };
}

/** An object's own properties as they are (getters not called), each redefinable on the copy. */
function descriptors(o: object): PropertyDescriptorMap {
  const all = Object.getOwnPropertyDescriptors(o);
  for (const d of Object.values(all)) d.configurable = true;
  return all;
}
