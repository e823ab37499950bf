// Names every object inherits (__proto__, constructor, prototype) in the positions a user
// controls — node ids, input names, output names, edge ends — must never reach
// Object.prototype, neither over HTTP nor through runGraph: the schema refuses them with a
// pointer, and the run's own records have no prototype to write through.
import { lastValueFrom, toArray } from 'rxjs';
import { afterEach, describe, expect, it } from 'vitest';
import { GraphValidationError } from '../core/errors.js';
import type { RunEvent } from '../core/events.js';
import type { GraphSpec } from '../core/graph-schema.js';
import { runGraph } from '../operators/index.js';
import { runCompiled } from '../core/run.js';
import { compileGraph } from '../core/compile.js';
import { createApp } from '../runtime/server/index.js';
import { createServerTestEngine } from './fakes/server-engine.js';

const reservedNames = ['__proto__', 'constructor', 'prototype'];
const inheritedBefore = Object.getOwnPropertyNames(Object.prototype).sort();

function prototypeUntouched() {
  expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(inheritedBefore);
  expect(({} as Record<string, unknown>).wallMs).toBeUndefined();
}

const graphWithId = (id: string) => ({
  version: 1,
  name: 'p',
  nodes: [
    { id, kind: 'input', type: 'text', default: 'x' },
    { id: 'o', kind: 'output' },
  ],
  edges: [{ from: id, to: 'o' }],
});

const graphWithNames = (name: string) => ({
  version: 1,
  name: 'p',
  nodes: [
    { id: 'i', kind: 'input', name, type: 'text', default: 'x' },
    { id: 'o', kind: 'output', name },
  ],
  edges: [{ from: 'i', to: 'o' }],
});

afterEach(prototypeUntouched);

describe('reserved object names', () => {
  it.each(reservedNames)('the server refuses node id %s with a pointer and stays up', async (id) => {
    const app = createApp({ engine: createServerTestEngine(1), log: () => {} });
    const res = await app.request('/v1/runs', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ graph: graphWithId(id), input: {} }),
    });
    expect(res.status).toBe(422);
    expect(JSON.stringify(await res.json())).toContain('/nodes/0/id');
    const health = await app.request('/healthz');
    expect(health.status).toBe(200);
    const list = await app.request('/v1/runs');
    expect(list.status).toBe(200);
  });

  it.each(reservedNames)('validation refuses %s as input and output names and edge ends', (name) => {
    expect(() => compileGraph(graphWithNames(name) as unknown as GraphSpec)).toThrow(GraphValidationError);
    expect(() => compileGraph(graphWithId(name) as unknown as GraphSpec)).toThrow(GraphValidationError);
    const edge = graphWithId('i');
    edge.edges = [{ from: `i.${name}`, to: 'o' }];
    expect(() => compileGraph(edge as unknown as GraphSpec)).toThrow(GraphValidationError);
  });

  it('a run whose validated ids are ordinary still yields plain JSON records', async () => {
    const events = await lastValueFrom(
      runGraph(graphWithId('i') as unknown as GraphSpec, {}, { engine: createServerTestEngine(1), seed: 1 }).pipe(toArray()),
    );
    const end = events.at(-1) as Extract<RunEvent, { type: 'run-end' }>;
    expect(end.status).toBe('ok');
    expect(JSON.parse(JSON.stringify(end))).toMatchObject({ output: { o: 'x' }, usage: { i: { tokensIn: 0 } } });
  });

  it.each(reservedNames)('runCompiled on an unvalidated graph with id %s leaves Object.prototype alone', async (id) => {
    // A library user who builds a CompiledGraph by hand skips the schema; the run's records
    // must still not write through an inherited key.
    const compiled = compileGraph(graphWithId('i') as unknown as GraphSpec);
    const rename = (s: string) => (s === 'i' ? id : s);
    const nodes = compiled.nodes.map((n) => ({
      ...n,
      id: rename(n.id),
      spec: { ...n.spec, id: rename(n.spec.id) } as typeof n.spec,
      inputs: n.inputs.map((p) => ({ ...p, from: rename(p.from) })),
    }));
    const renamed = { ...compiled, nodes, byId: new Map(nodes.map((n) => [n.id, n])) };
    const events = await lastValueFrom(runCompiled(renamed, {}, { engine: createServerTestEngine(1), seed: 1 }).pipe(toArray()));
    const end = events.at(-1) as Extract<RunEvent, { type: 'run-end' }>;
    expect(end.status).toBe('ok');
    expect(Object.hasOwn(end.usage, id)).toBe(true);
  });
});

