/**
 * The dataflow core as the server uses it (core/index.ts), behind the small `Dataflow`
 * interface so that tests can hand the app a double instead.
 *
 * @example
 * const problems = coreDataflow.validateGraph(json);
 */
import {
  GraphValidationError,
  checkGraphStages,
  checkRunInput,
  compileGraph,
  graphJsonSchema,
  parseGraph,
  runGraph,
  validateGraph,
  type GraphProblem,
  type GraphSpec,
} from '../../operators/index.js';
import type { Engine } from '../../core/engine.js';
import type { Dataflow } from './types.js';

/**
 * The schema and graph checks, then the tools and the stages: a graph naming a tool this
 * server has not registered, or a stage its model cannot run, would fail when run, so
 * validating it says so now (the stage registry's words: what is missing, how to get it).
 */
function validateForServer(json: unknown, engine?: Engine): GraphProblem[] {
  const problems = validateGraph(json);
  if (problems.length) return problems;
  try {
    compileGraph(json as GraphSpec);
  } catch (err) {
    if (err instanceof GraphValidationError) return err.problems;
    throw err;
  }
  return engine ? checkGraphStages(json as GraphSpec, (name) => engine.checkStage(name)) : [];
}

export const coreDataflow: Dataflow = {
  validateGraph: validateForServer,
  parseGraph,
  runGraph: (spec, input, options) => runGraph(spec as GraphSpec, input, options),
  checkInput: (spec, input) => checkRunInput(spec as GraphSpec, input),
  graphJsonSchema,
};
