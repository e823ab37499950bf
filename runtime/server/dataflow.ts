/**
 * The dataflow core as the server uses it (core/index.ts), behind the small `Dataflow`
 * interface so that tests can hand the app a double instead.
 *
 * @example
 * const problems = coreDataflow.validateGraph(json);
 */
import { checkRunInput, graphJsonSchema, parseGraph, runGraph, validateGraph, type GraphSpec } from '../../core/index.js';
import type { Dataflow } from './types.js';

export const coreDataflow: Dataflow = {
  validateGraph,
  parseGraph,
  runGraph: (spec, input, options) => runGraph(spec as GraphSpec, input, options),
  checkInput: (spec, input) => checkRunInput(spec as GraphSpec, input),
  graphJsonSchema,
};
