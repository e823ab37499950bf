// Route tests of the control plane, through app.request(): the real dataflow core and
// example graphs on a scripted engine; no socket, fast.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { RunEvent } from '../core/events.js';
import { createApp, type AppOptions } from '../runtime/server/index.js';
import { loadExampleGraphs } from '../runtime/server/graphs.js';
import { KvExhaustedError } from '../core/errors.js';
import { createFakeEngine } from './fakes/fake-engine.js';
import { createServerTestEngine } from './fakes/server-engine.js';
import { parseSse } from './fakes/sse.js';
import { tempDir } from './fixtures/temp-dir.js';

const examples = loadExampleGraphs();
const sotGraph = examples.find((g) => g.name === 'sot')!.graph as Record<string, unknown> & { edges: unknown[] };
const chatGraph = examples.find((g) => g.name === 'chat')!.graph as Record<string, unknown> & { edges: unknown[] };

function setup(opts: Partial<AppOptions> = {}, delayMs = 1) {
  const engine = createServerTestEngine(delayMs);
  const app = createApp({ engine, log: () => {}, ...opts });
  return { engine, app };
}

const post = (path: string, body: unknown, headers: Record<string, string> = {}) => ({
  method: 'POST',
  headers: { 'Content-Type': 'application/json', ...headers },
  body: typeof body === 'string' ? body : JSON.stringify(body),
});

