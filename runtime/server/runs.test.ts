import { Observable, Subject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import type { RunEvent } from '../../core/events.js';
import { TooManyRunsError } from './errors.js';
import { RunStore, summarize } from './runs.js';

const meta = (id: string) => ({ id, graph: 'g', input: {}, model: 'm' });
let seq = 0;
const ev = (runId: string, e: Partial<RunEvent> & { type: RunEvent['type'] }): RunEvent => ({ runId, t: seq, seq: seq++, ...e }) as RunEvent;

function collect(store: RunStore, id: string, after = -1) {
  const got: RunEvent[] = [];
  let completed = false;
  store.follow(id, after).subscribe({ next: (e) => got.push(e), complete: () => (completed = true) });
  return { got, done: () => completed };
}

describe('RunStore', () => {
  it('replays stored events, then follows live ones, and completes at run-end', () => {
    seq = 0;
    const store = new RunStore({ maxConcurrent: 2, keepFinished: 5 });
    const src = new Subject<RunEvent>();
    store.start(meta('a'), src);
    src.next(ev('a', { type: 'run-start', graph: 'g', input: {}, seed: 7 }));
    src.next(ev('a', { type: 'text-delta', node: 'n', text: 'x', tokenIds: [1, 2] }));
    const late = collect(store, 'a', 0);
    src.next(ev('a', { type: 'run-end', status: 'ok', usage: {} }));
    expect(late.got.map((e) => e.seq)).toEqual([1, 2]);
    expect(late.done()).toBe(true);
    expect(summarize(store.get('a')!)).toMatchObject({ state: 'ok', seed: 7, usage: { tokensOut: 2 }, eventCount: 3 });
    expect(collect(store, 'a').got).toHaveLength(3);
  });

  it('cancels through abort when the run honours it, so the run writes its own run-end', () => {
    seq = 0;
    const store = new RunStore({ maxConcurrent: 2, keepFinished: 5 });
    const src = new Subject<RunEvent>();
    store.start(meta('b'), src, () => src.next(ev('b', { type: 'run-end', status: 'cancelled', usage: { n: { tokensIn: 1, tokensOut: 2, wallMs: 3 } } })));
    expect(store.cancel('b')).toBe(true);
    const events = store.get('b')!.events;
    expect(events.filter((e) => e.type === 'run-end')).toHaveLength(1);
    expect(store.get('b')!.usage).toEqual({ n: { tokensIn: 1, tokensOut: 2, wallMs: 3 } });
    expect(store.cancel('b')).toBe(false);
  });

  it('unsubscribes a run that ignores abort and writes run-end for it', () => {
    seq = 0;
    const store = new RunStore({ maxConcurrent: 2, keepFinished: 5 });
    let unsubscribed = false;
    const src = new Observable<RunEvent>((s) => {
      s.next(ev('c', { type: 'run-start', graph: 'g', input: {}, seed: 1 }));
      return () => (unsubscribed = true);
    });
    store.start(meta('c'), src, () => {});
    store.cancel('c');
    expect(unsubscribed).toBe(true);
    expect(store.get('c')!.events.at(-1)).toMatchObject({ type: 'run-end', status: 'cancelled', seq: 1 });
    expect(store.activeCount).toBe(0);
  });

  it('turns a stream error into an error run-end', () => {
    const store = new RunStore({ maxConcurrent: 2, keepFinished: 5 });
    store.start(meta('d'), new Observable<RunEvent>((s) => s.error(new TypeError('boom'))));
    expect(store.get('d')).toMatchObject({ state: 'error', error: { name: 'TypeError', message: 'boom' } });
  });

  it("keeps the failing node of a run's error in its summary", () => {
    const store = new RunStore({ maxConcurrent: 2, keepFinished: 5 });
    const error = { name: 'Error', message: 'model fell over', code: 'internal', node: 'bob' };
    store.start(meta('n'), new Observable<RunEvent>((s) => s.next(ev('n', { type: 'run-end', status: 'error', error, usage: {} }))));
    expect(summarize(store.get('n')!)).toMatchObject({ state: 'error', error });
  });

  it('bounds concurrency across runs and slots, and keeps a ring of finished runs', () => {
    const ended: string[] = [];
    const store = new RunStore({ maxConcurrent: 2, keepFinished: 1, onEnd: (r) => ended.push(r.id) });
    store.start(meta('e'), new Subject<RunEvent>());
    const release = store.acquireSlot();
    expect(() => store.start(meta('f'), new Subject<RunEvent>())).toThrow(TooManyRunsError);
    release();
    release();
    expect(store.activeCount).toBe(1);
    store.start(meta('f'), new Subject<RunEvent>());
    store.cancel('e');
    store.cancel('f');
    expect(ended).toEqual(['e', 'f']);
    expect(store.get('e')).toBeUndefined();
    expect(store.get('f')?.state).toBe('cancelled');
  });
});
