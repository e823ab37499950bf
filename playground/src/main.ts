/**
 * The playground page: pick or edit a graph (validated as you type), run it with an
 * input, watch the diagram light up, every branch stream into its pane, the timeline
 * and the per-node figures; cancel a run; open a past run and replay it.
 *
 * @example
 * // Built by runtime/server/playground.ts into playground/dist/app.js, served at /.
 */
import type { RunEvent } from '../../core/events.js';
import { Api, ApiError, type ExampleGraph, type RunSummary } from './api.js';
import { layoutGraph, readGraph } from './dag.js';
import { Diagram } from './diagram.js';
import { byId, clear, h } from './dom.js';
import { GraphEditor } from './editor.js';
import { renderMetrics } from './metrics.js';
import { freshId, nodeTemplate, renderPalette, type KindSchema } from './palette.js';
import { applyEvent, branchLabel, leafLanes, newRunView, type RunView } from './runview.js';
import { Streams } from './streams.js';
import { formatMs } from './format.js';
import { Timeline } from './timeline.js';

const api = new Api();
const diagram = new Diagram(byId('diagram'));
const streams = new Streams(byId('streams'));
const timeline = new Timeline(byId('timeline'));
const runButton = byId<HTMLButtonElement>('run');
const cancelButton = byId<HTMLButtonElement>('cancel');
const replayButton = byId<HTMLButtonElement>('replay');
const inputArea = byId<HTMLTextAreaElement>('input-json');
const runError = byId('run-error');
const runInfo = byId('run-info');

let examples: ExampleGraph[] = [];
let editedGraph: unknown = null;
let view: RunView | null = null;
// The graph the current view's run used: the diagram follows it, not the editor.
let viewGraph: unknown = null;
let follow: AbortController | null = null;
let metricsPending = false;

const editor = new GraphEditor({
  textarea: byId<HTMLTextAreaElement>('graph-json'),
  gutter: byId('gutter'),
  problems: byId('problems'),
  status: byId('graph-status'),
  api,
  onGraph: (json) => {
    if (json === null) return;
    editedGraph = json;
    if (!view || view.status !== 'running') {
      viewGraph = json;
      drawDiagram(json);
      if (view) paintDiagram(view);
    }
  },
  onValidity: () => updateButtons(),
});

function drawDiagram(graph: unknown): void {
  diagram.draw(layoutGraph(readGraph(graph)));
}

function nodeOrder(graph: unknown): Array<{ id: string; label: string; layer: number }> {
  return layoutGraph(readGraph(graph))
    .nodes.slice()
    .sort((a, b) => a.layer - b.layer || a.row - b.row);
}

function paintDiagram(v: RunView): void {
  diagram.reset();
  for (const [node, state] of v.nodes) diagram.setNode(node, state);
  for (const node of new Set([...v.lanes.values()].map((l) => l.node))) showBranches(v, node);
}

/** Dots on a node for its parallel branches, when it has more than one. */
function showBranches(v: RunView, node: string): void {
  const leaves = leafLanes(v, node);
  diagram.setBranches(node, leaves.length > 1 ? leaves.map((l) => ({ branch: branchLabel(node, l.branch!), state: l.state })) : []);
}

function updateButtons(): void {
  const running = view?.status === 'running' && follow !== null;
  runButton.disabled = running || !editor.valid;
  cancelButton.disabled = !running;
  replayButton.disabled = !view || view.status === 'running' || view.events.length === 0;
}

function showRunInfo(): void {
  clear(runInfo);
  if (!view) return;
  const start = view.events.find((e) => e.type === 'run-start');
  runInfo.append(h('code', null, view.runId));
  if (start?.type === 'run-start') runInfo.append(h('span', { class: 'muted' }, `seed ${start.seed}`));
  runInfo.append(h('span', { class: `chip is-${view.status}` }, view.status), h('span', { class: 'muted' }, formatMs(view.t)));
}

function scheduleMetrics(): void {
  if (metricsPending) return;
  metricsPending = true;
  requestAnimationFrame(() => {
    metricsPending = false;
    renderMetrics(byId('metrics'), view);
    showRunInfo();
  });
}

function showOutput(v: RunView): void {
  const out = byId('output');
  clear(out);
  out.hidden = true;
  if (v.status === 'error' && v.error) {
    out.hidden = false;
    out.append(h('h3', null, 'Error'), h('pre', { class: 'error-text' }, v.error));
  } else if (v.output && Object.keys(v.output).length) {
    out.hidden = false;
    out.append(h('h3', null, 'Output'));
    for (const [key, value] of Object.entries(v.output)) {
      out.append(h('div', { class: 'output-item' }, h('span', { class: 'output-key' }, key), h('pre', null, typeof value === 'string' ? value : JSON.stringify(value, null, 2))));
    }
  }
}

