/**
 * The skipLayers stage (Unified Layer Skipping, TECHNIQUES): decode runs about
 * numLayers/targetSpeedup layers, the first and last and the rest evenly between them
 * (layer-selection.ts), chosen from the target alone so sequences still batch. It asks the
 * forward for a per-sequence layer subset in decode (SequenceShape.decodeLayers, built by
 * shape.ts); 'self-speculative' adds a full-depth verification forward over the drafts.
 * Any model can run it: it needs nothing beyond the model's own layers. A model with a
 * skip adapter for the target (`skein train skip`, runtime/adapters) runs the kept layers
 * with it merged in (skip-adapters.ts), unless the request says `adapter: false`.
 */
import type { EngineStageDef } from './types.js';

export const skipLayersStage: EngineStageDef = {
  name: 'skipLayers',
  forward:
    'prefill at full depth; decode on a per-sequence layer subset (SequenceShape.decodeLayers) batched with full-depth sequences, or drafts on it verified by one full-depth forward (self-speculative)',
  unavailable: () => undefined,
};
