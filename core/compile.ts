/**
 * The graph compiler: a validated graph becomes a CompiledGraph — nodes in dependency
 * order with their resolved ports, types, branch scopes and loop bodies — whose `run`
 * wires the operators of operators/ into one Observable<RunEvent>. Tools named by the
 * graph must be registered, or compiling fails with a GraphValidationError.
 *
 * @example
 * const compiled = compileGraph(parseGraph(json, 'chat.json'));
 * console.log(printGraph(compiled));
 * compiled.run({ question: 'Hi' }, { engine }).subscribe(console.log);
 */
import type { Observable } from 'rxjs';
import { GraphValidationError } from './errors.js';
import type { RunEvent } from './events.js';
import type { GraphSpec, NodeKind, NodeSpec, PortType } from './graph-schema.js';
import { defaultTools, type ToolRegistry } from './tools.js';
import { analyzeGraph, type GraphAnalysis } from './validate.js';
import { runCompiled, type RunOptions } from './run.js';

export interface CompiledPort {
  port: string;
  type: PortType;
}

export interface CompiledNode {
  id: string;
  kind: NodeKind;
  spec: NodeSpec;
  /** Position in the document's `nodes` array (for JSON pointers). */
  index: number;
  /** The fork/route branches the node lies in, outermost first. */
  scope: string[];
  /** The innermost loop whose body runs this node once per turn. */
  loop?: string;
  inputs: (CompiledPort & { from: string; fromPort: string; edge: number })[];
  outputs: (CompiledPort & { to: string[] })[];
}

export interface CompiledGraph {
  spec: GraphSpec;
  analysis: GraphAnalysis;
  /** In dependency order. */
  nodes: CompiledNode[];
  byId: Map<string, CompiledNode>;
  tools: ToolRegistry;
  run(input: Record<string, unknown>, options: RunOptions): Observable<RunEvent>;
}

export function compileGraph(spec: GraphSpec, tools: ToolRegistry = defaultTools, source?: string): CompiledGraph {
  const analysis = analyzeGraph(spec, source);
  const problems = spec.nodes.flatMap((n, i) =>
    n.kind === 'tool' && !tools.has(n.tool)
      ? [{ pointer: `/nodes/${i}/tool`, message: `no tool '${n.tool}' is registered${tools.names().length ? ` (registered: ${tools.names().join(', ')})` : ''}` }]
      : [],
  );
  if (problems.length) throw new GraphValidationError(problems, source);

  const innermostLoop = (id: string) => {
    let best: string | undefined;
    for (const [loopId, body] of analysis.loopBodies)
      if (body.has(id) && (best === undefined || body.size < analysis.loopBodies.get(best)!.size)) best = loopId;
    return best;
  };
  const nodes = analysis.order.map((id): CompiledNode => {
    const spec = analysis.nodes.get(id)!;
    const ports = analysis.ports.get(id)!;
    return {
      id,
      kind: spec.kind,
      spec,
      index: analysis.spec.nodes.indexOf(spec),
      scope: analysis.scopes.get(id) ?? [],
      loop: innermostLoop(id),
      inputs: analysis.incoming.get(id)!.map((e) => ({
        port: e.toPort,
        type: ports.inputs.find((p) => p.name === e.toPort)?.type ?? 'any',
        from: e.from,
        fromPort: e.fromPort,
        edge: e.index,
      })),
      outputs: ports.outputs.map((p) => ({
        port: p.name,
        type: analysis.types.get(`${id}.${p.name}`) ?? p.type,
        to: analysis.outgoing.get(id)!.filter((e) => e.fromPort === p.name).map((e) => `${e.to}.${e.toPort}`),
      })),
    };
  });
  const compiled: CompiledGraph = {
    spec,
    analysis,
    nodes,
    byId: new Map(nodes.map((n) => [n.id, n])),
    tools,
    run: (input, options) => runCompiled(compiled, input, options),
  };
  return compiled;
}

/** A compiled graph as text: one block per node in run order, with ports, types, branch and loop. */
export function printGraph(compiled: CompiledGraph): string {
  const { spec, nodes } = compiled;
  const lines = [`graph ${spec.name} (v${spec.version}): ${nodes.length} nodes, ${spec.edges.length} edges`];
  for (const n of nodes) {
    const label = n.spec.label ? ` "${n.spec.label}"` : '';
    const where = [n.scope.length ? `branch ${n.scope.join('/')}` : '', n.loop ? `per turn of ${n.loop}` : ''].filter(Boolean).join(', ');
    lines.push(`  ${n.id} (${n.kind})${label}${where ? `  [${where}]` : ''}`);
    for (const i of n.inputs) lines.push(`    in  ${i.port}: ${i.type} ← ${i.from}.${i.fromPort}`);
    for (const o of n.outputs) lines.push(`    out ${o.port}: ${o.type}${o.to.length ? ` → ${o.to.join(', ')}` : ''}`);
  }
  return lines.join('\n');
}
