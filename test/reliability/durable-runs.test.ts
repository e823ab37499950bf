// Durable runs (#16 item 6): after `kill -9` every run used to be 404 and SSE clients got
// a socket error with no run-end; SIGTERM cut clients off too. Runs and their events (node
// outputs in the node-end ones) now go to SQLite under the data folder: a restart replays finished runs, marks
// the ones in flight interrupted (with a run-end), and SIGTERM drains.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { RunEvent } from '../../core/events.js';
import { createApp, startServer } from '../../runtime/server/index.js';
import { RunDatabase } from '../../runtime/server/run-db.js';
import { createServerTestEngine } from '../fakes/server-engine.js';
import { parseSse } from '../fakes/sse.js';
import { tempDir } from '../fixtures/temp-dir.js';

const post = (body: unknown) => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
const events = async (res: Response) =>
  parseSse(await res.text())
    .filter((m) => m.id !== undefined)
    .map((m) => JSON.parse(m.data) as RunEvent);

async function waitFor(check: () => boolean | Promise<boolean>, ms = 10_000) {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('durable runs', () => {
  it('after a crash, finished runs replay as before and the run in flight is marked interrupted', async () => {
    const dir = tempDir('skein-runs-');
    // The first process: one run finishes, one is cut off in the middle (its process "dies":
    // nothing of it ends, the database is simply opened again by the next one).
    const before = RunDatabase.open(dir);
    const engine = createServerTestEngine(20);
    const app = createApp({ engine, log: () => {}, runDb: before });
    const done = await (await app.request('/v1/runs', post({ graphName: 'chat', input: { question: 'hi' }, seed: 5 }))).json();
    await waitFor(async () => (await (await app.request(`/v1/runs/${done.id}`)).json()).state === 'ok');
    const doneEvents = await events(await app.request(`/v1/runs/${done.id}/events`));
    const cut = await (await app.request('/v1/runs', post({ graphName: 'chat', input: { question: 'a long answer please' } }))).json();
    await waitFor(() => (app.runs.get(cut.id)?.events.length ?? 0) > 4);
    await new Promise((r) => setImmediate(r));
    expect(existsSync(join(dir, 'runs.db-wal'))).toBe(true);

    const after = RunDatabase.open(dir);
    const restarted = createApp({ engine: createServerTestEngine(1), log: () => {}, runDb: after });
    const list = (await (await restarted.request('/v1/runs')).json()).runs as Array<{ id: string; state: string }>;
    expect(list.map((r) => [r.id, r.state])).toEqual([
      [cut.id, 'interrupted'],
      [done.id, 'ok'],
    ]);
    const replay = await events(await restarted.request(`/v1/runs/${done.id}/events`));
    expect(replay).toEqual(doneEvents);
    const summary = await (await restarted.request(`/v1/runs/${done.id}`)).json();
    expect(summary).toMatchObject({ id: done.id, state: 'ok', seed: 5, graph: 'chat', input: { question: 'hi' } });
    expect(summary.definition).toMatchObject({ name: 'chat' });
    const interrupted = await events(await restarted.request(`/v1/runs/${cut.id}/events`));
    expect(interrupted[0]!.type).toBe('run-start');
    expect(interrupted.at(-1)).toMatchObject({ type: 'run-end', status: 'error', error: { code: 'interrupted' } });
    expect(interrupted.map((e) => e.seq)).toEqual(interrupted.map((_, i) => i));
    // Each node's completed output is stored once, in its node-end event (what resume reuses).
    expect(replay.find((e) => e.type === 'node-end' && e.node === 'answer')).toMatchObject({ output: expect.any(String) });
    app.runs.cancel(cut.id);
    before.close();
    after.close();
  });

  it('SIGTERM drains: new work gets 503, a run in flight ends cancelled for its SSE client, and the store keeps it', async () => {
    const dir = tempDir('skein-drain-');
    const engine = createServerTestEngine(20);
    const server = await startServer({ engine, port: 0, build: false, print: () => {}, log: () => {}, dataDir: dir });
    const { id } = await (await fetch(`${server.url}v1/runs`, post({ graphName: 'chat', input: { question: 'a long answer please' } }))).json();
    const stream = fetch(`${server.url}v1/runs/${id}/events`).then(events);
    await waitFor(() => engine.live > 0 && server.app.runs.followerCount > 0);
    const stopping = server.shutdown({ graceMs: 100 });
    const refused = await server.app.request('/v1/runs', post({ graphName: 'chat', input: { question: 'hi' } }));
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('5');
    expect(await stopping).toEqual({ finished: 0, cancelled: 1 });
    const seen = await stream;
    expect(seen.at(-1)).toMatchObject({ type: 'run-end', status: 'cancelled' });
    expect(engine.live).toBe(0);

    const db = RunDatabase.open(dir);
    const { runs, interrupted } = db.recover(10);
    expect(interrupted).toEqual([]);
    expect(runs.map((r) => [r.id, r.state])).toEqual([[id, 'cancelled']]);
    expect(runs[0]!.events.at(-1)).toMatchObject({ type: 'run-end', status: 'cancelled' });
    db.close();
  });

  it('lets runs finish within the grace period', async () => {
    const engine = createServerTestEngine(1);
    const server = await startServer({ engine, port: 0, build: false, print: () => {}, log: () => {} });
    const { id } = await (await fetch(`${server.url}v1/runs`, post({ graphName: 'chat', input: { question: 'hi' } }))).json();
    expect(await server.shutdown({ graceMs: 5000 })).toEqual({ finished: 1, cancelled: 0 });
    expect(server.app.runs.get(id)?.state).toBe('ok');
  });
});
