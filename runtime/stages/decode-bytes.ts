/**
 * The bandwidth bound of skipping layers in decode: a batch-1 decode step multiplies one row
 * by every weight of the layers it runs and by the LM head, so it streams those bytes once
 * per token, and a kept-layer step cannot beat full ÷ kept bytes (`skein bench stages`
 * reports it beside the measured ratio). On SmolLM2-135M Q4_1 the LM head (49,152 × 576,
 * q8_0) is 30.1 MB of the 96.4 MB a full step reads: a fixed cost that caps r = 2 at 1.52×
 * where decode is memory-bound. The 2-core dev box's wasm kernels are compute-bound (cost per
 * weight and per layer, the q8_0 head cheaper per weight): r = 2 measured 1.8–1.9× there.
 *
 * @example
 * decodeWeightBytes(model, [0, 2, 4]) / decodeWeightBytes(model, allLayers);
 */
import type { LoadedModel } from '../model/types.js';

/**
 * Weight bytes one decode step reads with `layers` running: their seven projections and the
 * LM head (49,152 × 576 on SmolLM2, the same for every variant). Block bytes on a GGUF model
 * as stored in the file (the kernels' row-interleaved copy widens each block's scales to
 * f32: a few bytes more per 32 weights), f32 otherwise. Norms, the embedding row and the KV are left out: kilobytes at these
 * contexts. A decode step that streams its weights once cannot be faster than these bytes
 * allow, so full ÷ kept is the bound on a skip ratio.
 */
export function decodeWeightBytes(model: LoadedModel, layers: readonly number[]): number {
  const b = model.blockWeights;
  const projections = ['wq', 'wk', 'wv', 'wo', 'wGate', 'wUp', 'wDown'] as const;
  if (b !== undefined) return b.lmHead.data.byteLength + layers.reduce((n, l) => n + projections.reduce((m, p) => m + b.layers[l]![p].data.byteLength, 0), 0);
  const w = model.weights;
  return 4 * (w.lmHead.size + layers.reduce((n, l) => n + projections.reduce((m, p) => m + w.layers[l]![p].size, 0), 0));
}

