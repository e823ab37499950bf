/**
 * Skein's dataflow core, the public API: validate and parse JSON graphs, compile them to
 * RxJS, run them on an Engine as a stream of RunEvents, save and replay those events,
 * and register tools. The operators the compiler uses are exported for `pipe()` users.
 *
 * @example
 * import { parseGraph, runGraph } from './core/index.js';
 * const spec = parseGraph(JSON.parse(text), 'chat.json');
 * runGraph(spec, { question: 'Why is the sky blue?' }, { engine, seed: 1 }).subscribe((e) => console.log(e));
 */
import type { Observable } from 'rxjs';
import { compileGraph } from './compile.js';
import type { RunEvent } from './events.js';
import type { GraphSpec } from './graph-schema.js';
import { checkJsonShape, DEFAULT_SHAPE_LIMITS } from './json-shape.js';
import type { RunOptions } from './run.js';

export { validateGraph, parseGraph, analyzeGraph, type GraphAnalysis } from './validate.js';
export { compileGraph, printGraph, type CompiledGraph, type CompiledNode } from './compile.js';
export { checkRunInput, type RunOptions } from './run.js';
export {
  graphJsonSchema,
  nodeSchemas,
  nodeKinds,
  joinModes,
  portTypes,
  conditionSchema,
  GRAPH_SCHEMA_ID,
  type GraphSpec,
  type NodeSpec,
  type NodeSpecOf,
  type NodeKind,
  type EdgeSpec,
  type Condition,
  type JoinMode,
  type PortType,
} from './graph-schema.js';
export { portsOf, type PortDef, type NodePorts } from './ports.js';
export { stagesSchema, stageNames, type Stages, type StageName } from './stages.js';
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
  return compileGraph(spec, options.tools).run(input, options);
}
