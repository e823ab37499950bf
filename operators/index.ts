/**
 * Skein's pipeline operators, for building pipelines in TypeScript with `pipe()`. Each
 * operator's Observable streams its own events (node start, text deltas, stage events,
 * node end with its output and metrics); `outputs()` keeps only the results. Importing
 * this module registers the operators as the built-in node kinds (operators/nodes.ts), so
 * JSON graphs run on the same operators, and the built-in tools (calculator, lookup);
 * core's graph API is re-exported here.
 *
 * @example
 * import { of } from 'rxjs';
 * import { template, generate, outputs } from './operators/index.js';
 * of({ question: 'Why is the sky blue?' }).pipe(template('Answer briefly: {{question}}'), generate({ engine }), outputs());
 */
import './nodes.js';
import './builtin-tools.js';

export * from '../core/index.js';
export { registerBuiltinNodes } from './nodes.js';
export { inputs as outputs, type Flow } from './internal/operate.js';
export { compress, prunedPrefill, skipLayers, speculate, stageChain, type StageOperator } from './stages.js';
export { shareKv, type ShareKvOptions } from './shareKv.js';
export { template, renderTemplate, renderValue } from './template.js';
export { generate, type GenerateOptions, type GenerateInput, type GenerationRequest } from './generate.js';
export { generateJson, type GenerateJsonOptions } from './generateJson.js';
export { skeleton, type SkeletonOptions, type Skeleton } from './skeleton.js';
export { expand, type ExpandOptions } from './expand.js';
export { fork, type ForkOptions, type BranchOutcome } from './fork.js';
export { join, joinOutcomes, type JoinOptions } from './join.js';
export { route, sotRouterPrompt, type RouteOptions, type Routed } from './route.js';
export { loop, type LoopOptions } from './loop.js';
export { tool, type ToolOptions } from './tool.js';
export { calculator, lookup, registerBuiltinTools } from './builtin-tools.js';
export { compressPrompt, type CompressPromptOptions, type CompressPromptInput } from './compressPrompt.js';
export type { OperatorContext } from './context.js';
export { parseOutline, skeletonPrompt, expandPrompt } from './internal/sot.js';
