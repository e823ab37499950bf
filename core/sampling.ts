/**
 * Sampling and stopping parameters, defined once: the JSON Schema (used by the graph
 * schema and the HTTP API), the TypeScript type and the defaults all come from here.
 *
 * @example
 * const params = resolveSampling({ temperature: 0.7, seed: 1 });
 */
import type { FromSchema } from './from-schema.js';

export const samplingSchema = {
  $id: 'skein:sampling',
  type: 'object',
  additionalProperties: false,
  properties: {
    maxTokens: { type: 'integer', minimum: 1, maximum: 32768, description: 'Maximum number of generated tokens.' },
    temperature: { type: 'number', minimum: 0, maximum: 10, description: '0 means greedy.' },
    topK: { type: 'integer', minimum: 0, description: '0 disables top-k.' },
    topP: { type: 'number', exclusiveMinimum: 0, maximum: 1, description: '1 disables nucleus sampling.' },
    repetitionPenalty: { type: 'number', exclusiveMinimum: 0, maximum: 10, description: '1 disables it (CTRL-style).' },
    seed: { type: 'integer', description: 'Seed of the sampler; same seed, same tokens.' },
    stop: { type: 'array', items: { type: 'string', minLength: 1 }, maxItems: 16, description: 'Stop strings.' },
    frequencyPenalty: { type: 'number', minimum: -2, maximum: 2, description: 'Subtracted from a logit once per time its token was generated (OpenAI); 0 disables it.' },
    presencePenalty: { type: 'number', minimum: -2, maximum: 2, description: 'Subtracted from the logit of every token generated at least once (OpenAI); 0 disables it.' },
    logitBias: {
      type: 'object',
      propertyNames: { pattern: '^(0|[1-9][0-9]{0,8})$' },
      additionalProperties: { type: 'number', minimum: -100, maximum: 100 },
      description: 'Added to the logits of these token ids before sampling (OpenAI logit_bias).',
    },
  },
} as const;

/**
 * Resolved parameters: every field present. The schema leaves them all optional (a graph
 * or a request names only what it changes), so `Partial<SamplingParams>` is that input.
 */
export type SamplingParams = Required<FromSchema<typeof samplingSchema>>;

export const defaultSampling: SamplingParams = {
  maxTokens: 128, // long enough for a paragraph, short enough to keep demos snappy
  temperature: 0, // greedy: reproducible by default
  topK: 0, // off: greedy needs no candidate cut, and sampling callers opt in
  topP: 1, // off: the full distribution unless a caller asks for nucleus sampling
  repetitionPenalty: 1, // off: a penalty changes answers, so it is never implied
  seed: 0, // fixed: the same request gives the same tokens without naming a seed
  stop: [], // none: generation ends at maxTokens or the end-of-sequence token
  frequencyPenalty: 0, // off: like repetitionPenalty, a penalty changes answers
  presencePenalty: 0, // off: same reason
  logitBias: {}, // none: no token is favoured unless a caller says so
};

export function resolveSampling(partial: Partial<SamplingParams> = {}): SamplingParams {
  const out: SamplingParams = { ...defaultSampling };
  for (const [key, value] of Object.entries(partial)) {
    if (value !== undefined) (out as unknown as Record<string, unknown>)[key] = value;
  }
  return out;
}
