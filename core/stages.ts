/**
 * The pipeline stages a `generate`-like node may ask the runtime for, defined once: the
 * JSON Schema used by the graph schema and the TypeScript type come from this object.
 * A stage is validated even where this runtime cannot run it; running it then fails
 * with NotAvailableError instead of being silently ignored.
 *
 * @example
 * const stages: Stages = { skipLayers: { targetSpeedup: 2 } };
 */
import type { FromSchema } from './from-schema.js';

export const stagesSchema = {
  type: 'object',
  additionalProperties: false,
  description: 'Inference stages applied to this model call (see docs: TECHNIQUES).',
  properties: {
    compress: {
      type: 'object',
      additionalProperties: false,
      description: 'LLMLingua-style prompt compression before prefill.',
      properties: {
        rate: { type: 'number', exclusiveMinimum: 0, maximum: 1, description: 'Fraction of prompt tokens to keep.' },
        keep: { type: 'array', items: { type: 'string', minLength: 1 }, description: 'Phrases that are never dropped.' },
      },
      required: ['rate'],
    },
    prunedPrefill: {
      type: 'object',
      additionalProperties: false,
      description: 'LazyLLM progressive pruning of prompt tokens during prefill.',
      properties: {
        keepRatio: {
          description: 'Share of the prompt kept after the last pruning layer (spread geometrically over the layers), or one cumulative share per layer.',
          oneOf: [
            { type: 'number', exclusiveMinimum: 0, maximum: 1 },
            { type: 'array', minItems: 1, items: { type: 'number', exclusiveMinimum: 0, maximum: 1 } },
          ],
        },
        layers: {
          type: 'array',
          minItems: 1,
          items: { type: 'integer', minimum: 1 },
          description: "Pruning layers, ascending; default the paper's 9/32, 19/32, 28/32 of the depth.",
        },
      },
      required: ['keepRatio'],
    },
    skipLayers: {
      type: 'object',
      additionalProperties: false,
      description: 'Unified Layer Skipping: run about numLayers/targetSpeedup layers.',
      properties: {
        targetSpeedup: { type: 'number', minimum: 1, maximum: 64 },
        mode: {
          enum: ['lossy', 'self-speculative'],
          description: 'lossy (default): decode on the kept layers. self-speculative: they draft, the full model verifies; output identical to plain decoding.',
        },
        drafts: { type: 'integer', minimum: 1, maximum: 16, description: 'Tokens drafted per verification (self-speculative; default 3).' },
      },
      required: ['targetSpeedup'],
    },
    speculate: {
      type: 'object',
      additionalProperties: false,
      description: 'Medusa / Cerberus speculative heads.',
      properties: {
        heads: { type: 'string', minLength: 1 },
        mode: { enum: ['medusa', 'cerberus'] },
        entropyGate: { type: 'number', minimum: 0 },
      },
    },
  },
} as const;

export type Stages = FromSchema<typeof stagesSchema>;
export type StageName = keyof Stages;
export const stageNames = Object.keys(stagesSchema.properties) as StageName[];