/** Starts showing a run: clears the panes and draws its graph. */
function beginView(runId: string, graph: unknown): void {
  follow?.abort();
  view = newRunView(runId);
  viewGraph = graph ?? editedGraph;
  drawDiagram(viewGraph);
  streams.reset(nodeOrder(viewGraph));
  byId('output').hidden = true;
  timeline.update(view);
  scheduleMetrics();
  updateButtons();
}

function onEvent(e: RunEvent): void {
  if (!view) return;
  const lane = applyEvent(view, e);
  if (lane) {
    streams.update(lane);
    diagram.setNode(lane.node, view.nodes.get(lane.node) ?? 'running');
    if (lane.branch) showBranches(view, lane.node);
  }
  if (e.type === 'run-end') {
    for (const l of view.lanes.values()) streams.update(l);
    paintDiagram(view);
    showOutput(view);
    void refreshRuns();
  }
  timeline.update(view);
  scheduleMetrics();
}

async function followRun(id: string): Promise<void> {
  const controller = new AbortController();
  follow = controller;
  updateButtons();
  try {
    await api.follow(id, onEvent, { signal: controller.signal });
  } catch (err) {
    showError(err);
  } finally {
    if (follow === controller) follow = null;
    updateButtons();
    scheduleMetrics();
  }
}

function showError(err: unknown): void {
  runError.hidden = false;
  runError.textContent = err instanceof ApiError ? `${err.message} (${err.body.error?.code ?? err.status})` : (err as Error).message;
}

async function run(): Promise<void> {
  runError.hidden = true;
  let input: unknown;
  try {
    input = inputArea.value.trim() ? JSON.parse(inputArea.value) : {};
  } catch (err) {
    showError(new Error(`Input is not valid JSON: ${(err as Error).message}`));
    return;
  }
  const seedText = byId<HTMLInputElement>('seed').value.trim();
  const seed = seedText ? Number(seedText) : undefined;
  if (seed !== undefined && !Number.isSafeInteger(seed)) {
    showError(new Error('Seed must be an integer (or empty for a random one)'));
    return;
  }
  runButton.disabled = true;
  try {
    const graph = JSON.parse(editor.text) as unknown;
    const { id } = await api.startRun({ graph, input, ...(seed !== undefined ? { seed } : {}) });
    beginView(id, graph);
    void refreshRuns();
    await followRun(id);
  } catch (err) {
    showError(err);
    updateButtons();
  }
}

async function cancel(): Promise<void> {
  if (!view) return;
  try {
    await api.cancel(view.runId);
  } catch (err) {
    showError(err);
  }
}

async function openRun(id: string): Promise<void> {
  runError.hidden = true;
  try {
    const summary = await api.run(id);
    beginView(id, summary.definition);
    await followRun(id);
  } catch (err) {
    showError(err);
  }
}

/** Plays the current run's events again with their timing, compressed to at most 8 s. */
function replay(): void {
  if (!view || view.status === 'running') return;
  const events = view.events.slice();
  const runId = view.runId;
  const graph = viewGraph;
  beginView(runId, graph);
  const total = events.at(-1)?.t ?? 0;
  const scale = total > 8000 ? 8000 / total : 1;
  const controller = new AbortController();
  follow = controller;
  updateButtons();
  const t0 = performance.now();
  let i = 0;
  const step = () => {
    if (controller.signal.aborted) return;
    const now = (performance.now() - t0) / scale;
    while (i < events.length && events[i]!.t <= now) onEvent(events[i++]!);
    if (i < events.length) setTimeout(step, 16);
    else {
      follow = null;
      // The run info now, not at the next animation frame (scheduleMetrics): the replay
      // button comes back with the final status beside it, not a stale 'running'.
      showRunInfo();
      updateButtons();
    }
  };
  step();
}

