/**
 * What an engine stage declares (runtime/stages/registry.ts): its name, what it asks of
 * the forward, and whether a model can run it.
 */
import type { StageName } from '../../core/stages.js';

/** What the registry needs to know of a model: read from its folder, without loading weights. */
export interface ModelFacts {
  name: string;
  /** The model's folder (absent for a random in-memory model). */
  dir?: string;
  hasTokenizer: boolean;
}

export interface EngineStageDef {
  name: StageName;
  /** What the stage asks of the forward (its shape per call), in words. */
  forward: string;
  /** Undefined when the model can run the stage; otherwise what is missing and how to get it. */
  unavailable(model: ModelFacts): { missing: string; remedy: string } | undefined;
}
