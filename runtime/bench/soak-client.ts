/**
 * The client side of `skein bench soak` and `skein bench healthz`: the traffic (random
 * graphs, SSE followers, random cancels, bad bodies), a sender of large bodies, and the
 * `/healthz` poller. The traffic and the sender run in a worker thread, so the server's
 * event loop carries only the server: an HTTP client in the same thread (undici parsing 40
 * SSE streams, writing 1 MiB bodies) took more of that loop than the server did, and its
 * pauses were counted as the server's. `runTraffic` also runs in the calling thread, as
 * the soak did before, for comparison.
 *
 * @example
 * const traffic = await runTrafficInWorker({ base, n: 40, seed: 1 }, () => engine.killWorker());
 * const poll = pollHealthz(base); ...; const { latencies } = await poll.stop();
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

/** A small deterministic PRNG so a soak can be replayed with the same `seed` arg. */
export function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomGraph(rand: () => number, i: number) {
  const branches = 1 + Math.floor(rand() * 3);
  const gens = Array.from({ length: branches }, (_, b) => ({
    id: `g${b}`,
    kind: 'generate',
    sampling: { maxTokens: 2 + Math.floor(rand() * 10), temperature: rand() < 0.5 ? 0 : 0.8 },
  }));
  return {
    version: 1,
    name: `soak-${i}`,
    nodes: [
      { id: 'q', kind: 'input' },
      { id: 't', kind: 'template', template: `Question ${i}: {{q}}\nAnswer:` },
      ...gens,
      { id: 'j', kind: 'join', mode: 'concat' },
      { id: 'o', kind: 'output' },
    ],
    edges: [{ from: 'q', to: 't' }, ...gens.flatMap((g) => [{ from: 't', to: `${g.id}.prompt` }, { from: g.id, to: `j.${g.id}` }]), { from: 'j', to: 'o' }],
  };
}

const badBodies: Array<{ what: string; path: string; type: string; body: string }> = [
  { what: 'malformed JSON', path: '/v1/runs', type: 'application/json', body: '{"graphName": ' },
  { what: 'text/plain', path: '/v1/runs', type: 'text/plain', body: '{"graphName": "chat", "input": {"question": "x"}}' },
  { what: '200-deep input', path: '/v1/runs', type: 'application/json', body: `{"graphName": "chat", "input": {"question": ${'['.repeat(200)}${']'.repeat(200)}}}` },
  { what: '__proto__ node id', path: '/v1/runs', type: 'application/json', body: '{"graph": {"version":1,"name":"p","nodes":[{"id":"__proto__","kind":"input"},{"id":"o","kind":"output"}],"edges":[{"from":"__proto__","to":"o"}]},"input":{"__proto__":{"x":1}}}' },
  { what: 'invalid graph', path: '/v1/runs', type: 'application/json', body: '{"graph": {"version": 1, "name": "x", "nodes": [], "edges": []}}' },
  { what: '1 MiB prompt', path: '/v1/chat/completions', type: 'application/json', body: JSON.stringify({ messages: [{ role: 'user', content: 'x '.repeat(500_000) }] }) },
  { what: 'chat __proto__', path: '/v1/chat/completions', type: 'application/json', body: '{"__proto__": {"polluted": 1}, "messages": [{"role": "constructor", "content": "x"}]}' },
];

export interface Outcome {
  status: string;
  code?: string;
}

/** A 5xx answer: where, and its error code. */
export interface ServerError {
  path: string;
  status: number;
  code?: string;
}

export interface TrafficFigures {
  outcomes: Outcome[];
  /** Requests that got no answer at all (a reset or refused connection): must be none. */
  networkErrors: string[];
  runsStarted: number;
  badBodies: number;
  badBodiesAnswered4xx: number;
  /** Every 5xx but the 503 `engine_unavailable` of work in flight when the worker was killed. */
  serverErrors: ServerError[];
  /** 503 `engine_unavailable`: requests in flight on the worker the soak killed (their typed error). */
  engineUnavailable503: number;
}

export interface TrafficOptions {
  base: string;
  n: number;
  seed: number;
}

