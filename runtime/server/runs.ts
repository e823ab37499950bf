/**
 * The run store: every run the server started, its events as they came, and the live
 * tail for SSE followers. A run is one subscription to `runGraph(...)`; cancelling it is
 * unsubscribing (generation stops, KV is freed) and the store then writes the run-end
 * event the unsubscribed stream can no longer send. Finished runs stay, with all their
 * events, in a ring of `keepFinished` runs so they can be replayed; the oldest goes first.
 *
 * @example
 * const store = new RunStore({ maxConcurrent: 4, keepFinished: 50 });
 * const run = store.start({ id: 'run_1', graph: 'sot', input, seed: 0, model: 'skein-mini' }, run$);
 * store.follow(run.id, -1).subscribe((e) => console.log(e.type));
 */
import { Observable, Subject, type Subscription } from 'rxjs';
import type { NodeUsage, RunEvent } from '../../core/events.js';
import { TooManyRunsError } from './errors.js';

/** 'interrupted': the server stopped while the run was in flight (read back from the run database). */
export type RunState = 'running' | 'ok' | 'error' | 'cancelled' | 'interrupted';

export interface RunMeta {
  id: string;
  graph: string;
  input: Record<string, unknown>;
  /** As asked; filled from run-start when the core picked it. */
  seed?: number;
  model: string;
  /** The graph JSON the run was started with, so a past run can be drawn again. */
  definition?: unknown;
}

export interface RunRecord extends RunMeta {
  state: RunState;
  createdAt: number;
  endedAt?: number;
  events: RunEvent[];
  error?: { name: string; message: string; code?: string; node?: string };
  usage?: Record<string, NodeUsage>;
  /** Milliseconds from the run's start to its first text delta. */
  ttftMs?: number;
  tokensOut: number;
}

/** The public view of a run (GET /v1/runs/:id): everything but the events themselves. */
export interface RunSummary {
  id: string;
  graph: string;
  model: string;
  seed?: number;
  input: Record<string, unknown>;
  state: RunState;
  createdAt: string;
  endedAt?: string;
  timings: { wallMs: number; ttftMs?: number; tokensPerSec?: number };
  usage: { tokensIn: number; tokensOut: number; nodes: Record<string, NodeUsage> };
  eventCount: number;
  error?: { name: string; message: string; code?: string; node?: string };
}

/** Where runs are written as they happen, so they survive the process (run-db.ts). */
export interface RunPersistence {
  started(record: RunRecord): void;
  event(runId: string, event: RunEvent): void;
  ended(record: RunRecord): void;
}

export interface RunStoreOptions {
  maxConcurrent: number;
  keepFinished: number;
  persistence?: RunPersistence;
  /** Told about every event, for metrics. */
  onEvent?: (run: RunRecord, event: RunEvent) => void;
  /** Told when a run leaves the running state. */
  onEnd?: (run: RunRecord) => void;
}

interface Live {
  subscription?: Subscription;
  /** Asks the run to stop by itself, so that it reports its own cancelled run-end. */
  abort?: () => void;
  tail: Subject<RunEvent>;
}

export class RunStore {
  private readonly runs = new Map<string, RunRecord>();
  // Live state of running runs only; dropping it on end lets followers complete.
  private readonly live = new Map<string, Live>();
  // Finished run ids, oldest first: the ring that bounds memory.
  private readonly finished: string[] = [];
  // Slots held outside runs (OpenAI-compatible requests share the same limit).
  private extraSlots = 0;
  // Open follow() subscriptions (SSE clients): a draining server waits for them to get their run-end.
  private followers = 0;

  constructor(private readonly options: RunStoreOptions) {}

  get activeCount(): number {
    return this.live.size + this.extraSlots;
  }

  /** Runs in progress (without the OpenAI-compatible slots). */
  get runningCount(): number {
    return this.live.size;
  }

  get followerCount(): number {
    return this.followers;
  }

  /** Puts finished runs read back from storage in place, oldest first, as if they had just ended. */
  restore(records: RunRecord[]): void {
    for (const record of records) {
      if (record.state === 'running' || this.runs.has(record.id)) continue;
      this.runs.set(record.id, record);
      this.finished.push(record.id);
    }
    while (this.finished.length > this.options.keepFinished) this.runs.delete(this.finished.shift()!);
  }

  /** Takes a concurrency slot for work that is not a run; call the returned release once. */
  acquireSlot(): () => void {
    if (this.activeCount >= this.options.maxConcurrent) throw new TooManyRunsError(this.options.maxConcurrent);
    this.extraSlots++;
    let released = false;
    return () => {
      if (!released) {
        released = true;
        this.extraSlots--;
      }
    };
  }

  /** `abort`, when given, is tried first on cancel; unsubscribing is the fallback. */
  start(meta: RunMeta, run$: Observable<RunEvent>, abort?: () => void): RunRecord {
    if (this.activeCount >= this.options.maxConcurrent) throw new TooManyRunsError(this.options.maxConcurrent);
    const record: RunRecord = { ...meta, state: 'running', createdAt: Date.now(), events: [], tokensOut: 0 };
    const live: Live = { tail: new Subject<RunEvent>(), ...(abort ? { abort } : {}) };
    this.runs.set(meta.id, record);
    this.live.set(meta.id, live);
    this.options.persistence?.started(record);
    // Subscribing may emit synchronously (and even finish): `live` must be in place first.
    const subscription = run$.subscribe({
      next: (event) => this.push(record, event),
      error: (err: unknown) => this.endWith(record, 'error', errorInfo(err)),
      complete: () => {
        if (record.state === 'running') this.endWith(record, 'error', { name: 'Error', message: 'run ended without run-end' });
      },
    });
    if (record.state === 'running') live.subscription = subscription;
    else subscription.unsubscribe();
    return record;
  }

