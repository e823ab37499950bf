/**
 * Where an operator works: its node id, branch, seed and owner (core's NodeScope). The
 * graph runner passes each node's scope; a TypeScript user may pass one, or nothing.
 * Everything an operator reports travels on its own Observable (core/events.ts).
 *
 * @example
 * of('Hi').pipe(generate({ engine, context: { node: 'answer', seed: 7 } })).subscribe(console.log);
 */
import type { NodeScope } from '../core/nodes.js';

export type OperatorContext = NodeScope;

export function childBranch(context: OperatorContext | undefined, name: string): string {
  return context?.branch ? `${context.branch}/${name}` : name;
}
