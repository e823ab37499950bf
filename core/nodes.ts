/**
 * The node-kind registry: how the graph runner reaches the code behind each node kind
 * without importing it. operators/nodes.ts registers the built-in kinds into
 * `defaultNodes` (importing operators/index.ts does it); anyone may register a kind the
 * same way, or pass their own registry to compileGraph. A kind's `run` gets the node's
 * input values and scope and returns the operator's event stream, which must end with
 * the node's own node-end (same node id and branch as the scope); the runner merges and
 * orders these streams and reads each node's result from that node-end.
 *
 * @example
 * defaultNodes.register('template', {
 *   run: ({ spec, values, scope }) => of(values).pipe(template(spec.template, { context: scope })),
 * });
 */
import type { Observable } from 'rxjs';
import type { BranchOutcome } from './branches.js';
import type { Engine } from './engine.js';
import type { OperatorEvent } from './events.js';
import type { NodeKind, NodeSpecOf } from './graph-schema.js';
import type { ToolRegistry } from './tools.js';

/** Where a node's work runs: its id, branch, seed and owner; operators take it as their `context`. */
export interface NodeScope {
  /** Name used in events and errors (the graph node id). */
  node?: string;
  /** Branch this work belongs to; inner branches are named below it. */
  branch?: string;
  /** Seed for sampling, unless the sampling options pin one. */
  seed?: number;
  /** Owner passed to the engine (the run id), for fairness and accounting. */
  owner?: string;
}

export interface NodeRunContext<S> {
  spec: S;
  /** The node's input port values, by port name. */
  values: Record<string, unknown>;
  scope: NodeScope & { node: string };
  engine: Engine;
  tools: ToolRegistry;
  /** The run's input (input nodes read it). */
  input: Record<string, unknown>;
  /** Gathering kinds only (join): each input's outcome as it arrives, skipped ones included. */
  outcomes?: Observable<BranchOutcome>;
  /** Loops only: runs one turn of the loop's body on a value and gives the value that reached `next`. */
  turn?: (value: unknown, n: number) => Observable<unknown>;
}

export interface NodeKindDef<S = unknown> {
  /** The node's operator stream; it ends with the node's own node-end. */
  run(context: NodeRunContext<S>): Observable<OperatorEvent>;
  /**
   * The values of the node's output ports from its node-end output (default: `out`). A
   * declared port missing from the result is skipped downstream (a route's untaken branches).
   */
  ports?(output: unknown, context: NodeRunContext<S>): Record<string, unknown>;
  /** The node gathers its inputs as they finish (join) instead of waiting for all of them. */
  gathers?: boolean;
}

export class NodeRegistry {
  private readonly kinds = new Map<string, NodeKindDef<never>>();

  register<K extends NodeKind>(kind: K, def: NodeKindDef<NodeSpecOf<K>>): this {
    this.kinds.set(kind, def as NodeKindDef<never>);
    return this;
  }

  get(kind: string): NodeKindDef<unknown> | undefined {
    return this.kinds.get(kind) as NodeKindDef<unknown> | undefined;
  }

  has(kind: string): boolean {
    return this.kinds.has(kind);
  }

  names(): string[] {
    return [...this.kinds.keys()].sort();
  }
}

/** The registry graphs use when the caller gives none; operators/nodes.ts fills it. */
export const defaultNodes = new NodeRegistry();
