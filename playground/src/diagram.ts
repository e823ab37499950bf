/**
 * The graph diagram: an SVG of the layered layout whose nodes light up as they run
 * (running, done, error) and show one dot per branch (SoT points, forks) as they appear.
 *
 * @example
 * const diagram = new Diagram(document.getElementById('diagram')!);
 * diagram.draw(layoutGraph(readGraph(json)));
 * diagram.setNode('skeleton', 'running');
 */
import { NODE_H, NODE_W, type Layout } from './dag.js';
import { clear, svg } from './dom.js';
import type { LaneState } from './runview.js';

export class Diagram {
  private groups = new Map<string, SVGGElement>();
  private dots = new Map<string, SVGGElement>();

  constructor(private readonly host: HTMLElement) {}

  draw(layout: Layout): void {
    clear(this.host);
    this.groups.clear();
    this.dots.clear();
    if (layout.nodes.length === 0) {
      this.host.append(Object.assign(document.createElement('p'), { className: 'empty', textContent: 'No nodes to draw yet.' }));
      return;
    }
    const root = svg('svg', {
      viewBox: `0 0 ${layout.width} ${layout.height}`,
      width: layout.width,
      height: layout.height,
      class: 'diagram',
      role: 'img',
      'aria-label': 'Graph diagram',
    });
    root.append(
      svg('defs', null, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }))),
    );
    for (const e of layout.edges) {
      const pts = e.points;
      const start = pts[0]!;
      const end = pts[pts.length - 1]!;
      let d: string;
      if (e.back) {
        // Loops return in an arc over the nodes instead of crossing them.
        d = `M${start.x},${start.y} C${start.x + 48},${start.y - 70} ${end.x - 48},${end.y - 70} ${end.x},${end.y}`;
      } else {
        // One curve per leg, leaving and entering each point horizontally, as the columns run.
        d = `M${start.x},${start.y}`;
        for (let i = 1; i < pts.length; i++) {
          const p = pts[i - 1]!;
          const q = pts[i]!;
          const dx = (q.x - p.x) / 2;
          d += ` C${p.x + dx},${p.y} ${q.x - dx},${q.y} ${q.x},${q.y}`;
        }
      }
      root.append(svg('path', { d, class: 'edge', 'marker-end': 'url(#arrow)' }));
    }
    for (const n of layout.nodes) {
      const g = svg('g', { class: `node kind-${n.kind}${n.provider ? ' is-remote' : ''}`, 'data-node': n.id, transform: `translate(${n.x},${n.y})` });
      // A node on a remote provider says so under its kind: that is where its tokens come from.
      g.append(
        svg('title', null, `${n.id} (${n.kind})${n.provider ? `, runs on provider ${n.provider}` : ''}`),
        svg('rect', { width: NODE_W, height: NODE_H, rx: 8, class: 'node-box' }),
        svg('rect', { width: 4, height: NODE_H - 16, x: 0, y: 8, rx: 2, class: 'node-accent' }),
        svg('text', { x: 14, y: 20, class: 'node-label' }, truncate(n.label, 16)),
        svg('text', { x: 14, y: 36, class: 'node-kind' }, n.provider ? truncate(`${n.kind} @${n.provider}`, 18) : n.kind),
      );
      const dots = svg('g', { class: 'branch-dots', transform: `translate(${NODE_W - 10},${NODE_H - 10})` });
      g.append(dots);
      root.append(g);
      this.groups.set(n.id, g);
      this.dots.set(n.id, dots);
    }
    this.host.append(root);
  }

  reset(): void {
    for (const g of this.groups.values()) g.classList.remove('is-running', 'is-done', 'is-error', 'is-cancelled');
    for (const d of this.dots.values()) clear(d);
  }

  setNode(id: string, state: LaneState): void {
    const g = this.groups.get(id);
    if (!g) return;
    g.classList.remove('is-running', 'is-done', 'is-error', 'is-cancelled');
    g.classList.add(`is-${state}`);
  }

  /** One dot per branch, right-aligned at the node's bottom corner. */
  setBranches(id: string, branches: Array<{ branch: string; state: LaneState }>): void {
    const dots = this.dots.get(id);
    if (!dots) return;
    clear(dots);
    const shown = branches.slice(0, 12);
    shown.forEach((b, i) => {
      dots.append(svg('circle', { cx: -(shown.length - 1 - i) * 9, cy: 0, r: 3, class: `dot is-${b.state}` }, svg('title', null, b.branch)));
    });
  }
}

function truncate(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
