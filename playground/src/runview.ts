/**
 * A run as the page shows it, folded from its events: per node a state (idle, running,
 * done, error, cancelled), per lane (a node, or one branch of it) its text, marbles, timings and
 * metrics. Pure, so the same fold serves live runs, opened past runs and replays.
 *
 * @example
 * const view = newRunView('run_1');
 * for (const e of events) applyEvent(view, e);
 * view.lanes.get('expand/p1')?.text;
 */
import type { RunEvent, StageEventName, StageFigures, StageMetrics } from '../../core/events.js';

/** `cancelled`: still running when the run was cancelled (stopped on request, not failed). */
export type LaneState = 'running' | 'done' | 'error' | 'cancelled';

export interface Marble {
  t: number;
  kind: 'start' | 'delta' | 'stage' | 'end' | 'error';
}

/** One stage event of a lane: drawn as the lane's stage track, listed under the node. */
export interface StageMark {
  t: number;
  stage: StageEventName;
  decided: Record<string, string | number | boolean>;
  figures: StageFigures;
}

export interface Lane {
  key: string;
  node: string;
  branch?: string;
  state: LaneState;
  text: string;
  tokens: number;
  startT: number;
  firstTokenT?: number;
  endT?: number;
  metrics?: StageMetrics;
  error?: string;
  marbles: Marble[];
  stages: StageMark[];
}

export interface RunView {
  runId: string;
  status: 'running' | 'ok' | 'error' | 'cancelled';
  t: number;
  graph?: string;
  lanes: Map<string, Lane>;
  /** Node state: running while any lane runs, error if any failed, cancelled if any was cut short by a cancel, else done. */
  nodes: Map<string, LaneState>;
  output?: Record<string, unknown>;
  error?: string;
  events: RunEvent[];
}

export const laneKey = (node: string, branch?: string) => (branch ? `${node}/${branch}` : node);

/**
 * A branch id as people read it: the core names nested branches by path
 * ("router.sot/expand#2"); the last step says which one this is ("#2" of expand).
 */
export function branchLabel(node: string, branch: string): string {
  const last = branch.split('/').pop()!;
  return last.startsWith(`${node}#`) ? `#${last.slice(node.length + 1)}` : last;
}

/**
 * The lanes of a node that are its own parallel branches: those no other lane of the node
 * nests under (an expand's points, not the route branch they all run in).
 */
export function leafLanes(view: RunView, node: string): Lane[] {
  const lanes = [...view.lanes.values()].filter((l) => l.node === node && l.branch);
  return lanes.filter((l) => !lanes.some((o) => o !== l && o.branch!.startsWith(`${l.branch}/`)));
}

export function newRunView(runId: string): RunView {
  return { runId, status: 'running', t: 0, lanes: new Map(), nodes: new Map(), events: [] };
}

function lane(view: RunView, node: string, branch: string | undefined, t: number): Lane {
  const key = laneKey(node, branch);
  let l = view.lanes.get(key);
  if (!l) {
    l = { key, node, ...(branch ? { branch } : {}), state: 'running', text: '', tokens: 0, startT: t, marbles: [], stages: [] };
    view.lanes.set(key, l);
  }
  return l;
}

function nodeState(view: RunView, node: string): LaneState {
  let running = false;
  let error = false;
  let cancelled = false;
  for (const l of view.lanes.values()) {
    if (l.node !== node) continue;
    if (l.state === 'running') running = true;
    if (l.state === 'error') error = true;
    if (l.state === 'cancelled') cancelled = true;
  }
  return running ? 'running' : error ? 'error' : cancelled ? 'cancelled' : 'done';
}

/** Folds one event in; returns the lane it touched, if any. */
export function applyEvent(view: RunView, e: RunEvent): Lane | undefined {
  view.events.push(e);
  view.t = Math.max(view.t, e.t);
  switch (e.type) {
    case 'run-start':
      view.graph = e.graph;
      return undefined;
    case 'node-start': {
      const l = lane(view, e.node, e.branch, e.t);
      l.state = 'running';
      l.startT = e.t;
      l.marbles.push({ t: e.t, kind: 'start' });
      view.nodes.set(e.node, 'running');
      return l;
    }
    case 'text-delta': {
      const l = lane(view, e.node, e.branch, e.t);
      l.text += e.text;
      l.tokens += e.tokenIds.length;
      l.firstTokenT ??= e.t;
      l.marbles.push({ t: e.t, kind: 'delta' });
      return l;
    }
    case 'stage': {
      const l = lane(view, e.node, e.branch, e.t);
      const mark = { t: e.t, stage: e.stage, decided: e.decided, figures: e.figures };
      // Speculative steps stream one event each (decided.step): the track keeps the latest
      // step of a stage in place rather than a line per step, then the stage's totals.
      const previous = l.stages.at(-1);
      const stepped = typeof e.decided.step === 'number';
      if (stepped && previous?.stage === e.stage && typeof previous.decided.step === 'number') l.stages[l.stages.length - 1] = mark;
      else l.stages.push(mark);
      if (!stepped) l.marbles.push({ t: e.t, kind: 'stage' });
      return l;
    }
    case 'node-end': {
      const l = lane(view, e.node, e.branch, e.t);
      // Deltas carry only generated tokens; an answer pre-filled with a prefix ("2. Point")
      // ends with the whole text, which the pane then shows.
      if (l.tokens > 0 && typeof e.output === 'string' && e.output.length > l.text.length && e.output.endsWith(l.text.trimEnd())) l.text = e.output;
      l.state = 'done';
      l.endT = e.t;
      l.metrics = e.metrics;
      l.marbles.push({ t: e.t, kind: 'end' });
      view.nodes.set(e.node, nodeState(view, e.node));
      return l;
    }
    case 'branch-error': {
      const l = lane(view, e.node, e.branch, e.t);
      l.state = 'error';
      l.endT = e.t;
      l.error = e.error.message;
      l.marbles.push({ t: e.t, kind: 'error' });
      view.nodes.set(e.node, nodeState(view, e.node));
      return l;
    }
    case 'run-end':
      view.status = e.status;
      if (e.output) view.output = e.output;
      if (e.error) view.error = e.error.message;
      // Lanes still open when a run stops were cut short: by the cancel, or by the failure.
      for (const l of view.lanes.values()) {
        if (l.state !== 'running') continue;
        l.state = e.status === 'ok' ? 'done' : e.status === 'cancelled' ? 'cancelled' : 'error';
        l.endT = e.t;
        view.nodes.set(l.node, nodeState(view, l.node));
      }
      return undefined;
    default: {
      const never: never = e;
      return never;
    }
  }
}

/** Figures of a lane for the metrics table; measured ones fill what the event did not say. */
export function laneFigures(l: Lane): StageMetrics & { wallMs?: number } {
  const m = l.metrics ?? {};
  const wallMs = l.endT !== undefined ? l.endT - l.startT : undefined;
  const ttft = m.ttftMs ?? (l.firstTokenT !== undefined ? l.firstTokenT - l.startT : undefined);
  const decodeMs = l.endT !== undefined && l.firstTokenT !== undefined ? l.endT - l.firstTokenT : undefined;
  const tps = m.tokensPerSec ?? (decodeMs && l.tokens > 1 ? ((l.tokens - 1) * 1000) / decodeMs : undefined);
  return { ...m, tokensOut: m.tokensOut ?? l.tokens, ...(ttft !== undefined ? { ttftMs: ttft } : {}), ...(tps !== undefined ? { tokensPerSec: tps } : {}), ...(wallMs !== undefined ? { wallMs } : {}) };
}
