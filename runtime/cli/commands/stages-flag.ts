/**
 * `--stages JSON` for `skein generate` and `skein run`: the same object as a generate
 * node's `stages`, checked by ajv against the same schema (core/stages.ts), so a mistake is
 * reported with its JSON pointer, e.g. `--stages/skipLayers/mode: must be equal to one of
 * the allowed values`.
 *
 * @example
 * const stages = parseStagesFlag('{"skipLayers":{"targetSpeedup":2,"mode":"self-speculative"}}');
 */
import { Ajv2020 } from 'ajv/dist/2020.js';
import { BadRequestError } from '../../../core/errors.js';
import { stagesSchema, type Stages } from '../../../core/stages.js';

const validate = new Ajv2020({ allErrors: true, strict: false }).compile(stagesSchema);

export function parseStagesFlag(text: string): Stages {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new BadRequestError('--stages', `not JSON: ${(err as Error).message}`);
  }
  if (!validate(value)) {
    const e = validate.errors![0]!;
    const extra = e.keyword === 'additionalProperties' ? ` '${(e.params as { additionalProperty: string }).additionalProperty}'` : '';
    throw new BadRequestError(`--stages${e.instancePath}`, `${e.message ?? e.keyword}${extra}`);
  }
  return value as Stages;
}

/** A graph document with `stages` merged into every node that calls the model (flag values win). */
export function withStages(graph: unknown, stages: Stages): unknown {
  if (graph === null || typeof graph !== 'object' || !Array.isArray((graph as { nodes?: unknown }).nodes)) return graph;
  const g = graph as { nodes: Record<string, unknown>[] };
  const modelCalls = new Set(['generate', 'skeleton', 'expand']);
  return {
    ...g,
    nodes: g.nodes.map((n) =>
      n !== null && typeof n === 'object' && modelCalls.has(n.kind as string)
        ? { ...n, stages: { ...((n.stages as object | undefined) ?? {}), ...stages } }
        : n,
    ),
  };
}
