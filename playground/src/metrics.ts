/**
 * Per-lane figures of a run: tokens, tokens/s, time to first token, wall time, and the
 * stage figures (pruned tokens, layers run, accepted draft tokens, KV blocks shared)
 * as columns only when some lane reported them.
 *
 * @example
 * renderMetrics(el, view);
 */
import { clear, h } from './dom.js';
import { branchLabel, laneFigures, type RunView } from './runview.js';
import { formatMs } from './format.js';

const STAGE_COLUMNS: Array<[key: string, title: string]> = [
  ['prunedTokens', 'Pruned tok'],
  ['layersRun', 'Layers run'],
  ['acceptedDraftTokens', 'Accepted drafts'],
  ['kvBlocksShared', 'KV shared'],
  ['compressedTo', 'Compressed to'],
];

const fmt = (v: number | undefined, digits = 0) => (v === undefined ? '–' : v.toLocaleString(undefined, { maximumFractionDigits: digits }));

export function renderMetrics(host: HTMLElement, view: RunView | null): void {
  clear(host);
  const lanes = view ? [...view.lanes.values()] : [];
  if (!view || lanes.length === 0) {
    host.append(h('p', { class: 'empty' }, 'Per-node figures appear as nodes finish.'));
    return;
  }
  const rows = lanes.map((l) => ({ lane: l, f: laneFigures(l) }));
  const stage = STAGE_COLUMNS.filter(([key]) => rows.some((r) => r.f[key] !== undefined));
  const head = h('tr', null, h('th', null, 'Node'), h('th', null, 'Branch'), h('th', null, 'State'), h('th', { class: 'num' }, 'Tokens'), h('th', { class: 'num' }, 'Tok/s'), h('th', { class: 'num' }, 'TTFT'), h('th', { class: 'num' }, 'Wall'));
  for (const [, title] of stage) head.append(h('th', { class: 'num' }, title));
  const body = h('tbody');
  // Streamed tokens, counted once: a node's summary lane repeats its branches' figures.
  let tokens = 0;
  for (const { lane, f } of rows) {
    tokens += lane.tokens;
    // Nodes that only move values (inputs, templates, joins) are shown, but quietly.
    const tr = h(
      'tr',
      lane.tokens === 0 && !f.tokensOut ? { class: 'quiet' } : null,
      h('td', null, lane.node),
      h('td', { class: 'muted', title: lane.branch ?? '' }, lane.branch ? branchLabel(lane.node, lane.branch) : ''),
      h('td', null, h('span', { class: `chip is-${lane.state}` }, lane.state)),
      h('td', { class: 'num' }, fmt(f.tokensOut)),
      h('td', { class: 'num' }, fmt(f.tokensPerSec, 1)),
      h('td', { class: 'num' }, f.ttftMs === undefined ? '–' : formatMs(f.ttftMs)),
      h('td', { class: 'num' }, f.wallMs === undefined ? '–' : formatMs(f.wallMs)),
    );
    for (const [key] of stage) tr.append(h('td', { class: 'num' }, fmt(f[key])));
    body.append(tr);
  }
  host.append(
    h('div', { class: 'summary' },
      figure('Status', view.status),
      figure('Elapsed', formatMs(view.t)),
      figure('Tokens', fmt(tokens)),
      figure('Tok/s', view.t > 0 ? fmt((tokens * 1000) / view.t, 1) : '–'),
      figure('Events', fmt(view.events.length)),
    ),
    h('table', { class: 'metrics' }, h('thead', null, head), body),
  );
}

function figure(label: string, value: string): HTMLElement {
  return h('div', { class: 'figure' }, h('span', { class: 'figure-label' }, label), h('span', { class: 'figure-value' }, value));
}
