/**
 * The prunedPrefill stage (LazyLLM, TECHNIQUES): prefill that drops the least-attended
 * prompt tokens layer by layer. It asks the forward for per-layer live token sets during
 * prefill; not implemented in this build, so no model runs it.
 */
import type { EngineStageDef } from './types.js';

export const prunedPrefillStage: EngineStageDef = {
  name: 'prunedPrefill',
  forward: 'per-layer sets of live prompt tokens during prefill (pruned KV kept for revival)',
  unavailable: () => ({
    missing: 'pruned prefill is not implemented yet in this build (issue #12)',
    remedy: 'remove prunedPrefill from the node, or use a build that has issue #12',
  }),
};
