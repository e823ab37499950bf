/**
 * What an operator may report while it works, and to whom. The graph runner turns these
 * into RunEvents (text-delta, branch-error, usage); TypeScript users may pass their own
 * `onEvent`, or nothing.
 *
 * @example
 * const context: OperatorContext = { node: 'answer', seed: 7, onEvent: (e) => e.type === 'delta' && process.stdout.write(e.text) };
 */
import type { GenerationMetrics, GenerationUsage } from '../runtime/engine/types.js';

export type OperatorEvent =
  | { type: 'delta'; branch?: string; text: string; tokenIds: number[] }
  | { type: 'usage'; branch?: string; usage: GenerationUsage; metrics: GenerationMetrics }
  | { type: 'branch-start'; branch: string }
  | { type: 'branch-end'; branch: string; output: unknown }
  | { type: 'branch-error'; branch: string; error: Error };

export interface OperatorContext {
  /** Name used in errors and branch ids (the graph node id). */
  node?: string;
  /** Seed for sampling, unless the sampling options pin one. */
  seed?: number;
  /** Owner passed to the engine (the run id), for fairness and accounting. */
  owner?: string;
  /** Branch this work belongs to; inner branches are named below it. */
  branch?: string;
  onEvent?: (event: OperatorEvent) => void;
}

export function childBranch(context: OperatorContext | undefined, name: string): string {
  return context?.branch ? `${context.branch}/${name}` : name;
}
