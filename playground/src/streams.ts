/**
 * Each lane's tokens stream into its own pane; the branches of one node sit side by side
 * (a Skeleton-of-Thought's points fill in parallel), and so do nodes of one diagram
 * column (a fork's branches); rows follow the diagram's columns. Above a pane's text, its
 * stage track: what each stage of the lane's model call decided and cost, live.
 *
 * @example
 * const streams = new Streams(el);
 * streams.reset([{ id: 'skeleton', label: 'Skeleton', layer: 1 }, { id: 'expand', label: 'Expand', layer: 2 }]);
 * streams.update(lane); // after applyEvent returned it
 */
import { clear, h } from './dom.js';
import { branchLabel, type Lane } from './runview.js';
import { describeStage } from './stagetrack.js';

interface Pane {
  root: HTMLElement;
  /** The lane's stage events, one line each, listed as they arrive (before its first token). */
  track: HTMLElement;
  stagesShown: number;
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
  private layers = new Map<string, number>();
  private rows = new Map<number, HTMLElement>();

  constructor(private readonly host: HTMLElement) {
    this.reset([]);
  }

  /** `nodes` in diagram order, with their labels and diagram columns. */
  reset(nodes: Array<{ id: string; label: string; layer: number }>): void {
    this.order = nodes.map((n) => n.id);
    this.labels = new Map(nodes.map((n) => [n.id, n.label]));
    this.layers = new Map(nodes.map((n) => [n.id, n.layer]));
    this.rows.clear();
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
    // Keep rows and groups in diagram order whatever order their first tokens arrive in.
    const rank = (id: string) => {
      const i = this.order.indexOf(id);
      return i < 0 ? Number.MAX_SAFE_INTEGER : i;
    };
    const layer = this.layers.get(node) ?? Number.MAX_SAFE_INTEGER;
    let row = this.rows.get(layer);
    if (!row) {
      row = h('div', { class: 'stream-row' });
      const next = [...this.rows.entries()].filter(([l]) => l > layer).sort((a, b) => a[0] - b[0])[0];
      if (next) this.host.insertBefore(row, next[1]);
      else this.host.append(row);
      this.rows.set(layer, row);
    }
    const after = [...this.groups.entries()]
      .filter(([id, el]) => el.parentElement === row && rank(id) > rank(node))
      .sort((a, b) => rank(a[0]) - rank(b[0]))[0];
    if (after) row.insertBefore(g, after[1]);
    else row.append(g);
    this.groups.set(node, g);
    return g;
  }

  /** Shows a lane that produced text (lanes without text, like inputs, get no pane). */
  update(lane: Lane): void {
    let pane = this.panes.get(lane.key);
    if (!pane) {
      if (!lane.text && !lane.stages.length && lane.state !== 'error') return;
      const body = h('div', { class: 'pane-body' });
      const track = h('ol', { class: 'stage-track', hidden: true });
      const state = h('span', { class: 'chip' });
      const count = h('span', { class: 'pane-count' });
      const root = h(
        'article',
        { class: 'pane', 'data-lane': lane.key },
        h('header', null, h('span', { class: 'pane-title', title: lane.branch ?? '' }, lane.branch ? branchLabel(lane.node, lane.branch) : 'text'), count, state),
        track,
        body,
      );
      this.group(lane.node).querySelector('.panes')!.append(root);
      pane = { root, track, stagesShown: 0, body, state, count, shown: 0 };
      this.panes.set(lane.key, pane);
    }
    for (const m of lane.stages.slice(pane.stagesShown)) {
      const words = describeStage(m);
      pane.track.append(
        h(
          'li',
          { class: `stage-chip stage-${m.stage}`, 'data-stage': m.stage },
          h('span', { class: 'stage-did' }, words.did),
          words.decided ? h('span', { class: 'stage-decided' }, words.decided) : null,
          h('span', { class: 'stage-cost' }, words.cost),
        ),
      );
      pane.track.hidden = false;
    }
    pane.stagesShown = lane.stages.length;
    // At its end a lane's text may be rewritten whole (its answer's pre-filled prefix
    // added in front); checked only then, so streaming stays an append.
    if (lane.state !== 'running' && pane.shown > 0 && !lane.text.startsWith(pane.body.textContent ?? '')) {
      pane.body.textContent = '';
      pane.shown = 0;
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
