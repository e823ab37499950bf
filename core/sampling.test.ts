import { describe, expect, expectTypeOf, it } from 'vitest';
import { defaultSampling, resolveSampling, samplingSchema, type SamplingParams } from './sampling.js';

describe('sampling parameters, defined once', () => {
  it('derives the resolved type from the schema: every field present, with the schema types', () => {
    expectTypeOf<SamplingParams>().toEqualTypeOf<{
      maxTokens: number;
      temperature: number;
      topK: number;
      topP: number;
      repetitionPenalty: number;
      seed: number;
      stop: string[];
      frequencyPenalty: number;
      presencePenalty: number;
      logitBias: Record<string, number>;
    }>();
    expectTypeOf<Partial<SamplingParams>>().toEqualTypeOf<{
      maxTokens?: number;
      temperature?: number;
      topK?: number;
      topP?: number;
      repetitionPenalty?: number;
      seed?: number;
      stop?: string[];
      frequencyPenalty?: number;
      presencePenalty?: number;
      logitBias?: Record<string, number>;
    }>();
  });

  it('has a default for exactly the parameters the schema names', () => {
    expect(Object.keys(defaultSampling).sort()).toEqual(Object.keys(samplingSchema.properties).sort());
  });

  it('resolves a partial over the defaults and ignores undefined fields', () => {
    expect(resolveSampling({ temperature: 0.7, seed: undefined })).toEqual({ ...defaultSampling, temperature: 0.7 });
  });
});
