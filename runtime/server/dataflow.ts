/**
 * The dataflow core as the server uses it (core/index.ts), behind the small `Dataflow`
 * interface so that tests can hand the app a double instead.
 *
 * @example
 * const problems = coreDataflow.validateGraph(json);
 */
import {
  GraphValidationError,
  checkRunInput,
  compileGraph,
  graphJsonSchema,
  parseGraph,
  runGraph,
  validateGraph,
  type GraphProblem,
  type GraphSpec,
} from '../../core/index.js';
import type { Dataflow } from './types.js';

/**
 * The schema and graph checks, then the tools: a graph naming a tool this server has not
 * registered would be refused when run, so validating it says so now.
 */
function validateForServer(json: unknown): GraphProblem[] {
  const problems = validateGraph(json);
  if (problems.length) return problems;
  try {
    compileGraph(json as GraphSpec);
  } catch (err) {
    if (err instanceof GraphValidationError) return err.problems;
    throw err;
  }
  return [];
}

export const coreDataflow: Dataflow = {
  validateGraph: validateForServer,
  parseGraph,
  runGraph: (spec, input, options) => runGraph(spec as GraphSpec, input, options),
  checkInput: (spec, input) => checkRunInput(spec as GraphSpec, input),
  graphJsonSchema,
};