/** Starts `n` random runs with bad bodies and cancels in between; `kill` is called halfway. */
export async function runTraffic(options: TrafficOptions, kill: () => void): Promise<TrafficFigures> {
  const { base, n } = options;
  const rand = rng(options.seed);
  const serverErrors: ServerError[] = [];
  const networkErrors: string[] = [];
  let engineUnavailable503 = 0;
  // A request that got no answer at all is recorded and comes back as null.
  const request = async (path: string, init?: RequestInit): Promise<Response | null> => {
    let res: Response;
    try {
      res = await fetch(`${base}${path}`, init);
    } catch (err) {
      networkErrors.push(`${init?.method ?? 'GET'} ${path}: ${networkError(err)}`);
      return null;
    }
    if (res.status >= 500) {
      const code = res.headers.get('content-type')?.includes('json') ? ((await res.clone().json()) as { error?: { code?: string } }).error?.code : undefined;
      if (res.status === 503 && code === 'engine_unavailable') engineUnavailable503++;
      else serverErrors.push({ path, status: res.status, ...(code ? { code } : {}) });
    }
    return res;
  };
  const ids: string[] = [];
  const followers: Array<Promise<Outcome>> = [];
  let badSent = 0;
  let badAnswered4xx = 0;
  for (let i = 0; i < n; i++) {
    if (i === Math.floor(n / 2)) kill();
    if (rand() < 0.4) {
      const bad = badBodies[Math.floor(rand() * badBodies.length)]!;
      const res = await request(bad.path, { method: 'POST', headers: { 'content-type': bad.type }, body: bad.body });
      await res?.arrayBuffer();
      badSent++;
      if (res && res.status >= 400 && res.status < 500) badAnswered4xx++;
    }
    const res = await request('/v1/runs', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ graph: randomGraph(rand, i), input: { q: `soak question ${i}` }, seed: i }),
    });
    if (!res) continue;
    const { id } = (await res.json()) as { id: string };
    ids.push(id);
    followers.push(
      request(`/v1/runs/${id}/events`).then(async (r) => {
        const text = r ? await r.text().catch(() => '') : '';
        const end = text.split('\n').filter((l) => l.startsWith('data: ') && l.includes('"type":"run-end"')).pop();
        if (!end) return { status: 'lost' };
        const e = JSON.parse(end.slice(6)) as { status: string; error?: { code?: string } };
        return { status: e.status, ...(e.error?.code ? { code: e.error.code } : {}) };
      }),
    );
    if (rand() < 0.33) {
      const delay = Math.floor(rand() * 300);
      void sleep(delay).then(() => request(`/v1/runs/${id}`, { method: 'DELETE' }).then((r) => r?.arrayBuffer()));
    }
    await sleep(Math.floor(rand() * 50));
  }
  const outcomes = await Promise.all(followers);
  for (const id of ids) {
    const res = await request(`/v1/runs/${id}`);
    if (res?.status !== 200) outcomes.push({ status: 'lost' });
    await res?.arrayBuffer();
  }
  return { outcomes, networkErrors, runsStarted: ids.length, badBodies: badSent, badBodiesAnswered4xx: badAnswered4xx, serverErrors, engineUnavailable503 };
}

/** A fetch failure's cause, as undici reports it (`fetch failed` alone says nothing). */
function networkError(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (err as Error).message;
}

export interface PollFigures {
  latencies: number[];
  /** Polls that got no answer (a reset connection, a refused one), with when (ms into the poll) and why. */
  failures: string[];
  /** 503 while the worker restarts: /healthz doing its job. */
  degraded503: number;
  /** Any other 5xx from /healthz. */
  other5xx: number;
}

export interface Poller {
  /** Settles once the first answer has come back. */
  ready: Promise<void>;
  stop: () => Promise<PollFigures>;
}

