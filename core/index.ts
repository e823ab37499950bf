/**
 * Skein's dataflow core, the public API and the contract every layer shares: the graph
 * format, validation, the compiler and runner, events, errors, sampling and stage
 * schemas, the Engine interface, and the registries of node kinds and tools. The node
 * kinds themselves are operators (operators/nodes.ts registers them): import
 * operators/index.ts, which re-exports this API, before running a graph.
 *
 * @example
 * import { parseGraph, runGraph } from './operators/index.js';
 * const spec = parseGraph(JSON.parse(text), 'chat.json');
 * runGraph(spec, { question: 'Why is the sky blue?' }, { engine, seed: 1 }).subscribe((e) => console.log(e));
 */
import type { Observable } from 'rxjs';
import { compileGraph } from './compile.js';
import type { RunEvent } from './events.js';
import type { GraphSpec } from './graph-schema.js';
import { checkJsonShape, DEFAULT_SHAPE_LIMITS } from './json-shape.js';
import { runCompiled, type RunOptions } from './run.js';

export { validateGraph, parseGraph, analyzeGraph, type GraphAnalysis } from './validate.js';
export { compileGraph, printGraph, type CompiledGraph, type CompiledNode, type CompileOptions } from './compile.js';
export { checkRunInput, readInput, runCompiled, type RunOptions } from './run.js';
export { NodeRegistry, defaultNodes, type NodeKindDef, type NodeRunContext, type NodeScope } from './nodes.js';
export { nextFinish, toError, errorInfo, type BranchOutcome } from './branches.js';
export { resolveSampling, samplingSchema, defaultSampling, type SamplingParams } from './sampling.js';
export { operatorEvent, isOperatorEvent, runEventTypes } from './events.js';
export type * from './engine.js';
export { UNKNOWN_TOKEN_ID } from './engine.js';
export {
  graphJsonSchema,
  nodeSchemas,
  nodeKinds,
  joinModes,
  portTypes,
  conditionSchema,
  providerSchema,
  GRAPH_SCHEMA_ID,
  type GraphSpec,
  type NodeSpec,
  type NodeSpecOf,
  type NodeKind,
  type EdgeSpec,
  type Condition,
  type ProviderSpec,
  type JoinMode,
  type PortType,
} from './graph-schema.js';
export { portsOf, type PortDef, type NodePorts } from './ports.js';
export { stagesSchema, stageNames, forwardStages, checkStageOptions, checkGraphStages, type Stages, type StageName } from './stages.js';
export { ToolRegistry, registerTool, defaultTools, type ToolFn, type ToolCall } from './tools.js';
export { saveEvents, parseEvents, replayEvents, type ReplayOptions } from './replay.js';
export { deriveSeed } from './seed.js';
export { matchCondition } from './conditions.js';
export { checkJsonShape, scanJsonText, DEFAULT_SHAPE_LIMITS, ShapeLimitError, type ShapeLimits } from './json-shape.js';
export * from './errors.js';
export type * from './events.js';

/**
 * Runs a graph: compiles it (throws GraphValidationError at once if it is invalid or names
 * an unregistered tool) and returns the cold stream of its events. A graph or input past
 * the shape limits (nesting depth, key count) is refused at once with ShapeLimitError:
 * its events could not be serialised later.
 */
export function runGraph(spec: GraphSpec, input: Record<string, unknown>, options: RunOptions): Observable<RunEvent> {
  checkJsonShape(spec, DEFAULT_SHAPE_LIMITS, 'graph');
  checkJsonShape(input, DEFAULT_SHAPE_LIMITS, 'input');
  return runCompiled(compileGraph(spec, { tools: options.tools, nodes: options.nodes }), input, options);
}
