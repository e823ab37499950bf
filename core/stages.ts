/**
 * The pipeline stages a `generate`-like node may ask the runtime for, defined once: the
 * JSON Schema used by the graph schema and the TypeScript type come from this object.
 * A stage is validated even where this runtime cannot run it; running it then fails
 * with NotAvailableError instead of being silently ignored.
 *
 * @example
 * const stages: Stages = { skipLayers: { targetSpeedup: 2 } };
 */
import { Ajv2020 } from 'ajv/dist/2020.js';
import { BadRequestError } from './errors.js';
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
          description:
            "Share of the prompt kept after the last pruning layer (spread geometrically over the layers), or one cumulative share per layer; absent: the stage's default schedule for long prompts (with `layers` it is needed).",
          oneOf: [
            { type: 'number', exclusiveMinimum: 0, maximum: 1 },
            { type: 'array', minItems: 1, items: { type: 'number', exclusiveMinimum: 0, maximum: 1 } },
          ],
        },
        layers: {
          type: 'array',
          minItems: 1,
          items: { type: 'integer', minimum: 1 },
          description: "Pruning layers, ascending (with keepRatio); default the paper's 9/32, 19/32, 28/32 of the depth. Without either, the stage's default schedule prunes from 14/30, 22/30, 27/30 of the depth.",
        },
        revive: {
          type: 'integer',
          minimum: 0,
          maximum: 64,
          description: 'Aux Cache: pruned tokens revived per pruning layer per later step when the new last token attends to them (default 4; 0 prunes statically).',
        },
      },
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
        adapter: {
          type: 'boolean',
          description:
            "true (default): the kept layers run with the model's skip adapter for this target when it has one (`skein train skip`); false: the unadapted layers.",
        },
      },
      required: ['targetSpeedup'],
    },
    speculate: {
      type: 'object',
      additionalProperties: false,
      description: 'Medusa / Cerberus speculative heads.',
      properties: {
        heads: { type: 'string', minLength: 1, description: "A heads folder (heads.json + heads.safetensors); default the model's own for the mode." },
        mode: { enum: ['medusa', 'cerberus'], description: 'Which trained heads: default cerberus when the model has them, else medusa.' },
        entropyGate: {
          oneOf: [{ type: 'number', minimum: 0 }, { type: 'boolean' }],
          description: "Entropy (nats) above which a step decodes plainly; true: the heads' calibrated threshold (default), false: no gate.",
        },
        acceptance: {
          enum: ['exact', 'typical'],
          description: 'exact (default): output identical to plain decoding. typical: Medusa typical acceptance for sampling, faster, not distribution-exact.',
        },
        nodes: { type: 'integer', minimum: 1, maximum: 64, description: "Candidate tree nodes; default the heads' own tree." },
      },
    },
  },
} as const;

export type Stages = FromSchema<typeof stagesSchema>;
export type StageName = keyof Stages;
export const stageNames = Object.keys(stagesSchema.properties) as StageName[];

/**
 * The stages that change the model's forward pass (which layers run, which prompt tokens
 * stay live, drafts verified in one forward). A remote provider runs its own forward
 * behind an HTTP API that exposes none of this, so a node on one cannot ask for them;
 * compress is not among them: it rewrites the prompt, and runs locally before the request
 * leaves.
 */
export const forwardStages: readonly StageName[] = ['prunedPrefill', 'skipLayers', 'speculate'];

const ajv = new Ajv2020({ allErrors: true, strict: false });
const stageValidators = Object.fromEntries(stageNames.map((name) => [name, ajv.compile(stagesSchema.properties[name])]));

/**
 * Checks one stage's options against the same schema graphs are validated with, so a stage
 * operator built in TypeScript refuses what a graph would: a BadRequestError naming the
 * field (`stages.compress/rate`) and the rule it breaks.
 */
export function checkStageOptions<K extends StageName>(name: K, options: unknown): NonNullable<Stages[K]> {
  const validate = stageValidators[name];
  if (!validate) throw new BadRequestError('stages', `unknown stage '${name}' (known: ${stageNames.join(', ')})`);
  if (!validate(options)) {
    const e = validate.errors![0]!;
    throw new BadRequestError(`stages.${name}${e.instancePath}`, e.message ?? e.keyword);
  }
  return options as NonNullable<Stages[K]>;
}

/**
 * Every stage of a graph's nodes that a model cannot run, as problems at the stage's JSON
 * pointer (`/nodes/3/stages/speculate`), each saying what is missing and how to get it.
 * `check` is the engine's (or the model's) Engine.checkStage.
 */
export function checkGraphStages(
  graph: { nodes: readonly object[] },
  check: (name: StageName) => Error | undefined,
): { pointer: string; message: string }[] {
  const problems: { pointer: string; message: string }[] = [];
  graph.nodes.forEach((node, i) => {
    for (const [name, options] of Object.entries((node as { stages?: Stages }).stages ?? {})) {
      if (options === undefined) continue;
      const error = check(name as StageName);
      if (error) problems.push({ pointer: `/nodes/${i}/stages/${name}`, message: error.message });
    }
  });
  return problems;
}