// Every route, with each reserved name in every position a client controls: path
// segments, query keys and values, header names and values, body keys at the top and
// nested, input keys and values, graph fields, chat fields. Bodies are written as JSON
// text, since a JS literal `{ __proto__: … }` would set a prototype rather than a key.
describe('every route with reserved names in every key position', () => {
  const polluting = (name: string) => `{"${name}": {"polluted": true, "wallMs": 1}, "prototype": {"polluted": true}}`;
  const chatGraph = (inputName: string) =>
    `{"version":1,"name":"${inputName}","nodes":[{"id":"q","kind":"input","type":"json","default":${polluting(inputName)}},` +
    `{"id":"t","kind":"template","template":"{{x}} {{x.${inputName}.polluted}}"},{"id":"o","kind":"output"}],` +
    `"edges":[{"from":"q","to":"t"},{"from":"t","to":"o"}]}`;

  function requestsFor(name: string): Array<[string, RequestInit?]> {
    const json = (body: string, headers: Record<string, string> = {}): RequestInit => ({
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body,
    });
    const graph = `{"version":1,"name":"p","nodes":[{"id":"q","kind":"input","type":"json"},{"id":"o","kind":"output"}],"edges":[{"from":"q","to":"o"}]}`;
    return [
      ['/healthz?' + name + '=1'],
      ['/metrics?' + name + '[polluted]=1', { headers: { [name]: 'x' } }],
      ['/v1/models?' + name + '=' + name],
      ['/v1/graphs?' + name + '[polluted]=true'],
      [`/v1/graphs/${name}`],
      [`/v1/graphs/schema?${name}=1`],
      [`/${name}`],
      [`/v1/${name}`],
      [`/v1/runs/${name}`],
      [`/v1/runs/${name}`, { method: 'DELETE' }],
      [`/v1/runs/${name}/events?after=${name}`],
      [`/v1/runs?${name}=1&${name}[polluted]=1`, { headers: { [name]: name, 'last-event-id': name } }],
      ['/v1/graphs/validate', json(polluting(name))],
      ['/v1/graphs/validate', json(`{"graph": ${chatGraph(name)}}`)],
      ['/v1/graphs/validate', json(`{"version":1,"name":"p","${name}":{"polluted":true},"nodes":[{"id":"a","kind":"input","${name}":{"polluted":true}}],"edges":[]}`)],
      ['/v1/runs', json(polluting(name))],
      ['/v1/runs', json(`{"graphName": "${name}"}`)],
      ['/v1/runs', json(`{"graph": ${graph}, "input": {"q": ${polluting(name)}, "${name}": ${polluting(name)}}, "model": "${name}"}`)],
      ['/v1/runs', json(`{"graph": ${chatGraph(name)}, "input": ${polluting(name)}}`)],
      ['/v1/runs', json(`{"graph": ${graph}, "input": {"q": [${polluting(name)}]}}`, { [name]: '1' })],
      ['/v1/runs', json(`{"graph": {"version":1,"name":"t","nodes":[{"id":"q","kind":"input"},{"id":"t","kind":"tool","tool":"${name}","args":${polluting(name)}},{"id":"o","kind":"output"}],"edges":[{"from":"q","to":"t"},{"from":"t","to":"o"}]}, "input": {"q": "x"}}`)],
      ['/v1/chat/completions', json(polluting(name))],
      ['/v1/chat/completions', json(`{"model": "${name}", "messages": [{"role": "user", "content": "hi"}]}`)],
      ['/v1/chat/completions', json(`{"messages": [{"role": "${name}", "content": "hi"}]}`)],
      ['/v1/chat/completions', json(`{"messages": [{"role": "user", "content": "hi", "${name}": {"polluted": true}}], "${name}": {"polluted": true}, "stream_options": ${polluting(name)}}`)],
      ['/v1/chat/completions', json(`{"messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "${name}": {"polluted": true}}]}], "stream": true, "stop": "${name}"}`)],
      ['/v1/chat/completions', json(`{"messages": [{"role": "user", "content": "hi"}], "n": 2, "logprobs": true, "logit_bias": ${polluting(name)}}`)],
      ['/v1/completions', json(polluting(name))],
      ['/v1/completions', json(`{"prompt": ["${name}", "hi"], "model": "${name}", "${name}": {"polluted": true}}`)],
      ['/v1/completions', json(`{"prompt": "${name}", "stream": true, "logprobs": 2, "stop": ["${name}"]}`)],
      [`/v1/models/${name}`],
    ];
  }

  it.each(reservedNames)('%s: no 5xx, Object.prototype untouched, the server alive and every run readable', async (name) => {
    const engine = createServerTestEngine(1);
    const app = createApp({ engine, log: () => {} });
    const created: string[] = [];
    for (const [path, init] of requestsFor(name)) {
      const res = await app.request(path, init);
      const text = await res.text();
      expect(res.status, `${init?.method ?? 'GET'} ${path} → ${res.status} ${text.slice(0, 200)}`).toBeLessThan(500);
      prototypeUntouched();
      if (path === '/v1/runs' && res.status === 201) created.push(JSON.parse(text).id);
    }
    expect(created.length).toBeGreaterThanOrEqual(2);
    for (const id of created) {
      const events = await (await app.request(`/v1/runs/${id}/events`)).text();
      expect(events).toContain('event: run-end');
      const run = await app.request(`/v1/runs/${id}`);
      expect(run.status).toBe(200);
      expect((await run.json()).state).toMatch(/ok|error/);
    }
    expect((await app.request('/healthz')).status).toBe(200);
    expect((await app.request('/v1/runs')).status).toBe(200);
    expect((await app.request('/metrics')).status).toBe(200);
    expect(engine.live).toBe(0);
  });

  it.each(reservedNames)('runGraph keeps an input key %s as data and leaves Object.prototype alone', async (name) => {
    const graph = JSON.parse(chatGraph('x'));
    const input = JSON.parse(`{"x": ${polluting(name)}, "${name}": ${polluting(name)}}`);
    const events = await lastValueFrom(runGraph(graph, input, { engine: createServerTestEngine(1), seed: 1 }).pipe(toArray()));
    const end = events.at(-1) as Extract<RunEvent, { type: 'run-end' }>;
    expect(end.status).toBe('ok');
    expect(String(end.output?.o)).toContain('polluted');
    const start = events[0] as Extract<RunEvent, { type: 'run-start' }>;
    expect(Object.hasOwn(start.input, name)).toBe(true);
    expect(JSON.parse(JSON.stringify(start.input))).toEqual(input);
  });
});
