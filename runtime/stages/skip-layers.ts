/**
 * The skipLayers stage (Unified Layer Skipping, TECHNIQUES §3) in the engine's registry.
 * The prompt is prefilled at full depth; decode steps run the layers `unifiedLayers`
 * picks (layer-selection.ts), batched beside full-depth work in one forward per layer set
 * (runtime/scheduler). Mode 'self-speculative' drafts with those layers and verifies with
 * the full model in one forward: output identical to plain decoding. Skipped layers get no
 * KV entry for the shallow tokens (BlockTable.appendLayers). Request → shape: shape.ts.
 */
import type { EngineStageDef } from './types.js';

export const skipLayersStage: EngineStageDef = {
  name: 'skipLayers',
  forward:
    'decode steps on a fixed subset of layers (ForwardCallOptions.layers: first, last, evenly spaced), batched per layer set; self-speculative: shallow drafts, then one full-depth verification forward over them',
  // Any Llama-family model runs it: it needs only its own layers.
  unavailable: () => undefined,
};
