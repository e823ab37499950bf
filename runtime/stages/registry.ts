/**
 * The engine's stage registry: one module per stage under runtime/stages/, each saying
 * what it asks of the forward and whether a given model can run it. The engine front
 * refuses a request naming a stage its model cannot run with the registry's typed
 * StageUnavailableError (what is missing, how to get it); `POST /v1/graphs/validate` and
 * `skein validate --model NAME` ask the same registry before a run, so a graph is refused
 * for the same reason, in the same words, at every door.
 *
 * @example
 * const error = checkStage('speculate', modelFacts('skein-mini'));
 * if (error) console.error(error.message); // … no trained heads beside the model; run `npx skein train heads …`
 */
import { StageUnavailableError } from '../../core/errors.js';
import { stageNames, type StageName } from '../../core/stages.js';
import { modelHasTokenizer, resolveModel } from '../checkpoint/load.js';
import type { ModelSpec } from '../engine/model-spec.js';
import type { EngineStageDef, ModelFacts } from './types.js';
import { compressStage } from './compress-stage.js';
import { prunedPrefillStage } from './pruned-prefill.js';
import { skipLayersStage } from './skip-layers.js';
import { speculateStage } from './speculate.js';

export type { EngineStageDef, ModelFacts } from './types.js';

export const engineStages: { [K in StageName]: EngineStageDef } = {
  compress: compressStage,
  prunedPrefill: prunedPrefillStage,
  skipLayers: skipLayersStage,
  speculate: speculateStage,
};

export function modelFacts(spec: ModelSpec): ModelFacts {
  if (typeof spec !== 'string') return { name: `random:${spec.seed ?? 0}`, hasTokenizer: false };
  // A GGUF model's tokenizer is in the file (tokenizer.ggml.*); a Hugging Face folder's is tokenizer.json.
  const location = resolveModel(spec);
  return { name: spec, dir: location.dir, hasTokenizer: modelHasTokenizer(location) };
}

/** The typed refusal of a stage the model cannot run, or undefined when it can. */
export function checkStage(name: string, model: ModelFacts): StageUnavailableError | undefined {
  const def = stageNames.includes(name as StageName) ? engineStages[name as StageName] : undefined;
  if (!def) return new StageUnavailableError(name, model.name, 'no such stage in this build', `use one of: ${stageNames.join(', ')}`);
  const why = def.unavailable(model);
  return why ? new StageUnavailableError(name, model.name, why.missing, why.remedy) : undefined;
}