  get(id: string): RunRecord | undefined {
    return this.runs.get(id);
  }

  /** Newest first. */
  list(): RunRecord[] {
    return [...this.runs.values()].sort((a, b) => b.createdAt - a.createdAt);
  }

  /** Returns false when the run had already finished. */
  cancel(id: string): boolean {
    const record = this.runs.get(id);
    const live = this.live.get(id);
    if (!record || !live || record.state !== 'running') return false;
    live.abort?.();
    // A run that did not end on abort (or has no abort) is unsubscribed: generation stops.
    if (record.state === 'running') {
      live.subscription?.unsubscribe();
      this.endWith(record, 'cancelled');
    }
    return true;
  }

  /**
   * The run's events with seq > afterSeq: first the stored ones, then the live tail, and
   * complete after run-end. A follower that reconnects with its last seq misses nothing.
   */
  follow(id: string, afterSeq: number): Observable<RunEvent> {
    return new Observable<RunEvent>((subscriber) => {
      const record = this.runs.get(id);
      if (!record) {
        subscriber.complete();
        return;
      }
      this.followers++;
      let last = afterSeq;
      const emit = (e: RunEvent) => {
        if (e.seq <= last) return;
        last = e.seq;
        subscriber.next(e);
      };
      // Subscribe to the tail before replaying so no event falls between the two.
      const live = this.live.get(id);
      const buffered: RunEvent[] = [];
      let replaying = true;
      const sub = live?.tail.subscribe({
        next: (e) => (replaying ? buffered.push(e) : emit(e)),
        complete: () => subscriber.complete(),
      });
      for (const e of record.events) emit(e);
      replaying = false;
      for (const e of buffered) emit(e);
      if (!live || record.state !== 'running') subscriber.complete();
      return () => {
        this.followers--;
        sub?.unsubscribe();
      };
    });
  }

  private push(record: RunRecord, event: RunEvent): void {
    if (record.state !== 'running') return;
    record.events.push(event);
    this.options.persistence?.event(record.id, event);
    if (event.type === 'run-start') record.seed = event.seed;
    else if (event.type === 'text-delta') {
      record.tokensOut += event.tokenIds.length;
      if (record.ttftMs === undefined) record.ttftMs = event.t;
    }
    this.options.onEvent?.(record, event);
    this.live.get(record.id)?.tail.next(event);
    if (event.type === 'run-end') {
      record.usage = event.usage;
      if (event.error) record.error = event.error;
      this.finish(record, event.status);
    }
  }

  /** Ends a run whose stream cannot send its own run-end (cancelled or errored). */
  private endWith(record: RunRecord, status: 'error' | 'cancelled', error?: RunRecord['error']): void {
    if (record.state !== 'running') return;
    const last = record.events[record.events.length - 1];
    this.push(record, {
      type: 'run-end',
      runId: record.id,
      seq: (last?.seq ?? -1) + 1,
      t: Date.now() - record.createdAt,
      status,
      ...(error ? { error } : {}),
      usage: usageFromEvents(record.events),
    });
  }

  private finish(record: RunRecord, status: RunState): void {
    record.state = status;
    record.endedAt = Date.now();
    const live = this.live.get(record.id);
    this.live.delete(record.id);
    this.options.persistence?.ended(record);
    live?.tail.complete();
    this.options.onEnd?.(record);
    this.finished.push(record.id);
    while (this.finished.length > this.options.keepFinished) this.runs.delete(this.finished.shift()!);
  }
}

function errorInfo(err: unknown): { name: string; message: string; code?: string } {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return { name: err.name, message: err.message, ...(typeof code === 'string' ? { code } : {}) };
  }
  return { name: 'Error', message: String(err) };
}

/** Usage per node from node-end metrics, for runs that ended without their own run-end. */
function usageFromEvents(events: RunEvent[]): Record<string, NodeUsage> {
  // Keyed by node ids from the graph: no prototype to write through.
  const usage: Record<string, NodeUsage> = Object.create(null);
  for (const e of events) {
    if (e.type !== 'node-end') continue;
    const u = (usage[e.node] ??= { tokensIn: 0, tokensOut: 0, wallMs: 0 });
    u.tokensIn += e.metrics.tokensIn ?? 0;
    u.tokensOut += e.metrics.tokensOut ?? 0;
  }
  return usage;
}

export function summarize(record: RunRecord): RunSummary {
  const wallMs = (record.endedAt ?? Date.now()) - record.createdAt;
  const nodes = record.usage ?? usageFromEvents(record.events);
  let tokensIn = 0;
  for (const u of Object.values(nodes)) tokensIn += u.tokensIn;
  return {
    id: record.id,
    graph: record.graph,
    model: record.model,
    ...(record.seed !== undefined ? { seed: record.seed } : {}),
    input: record.input,
    state: record.state,
    createdAt: new Date(record.createdAt).toISOString(),
    ...(record.endedAt ? { endedAt: new Date(record.endedAt).toISOString() } : {}),
    timings: {
      wallMs,
      ...(record.ttftMs !== undefined ? { ttftMs: record.ttftMs } : {}),
      ...(wallMs > 0 && record.tokensOut > 0 ? { tokensPerSec: (record.tokensOut * 1000) / wallMs } : {}),
    },
    usage: { tokensIn, tokensOut: record.tokensOut, nodes },
    eventCount: record.events.length,
    ...(record.error ? { error: record.error } : {}),
  };
}
