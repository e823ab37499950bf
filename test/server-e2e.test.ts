// End to end over a real socket (127.0.0.1, a free port): SSE streaming with a
// reconnect that resumes from Last-Event-ID, cancel freeing the engine's work, and the
// limits (413, 401, 429) as a client sees them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunEvent } from '../core/events.js';
import { startServer, type RunningServer } from '../runtime/server/index.js';
import type { FakeEngine } from './fakes/fake-engine.js';
import { createServerTestEngine } from './fakes/server-engine.js';
import { readSse } from './fakes/sse.js';

const TOKEN = 'e2e-token';
let server: RunningServer;
let engine: FakeEngine;
const auth = { Authorization: `Bearer ${TOKEN}` };

beforeAll(async () => {
  engine = createServerTestEngine(15);
  server = await startServer({
    engine,
    port: 0,
    token: TOKEN,
    build: false,
    maxConcurrentRuns: 3,
    maxBodyBytes: 64 * 1024,
    print: () => {},
    log: () => {},
  });
});
afterAll(async () => {
  await server?.close();
});

async function startRun(graphName: string, input: Record<string, unknown>): Promise<Response> {
  return fetch(new URL('/v1/runs', server.url), {
    method: 'POST',
    headers: { ...auth, 'Content-Type': 'application/json' },
    body: JSON.stringify({ graphName, input }),
  });
}

async function events(id: string, lastEventId: string | undefined, take?: number): Promise<RunEvent[]> {
  const res = await fetch(new URL(`/v1/runs/${id}/events`, server.url), {
    headers: { ...auth, ...(lastEventId !== undefined ? { 'Last-Event-ID': lastEventId } : {}) },
  });
  expect(res.status).toBe(200);
  const out: RunEvent[] = [];
  await readSse(res.body!, (m) => {
    if (m.id === undefined) return;
    out.push(JSON.parse(m.data) as RunEvent);
    if (take !== undefined && out.length >= take) return false;
  });
  return out;
}

describe('server end to end', () => {
  it('binds loopback', () => {
    expect(server.host).toBe('127.0.0.1');
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
  });

  it('streams a run over SSE and resumes after a dropped connection without a gap', async () => {
    const res = await startRun('sot', { question: 'How do I learn to cook?' });
    expect(res.status).toBe(201);
    const { id } = await res.json();
    const first = await events(id, undefined, 6);
    expect(first.map((e) => e.seq)).toEqual([0, 1, 2, 3, 4, 5]);
    // The run goes on while the client is away; reconnecting must not lose or repeat events.
    await new Promise((r) => setTimeout(r, 60));
    const rest = await events(id, String(first.at(-1)!.seq));
    const all = [...first, ...rest];
    expect(all.map((e) => e.seq)).toEqual(all.map((_, i) => i));
    expect(all.at(-1)).toMatchObject({ type: 'run-end', status: 'ok' });
    const branches = new Set(all.flatMap((e) => (e.type === 'text-delta' && e.node === 'expand' && e.branch ? [e.branch] : [])));
    expect(branches.size).toBe(3);
    // Finished runs replay in full.
    expect((await events(id, undefined)).length).toBe(all.length);
  });

  it('cancels a run: the stream ends cancelled and the engine work is freed', async () => {
    const { id } = await (await startRun('chat', { question: 'a long answer please' })).json();
    const seen: RunEvent[] = [];
    const streaming = (async () => {
      const res = await fetch(new URL(`/v1/runs/${id}/events`, server.url), { headers: auth });
      await readSse(res.body!, (m) => {
        if (m.id !== undefined) seen.push(JSON.parse(m.data) as RunEvent);
      });
    })();
    const end = Date.now() + 5000;
    while (!seen.some((e) => e.type === 'text-delta') && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    const before = engine.cancelled;
    expect(engine.live).toBe(1);
    const del = await fetch(new URL(`/v1/runs/${id}`, server.url), { method: 'DELETE', headers: auth });
    expect(del.status).toBe(200);
    await streaming;
    expect(seen.at(-1)).toMatchObject({ type: 'run-end', status: 'cancelled' });
    expect(engine.live).toBe(0);
    expect(engine.cancelled).toBe(before + 1);
    expect(engine.stats().kvBlocksUsed).toBe(0);
    const summary = await (await fetch(new URL(`/v1/runs/${id}`, server.url), { headers: auth })).json();
    expect(summary).toMatchObject({ state: 'cancelled', eventCount: seen.length });
  });

  it('answers 413 to an oversized body', async () => {
    const res = await fetch(new URL('/v1/graphs/validate', server.url), {
      method: 'POST',
      headers: { ...auth, 'Content-Type': 'application/json' },
      body: JSON.stringify({ version: 1, name: 'big', description: 'x'.repeat(100 * 1024), nodes: [], edges: [] }),
    });
    expect(res.status).toBe(413);
    expect((await res.json()).error.code).toBe('payload_too_large');
  });

  it('answers 401 without the token, and keeps /healthz open', async () => {
    const res = await fetch(new URL('/v1/runs', server.url));
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/Bearer/);
    expect((await res.json()).error.code).toBe('unauthorized');
    expect((await fetch(new URL('/healthz', server.url))).status).toBe(200);
  });

  it('answers 429 past the concurrency limit', async () => {
    const started: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await startRun('chat', { question: `a long answer ${i}` });
      expect(res.status).toBe(201);
      started.push((await res.json()).id);
    }
    const over = await startRun('chat', { question: 'one too many' });
    expect(over.status).toBe(429);
    expect((await over.json()).error.code).toBe('too_many_runs');
    for (const id of started) await fetch(new URL(`/v1/runs/${id}`, server.url), { method: 'DELETE', headers: auth });
    expect(engine.live).toBe(0);
  });
});
