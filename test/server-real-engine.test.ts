// The control plane on the real runtime: a tiny random checkpoint (always), and the
// default model models/skein-mini through `startServer({ model })` (skipped, saying so,
// until that model has been trained and saved).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunEvent } from '../core/events.js';
import { createEngine } from '../runtime/engine/index.js';
import type { Engine } from '../core/engine.js';
import { startServer, type RunningServer } from '../runtime/server/index.js';
import { makeTempCheckpoint, TINY_SPECIAL_TOKENS } from './fixtures/checkpoints.js';
import { readSse } from './fakes/sse.js';

const tinyGraph = {
  version: 1,
  name: 'tiny',
  nodes: [
    { id: 'question', kind: 'input' },
    { id: 'reply', kind: 'generate', chat: false, sampling: { maxTokens: 6 } },
    { id: 'out', kind: 'output', name: 'answer' },
  ],
  edges: [
    { from: 'question', to: 'reply.prompt' },
    { from: 'reply', to: 'out' },
  ],
};

async function runToEnd(server: RunningServer, body: Record<string, unknown>): Promise<RunEvent[]> {
  const res = await fetch(new URL('/v1/runs', server.url), { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  expect(res.status).toBe(201);
  const { id } = await res.json();
  const events: RunEvent[] = [];
  const stream = await fetch(new URL(`/v1/runs/${id}/events`, server.url));
  await readSse(stream.body!, (m) => {
    if (m.id !== undefined) events.push(JSON.parse(m.data) as RunEvent);
  });
  return events;
}

describe('server on a real engine (tiny random checkpoint)', () => {
  let checkpoint: ReturnType<typeof makeTempCheckpoint>;
  let engine: Engine;
  let server: RunningServer;

  beforeAll(async () => {
    // Room for a generation far longer than a DELETE's round trip, so the cancel test
    // cannot lose the race to the end of the generation.
    checkpoint = makeTempCheckpoint({ seed: 3, maxPositionEmbeddings: 1024 });
    engine = await createEngine({ model: checkpoint.dir, thread: 'main', blockSize: 4, kvBudgetBlocks: 300 });
    server = await startServer({ engine, port: 0, build: false, print: () => {}, log: () => {} });
  });
  afterAll(async () => {
    await server?.close();
    await engine?.close();
    checkpoint?.cleanup();
  });

  it('streams a graph run over SSE to a successful end', async () => {
    const events = await runToEnd(server, { graph: tinyGraph, input: { question: 'hi there' }, seed: 1 });
    expect(events[0]).toMatchObject({ type: 'run-start', seed: 1 });
    expect(events.some((e) => e.type === 'text-delta')).toBe(true);
    expect(events.at(-1)).toMatchObject({ type: 'run-end', status: 'ok', output: { answer: expect.any(String) } });
  });

  it('answers the OpenAI client', async () => {
    const client = new OpenAI({ baseURL: new URL('/v1', server.url).href, apiKey: 'none', maxRetries: 0 });
    const res = await client.chat.completions.create({ model: engine.modelName, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 });
    expect(res.usage?.completion_tokens).toBeGreaterThan(0);
    expect(res.usage!.completion_tokens).toBeLessThanOrEqual(4);
  });

  it('cancelling a run stops its generation in the scheduler', async () => {
    // End-of-sequence tokens are forbidden, so only the cancel (or 900 tokens) ends it.
    const noEos = { [TINY_SPECIAL_TOKENS.imEnd]: -100, [TINY_SPECIAL_TOKENS.endOfText]: -100 };
    const long = { ...tinyGraph, nodes: tinyGraph.nodes.map((n) => (n.id === 'reply' ? { ...n, sampling: { maxTokens: 900, temperature: 1, logitBias: noEos } } : n)) };
    const res = await fetch(new URL('/v1/runs', server.url), { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ graph: long, input: { question: 'a' } }) });
    const { id } = await res.json();
    const stream = await fetch(new URL(`/v1/runs/${id}/events`, server.url));
    let deltas = 0;
    await readSse(stream.body!, (m) => {
      if (m.event === 'text-delta' && ++deltas === 2) {
        void fetch(new URL(`/v1/runs/${id}`, server.url), { method: 'DELETE' });
      }
    });
    const run = await (await fetch(new URL(`/v1/runs/${id}`, server.url))).json();
    expect(run.state).toBe('cancelled');
    expect(run.usage.tokensOut).toBeLessThan(900);
    const end = Date.now() + 5000;
    while ((engine.stats().runningSequences > 0 || engine.stats().queueDepth > 0) && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    expect(engine.stats().runningSequences).toBe(0);
    expect(engine.stats().queueDepth).toBe(0);
  });
});

const defaultModelDir = fileURLToPath(new URL('../models/skein-mini/', import.meta.url));
const haveDefaultModel = existsSync(`${defaultModelDir}config.json`);
if (!haveDefaultModel) console.warn('default-model server test skipped: models/skein-mini is not there yet (train it with `npx skein train base`)');

describe.skipIf(!haveDefaultModel)('server on the default model (models/skein-mini)', () => {
  let server: RunningServer;

  beforeAll(async () => {
    server = await startServer({ port: 0, model: 'skein-mini', build: false, print: () => {}, log: () => {} });
  }, 120_000);
  afterAll(async () => {
    await server?.close();
  });

  it('serves skein-mini and runs the chat example', async () => {
    const health = await (await fetch(new URL('/healthz', server.url))).json();
    expect(health.model).toMatch(/skein-mini/);
    const events = await runToEnd(server, { graphName: 'chat', input: { question: 'What is bread?' }, seed: 1 });
    expect(events.some((e) => e.type === 'text-delta')).toBe(true);
    expect(events.at(-1)).toMatchObject({ type: 'run-end', status: 'ok' });
  }, 120_000);
});
