/**
 * What names the model an engine serves, in a form that can cross a thread boundary: a
 * model folder (or a name under models/), or the shape and seed of a random in-memory
 * model (tests and benchmarks; no tokenizer, so requests must come as token ids).
 *
 * @example
 * const { model, tokenizer } = await loadEngineModel({ random: { numLayers: 2 }, seed: 1 });
 */
import type { ModelTokenizer } from '../checkpoint/tokenizer.js';
import { loadModel, loadTokenizer, modelHasTokenizer, resolveModel } from '../checkpoint/load.js';
import { randomModel } from '../model/random.js';
import type { LoadedModel, ModelConfig } from '../model/types.js';

export type ModelSpec = string | { random: Partial<ModelConfig>; seed?: number };

export function modelSpecName(spec: ModelSpec): string {
  return typeof spec === 'string' ? spec : `random:${spec.seed ?? 0}`;
}

export async function loadEngineModel(spec: ModelSpec): Promise<{ model: LoadedModel; tokenizer: ModelTokenizer | null }> {
  if (typeof spec !== 'string') return { model: randomModel(spec.random, spec.seed ?? 0), tokenizer: null };
  const model = await loadModel(spec);
  return { model, tokenizer: model.hasTokenizer ? model.tokenizer() : null };
}

/** The tokenizer alone (the main thread of a worker engine needs it, not the weights). */
export function loadSpecTokenizer(spec: ModelSpec): ModelTokenizer | null {
  if (typeof spec !== 'string') return null;
  return modelHasTokenizer(resolveModel(spec)) ? loadTokenizer(spec) : null;
}
