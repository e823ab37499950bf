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
  // The repetition penalty covers prompt and generated tokens, as in Hugging Face.
  return (logits, context) => sampler.sample(logits, context);
}
