import { describe, expect, it } from 'vitest';
import type { RunEvent } from '../../core/events.js';
import { applyEvent, branchLabel, laneFigures, leafLanes, newRunView } from './runview.js';

type E = RunEvent extends infer T ? (T extends RunEvent ? Omit<T, 'runId' | 'seq'> : never) : never;
function fold(events: E[]) {
  const view = newRunView('r');
  events.forEach((e, seq) => applyEvent(view, { ...e, runId: 'r', seq } as RunEvent));
  return view;
}

describe('run view', () => {
  it('folds branches into lanes and node states', () => {
    const view = fold([
      { type: 'run-start', t: 0, graph: 'sot', input: {}, seed: 0 },
      { type: 'node-start', t: 1, node: 'expand', branch: 'p1' },
      { type: 'node-start', t: 1, node: 'expand', branch: 'p2' },
      { type: 'text-delta', t: 5, node: 'expand', branch: 'p1', text: 'Hel', tokenIds: [1] },
      { type: 'text-delta', t: 9, node: 'expand', branch: 'p1', text: 'lo', tokenIds: [2] },
      { type: 'node-end', t: 10, node: 'expand', branch: 'p1', output: 'Hello', metrics: { kvBlocksShared: 2 } },
    ]);
    expect(view.graph).toBe('sot');
    expect(view.lanes.get('expand/p1')).toMatchObject({ text: 'Hello', tokens: 2, state: 'done', firstTokenT: 5 });
    expect(view.nodes.get('expand')).toBe('running');
    expect(laneFigures(view.lanes.get('expand/p1')!)).toMatchObject({ tokensOut: 2, ttftMs: 4, wallMs: 9, kvBlocksShared: 2, tokensPerSec: 200 });
  });

  it('keeps the latest speculative step of a stage in place, then its totals', () => {
    const step = (t: number, n: number, accepted: number) =>
      ({ type: 'stage', t, node: 'g', stage: 'speculate', decided: { step: n, gated: false, kind: 'medusa', acceptance: 'exact' }, figures: { draftsProposed: 3, draftsAccepted: accepted, wallMs: 0 } }) as E;
    const view = fold([
      { type: 'node-start', t: 0, node: 'g' },
      step(1, 1, 2),
      step(2, 2, 0),
      step(3, 3, 1),
      { type: 'stage', t: 4, node: 'g', stage: 'speculate', decided: { kind: 'medusa', verifications: 3 }, figures: { draftsProposed: 9, draftsAccepted: 3, wallMs: 5 } },
    ]);
    const stages = view.lanes.get('g')!.stages;
    expect(stages.map((m) => m.decided.step ?? 'totals')).toEqual([3, 'totals']);
    expect(stages[0]!.figures.draftsAccepted).toBe(1);
    expect(view.lanes.get('g')!.marbles.filter((m) => m.kind === 'stage')).toHaveLength(1);
  });

  it('shows an answer with its pre-filled prefix once the branch ends', () => {
    const view = fold([
      { type: 'node-start', t: 0, node: 'expand', branch: 'p2' },
      { type: 'text-delta', t: 2, node: 'expand', branch: 'p2', text: ' matters', tokenIds: [1] },
      { type: 'text-delta', t: 3, node: 'expand', branch: 'p2', text: ' a lot.\n', tokenIds: [2] },
      { type: 'node-end', t: 4, node: 'expand', branch: 'p2', output: '2. Practice matters a lot.', metrics: {} },
      { type: 'node-start', t: 5, node: 'answer' },
      { type: 'text-delta', t: 6, node: 'answer', text: 'Yes', tokenIds: [3] },
      { type: 'node-end', t: 7, node: 'answer', output: 'Something else', metrics: {} },
    ]);
    expect(view.lanes.get('expand/p2')!.text).toBe('2. Practice matters a lot.');
    expect(view.lanes.get('answer')!.text).toBe('Yes');
  });

  it('marks failed branches and closes lanes a cancel cut short', () => {
    const view = fold([
      { type: 'node-start', t: 0, node: 'expand', branch: 'p1' },
      { type: 'node-start', t: 0, node: 'expand', branch: 'p2' },
      { type: 'branch-error', t: 3, node: 'expand', branch: 'p2', error: { name: 'Error', message: 'boom' } },
      { type: 'run-end', t: 4, status: 'cancelled', usage: {} },
    ]);
    expect(view.status).toBe('cancelled');
    expect(view.lanes.get('expand/p2')).toMatchObject({ state: 'error', error: 'boom' });
    // p1 was still running: the cancel stopped it, it did not fail.
    expect(view.lanes.get('expand/p1')).toMatchObject({ state: 'cancelled', endT: 4 });
    expect(view.nodes.get('expand')).toBe('error');
    expect(view.t).toBe(4);
  });

  it('a node whose lanes were all cut short by a cancel is cancelled, not error', () => {
    const view = fold([
      { type: 'node-start', t: 0, node: 'answer' },
      { type: 'text-delta', t: 1, node: 'answer', text: 'Par', tokenIds: [1] },
      { type: 'run-end', t: 2, status: 'cancelled', usage: {} },
    ]);
    expect(view.lanes.get('answer')).toMatchObject({ state: 'cancelled', text: 'Par' });
    expect(view.nodes.get('answer')).toBe('cancelled');
  });

  it('a failed run still marks the lanes it cut short as errors', () => {
    const view = fold([
      { type: 'node-start', t: 0, node: 'answer' },
      { type: 'run-end', t: 2, status: 'error', error: { name: 'Error', message: 'x' }, usage: {} },
    ]);
    expect(view.nodes.get('answer')).toBe('error');
  });
});

describe('branch names', () => {
  it('reads nested branch paths and finds a node\'s own parallel branches', () => {
    const view = fold([
      { type: 'node-start', t: 0, node: 'expand', branch: 'router.sot' },
      { type: 'node-start', t: 0, node: 'expand', branch: 'router.sot/expand#1' },
      { type: 'node-start', t: 0, node: 'expand', branch: 'router.sot/expand#2' },
      { type: 'node-start', t: 0, node: 'skeleton', branch: 'router.sot' },
    ]);
    expect(leafLanes(view, 'expand').map((l) => branchLabel('expand', l.branch!))).toEqual(['#1', '#2']);
    expect(leafLanes(view, 'skeleton').map((l) => branchLabel('skeleton', l.branch!))).toEqual(['router.sot']);
  });
});
