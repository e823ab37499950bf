/**
 * The graph as a diagram: nodes and edges read from graph JSON (best effort, so a graph
 * being edited still draws), then a layered layout: each node's column is its longest
 * path from a source (back edges of loops are ignored), long edges get a waypoint in
 * every column they cross, and columns are ordered by their neighbours' mean position
 * (barycentre sweeps) to keep edges from crossing nodes and each other.
 *
 * @example
 * const layout = layoutGraph(readGraph(json));
 * layout.nodes.map((n) => [n.id, n.x, n.y]);
 */
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
  /** Waypoints through the columns it crosses: an entry and an exit point per column. */
  via: Array<{ x: number; y: number }>;
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
// Height of the slot a long edge takes in each column it crosses.
const VIRTUAL_H = 8;

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

  // Edges spanning several columns pass through one small virtual slot per column between
  // their ends, so that ordering keeps them clear of nodes and crossings (Sugiyama-style).
  interface Slot {
    id: string;
    layer: number;
    virtual: boolean;
    up: string[];
    down: string[];
    x: number;
    y: number;
  }
  const slots = new Map<string, Slot>();
  const addSlot = (id: string, l: number, virtual: boolean) => slots.set(id, { id, layer: l, virtual, up: [], down: [], x: 0, y: 0 });
  for (const n of dag.nodes) addSlot(n.id, layer.get(n.id)!, false);
  const link = (a: string, b: string) => {
    slots.get(a)!.down.push(b);
    slots.get(b)!.up.push(a);
  };
  const chains: string[][] = dag.edges.map((e, k) => {
    const la = layer.get(e.from)!;
    const lb = layer.get(e.to)!;
    if (back.has(`${e.from}->${e.to}`) || lb <= la) return [];
    const chain: string[] = [];
    let prev = e.from;
    for (let l = la + 1; l < lb; l++) {
      const id = `\u0000${k}:${l}`;
      addSlot(id, l, true);
      link(prev, id);
      chain.push(id);
      prev = id;
    }
    link(prev, e.to);
    return chain;
  });

  const columns: string[][] = [];
  for (const slot of slots.values()) (columns[slot.layer] ??= []).push(slot.id);
  for (let l = 0; l < columns.length; l++) columns[l] ??= [];
  const index = new Map<string, number>();
  const renumber = (col: string[]) => col.forEach((id, i) => index.set(id, i));
  columns.forEach(renumber);
  const reorder = (col: string[], side: 'up' | 'down') => {
    const key = (id: string) => {
      const ns = slots.get(id)![side];
      return ns.length ? ns.reduce((s, n) => s + index.get(n)!, 0) / ns.length : index.get(id)!;
    };
    const keyed = col.map((id) => ({ id, k: key(id), i: index.get(id)! }));
    keyed.sort((a, b) => a.k - b.k || a.i - b.i);
    keyed.forEach((o, i) => (col[i] = o.id));
    renumber(col);
  };
  // A few barycentre sweeps, down then up, settle small graphs.
  for (let sweep = 0; sweep < 4; sweep++) {
    for (let l = 1; l < columns.length; l++) reorder(columns[l]!, 'up');
    for (let l = columns.length - 2; l >= 0; l--) reorder(columns[l]!, 'down');
  }
  for (let l = 1; l < columns.length; l++) reorder(columns[l]!, 'up');

  const heightOf = (id: string) => (slots.get(id)!.virtual ? VIRTUAL_H : NODE_H);
  const columnHeight = (col: string[]) => col.reduce((s, id) => s + heightOf(id), 0) + Math.max(0, col.length - 1) * GAP_Y;
  const height = PAD * 2 + Math.max(NODE_H, ...columns.map(columnHeight));
  columns.forEach((col, l) => {
    let y = (height - columnHeight(col)) / 2;
    for (const id of col) {
      const slot = slots.get(id)!;
      slot.x = PAD + l * (NODE_W + GAP_X);
      slot.y = y;
      y += heightOf(id) + GAP_Y;
    }
  });

  const nodes: PlacedNode[] = dag.nodes.map((n) => {
    const slot = slots.get(n.id)!;
    return { ...n, layer: slot.layer, row: index.get(n.id)!, x: slot.x, y: slot.y };
  });
  const edges: PlacedEdge[] = dag.edges.map((e, k) => ({
    ...e,
    back: back.has(`${e.from}->${e.to}`) || layer.get(e.to)! <= layer.get(e.from)!,
    via: chains[k]!.flatMap((id) => {
      const v = slots.get(id)!;
      return [
        { x: v.x, y: v.y + VIRTUAL_H / 2 },
        { x: v.x + NODE_W, y: v.y + VIRTUAL_H / 2 },
      ];
    }),
  }));
  const width = PAD * 2 + Math.max(1, columns.length) * NODE_W + Math.max(0, columns.length - 1) * GAP_X;
  return { nodes, edges, width, height };
}
