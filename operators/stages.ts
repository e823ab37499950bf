/**
 * Stage operators: each inference stage is an operator placed before `generate` in a
 * pipeline. It checks its options against the stage schema (core/stages.ts) and adds
 * itself to the request, in pipeline order; the engine runs the stages (its registry,
 * runtime/stages/registry.ts) and each one's stage event — what it decided and what it
 * cost — comes back on generate's stream. A stage the loaded model cannot run fails the
 * generation with StageUnavailableError, saying what is missing and how to get it. In a
 * JSON graph, a generate node's `stages` compile to this chain, in order (stageChain).
 *
 * @example
 * of('A long report…').pipe(compress({ rate: 0.5 }), skipLayers({ targetSpeedup: 2 }), generate({ engine }));
 */
import type { Observable, OperatorFunction } from 'rxjs';
import { of } from 'rxjs';
import type { OperatorEvent } from '../core/events.js';
import { checkStageOptions, stageNames, type StageName, type Stages } from '../core/stages.js';
import type { GenerateInput, GenerationRequest } from './generate.js';
import { perValue, type Flow } from './internal/operate.js';

export type StageOperator = OperatorFunction<Flow<GenerateInput>, GenerationRequest | OperatorEvent>;

function stage<K extends StageName>(name: K, options: Stages[K]): StageOperator {
  const checked = checkStageOptions(name, options);
  return perValue((input: GenerateInput) => {
    const request = typeof input === 'string' ? { prompt: input } : input;
    return of<GenerationRequest>({ ...request, stages: { ...request.stages, [name]: checked } });
  });
}

/** LLMLingua-style prompt compression before prefill: keep about `rate` of the prompt tokens. */
export const compress = (options: NonNullable<Stages['compress']>): StageOperator => stage('compress', options);
/** LazyLLM: progressive pruning of prompt tokens during prefill. */
export const prunedPrefill = (options: NonNullable<Stages['prunedPrefill']>): StageOperator => stage('prunedPrefill', options);
/** Unified Layer Skipping: run about numLayers/targetSpeedup layers. */
export const skipLayers = (options: NonNullable<Stages['skipLayers']>): StageOperator => stage('skipLayers', options);
/** Medusa / Cerberus speculative heads trained beside the model. */
export const speculate = (options: NonNullable<Stages['speculate']> = {}): StageOperator => stage('speculate', options);

const stageOperators: { [K in StageName]: (options: NonNullable<Stages[K]>) => StageOperator } = { compress, prunedPrefill, skipLayers, speculate };

/** A graph node's `stages`, in the order they are written, as a chain of stage operators. */
export function stageChain(stages: Stages | undefined): StageOperator[] {
  return Object.entries(stages ?? {})
    .filter(([, options]) => options !== undefined)
    .map(([name, options]) => {
      if (!stageNames.includes(name as StageName)) throw new Error(`unknown stage ${name}`);
      return (stageOperators[name as StageName] as (o: unknown) => StageOperator)(options);
    });
}

/** `request$` through every operator of `chain`, in order. */
export function throughStages(request$: Observable<Flow<GenerateInput>>, chain: StageOperator[]): Observable<Flow<GenerateInput>> {
  return chain.reduce<Observable<Flow<GenerateInput>>>((acc, op) => acc.pipe(op), request$);
}
