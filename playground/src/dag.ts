/**
 * The graph as a diagram: nodes and edges read from graph JSON (best effort, so a graph
 * being edited still draws), then a layered left-to-right layout by dagre (@dagrejs/dagre:
 * network-simplex ranking, crossing reduction, edges routed through the columns they cross).
 * Loops' return edges are found here and left out of the layout, so the diagram draws them
 * as arcs over the nodes instead of letting dagre turn the graph around them.
 *
 * @example
 * const layout = layoutGraph(readGraph(json));
 * layout.nodes.map((n) => [n.id, n.x, n.y]);
 */
import { graphlib, layout } from '@dagrejs/dagre';

export interface DagNode {
  id: string;
  kind: string;
  label: string;
  /** The remote provider the node's model calls run on (absent: the local runtime). */
  provider?: string;
}
export interface DagEdge {
  from: string;
  to: string;
  label?: string;
}
export interface Dag {
  nodes: DagNode[];
  edges: DagEdge[];
}

export interface PlacedNode extends DagNode {
  layer: number;
  row: number;
  x: number;
  y: number;
}
export interface PlacedEdge extends DagEdge {
  /** Drawn as an arc back over the nodes (a loop's return). */
  back: boolean;
  /** From the source's right side through the columns it crosses to the target's left side. */
  points: Array<{ x: number; y: number }>;
}
export interface Layout {
  nodes: PlacedNode[];
  edges: PlacedEdge[];
  width: number;
  height: number;
}

export const NODE_W = 132;
export const NODE_H = 46;
const GAP_X = 40;
const GAP_Y = 18;
const PAD = 16;

/** Reads {nodes:[{id, kind, label?, provider?}], edges:[{from:'a.port', to:'b'}]}; skips what is malformed. */
export function readGraph(json: unknown): Dag {
  const g = (typeof json === 'object' && json !== null ? json : {}) as { nodes?: unknown; edges?: unknown };
  const nodes: DagNode[] = [];
  const seen = new Set<string>();
  for (const n of Array.isArray(g.nodes) ? g.nodes : []) {
    const node = n as { id?: unknown; kind?: unknown; label?: unknown; provider?: unknown };
    if (typeof node?.id !== 'string' || seen.has(node.id)) continue;
    seen.add(node.id);
    const kind = typeof node.kind === 'string' ? node.kind : '?';
    nodes.push({
      id: node.id,
      kind,
      label: typeof node.label === 'string' ? node.label : node.id,
      ...(typeof node.provider === 'string' ? { provider: node.provider } : {}),
    });
  }
  const edges: DagEdge[] = [];
  for (const e of Array.isArray(g.edges) ? g.edges : []) {
    const edge = e as { from?: unknown; to?: unknown; label?: unknown };
    if (typeof edge?.from !== 'string' || typeof edge.to !== 'string') continue;
    const [from, fromPort] = edge.from.split('.');
    const [to] = edge.to.split('.');
    if (!seen.has(from!) || !seen.has(to!)) continue;
    const label = typeof edge.label === 'string' ? edge.label : fromPort;
    edges.push({ from: from!, to: to!, ...(label ? { label } : {}) });
  }
  return { nodes, edges };
}

export function layoutGraph(dag: Dag): Layout {
  const back = backEdges(dag);
  const g = new graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: 'LR', nodesep: GAP_Y, ranksep: GAP_X, edgesep: GAP_Y / 2, marginx: PAD, marginy: PAD });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of dag.nodes) g.setNode(n.id, { width: NODE_W, height: NODE_H });
  // A loop's return edge stays out of the layout and is drawn as an arc over the nodes.
  dag.edges.forEach((e, k) => {
    if (!back[k]) g.setEdge(e.from, e.to, {}, String(k));
  });
  layout(g);

  const centre = (id: string) => g.node(id) as { x: number; y: number };
  const columnXs = [...new Set(dag.nodes.map((n) => centre(n.id).x))].sort((a, b) => a - b);
  const placed = dag.nodes.map((n) => {
    const c = centre(n.id);
    return { ...n, layer: columnXs.indexOf(c.x), row: 0, x: c.x - NODE_W / 2, y: c.y - NODE_H / 2 };
  });
  for (let l = 0; l < columnXs.length; l++) {
    placed
      .filter((n) => n.layer === l)
      .sort((a, b) => a.y - b.y)
      .forEach((n, row) => (n.row = row));
  }
  const at = new Map(placed.map((n) => [n.id, n]));
  const edges: PlacedEdge[] = dag.edges.map((e, k) => {
    const a = at.get(e.from)!;
    const b = at.get(e.to)!;
    const start = { x: a.x + NODE_W, y: a.y + NODE_H / 2 };
    const end = { x: b.x, y: b.y + NODE_H / 2 };
    if (back[k]) return { ...e, back: true, points: [start, end] };
    // dagre's first and last points sit on the node boxes' borders; ports are drawn at the sides.
    const routed = (g.edge(e.from, e.to, String(k)) as { points?: Array<{ x: number; y: number }> }).points ?? [];
    return { ...e, back: false, points: [start, ...routed.slice(1, -1).map(({ x, y }) => ({ x, y })), end] };
  });
  const { width = 0, height = 0 } = g.graph() as { width?: number; height?: number };
  return { nodes: placed, edges, width: Math.max(width, PAD * 2 + NODE_W), height: Math.max(height, PAD * 2 + NODE_H) };
}

/** Per edge: does it close a loop? Found by depth-first search from the sources, in graph order. */
function backEdges(dag: Dag): boolean[] {
  const succs = new Map<string, Array<{ to: string; k: number }>>(dag.nodes.map((n) => [n.id, []]));
  const hasPred = new Set(dag.edges.map((e) => e.to));
  dag.edges.forEach((e, k) => succs.get(e.from)!.push({ to: e.to, k }));
  const back = dag.edges.map(() => false);
  const state = new Map<string, 'open' | 'closed'>();
  const visit = (id: string) => {
    state.set(id, 'open');
    for (const { to, k } of succs.get(id)!) {
      if (state.get(to) === 'open') back[k] = true;
      else if (!state.has(to)) visit(to);
    }
    state.set(id, 'closed');
  };
  for (const n of dag.nodes) if (!state.has(n.id) && !hasPred.has(n.id)) visit(n.id);
  for (const n of dag.nodes) if (!state.has(n.id)) visit(n.id);
  return back;
}
