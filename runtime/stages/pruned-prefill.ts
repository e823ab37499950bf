/**
 * The prunedPrefill stage (LazyLLM, TECHNIQUES §2) in the engine's registry. Every prefill
 * chunk is pruned progressively inside its forward (`prune: [{ fromLayer, keepTop }]`):
 * at each pruning layer the tokens the chunk's last token attends to least leave, and
 * produce no KV from there on. Schedule: lazy-schedule.ts; request → shape and the
 * prefix-sharing rule: shape.ts. The Aux Cache's revival of pruned tokens is not built
 * (pruned tokens stay pruned for the sequence's life).
 */
import type { EngineStageDef } from './types.js';

export const prunedPrefillStage: EngineStageDef = {
  name: 'prunedPrefill',
  forward: 'per prefill chunk, live token sets shrinking at the pruning layers, chosen inside the forward by the last token\'s attention (PruneStep.keepTop)',
  // Any Llama-family model runs it: it needs only its own attention.
  unavailable: () => undefined,
};
