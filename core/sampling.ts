/**
 * Sampling and stopping parameters, defined once: the JSON Schema (used by the graph
 * schema and the HTTP API), the TypeScript type and the defaults all come from here.
 *
 * @example
 * const params = resolveSampling({ temperature: 0.7, seed: 1 });
 */

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
  },
} as const;

export interface SamplingParams {
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  repetitionPenalty: number;
  seed: number;
  stop: string[];
}

export const defaultSampling: SamplingParams = {
  maxTokens: 128, // long enough for a paragraph, short enough to keep demos snappy
  temperature: 0, // greedy: reproducible by default
  topK: 0,
  topP: 1,
  repetitionPenalty: 1,
  seed: 0,
  stop: [],
};

export function resolveSampling(partial: Partial<SamplingParams> = {}): SamplingParams {
  const out: SamplingParams = { ...defaultSampling };
  for (const [key, value] of Object.entries(partial)) {
    if (value !== undefined) (out as unknown as Record<string, unknown>)[key] = value;
  }
  return out;
}