function timeAgo(iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s / 3600)}h ago`;
}

async function refreshRuns(): Promise<void> {
  let runs: RunSummary[];
  try {
    runs = (await api.runs()).runs;
  } catch {
    return;
  }
  const list = byId('runs');
  clear(list);
  if (runs.length === 0) list.append(h('li', { class: 'empty' }, 'No runs yet.'));
  for (const r of runs.slice(0, 30)) {
    const item = h(
      'li',
      { class: view?.runId === r.id ? 'run-item is-current' : 'run-item', 'data-run': r.id, title: `Open ${r.id}` },
      h('span', { class: `chip is-${r.state}` }, r.state),
      h('span', { class: 'run-graph' }, r.graph),
      h('span', { class: 'run-meta' }, `${r.usage.tokensOut} tok · ${formatMs(r.timings.wallMs)} · ${timeAgo(r.createdAt)}`),
    );
    item.addEventListener('click', () => void openRun(r.id));
    list.append(item);
  }
}

// Sample values for the inputs the example graphs name, so every example runs as loaded.
const SAMPLE_INPUT: Record<string, string> = {
  question: 'How do I learn to cook?',
  topic: 'Cities should ban cars from their centres.',
  passage:
    'The bakery opens at seven. Bread is baked before dawn by two bakers, and the first loaves sell out within an hour. ' +
    'On Sundays the bakery is closed, and on Mondays it sells only rye bread.',
};

/** Appends a node of `kind` to the graph being edited and selects it. */
function addNode(kind: string, schema: KindSchema): void {
  let graph: { nodes?: Array<{ id?: unknown }> };
  try {
    graph = JSON.parse(editor.text) as typeof graph;
  } catch {
    showError(new Error('Fix the JSON syntax first, then add nodes'));
    return;
  }
  if (!Array.isArray(graph.nodes)) graph.nodes = [];
  const id = freshId(kind, new Set(graph.nodes.map((n) => String(n?.id))));
  graph.nodes.push(nodeTemplate(kind, schema, id));
  runError.hidden = true;
  editor.replaceJson(graph, `/nodes/${graph.nodes.length - 1}`);
}

function defaultInput(graph: unknown): Record<string, unknown> {
  // Keyed by names from the edited graph: no prototype to write through.
  const input: Record<string, unknown> = Object.create(null);
  const nodes = (graph as { nodes?: unknown[] })?.nodes ?? [];
  for (const n of nodes as Array<Record<string, unknown>>) {
    if (n?.kind !== 'input') continue;
    const key = typeof n.name === 'string' ? n.name : String(n.id);
    if (n.default !== undefined) input[key] = n.default;
    else if (n.type === 'list') input[key] = [];
    else if (n.type === 'json') input[key] = {};
    else input[key] = (Object.prototype.hasOwnProperty.call(SAMPLE_INPUT, key) ? SAMPLE_INPUT[key] : undefined) ?? SAMPLE_INPUT.question;
  }
  return input;
}

function pickExample(name: string): void {
  const ex = examples.find((g) => g.name === name);
  if (!ex) return;
  editor.setText(JSON.stringify(ex.graph, null, 2));
  inputArea.value = JSON.stringify(defaultInput(ex.graph), null, 2);
  byId('graph-desc').textContent = ex.description ?? (ex.graph as { description?: string }).description ?? '';
}

function wire(): void {
  runButton.addEventListener('click', () => void run());
  // Ctrl/Cmd+Enter runs from anywhere on the page, as in most playgrounds.
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && !runButton.disabled) {
      e.preventDefault();
      void run();
    }
  });
  cancelButton.addEventListener('click', () => void cancel());
  replayButton.addEventListener('click', replay);
  byId('refresh-runs').addEventListener('click', () => void refreshRuns());
  const select = byId<HTMLSelectElement>('example');
  select.addEventListener('change', () => pickExample(select.value));
  const tokenForm = byId<HTMLFormElement>('token-form');
  api.onUnauthorized = () => (tokenForm.hidden = false);
  tokenForm.addEventListener('submit', (e) => {
    e.preventDefault();
    api.setToken(byId<HTMLInputElement>('token').value.trim());
    tokenForm.hidden = true;
    void load();
  });
}

async function load(): Promise<void> {
  const select = byId<HTMLSelectElement>('example');
  try {
    const health = await api.health();
    byId('model').textContent = health.model;
    // The server fell back from the default model (not downloaded, offline): say why on the page.
    const note = byId('model-note');
    note.hidden = !health.fallbackReason;
    note.textContent = health.fallbackReason ? `Fallback model: ${health.fallbackReason}` : '';
    byId('health').className = 'health is-ok';
    byId('health').title = `Backend ${health.backend}`;
  } catch {
    byId('health').className = 'health is-bad';
  }
  try {
    examples = (await api.graphs()).graphs;
  } catch (err) {
    showError(err);
    return;
  }
  api
    .call<unknown>('GET', '/v1/graphs/schema')
    .then((schema) => renderPalette(byId('palette'), schema, addNode))
    .catch(() => clear(byId('palette')));
  clear(select);
  for (const g of examples) select.append(h('option', { value: g.name }, g.name));
  const wanted = new URLSearchParams(location.search).get('graph');
  const first = examples.find((g) => g.name === wanted) ?? examples.find((g) => g.name === 'sot') ?? examples[0];
  if (first) {
    select.value = first.name;
    pickExample(first.name);
  }
  streams.reset([]);
  timeline.update(newRunView(''));
  renderMetrics(byId('metrics'), null);
  await refreshRuns();
}

wire();
void load();
