/**
 * Each lane's tokens stream into its own pane; the branches of one node sit side by side
 * (a Skeleton-of-Thought's points fill in parallel), nodes follow the diagram's order.
 *
 * @example
 * const streams = new Streams(el, ['skeleton', 'expand']);
 * streams.update(lane); // after applyEvent returned it
 */
import { clear, h } from './dom.js';
import { branchLabel, type Lane } from './runview.js';

interface Pane {
  root: HTMLElement;
  body: HTMLElement;
  state: HTMLElement;
  count: HTMLElement;
  shown: number;
}

export class Streams {
  private groups = new Map<string, HTMLElement>();
  private panes = new Map<string, Pane>();
  private order: string[] = [];
  private labels = new Map<string, string>();

  constructor(private readonly host: HTMLElement) {
    this.reset([]);
  }

  /** `nodes` in diagram order, with the labels the graph gives them. */
  reset(nodes: Array<{ id: string; label: string }>): void {
    this.order = nodes.map((n) => n.id);
    this.labels = new Map(nodes.map((n) => [n.id, n.label]));
    this.groups.clear();
    this.panes.clear();
    clear(this.host);
    this.host.append(h('p', { class: 'empty', id: 'streams-empty' }, 'Run a graph to see every branch stream here.'));
  }

  private group(node: string): HTMLElement {
    let g = this.groups.get(node);
    if (g) return g;
    this.host.querySelector('#streams-empty')?.remove();
    const label = this.labels.get(node) ?? node;
    g = h(
      'section',
      { class: 'stream-group', 'data-node': node },
      h('h3', null, label, label !== node ? h('code', null, node) : null),
      h('div', { class: 'panes' }),
    );
    // Keep groups in diagram order whatever order their first tokens arrive in.
    const rank = (id: string) => {
      const i = this.order.indexOf(id);
      return i < 0 ? Number.MAX_SAFE_INTEGER : i;
    };
    const after = [...this.groups.entries()].filter(([id]) => rank(id) > rank(node)).sort((a, b) => rank(a[0]) - rank(b[0]))[0];
    if (after) this.host.insertBefore(g, after[1]);
    else this.host.append(g);
    this.groups.set(node, g);
    return g;
  }

  /** Shows a lane that produced text (lanes without text, like inputs, get no pane). */
  update(lane: Lane): void {
    let pane = this.panes.get(lane.key);
    if (!pane) {
      if (!lane.text && lane.state !== 'error') return;
      const body = h('div', { class: 'pane-body' });
      const state = h('span', { class: 'chip' });
      const count = h('span', { class: 'pane-count' });
      const root = h(
        'article',
        { class: 'pane', 'data-lane': lane.key },
        h('header', null, h('span', { class: 'pane-title', title: lane.branch ?? '' }, lane.branch ? branchLabel(lane.node, lane.branch) : 'text'), count, state),
        body,
      );
      this.group(lane.node).querySelector('.panes')!.append(root);
      pane = { root, body, state, count, shown: 0 };
      this.panes.set(lane.key, pane);
    }
    if (lane.text.length > pane.shown) {
      const stick = pane.body.scrollTop + pane.body.clientHeight >= pane.body.scrollHeight - 4;
      pane.body.append(lane.text.slice(pane.shown));
      pane.shown = lane.text.length;
      if (stick) pane.body.scrollTop = pane.body.scrollHeight;
    }
    if (lane.error && !pane.root.querySelector('.pane-error')) pane.root.append(h('div', { class: 'pane-error' }, lane.error));
    pane.root.dataset.state = lane.state;
    pane.state.className = `chip is-${lane.state}`;
    pane.state.textContent = lane.state;
    pane.count.textContent = `${lane.tokens} tok`;
  }
}
