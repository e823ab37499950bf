/**
 * The graph compiler: a validated graph becomes a CompiledGraph — nodes in dependency
 * order with their resolved ports, types, branch scopes, loop bodies and the registered
 * kind (core/nodes.ts) that runs each — which core/run.ts turns into one
 * Observable<RunEvent>. Every node kind must be registered (importing operators/index.ts
 * registers the built-in ones) and every tool the graph names too, or compiling fails
 * with a GraphValidationError.
 *
 * @example
 * const compiled = compileGraph(parseGraph(json, 'chat.json'));
 * console.log(printGraph(compiled));
 * runCompiled(compiled, { question: 'Hi' }, { engine }).subscribe(console.log);
 */
import { GraphValidationError, type GraphProblem } from './errors.js';
import type { GraphSpec, NodeKind, NodeSpec, PortType } from './graph-schema.js';
import { defaultNodes, type NodeKindDef, type NodeRegistry } from './nodes.js';
import { defaultTools, type ToolRegistry } from './tools.js';
import { analyzeGraph, type GraphAnalysis } from './validate.js';

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
  /** What runs the node (its kind's registry entry). */
  def: NodeKindDef<unknown>;
}

export interface CompiledGraph {
  spec: GraphSpec;
  analysis: GraphAnalysis;
  /** In dependency order. */
  nodes: CompiledNode[];
  byId: Map<string, CompiledNode>;
  tools: ToolRegistry;
}

export interface CompileOptions {
  tools?: ToolRegistry;
  nodes?: NodeRegistry;
  /** Named in errors (a file name). */
  source?: string;
}

export function compileGraph(spec: GraphSpec, options: CompileOptions = {}): CompiledGraph {
  const { tools = defaultTools, nodes: registry = defaultNodes, source } = options;
  const analysis = analyzeGraph(spec, source);
  const problems = spec.nodes.flatMap((n, i): GraphProblem[] => {
    if (!registry.has(n.kind))
      return [{ pointer: `/nodes/${i}/kind`, message: `no node kind '${n.kind}' is registered (import operators/index.ts to register the built-in kinds)` }];
    return n.kind === 'tool' && !tools.has(n.tool)
      ? [{ pointer: `/nodes/${i}/tool`, message: `no tool '${n.tool}' is registered${tools.names().length ? ` (registered: ${tools.names().join(', ')})` : ''}` }]
      : [];
  });
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
      def: registry.get(spec.kind)!,
    };
  });
  return { spec, analysis, nodes, byId: new Map(nodes.map((n) => [n.id, n])), tools };
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
