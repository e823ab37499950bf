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
