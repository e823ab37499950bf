/**
 * The prunedPrefill stage (LazyLLM, TECHNIQUES): every prefill chunk drops its least-attended
 * prompt tokens layer by layer, scored by the last token's attention inside the same
 * forward (schedule: lazy-schedule.ts, shaping: shape.ts). It asks the forward for
 * per-layer live token sets during prefill (SequenceShape.prune); pruned tokens leave no KV
 * at the later layers. Any model can run it: it needs nothing beyond the model's attention.
 */
import type { EngineStageDef } from './types.js';

export const prunedPrefillStage: EngineStageDef = {
  name: 'prunedPrefill',
  forward: "per-layer sets of live prompt tokens during prefill (SequenceShape.prune), chosen by the last token's attention in the same forward",
  unavailable: () => undefined,
};
