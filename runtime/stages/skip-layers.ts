/**
 * The skipLayers stage (Unified Layer Skipping, TECHNIQUES): decode running about
 * numLayers/targetSpeedup layers. It asks the forward for a per-call layer subset (the
 * forward already takes one, `ForwardCallOptions.layers`); the scheduler does not yet
 * batch sequences with different subsets, so no model runs it in this build.
 */
import type { EngineStageDef } from './types.js';

export const skipLayersStage: EngineStageDef = {
  name: 'skipLayers',
  forward: 'a subset of layers per decode step (ForwardCallOptions.layers), batched with full-depth sequences',
  unavailable: () => ({
    missing: 'layer-skipped decoding is not implemented yet in this build (issue #12)',
    remedy: 'remove skipLayers from the node, or use a build that has issue #12',
  }),
};
