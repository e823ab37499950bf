/**
 * One seeded Sampler (runtime/generate/sampler.ts) per sequence, as the scheduler wants
 * it: its draws depend only on its own seed and history, so a sequence samples the same
 * tokens whether it runs alone, batched, or preempted and resumed.
 *
 * @example
 * const pick = tokenSampler(resolveSampling({ temperature: 0.7, seed: 1 }));
 * const id = pick(logits, promptAndGeneratedIds);
 */
import type { SamplingParams } from '../../core/sampling.js';
import { Sampler } from '../generate/sampler.js';
import type { TokenSampler } from '../scheduler/scheduler.js';

export function tokenSampler(params: SamplingParams): TokenSampler {
  const sampler = new Sampler(params);
  // The first call sees the prompt alone: what follows it is generated (OpenAI's penalties
  // count only that). The repetition penalty covers both, as in Hugging Face.
  let promptLength = -1;
  return (logits, context, seen) => {
    if (promptLength < 0) promptLength = context.length;
    return sampler.sample(logits, context, promptLength, seen);
  };
}
