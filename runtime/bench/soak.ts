/**
 * `skein bench soak`: the server under abuse, from outside, on a real socket. N random
 * graphs (an input, a template, one to three generate branches joined, random short
 * lengths) are started over HTTP; a random third are cancelled at a random moment; random
 * bad bodies (malformed JSON, wrong Content-Type, 200-deep nesting, `__proto__` keys,
 * invalid graphs, a 1 MiB prompt) are sent in between; halfway the engine's worker is
 * killed. Every run must reach a run-end (lost = 0), no response may be a 5xx (`/healthz`
 * answers 503 while the worker restarts, which is its job, and is counted apart), and KV
 * blocks in use and the worker's tf tensors must be back at their baseline at the end —
 * tensors counted without those of KV blocks, since finished prompts stay in the prefix
 * cache (evictable, reported apart as cached blocks).
 *
 * npx skein bench soak --json [--arg n=40] [--arg model=skein-mini]
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { percentile, round } from '../engine/bench-support.js';
import type { EngineFront } from '../engine/front.js';
import { startServer } from '../server/index.js';
import { registerBench } from './index.js';

/** A small deterministic PRNG so a soak can be replayed with the same `seed` arg. */
function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The worker's tensors that KV blocks do not hold (null on a main-thread engine). */
const nonKv = (s: { tensors?: number; kvTensors: number }): number | null => (s.tensors === undefined ? null : s.tensors - s.kvTensors);

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

interface Outcome {
  status: string;
  code?: string;
}

registerBench('soak', {
  description: 'random graphs, random cancels, bad bodies and a worker kill: runs lost, 5xx, KV and tensors back at baseline',
  async run({ log, args }) {
    const n = Number(args?.n ?? 40);
    const rand = rng(Number(args?.seed ?? 1));
    const server = await startServer({ port: 0, build: false, print: () => {}, log: () => {}, model: args?.model ?? 'skein-mini', maxConcurrentRuns: 64 });
    const engine = server.engine as EngineFront;
    const base = server.url.replace(/\/$/, '');
    let status5xx = 0;
    let healthz503 = 0;
    const healthMs: number[] = [];
    let polling = true;
    const poll = (async () => {
      while (polling) {
        const t0 = performance.now();
        const res = await fetch(`${base}/healthz`);
        await res.arrayBuffer();
        healthMs.push(performance.now() - t0);
        if (res.status === 503) healthz503++;
        else if (res.status >= 500) status5xx++;
        await sleep(20);
      }
    })();
    const request = async (path: string, init?: RequestInit) => {
      const res = await fetch(`${base}${path}`, init);
      if (res.status >= 500) status5xx++;
      return res;
    };
    try {
      // Baseline after one warm-up generation, so lazily made tensors are counted in it.
      await request('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }) });
      const baseline = engine.stats();
      log(`soak: ${n} runs on ${engine.modelName}; baseline ${baseline.kvBlocksUsed} KV blocks, ${nonKv(baseline)} tensors outside KV`);
      const ids: string[] = [];
      const followers: Array<Promise<Outcome>> = [];
      let badSent = 0;
      let badAnswered4xx = 0;
      let killed: Promise<void> | null = null;
      for (let i = 0; i < n; i++) {
        if (i === Math.floor(n / 2)) {
          log('soak: killing the engine worker');
          killed = engine.killWorker();
        }
        if (rand() < 0.4) {
          const bad = badBodies[Math.floor(rand() * badBodies.length)]!;
          const res = await request(bad.path, { method: 'POST', headers: { 'content-type': bad.type }, body: bad.body });
          await res.arrayBuffer();
          badSent++;
          if (res.status >= 400 && res.status < 500) badAnswered4xx++;
        }
        const res = await request('/v1/runs', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ graph: randomGraph(rand, i), input: { q: `soak question ${i}` }, seed: i }),
        });
        const { id } = (await res.json()) as { id: string };
        ids.push(id);
        followers.push(
          request(`/v1/runs/${id}/events`).then(async (r) => {
            const text = await r.text();
            const end = text.split('\n').filter((l) => l.startsWith('data: ') && l.includes('"type":"run-end"')).pop();
            if (!end) return { status: 'lost' };
            const e = JSON.parse(end.slice(6)) as { status: string; error?: { code?: string } };
            return { status: e.status, ...(e.error?.code ? { code: e.error.code } : {}) };
          }),
        );
        if (rand() < 0.33) {
          const delay = Math.floor(rand() * 300);
          void sleep(delay).then(() => request(`/v1/runs/${id}`, { method: 'DELETE' }).then((r) => r.arrayBuffer()));
        }
        await sleep(Math.floor(rand() * 50));
      }
      await killed;
      const outcomes = await Promise.all(followers);
      for (const id of ids) {
        const res = await request(`/v1/runs/${id}`);
        if (res.status !== 200) outcomes.push({ status: 'lost' });
        await res.arrayBuffer();
      }
      // The same warm-up as before the baseline: a restarted worker makes its lazy tensors
      // on its first generation. Stats arrive with the worker's messages: let them settle.
      await request('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }) });
      await sleep(500);
      const end = engine.stats();
      const count = (status: string) => outcomes.filter((o) => o.status === status).length;
      const failures: Record<string, number> = Object.create(null);
      for (const o of outcomes) if (o.status === 'error') failures[o.code ?? 'unknown'] = (failures[o.code ?? 'unknown'] ?? 0) + 1;
      const figures = {
        runsStarted: ids.length,
        runsCompleted: count('ok'),
        runsCancelled: count('cancelled'),
        runsFailed: count('error'),
        failuresByCode: { ...failures },
        runsLost: count('lost'),
        badBodies: badSent,
        badBodiesAnswered4xx: badAnswered4xx,
        status5xx,
        healthz503WhileRestarting: healthz503,
        workerRestarts: engine.health().restarts,
        kvBlocks: { baseline: baseline.kvBlocksUsed, end: end.kvBlocksUsed },
        kvBlocksCached: end.kvBlocksCached,
        // Outside the KV blocks: the model's and the forward's own tensors, which must not grow.
        tensors: { baseline: nonKv(baseline), end: nonKv(end) },
        healthzP99Ms: round(percentile(healthMs, 99), 1),
        healthzPolls: healthMs.length,
      };
      log(
        `soak: ${figures.runsCompleted} ok, ${figures.runsCancelled} cancelled, ${figures.runsFailed} failed, ${figures.runsLost} lost; ` +
          `${status5xx} 5xx; KV in use ${end.kvBlocksUsed}/${baseline.kvBlocksUsed} (${end.kvBlocksCached} cached), tensors outside KV ${nonKv(end)}/${nonKv(baseline)}; /healthz p99 ${figures.healthzP99Ms} ms`,
      );
      return figures;
    } finally {
      polling = false;
      await poll;
      await server.close();
    }
  },
});
