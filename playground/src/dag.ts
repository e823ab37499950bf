/**
 * The graph as a diagram: nodes and edges read from graph JSON (best effort, so a graph
 * being edited still draws), then a layered layout: each node's column is its longest
 * path from a source (back edges of loops are ignored), and each column is ordered by
 * the mean row of its predecessors to keep edges from crossing.
 *
 * @example
 * const layout = layoutGraph(readGraph(json));
 * layout.nodes.map((n) => [n.id, n.x, n.y]);
 */
export interface DagNode {
  id: string;
  kind: string;
  label: string;
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
export interface Layout {
  nodes: PlacedNode[];
  edges: DagEdge[];
  width: number;
  height: number;
}

export const NODE_W = 132;
export const NODE_H = 46;
const GAP_X = 40;
const GAP_Y = 18;
const PAD = 16;

/** Reads {nodes:[{id, kind, label?}], edges:[{from:'a.port', to:'b'}]}; skips what is malformed. */
export function readGraph(json: unknown): Dag {
  const g = (typeof json === 'object' && json !== null ? json : {}) as { nodes?: unknown; edges?: unknown };
  const nodes: DagNode[] = [];
  const seen = new Set<string>();
  for (const n of Array.isArray(g.nodes) ? g.nodes : []) {
    const node = n as { id?: unknown; kind?: unknown; label?: unknown };
    if (typeof node?.id !== 'string' || seen.has(node.id)) continue;
    seen.add(node.id);
    const kind = typeof node.kind === 'string' ? node.kind : '?';
    nodes.push({ id: node.id, kind, label: typeof node.label === 'string' ? node.label : node.id });
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
  const preds = new Map<string, string[]>(dag.nodes.map((n) => [n.id, []]));
  const succs = new Map<string, string[]>(dag.nodes.map((n) => [n.id, []]));
  for (const e of dag.edges) {
    preds.get(e.to)!.push(e.from);
    succs.get(e.from)!.push(e.to);
  }
  // Back edges (a loop's body returning to it) would make "longest path" infinite.
  const back = new Set<string>();
  const state = new Map<string, 1 | 2>();
  const visit = (id: string) => {
    state.set(id, 1);
    for (const s of succs.get(id)!) {
      if (state.get(s) === 1) back.add(`${id}->${s}`);
      else if (!state.has(s)) visit(s);
    }
    state.set(id, 2);
  };
  for (const n of dag.nodes) if (!state.has(n.id) && preds.get(n.id)!.length === 0) visit(n.id);
  for (const n of dag.nodes) if (!state.has(n.id)) visit(n.id);

  const layer = new Map<string, number>();
  const layerOf = (id: string, depth = 0): number => {
    const known = layer.get(id);
    if (known !== undefined) return known;
    if (depth > dag.nodes.length) return 0;
    let l = 0;
    for (const p of preds.get(id)!) if (!back.has(`${p}->${id}`)) l = Math.max(l, layerOf(p, depth + 1) + 1);
    layer.set(id, l);
    return l;
  };
  for (const n of dag.nodes) layerOf(n.id);

  const columns: string[][] = [];
  for (const n of dag.nodes) (columns[layer.get(n.id)!] ??= []).push(n.id);
  const row = new Map<string, number>();
  for (const col of columns) {
    if (!col) continue;
    const mean = (id: string) => {
      const ps = preds.get(id)!.filter((p) => row.has(p));
      return ps.length ? ps.reduce((s, p) => s + row.get(p)!, 0) / ps.length : Infinity;
    };
    const order = col.map((id, i) => ({ id, i, m: mean(id) })).sort((a, b) => (a.m === b.m ? a.i - b.i : a.m - b.m));
    order.forEach((o, i) => row.set(o.id, i));
  }

  const tallest = Math.max(1, ...columns.map((c) => c?.length ?? 0));
  const height = PAD * 2 + tallest * NODE_H + (tallest - 1) * GAP_Y;
  const nodes: PlacedNode[] = dag.nodes.map((n) => {
    const l = layer.get(n.id)!;
    const r = row.get(n.id)!;
    const count = columns[l]!.length;
    const colHeight = count * NODE_H + (count - 1) * GAP_Y;
    return { ...n, layer: l, row: r, x: PAD + l * (NODE_W + GAP_X), y: (height - colHeight) / 2 + r * (NODE_H + GAP_Y) };
  });
  const width = PAD * 2 + Math.max(1, columns.length) * NODE_W + Math.max(0, columns.length - 1) * GAP_X;
  return { nodes, edges: dag.edges, width, height };
}
