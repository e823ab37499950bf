/**
 * Skein's pipeline operators, for building pipelines in TypeScript with `pipe()`; the
 * JSON graph compiler (core/compile.ts) is built from these same operators.
 *
 * @example
 * import { of } from 'rxjs';
 * import { template, generate } from './operators/index.js';
 * of({ question: 'Why is the sky blue?' }).pipe(template('Answer briefly: {{question}}'), generate({ engine }));
 */
export { template, renderTemplate, renderValue } from './template.js';
export { generate, type GenerateOptions, type GenerateInput } from './generate.js';
export { generateJson, type GenerateJsonOptions } from './generateJson.js';
export { skeleton, type SkeletonOptions, type Skeleton } from './skeleton.js';
export { expand, type ExpandOptions } from './expand.js';
export { fork, type ForkOptions, type BranchOutcome } from './fork.js';
export { join, joinOutcomes, type JoinOptions } from './join.js';
export { route, sotRouterPrompt, type RouteOptions, type Routed } from './route.js';
export { loop, type LoopOptions } from './loop.js';
export { tool, type ToolOptions } from './tool.js';
export { compressPrompt, type CompressPromptOptions, type CompressPromptInput } from './compressPrompt.js';
export type { OperatorContext, OperatorEvent } from './context.js';
export { parseOutline, skeletonPrompt, expandPrompt } from './internal/sot.js';
