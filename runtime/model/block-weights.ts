/**
 * A model's projections quantized into GGUF blocks, the way a GGUF checkpoint would hold
 * them, for tests and benches of the block-weight path: `quantizeModel` returns a model
 * whose f32 tensors are the dequantized weights (so the reference forward runs on exactly
 * the values the kernels multiply by) and whose `blockWeights` are the blocks.
 *
 * @example
 * const q = quantizeModel(randomModel({ hiddenSize: 64 }, 1), 'q8_0'); // consumes its input
 * forward(q, [{ ids: [1, 2] }]); // runs on the blocks
 * q.dispose();
 */
import * as tf from '@tensorflow/tfjs-core';
import { dequantizeMatrix, quantizeMatrix, type BlockMatrix, type BlockType } from '../kernels/blocks.js';
import type { BlockWeights, EmbeddingTable, LayerWeights, LoadedModel } from './types.js';

/** (rows, cols) row-major → (cols, rows). */
function transpose(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = x[r * cols + c]!;
  return out;
}

/** An (in, out) tensor → its (out, in) blocks, and the (in, out) tensor of their values. */
function quantizeProjection(w: tf.Tensor2D, type: BlockType): [BlockMatrix, tf.Tensor2D] {
  const [inDim, outDim] = w.shape;
  const m = quantizeMatrix(transpose(w.dataSync() as Float32Array, inDim, outDim), outDim, inDim, type);
  return [m, tf.tensor2d(transpose(dequantizeMatrix(m), outDim, inDim), [inDim, outDim])];
}

/**
 * Quantizes every projection and the lm head of `model` to `type` (the lm head to
 * `headType`, as GGUF files often keep token_embd at Q8_0). Takes ownership of `model`:
 * the replaced tensors are disposed now, the rest with the returned model.
 */
export function quantizeModel(model: LoadedModel, type: BlockType, headType: BlockType = type): LoadedModel {
  const keys = ['wq', 'wk', 'wv', 'wo', 'wGate', 'wUp', 'wDown'] as const;
  const old: tf.Tensor[] = [];
  const blockLayers: BlockWeights['layers'] = [];
  const layers = model.weights.layers.map((L) => {
    const next: LayerWeights = { ...L };
    const blocks = {} as BlockWeights['layers'][number];
    for (const k of keys) {
      [blocks[k], next[k]] = quantizeProjection(L[k], type);
      old.push(L[k]);
    }
    blockLayers.push(blocks);
    return next;
  });
  const [lmBlocks, lmHead] = quantizeProjection(model.weights.lmHead, headType);
  old.push(model.weights.lmHead);
  let embed: tf.Tensor2D | EmbeddingTable = model.weights.embed;
  if (model.config.tieWordEmbeddings) {
    // Tied: the embedding is the same matrix, (vocab, hidden) = the blocks' own layout.
    if (embed instanceof tf.Tensor) old.push(embed);
    embed = tf.tensor2d(dequantizeMatrix(lmBlocks), [lmBlocks.rows, lmBlocks.cols]);
  }
  tf.dispose(old);
  const weights = { ...model.weights, embed, layers, lmHead };
  let disposed = false;
  return {
    config: model.config,
    weights,
    blockWeights: { layers: blockLayers, lmHead: lmBlocks },
    source: `${model.source} (${type})`,
    dispose() {
      if (disposed) return;
      disposed = true;
      // An embedding kept as a JS table (EmbeddingTable) holds no tensor.
      const all: (tf.Tensor | null)[] = [weights.embed instanceof tf.Tensor ? weights.embed : null, weights.finalNorm, weights.lmHead];
      for (const l of weights.layers) all.push(...Object.values(l));
      for (const t of all) t?.dispose();
    },
  };
}

/**
 * A float model's projections as f32 blocks (its tensors unchanged): on the wasm backend
 * the forward runs HF checkpoints on the same kernels as GGUF ones, whose rows do not
 * depend on the call's row count (XNNPACK's GEMM sums a row differently at different
 * batch sizes, so a prefill chunked differently gave last-bit different KV) and whose
 * decode steps measured 1.1–1.2× faster on a SmolLM2-shaped model.
 */
export function floatBlockWeights(model: LoadedModel): BlockWeights {
  const blocks = (w: tf.Tensor2D): BlockMatrix => {
    const [inDim, outDim] = w.shape;
    return quantizeMatrix(transpose(w.dataSync() as Float32Array, inDim, outDim), outDim, inDim, 'f32');
  };
  return {
    layers: model.weights.layers.map((L) => ({
      wq: blocks(L.wq),
      wk: blocks(L.wk),
      wv: blocks(L.wv),
      wo: blocks(L.wo),
      wGate: blocks(L.wGate),
      wUp: blocks(L.wUp),
      wDown: blocks(L.wDown),
    })),
    lmHead: blocks(model.weights.lmHead),
  };
}