/** Polls /healthz every `everyMs` until stopped; `stop()` gives each answer's latency. */
export function pollHealthz(base: string, everyMs = 20): Poller {
  const figures: PollFigures = { latencies: [], failures: [], degraded503: 0, other5xx: 0 };
  const start = performance.now();
  let polling = true;
  let first = () => {};
  const ready = new Promise<void>((resolve) => (first = resolve));
  const loop = (async () => {
    while (polling) {
      const t0 = performance.now();
      try {
        const res = await fetch(`${base}/healthz`);
        await res.arrayBuffer();
        figures.latencies.push(performance.now() - t0);
        if (res.status === 503) figures.degraded503++;
        else if (res.status >= 500) figures.other5xx++;
      } catch (err) {
        figures.failures.push(`${Math.round(t0 - start)} ms: ${networkError(err)}`);
      }
      first();
      await sleep(everyMs);
    }
  })();
  return {
    ready,
    stop: async () => {
      polling = false;
      await loop;
      return figures;
    },
  };
}

type ToClient = { type: 'go' };
type FromClient =
  | { type: 'kill' }
  | { type: 'ready' }
  | { type: 'traffic'; figures: TrafficFigures }
  | { type: 'posted'; figures: number[] }
  | { type: 'error'; message: string };

interface ClientData {
  role: 'traffic' | 'post';
  base: string;
  n?: number;
  seed?: number;
  body?: string;
}

/** Starts this module in a worker thread (under tsx when running from source, as the train workers do). */
function spawnClient(data: ClientData): Worker {
  const url = import.meta.url;
  const code = `import('tsx/esm/api').then((m) => m.tsImport(${JSON.stringify(url)}, ${JSON.stringify(url)}))`;
  return url.endsWith('.ts') ? new Worker(code, { eval: true, workerData: data }) : new Worker(new URL(url), { workerData: data });
}

function settle<T>(worker: Worker, type: Exclude<FromClient['type'], 'kill' | 'ready' | 'error'>, on: { kill?: () => void; ready?: () => void } = {}): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    worker.on('message', (msg: FromClient) => {
      if (msg.type === 'kill') on.kill?.();
      else if (msg.type === 'ready') on.ready?.();
      else if (msg.type === 'error') reject(new Error(`soak client: ${msg.message}`));
      else if (msg.type === type) resolve(msg.figures as T);
    });
    worker.on('error', reject);
  });
}

/** runTraffic in a worker thread; `kill` is called (here) when it asks for it. */
export async function runTrafficInWorker(options: TrafficOptions, kill: () => void): Promise<TrafficFigures> {
  const worker = spawnClient({ role: 'traffic', ...options });
  try {
    return await settle<TrafficFigures>(worker, 'traffic', { kill });
  } finally {
    await worker.terminate();
  }
}

/**
 * A worker thread that sends `count` concurrent POSTs of a JSON body when told to: `ready`
 * settles once it has started (a thread takes a second or more to boot under tsx, which
 * must not count as the time the requests took), `send()` sends them and gives their statuses.
 */
export function postInWorker(url: string, body: string, count: number): { ready: Promise<void>; send: () => Promise<number[]> } {
  const worker = spawnClient({ role: 'post', base: url, body, n: count });
  let ready = () => {};
  const started = new Promise<void>((resolve) => (ready = resolve));
  const result = settle<number[]>(worker, 'posted', { ready: () => ready() });
  return {
    ready: started,
    send: async () => {
      worker.postMessage({ type: 'go' } satisfies ToClient);
      try {
        return await result;
      } finally {
        await worker.terminate();
      }
    },
  };
}

if (!isMainThread && (workerData as ClientData | undefined)?.role) {
  const data = workerData as ClientData;
  const post = (msg: FromClient) => parentPort!.postMessage(msg);
  const fail = (err: unknown) => post({ type: 'error', message: err instanceof Error ? err.message : String(err) });
  if (data.role === 'traffic') {
    runTraffic({ base: data.base, n: data.n!, seed: data.seed! }, () => post({ type: 'kill' })).then((figures) => post({ type: 'traffic', figures }), fail);
  } else {
    const send = async () => {
      const res = await fetch(data.base, { method: 'POST', headers: { 'content-type': 'application/json' }, body: data.body! });
      await res.arrayBuffer();
      return res.status;
    };
    post({ type: 'ready' });
    parentPort!.once('message', () => Promise.all(Array.from({ length: data.n! }, send)).then((figures) => post({ type: 'posted', figures }), fail));
  }
}
