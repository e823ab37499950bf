/**
 * The playground's client of the control plane: JSON calls with the bearer token (read
 * from the page's `#token=` fragment or typed in), and a run follower that reads the SSE
 * stream with fetch and reconnects with Last-Event-ID, so a dropped connection loses no
 * event.
 *
 * @example
 * const api = new Api();
 * const { id } = await api.startRun({ graphName: 'sot', input: { question: 'Why?' } });
 * await api.follow(id, (e) => console.log(e.type));
 */
import { createParser } from 'eventsource-parser';
import type { GraphProblem } from '../../core/errors.js';
import type { RunEvent } from '../../core/events.js';

export interface ApiErrorBody {
  error: { message: string; code: string; problems?: GraphProblem[] };
}

export class ApiError extends Error {
  constructor(readonly status: number, readonly body: ApiErrorBody) {
    super(body.error?.message ?? `HTTP ${status}`);
  }
}

export interface ExampleGraph {
  name: string;
  file: string;
  description?: string;
  graph: unknown;
}

export interface RunSummary {
  id: string;
  graph: string;
  model: string;
  seed: number;
  input: Record<string, unknown>;
  state: 'running' | 'ok' | 'error' | 'cancelled';
  createdAt: string;
  endedAt?: string;
  timings: { wallMs: number; ttftMs?: number; tokensPerSec?: number };
  usage: { tokensIn: number; tokensOut: number };
  eventCount: number;
  definition?: unknown;
}

const TOKEN_KEY = 'skein.token';

export class Api {
  token: string | null;
  onUnauthorized: () => void = () => {};

  constructor() {
    const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
    if (fromHash) {
      sessionStorage.setItem(TOKEN_KEY, fromHash);
      history.replaceState(null, '', location.pathname + location.search);
    }
    this.token = sessionStorage.getItem(TOKEN_KEY);
  }

  setToken(token: string): void {
    this.token = token || null;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.token ? { Authorization: `Bearer ${this.token}` } : {}), ...extra };
  }

  async call<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const res = await fetch(path, {
      method,
      headers: this.headers(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
    const data = (await res.json().catch(() => ({ error: { message: `HTTP ${res.status}`, code: 'internal' } }))) as T & ApiErrorBody;
    if (res.status === 401) this.onUnauthorized();
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }

  health = () => this.call<{ status: string; model: string; backend: string; fallbackReason?: string }>('GET', '/healthz');
  graphs = () => this.call<{ graphs: ExampleGraph[] }>('GET', '/v1/graphs');
  runs = () => this.call<{ runs: RunSummary[] }>('GET', '/v1/runs');
  run = (id: string) => this.call<RunSummary>('GET', `/v1/runs/${id}`);
  cancel = (id: string) => this.call<RunSummary>('DELETE', `/v1/runs/${id}`);
  validate = (graph: unknown, signal?: AbortSignal) =>
    this.call<{ valid: boolean; problems: GraphProblem[] }>('POST', '/v1/graphs/validate', graph, signal);
  startRun = (body: { graph?: unknown; graphName?: string; input: unknown; seed?: number }) =>
    this.call<{ id: string }>('POST', '/v1/runs', body);

  /**
   * Streams a run's events from `afterSeq` on; resolves after run-end or when aborted.
   * Network failures reconnect with the last seen id after a short pause.
   */
  async follow(id: string, onEvent: (e: RunEvent) => void, opts: { afterSeq?: number; signal?: AbortSignal } = {}): Promise<void> {
    let last = opts.afterSeq ?? -1;
    for (let attempt = 0; !opts.signal?.aborted; attempt++) {
      try {
        const res = await fetch(`/v1/runs/${id}/events`, {
          headers: this.headers(last >= 0 ? { 'Last-Event-ID': String(last) } : {}),
          signal: opts.signal,
        });
        if (!res.ok || !res.body) throw new ApiError(res.status, await res.json());
        let ended = false;
        await readSse(res.body, (event, data) => {
          if (!data || event === 'ready') return;
          const e = JSON.parse(data) as RunEvent;
          last = e.seq;
          onEvent(e);
          if (e.type === 'run-end') ended = true;
        });
        if (ended) return;
      } catch (err) {
        if (opts.signal?.aborted) return;
        if (err instanceof ApiError && err.status !== 503) throw err;
      }
      await new Promise((r) => setTimeout(r, Math.min(250 * 2 ** attempt, 4000)));
    }
  }
}

/** Feeds the body to eventsource-parser (the spec's line handling: CRLF, comments, ids), one callback per event. */
async function readSse(body: ReadableStream<Uint8Array>, onMessage: (event: string, data: string) => void): Promise<void> {
  const parser = createParser({ onEvent: (e) => onMessage(e.event ?? 'message', e.data) });
  const reader = body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    parser.feed(decoder.decode(value, { stream: true }));
  }
}
