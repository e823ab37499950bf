/**
 * The prunedPrefill stage (LazyLLM, TECHNIQUES): the prompt, prefilled in one forward, drops
 * its least-attended tokens layer by layer, scored by its final token's attention inside
 * that forward (schedule: lazy-schedule.ts, shaping: shape.ts). It asks the forward for
 * per-layer live token sets during prefill (SequenceShape.prune); pruned tokens leave no KV
 * at the later layers. Any model can run it: it needs nothing beyond the model's attention.
 */
import type { EngineStageDef } from './types.js';

export const prunedPrefillStage: EngineStageDef = {
  name: 'prunedPrefill',
  forward: "per-layer sets of live prompt tokens during prefill (SequenceShape.prune), chosen by the last token's attention in the same forward",
  unavailable: () => undefined,
};