async function waitFor(check: () => boolean | Promise<boolean>, ms = 5000) {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('control plane routes', () => {
  it('reports health without a token', async () => {
    const { app } = setup({ token: 'secret' });
    const res = await app.request('/healthz');
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'ok', model: 'fake-mini' });
  });

  it('validates graphs and locates problems with JSON pointers', async () => {
    const { app } = setup();
    const ok = await app.request('/v1/graphs/validate', post('', sotGraph));
    expect(await ok.json()).toEqual({ valid: true, problems: [] });
    const bad = { ...chatGraph, edges: [...chatGraph.edges, { from: 'question', to: 'nowhere' }] };
    const res = await app.request('/v1/graphs/validate', post('', { graph: bad }));
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(body.valid).toBe(false);
    expect(body.problems).toEqual([{ pointer: '/edges/2/to', message: expect.stringMatching(/nowhere/) }]);
  });

  it('validation reports a tool this server has not registered, as running it would', async () => {
    const { app } = setup();
    const graph = {
      version: 1,
      name: 'tooly',
      nodes: [{ id: 'q', kind: 'input' }, { id: 't', kind: 'tool', tool: 'noSuchTool' }, { id: 'o', kind: 'output' }],
      edges: [{ from: 'q', to: 't' }, { from: 't', to: 'o' }],
    };
    const res = await app.request('/v1/graphs/validate', post('', graph));
    expect(await res.json()).toEqual({ valid: false, problems: [{ pointer: '/nodes/1/tool', message: expect.stringContaining("no tool 'noSuchTool'") }] });
    expect((await app.request('/v1/runs', post('', { graph, input: { q: 'x' } }))).status).toBe(422);
  });

  it('validation reports a stage the served model cannot run, with what is missing', async () => {
    const { app } = setup();
    const graph = {
      version: 1,
      name: 'staged',
      nodes: [{ id: 'q', kind: 'input' }, { id: 'g', kind: 'generate', stages: { compress: { rate: 0.5 } } }, { id: 'o', kind: 'output' }],
      edges: [{ from: 'q', to: 'g.prompt' }, { from: 'g', to: 'o' }],
    };
    const res = await app.request('/v1/graphs/validate', post('', graph));
    expect(await res.json()).toEqual({
      valid: false,
      problems: [{ pointer: '/nodes/1/stages/compress', message: 'Stage compress is not available for model fake-mini: the fake engine does not run it; list it in supportedStages' }],
    });
  });

  it('checks chat and run bodies with the shared schemas: pointer-style errors, one temperature cap', async () => {
    const { app, engine } = setup();
    const chat = (body: object) => app.request('/v1/chat/completions', post('', body));
    const hot = await chat({ messages: [{ role: 'user', content: 'hi' }], temperature: 11 });
    expect(hot.status).toBe(400);
    expect((await hot.json()).error.message).toBe('Bad request: /temperature: must be <= 10');
    const role = await chat({ messages: [{ role: 'robot', content: 'hi' }] });
    expect((await role.json()).error.message).toContain('/messages/0/role: unknown value "robot"');
    // The graph schema's cap (10), not a second one: a warm chat is served.
    expect((await chat({ messages: [{ role: 'user', content: 'hi' }], temperature: 5, max_tokens: 2, stop: null })).status).toBe(200);
    const seed = await app.request('/v1/runs', post('', { graphName: 'chat', input: { question: 'x' }, seed: 'one' }));
    expect((await seed.json()).error.message).toBe('Bad request: /seed: must be integer');
    expect(engine.started).toBe(1);
  });

  it('answers malformed JSON with a typed 400 body', async () => {
    const { app } = setup();
    const res = await app.request('/v1/graphs/validate', post('', '{"nodes": ['));
    expect(res.status).toBe(400);
    const body = await res.json();
    expect(body.error.code).toBe('bad_request');
    expect(body.error.message).toMatch(/not valid JSON/);
  });

  it('refuses an invalid graph run with 422 and its problems', async () => {
    const { app } = setup();
    const res = await app.request('/v1/runs', post('', { graph: { name: 'x', nodes: [], edges: [] }, input: {} }));
    expect(res.status).toBe(422);
    const body = await res.json();
    expect(body.error.code).toBe('graph_invalid');
    expect(body.error.problems).toContainEqual({ pointer: '/nodes', message: expect.any(String) });
  });

  it('404s unknown graphs, runs, models and routes with JSON bodies', async () => {
    const { app } = setup();
    expect((await app.request('/v1/runs', post('', { graphName: 'nope' }))).status).toBe(404);
    expect((await app.request('/v1/runs/run_missing')).status).toBe(404);
    expect((await app.request('/v1/runs', post('', { graphName: 'sot', model: 'other' }))).status).toBe(404);
    const res = await app.request('/v1/nothing');
    expect(res.status).toBe(404);
    expect((await res.json()).error.code).toBe('not_found');
  });

  it('rejects bad run fields with 400', async () => {
    const { app } = setup();
    expect((await app.request('/v1/runs', post('', { graphName: 'sot', input: 'x' }))).status).toBe(400);
    expect((await app.request('/v1/runs', post('', { graphName: 'sot', seed: 1.5 }))).status).toBe(400);
    expect((await app.request('/v1/runs', post('', { input: {} }))).status).toBe(400);
  });

  it('refuses a run whose input lacks a required value, or has a misspelt field, with 400 naming it', async () => {
    const { app, engine } = setup();
    const missing = await app.request('/v1/runs', post('', { graphName: 'chat', input: {} }));
    expect(missing.status).toBe(400);
    expect((await missing.json()).error).toMatchObject({ code: 'bad_request', message: expect.stringContaining('input.question') });
    const wrongType = await app.request('/v1/runs', post('', { graphName: 'chat', input: { question: ['a'] } }));
    expect(wrongType.status).toBe(400);
    expect((await wrongType.json()).error.message).toContain('input.question: must be text');
    const misspelt = await app.request('/v1/runs', post('', { graphName: 'chat', input: { question: 'x' }, sed: 3 }));
    expect(misspelt.status).toBe(400);
    expect((await misspelt.json()).error.message).toContain("/sed: unknown field 'sed'");
    expect(engine.started).toBe(0);
    expect((await (await app.request('/v1/runs')).json()).runs).toHaveLength(0);
  });

  it('a graph regex that backtracks catastrophically does not freeze the server', async () => {
    const { app } = setup();
    const graph = {
      version: 1,
      name: 'redos',
      nodes: [
        { id: 'q', kind: 'input' },
        { id: 'r', kind: 'route', branches: [{ name: 'a', when: { regex: '^(a+)+$' } }], default: 'b' },
        { id: 'j', kind: 'join', mode: 'first' },
        { id: 'o', kind: 'output' },
      ],
      edges: [{ from: 'q', to: 'r.in' }, { from: 'r.a', to: 'j.a' }, { from: 'r.b', to: 'j.b' }, { from: 'j', to: 'o' }],
    };
    const t0 = performance.now();
    const res = await app.request('/v1/runs', post('', { graph, input: { q: `${'a'.repeat(28)}!` } }));
    expect(res.status).toBe(201);
    const { id } = await res.json();
    await waitFor(async () => (await (await app.request(`/v1/runs/${id}`)).json()).state !== 'running');
    expect((await (await app.request(`/v1/runs/${id}`)).json()).state).toBe('ok');
    // Backtracking would take about 8 s on this input.
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  it('starts a run, reports its state, timings and usage, and replays its events', async () => {
    const { app } = setup();
    const res = await app.request('/v1/runs', post('', { graphName: 'sot', input: { question: 'How do I learn to cook?' }, seed: 3 }));
    expect(res.status).toBe(201);
    const { id } = await res.json();
    expect(id).toMatch(/^run_/);
    await waitFor(async () => (await (await app.request(`/v1/runs/${id}`)).json()).state !== 'running');
    const run = await (await app.request(`/v1/runs/${id}`)).json();
    expect(run).toMatchObject({ id, graph: 'sot', state: 'ok', seed: 3, model: 'fake-mini' });
    expect(run.timings.wallMs).toBeGreaterThan(0);
    expect(run.timings.ttftMs).toBeGreaterThanOrEqual(0);
    expect(run.usage.tokensOut).toBeGreaterThan(0);
    expect(Object.keys(run.usage.nodes)).toEqual(expect.arrayContaining(['router', 'skeleton', 'expand']));

    const list = await (await app.request('/v1/runs')).json();
    expect(list.runs.map((r: { id: string }) => r.id)).toContain(id);

    const sse = await app.request(`/v1/runs/${id}/events`);
    expect(sse.headers.get('content-type')).toMatch(/text\/event-stream/);
    const messages = parseSse(await sse.text()).filter((m) => m.id !== undefined);
    const events = messages.map((m) => JSON.parse(m.data) as RunEvent);
    expect(events[0]!.type).toBe('run-start');
    expect(events.at(-1)!.type).toBe('run-end');
    expect(messages.map((m) => Number(m.id))).toEqual(events.map((e) => e.seq));
    expect(messages.every((m, i) => m.event === events[i]!.type)).toBe(true);
    const branches = new Set(events.filter((e) => e.type === 'text-delta' && e.node === 'expand').map((e) => (e as { branch?: string }).branch));
    expect(branches.size).toBe(3);
    expect(events.at(-1)).toMatchObject({ type: 'run-end', status: 'ok', output: { answer: expect.stringContaining('Learn simple recipes') } });

    const tail = await app.request(`/v1/runs/${id}/events`, { headers: { 'Last-Event-ID': String(events.length - 3) } });
    const tailEvents = parseSse(await tail.text()).filter((m) => m.id !== undefined);
    expect(tailEvents.map((m) => Number(m.id))).toEqual([events.length - 2, events.length - 1]);
    const q = await app.request(`/v1/runs/${id}/events?after=${events.length - 2}`);
    expect(parseSse(await q.text()).filter((m) => m.id !== undefined).map((m) => Number(m.id))).toEqual([events.length - 1]);
    // Resuming past the end of a finished run: 204, so an EventSource stops reconnecting.
    for (const last of [events.length - 1, events.length + 5]) {
      const past = await app.request(`/v1/runs/${id}/events`, { headers: { 'Last-Event-ID': String(last) } });
      expect(past.status).toBe(204);
      expect(await past.text()).toBe('');
    }
  });

  it('cancels a run: generation stops and the run ends cancelled', async () => {
    const { engine, app } = setup({}, 20);
    const { id } = await (await app.request('/v1/runs', post('', { graphName: 'chat', input: { question: 'a long answer please' } }))).json();
    await waitFor(() => engine.live > 0);
    const del = await app.request(`/v1/runs/${id}`, { method: 'DELETE' });
    expect(del.status).toBe(200);
    expect(await del.json()).toMatchObject({ id, state: 'cancelled', cancelled: true });
    expect(engine.live).toBe(0);
    expect(engine.cancelled).toBe(1);
    expect(engine.stats().kvBlocksUsed).toBe(0);
    const events = parseSse(await (await app.request(`/v1/runs/${id}/events`)).text()).filter((m) => m.id);
    expect(JSON.parse(events.at(-1)!.data)).toMatchObject({ type: 'run-end', status: 'cancelled' });
    const again = await app.request(`/v1/runs/${id}`, { method: 'DELETE' });
    expect(again.status).toBe(409);
    expect(await again.json()).toEqual({ error: { message: `Run ${id} has already finished (cancelled); there is nothing to cancel`, code: 'run_finished' } });
  });

  it('DELETE of a run that ended by itself is a 409 and leaves it as it was', async () => {
    const { app } = setup();
    const { id } = await (await app.request('/v1/runs', post('', { graphName: 'chat', input: { question: 'hi' } }))).json();
    await waitFor(async () => (await (await app.request(`/v1/runs/${id}`)).json()).state === 'ok');
    const del = await app.request(`/v1/runs/${id}`, { method: 'DELETE' });
    expect(del.status).toBe(409);
    expect((await del.json()).error).toMatchObject({ code: 'run_finished', message: expect.stringContaining('already finished (ok)') });
    expect((await (await app.request(`/v1/runs/${id}`)).json()).state).toBe('ok');
  });

  it('limits body size with 413', async () => {
    const { app } = setup({ maxBodyBytes: 1000 });
    const res = await app.request('/v1/graphs/validate', post('', { ...sotGraph, description: 'x'.repeat(2000) }));
    expect(res.status).toBe(413);
    expect((await res.json()).error.code).toBe('payload_too_large');
  });

  it('requires the bearer token when one is set', async () => {
    const { app } = setup({ token: 'secret' });
    const none = await app.request('/v1/graphs');
    expect(none.status).toBe(401);
    expect((await none.json()).error.code).toBe('unauthorized');
    expect((await app.request('/v1/graphs', { headers: { Authorization: 'Bearer wrong' } })).status).toBe(401);
    expect((await app.request('/metrics')).status).toBe(401);
    expect((await app.request('/v1/graphs', { headers: { Authorization: 'Bearer secret' } })).status).toBe(200);
  });

  it('answers 429 past the concurrency limit', async () => {
    const { app } = setup({ maxConcurrentRuns: 2 }, 20);
    const start = () => app.request('/v1/runs', post('', { graphName: 'chat', input: { question: 'a long answer' } }));
    const a = await start();
    const b = await start();
    expect([a.status, b.status]).toEqual([201, 201]);
    const c = await start();
    expect(c.status).toBe(429);
    expect(c.headers.get('retry-after')).toBe('1');
    expect((await c.json()).error.code).toBe('too_many_runs');
    await app.request(`/v1/runs/${(await a.json()).id}`, { method: 'DELETE' });
    expect((await start()).status).toBe(201);
    for (const r of app.runs.list()) app.runs.cancel(r.id);
  });

  it('OpenAI completions share the concurrency limit with runs: 429 in OpenAI shape, with Retry-After', async () => {
    const { app } = setup({ maxConcurrentRuns: 1 }, 20);
    const run = await app.request('/v1/runs', post('', { graphName: 'chat', input: { question: 'a long answer' } }));
    expect(run.status).toBe(201);
    for (const [path, body] of [
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }] }],
      ['/v1/completions', { prompt: 'hi' }],
    ] as const) {
      const res = await app.request(path, post('', body));
      expect(res.status, path).toBe(429);
      expect(res.headers.get('retry-after')).toBe('1');
      expect((await res.json()).error).toMatchObject({ type: 'rate_limit_error', code: 'too_many_runs', param: null });
    }
    for (const r of app.runs.list()) app.runs.cancel(r.id);
  });

  it('keeps a bounded ring of finished runs', async () => {
    const { app } = setup({ keepFinishedRuns: 2 });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { id } = await (await app.request('/v1/runs', post('', { graphName: 'chat', input: { question: `q${i}` } }))).json();
      ids.push(id);
      await app.request(`/v1/runs/${id}`, { method: 'DELETE' });
    }
    expect((await app.request(`/v1/runs/${ids[0]}`)).status).toBe(404);
    expect((await app.request(`/v1/runs/${ids[2]}`)).status).toBe(200);
  });

  it('lists models and example graphs with their JSON, and the schema', async () => {
    const { app } = setup();
    const models = await (await app.request('/v1/models')).json();
    expect(models.data[0]).toMatchObject({ id: 'fake-mini', object: 'model' });
    const list = await (await app.request('/v1/graphs')).json();
    expect(list.graphs.map((g: { name: string }) => g.name)).toEqual(expect.arrayContaining(['chat', 'sot', 'debate', 'compress-qa']));
    const sot = list.graphs.find((g: { name: string }) => g.name === 'sot');
    expect(sot).toMatchObject({ file: 'graphs/sot.json', description: expect.stringMatching(/Skeleton-of-Thought/) });
    expect(sot.graph.nodes.length).toBeGreaterThan(3);
    expect((await app.request('/v1/graphs/chat')).status).toBe(200);
    const schema = await (await app.request('/v1/graphs/schema')).json();
    expect(schema.title).toBe('Skein graph');
  });

  it('exposes Prometheus metrics', async () => {
    const { app } = setup();
    const { id } = await (await app.request('/v1/runs', post('', { graphName: 'chat', input: { question: 'x' } }))).json();
    await waitFor(async () => (await (await app.request(`/v1/runs/${id}`)).json()).state === 'ok');
    const res = await app.request('/metrics');
    expect(res.headers.get('content-type')).toMatch(/text\/plain/);
    const text = await res.text();
    for (const name of ['skein_runs_total{status="ok"} 1', 'skein_tokens_generated_total', 'skein_tokens_per_second', 'skein_ttft_seconds_bucket', 'skein_kv_blocks_used', 'skein_kv_blocks_shared', 'skein_queue_depth']) {
      expect(text).toContain(name);
    }
  });

  it('serves the built playground at / and nothing outside it', async () => {
    const dir = tempDir('skein-pg-');
    writeFileSync(join(dir, 'index.html'), '<!doctype html><title>Skein</title>');
    writeFileSync(join(dir, 'app.js'), 'console.log(1)');
    const { app } = setup({ playgroundDir: dir });
    const page = await app.request('/');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    expect((await app.request('/app.js')).headers.get('content-type')).toMatch(/javascript/);
    expect((await app.request('/..%2Fpackage.json')).status).toBe(404);
    expect((await app.request('/missing.js')).status).toBe(404);
    const unbuilt = setup({ playgroundDir: join(dir, 'none') }).app;
    expect((await unbuilt.request('/')).status).toBe(503);
  });

  it('a chat completion stream that fails carries the typed error code, not a bare internal one', async () => {
    const engine = createFakeEngine({ modelName: 'fake-mini', script: [{ match: /./, error: new KvExhaustedError(9, 1, 4), failAfter: 1 }] });
    const app = createApp({ engine, log: () => {} });
    const res = await app.request('/v1/chat/completions', post('', { messages: [{ role: 'user', content: 'hi' }], stream: true }));
    expect(res.status).toBe(200);
    const last = parseSse(await res.text()).at(-1)!;
    // OpenAI's error shape: message, type, param, code.
    expect(JSON.parse(last.data)).toEqual({
      error: { message: expect.stringContaining('KV memory exhausted'), type: 'invalid_request_error', param: null, code: 'kv_exhausted' },
    });
  });
});
