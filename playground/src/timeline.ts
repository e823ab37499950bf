/**
 * The run's timeline as marble lanes: one row per node or branch, a bar from its start
 * to its end, a tick per streamed token, a dot at start and end, a cross on error; under
 * a lane whose model calls ran stages, a stage track: one block per stage event, spanning
 * the stage's own wall time and labelled with what it did (`compress 412→137 tok`).
 * Redrawn at most once per animation frame however fast events arrive.
 *
 * @example
 * const timeline = new Timeline(el);
 * timeline.update(view); // cheap to call on every event
 */
import { clear, svg } from './dom.js';
import { branchLabel, type Lane, type RunView, type StageMark } from './runview.js';
import { formatMs } from './format.js';
import { describeStage } from './stagetrack.js';

const LABEL_W = 176;
const ROW_H = 24;
const AXIS_H = 22;

export class Timeline {
  private pending = false;
  private view: RunView | null = null;

  constructor(private readonly host: HTMLElement) {}

  update(view: RunView): void {
    this.view = view;
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.render();
    });
  }

  private render(): void {
    const view = this.view;
    clear(this.host);
    if (!view || view.lanes.size === 0) {
      this.host.append(Object.assign(document.createElement('p'), { className: 'empty', textContent: 'Events appear here as the run streams.' }));
      return;
    }
    const lanes = [...view.lanes.values()];
    const rows: { lane: Lane; stages: boolean }[] = lanes.flatMap((lane) => [{ lane, stages: false }, ...(lane.stages.length ? [{ lane, stages: true }] : [])]);
    const width = Math.max(this.host.clientWidth, 480);
    const plotW = width - LABEL_W - 16;
    const span = niceSpan(Math.max(view.t, 1));
    const x = (t: number) => LABEL_W + (t / span) * plotW;
    const height = AXIS_H + rows.length * ROW_H + 6;
    const root = svg('svg', { width, height, class: 'timeline', viewBox: `0 0 ${width} ${height}` });
    for (let k = 0; k <= 4; k++) {
      const t = (span * k) / 4;
      root.append(
        svg('line', { x1: x(t), x2: x(t), y1: AXIS_H - 4, y2: height, class: 'grid' }),
        svg('text', { x: x(t), y: 12, class: 'axis', 'text-anchor': k === 0 ? 'start' : k === 4 ? 'end' : 'middle' }, formatMs(t)),
      );
    }
    rows.forEach(({ lane: l, stages }, i) => {
      const y = AXIS_H + i * ROW_H + ROW_H / 2;
      if (stages) {
        root.append(svg('text', { x: 20, y: y + 4, class: 'lane-label stage-label' }, '↳ stages'));
        for (const m of l.stages) {
          const x0 = x(Math.max(0, m.t - m.figures.wallMs));
          const w = Math.max(x(m.t) - x0, 3);
          root.append(
            svg('rect', { x: x0, y: y - 7, width: w, height: 14, rx: 3, class: `stage-block stage-${m.stage}` }, svg('title', null, stageTitle(m))),
            svg('text', { x: x0 + w + 4, y: y + 4, class: 'stage-text' }, describeStage(m).did),
          );
        }
        return;
      }
      const label = l.branch ? `${l.node} ${branchLabel(l.node, l.branch)}` : l.node;
      root.append(svg('text', { x: 8, y: y + 4, class: 'lane-label' }, svg('title', null, l.branch ? `${l.node} · ${l.branch}` : l.node), label.length > 21 ? `${label.slice(0, 20)}…` : label));
      const end = l.endT ?? view.t;
      root.append(svg('line', { x1: x(l.startT), x2: x(end), y1: y, y2: y, class: `lane-bar is-${l.state}` }));
      for (const m of l.marbles) {
        const cx = x(m.t);
        if (m.kind === 'delta') root.append(svg('line', { x1: cx, x2: cx, y1: y - 5, y2: y + 5, class: 'tick' }));
        else if (m.kind === 'error')
          root.append(svg('path', { d: `M${cx - 4},${y - 4} L${cx + 4},${y + 4} M${cx + 4},${y - 4} L${cx - 4},${y + 4}`, class: 'marble-error' }));
        else root.append(svg('circle', { cx, cy: y, r: 4.5, class: `marble marble-${m.kind}` }));
      }
    });
    this.host.append(root);
  }
}

function stageTitle(m: StageMark): string {
  const words = describeStage(m);
  return `${words.did} in ${words.cost}${words.decided ? ` (${words.decided})` : ''}`;
}

function niceSpan(ms: number): number {
  const steps = [100, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 30000, 60000, 120000, 300000, 600000];
  return steps.find((s) => s >= ms) ?? Math.ceil(ms / 60000) * 60000;
}
