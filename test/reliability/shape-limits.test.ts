// Issue #16's reproduction: a 10 KB body nesting its input 5,000 levels deep used to be
// accepted (201) and then made GET /v1/runs and GET /v1/runs/:id 500 for every client.
// Depth and key count are now judged before anything stores or serialises a body.
import { lastValueFrom, of, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import type { RunEvent } from '../../core/events.js';
import { registerTool, runGraph, ShapeLimitError, ToolError, type GraphSpec } from '../../core/index.js';
import { tool } from '../../operators/tool.js';
import { createApp } from '../../runtime/server/index.js';
import { createServerTestEngine } from '../fakes/server-engine.js';

const post = (body: string) => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body });
const deep = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);

describe('JSON shape limits', () => {
  it('refuses a 5,000-deep input with one 400 naming the limit; the run list keeps working', async () => {
    const app = createApp({ engine: createServerTestEngine(1), log: () => {} });
    const ok = await app.request('/v1/runs', post(JSON.stringify({ graphName: 'chat', input: { question: 'hi' } })));
    expect(ok.status).toBe(201);
    const { id } = await ok.json();
    const body = `{"graphName": "chat", "input": {"question": "x", "extra": ${deep(5000)}}}`;
    expect(body.length).toBeLessThan(11_000);
    const res = await app.request('/v1/runs', post(body));
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({
      error: { code: 'bad_request', message: 'Bad request: body: nests deeper than 64 levels (limit maxDepth = 64)' },
    });
    const list = await app.request('/v1/runs');
    expect(list.status).toBe(200);
    expect((await list.json()).runs.map((r: { id: string }) => r.id)).toEqual([id]);
    expect((await app.request(`/v1/runs/${id}`)).status).toBe(200);
  });

  it('applies to every JSON route, and the key count too', async () => {
    const app = createApp({ engine: createServerTestEngine(1), log: () => {}, shapeLimits: { maxDepth: 64, maxKeys: 100 } });
    const manyKeys = JSON.stringify(Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`k${i}`, i])));
    for (const path of ['/v1/runs', '/v1/graphs/validate', '/v1/chat/completions']) {
      const res = await app.request(path, post(manyKeys));
      expect(res.status, path).toBe(400);
      expect((await res.json()).error.message).toContain('limit maxKeys = 100');
      expect((await app.request(path, post(deep(65)))).status).toBe(400);
    }
  });

  it('runGraph refuses a graph or input past the limits before running anything', () => {
    const engine = createServerTestEngine(1);
    const graph = { version: 1, name: 'g', nodes: [{ id: 'q', kind: 'input', type: 'json' }, { id: 'o', kind: 'output' }], edges: [{ from: 'q', to: 'o' }] };
    expect(() => runGraph(graph as GraphSpec, { q: JSON.parse(deep(100)) }, { engine })).toThrow(ShapeLimitError);
    const deepGraph = { ...graph, meta: JSON.parse(deep(100)) };
    expect(() => runGraph(deepGraph as unknown as GraphSpec, { q: 1 }, { engine })).toThrow(/graph: nests deeper than 64/);
    expect(engine.started).toBe(0);
  });

  it('a tool result nested past the limits fails the tool with a ToolError naming the limit', async () => {
    let value: unknown = 1;
    for (let i = 0; i < 5000; i++) value = { v: value };
    registerTool('reliability-deep', () => value);
    const err = await lastValueFrom(of('x').pipe(tool('reliability-deep'))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ToolError);
    expect((err as Error).message).toBe('Tool reliability-deep failed: Bad request: result: nests deeper than 64 levels (limit maxDepth = 64)');
    const graph = {
      version: 1,
      name: 'g',
      nodes: [{ id: 'q', kind: 'input' }, { id: 't', kind: 'tool', tool: 'reliability-deep' }, { id: 'o', kind: 'output' }],
      edges: [{ from: 'q', to: 't' }, { from: 't', to: 'o' }],
    };
    const events = await lastValueFrom(runGraph(graph as GraphSpec, { q: 'x' }, { engine: createServerTestEngine(1) }).pipe(toArray()));
    const end = events.at(-1) as Extract<RunEvent, { type: 'run-end' }>;
    expect(end).toMatchObject({ status: 'error', error: { code: 'tool_failed', node: 't' } });
    expect(() => JSON.stringify(events)).not.toThrow();
  });
});
