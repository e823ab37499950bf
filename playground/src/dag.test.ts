import { describe, expect, it } from 'vitest';
import { layoutGraph, NODE_H, NODE_W, readGraph } from './dag.js';

describe('readGraph', () => {
  it('reads nodes and edges, dropping ports and what is malformed', () => {
    const dag = readGraph({
      nodes: [{ id: 'a', kind: 'input' }, { id: 'b', kind: 'fork', label: 'Fork' }, { id: 'a', kind: 'dup' }, { kind: 'noid' }],
      edges: [{ from: 'a', to: 'b' }, { from: 'b.left', to: 'a' }, { from: 'a', to: 'zzz' }, 'junk'],
    });
    expect(dag.nodes).toEqual([
      { id: 'a', kind: 'input', label: 'a' },
      { id: 'b', kind: 'fork', label: 'Fork' },
    ]);
    expect(dag.edges).toEqual([{ from: 'a', to: 'b' }, { from: 'b', to: 'a', label: 'left' }]);
  });

  it('keeps the provider a node runs on', () => {
    const dag = readGraph({ nodes: [{ id: 'g', kind: 'generate', provider: 'big' }, { id: 'h', kind: 'generate', provider: 3 }], edges: [] });
    expect(dag.nodes).toEqual([
      { id: 'g', kind: 'generate', label: 'g', provider: 'big' },
      { id: 'h', kind: 'generate', label: 'h' },
    ]);
  });

  it('draws nothing from nothing', () => {
    expect(readGraph(null)).toEqual({ nodes: [], edges: [] });
    expect(layoutGraph(readGraph('x')).nodes).toEqual([]);
  });
});

describe('layoutGraph', () => {
  it('puts each node in a column after all its predecessors, parallel branches side by side', () => {
    const layout = layoutGraph(
      readGraph({
        nodes: ['q', 'fork', 'x', 'y', 'join', 'out'].map((id) => ({ id, kind: 'k' })),
        edges: [
          { from: 'q', to: 'fork' },
          { from: 'fork.x', to: 'x' },
          { from: 'fork.y', to: 'y' },
          { from: 'x', to: 'join' },
          { from: 'y', to: 'join' },
          { from: 'q', to: 'join' },
          { from: 'join', to: 'out' },
        ],
      }),
    );
    const at = Object.fromEntries(layout.nodes.map((n) => [n.id, n]));
    expect([at.q!.layer, at.fork!.layer, at.x!.layer, at.y!.layer, at.join!.layer, at.out!.layer]).toEqual([0, 1, 2, 2, 3, 4]);
    expect(at.x!.x).toBe(at.y!.x);
    expect(Math.abs(at.x!.y - at.y!.y)).toBeGreaterThanOrEqual(NODE_H);
    expect(at.fork!.x).toBeGreaterThan(at.q!.x + NODE_W);
    expect(layout.width).toBeGreaterThanOrEqual(at.out!.x + NODE_W);
  });

  it('routes a long edge through the columns it crosses, clear of their nodes', () => {
    const layout = layoutGraph(
      readGraph({
        nodes: ['a', 'b', 'c', 'd'].map((id) => ({ id, kind: 'k' })),
        edges: [
          { from: 'a', to: 'b' },
          { from: 'b', to: 'c' },
          { from: 'c', to: 'd' },
          { from: 'a', to: 'd' },
        ],
      }),
    );
    const long = layout.edges.find((e) => e.from === 'a' && e.to === 'd')!;
    const at = Object.fromEntries(layout.nodes.map((n) => [n.id, n]));
    expect(long.points[0]).toEqual({ x: at.a!.x + NODE_W, y: at.a!.y + NODE_H / 2 });
    expect(long.points.at(-1)).toEqual({ x: at.d!.x, y: at.d!.y + NODE_H / 2 });
    // It passes through the columns of b and c, beside their boxes, not across them.
    for (const crossed of [at.b!, at.c!]) {
      const inColumn = long.points.filter((p) => p.x >= crossed.x && p.x <= crossed.x + NODE_W);
      expect(inColumn.length).toBeGreaterThan(0);
      for (const p of inColumn) expect(p.y < crossed.y || p.y > crossed.y + NODE_H).toBe(true);
    }
    for (let i = 1; i < long.points.length; i++) expect(long.points[i]!.x).toBeGreaterThan(long.points[i - 1]!.x);
  });

  it('survives a loop by ignoring its back edge', () => {
    const layout = layoutGraph(
      readGraph({
        nodes: ['in', 'loop', 'body'].map((id) => ({ id, kind: 'k' })),
        edges: [
          { from: 'in', to: 'loop.init' },
          { from: 'loop.body', to: 'body' },
          { from: 'body', to: 'loop.next' },
        ],
      }),
    );
    expect(layout.nodes.map((n) => n.layer)).toEqual([0, 1, 2]);
    expect(layout.edges.filter((e) => e.back).map((e) => `${e.from}->${e.to}`)).toEqual(['body->loop']);
  });
});
