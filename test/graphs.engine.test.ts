/**
 * Graphs on the real engine (runtime/engine createEngine, in this thread) over a tiny
 * random checkpoint written by the test fixture: the wiring, concurrency and cancellation
 * with real KV blocks and tensors. The weights are random, so only shapes of results are
 * checked, never their text. Skipped while runtime/engine/index.ts is absent.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { lastValueFrom, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runGraph, type GraphSpec, type RunEvent } from '../operators/index.js';
import type { Engine } from '../core/engine.js';
import { makeTempCheckpoint } from './fixtures/checkpoints.js';

const engineMissing = !existsSync(fileURLToPath(new URL('../runtime/engine/index.ts', import.meta.url)));
if (engineMissing) process.stderr.write('graphs engine test: skipped because runtime/engine/index.ts is not there yet\n');

const forkGraph = (maxTokens: number): GraphSpec => ({
  version: 1,
  name: 'fork-real',
  nodes: [
    { id: 'q', kind: 'input' },
    { id: 'f', kind: 'fork', branches: ['a', 'b', 'c'] },
    { id: 'a', kind: 'generate', system: 'One.', sampling: { maxTokens } },
    { id: 'b', kind: 'generate', system: 'Two.', sampling: { maxTokens } },
    { id: 'c', kind: 'generate', system: 'Three.', sampling: { maxTokens, temperature: 0.8 } },
    { id: 'j', kind: 'join', mode: 'list' },
    { id: 'o', kind: 'output' },
  ],
  edges: [
    { from: 'q', to: 'f.in' },
    { from: 'f.a', to: 'a.prompt' },
    { from: 'f.b', to: 'b.prompt' },
    { from: 'f.c', to: 'c.prompt' },
    { from: 'a', to: 'j' },
    { from: 'b', to: 'j' },
    { from: 'c', to: 'j' },
    { from: 'j', to: 'o' },
  ],
});

describe.skipIf(engineMissing)(`graphs on the real engine, tiny random checkpoint${engineMissing ? ' — skipped: runtime/engine/index.ts is missing' : ''}`, () => {
  let engine: Engine;
  let tf: typeof import('@tensorflow/tfjs-core');
  let cleanup = () => {};
  let tensorsBefore = 0;
  let closed = false;

  beforeAll(async () => {
    const { initBackend } = await import('../runtime/backend.js');
    await initBackend();
    tf = await import('@tensorflow/tfjs-core');
    tensorsBefore = tf.memory().numTensors;
    const ckpt = makeTempCheckpoint({ maxPositionEmbeddings: 512, seed: 4 });
    cleanup = ckpt.cleanup;
    const { createEngine } = await import('../runtime/engine/index.js');
    engine = await createEngine({ model: ckpt.dir, thread: 'main' });
  }, 60_000);

  afterAll(async () => {
    if (!closed) await engine?.close();
    cleanup();
  });

  it('runs three branches concurrently and reproducibly with a seed', async () => {
    const run = async () => {
      const events = await lastValueFrom(runGraph(forkGraph(6), { q: 'Hello' }, { engine, seed: 9 }).pipe(toArray()));
      return events.at(-1) as Extract<RunEvent, { type: 'run-end' }>;
    };
    const first = await run();
    expect(first.status).toBe('ok');
    expect(first.output!.o).toHaveLength(3);
    for (const id of ['a', 'b', 'c']) expect(first.usage[id]!.tokensOut).toBeGreaterThan(0);
    expect((await run()).output).toEqual(first.output);
    expect(engine.stats().runningSequences).toBe(0);
  }, 60_000);

  it('a prompt longer than the context fails the run with a ContextLengthError naming the limit and the node', async () => {
    const spec: GraphSpec = {
      version: 1,
      name: 'too-long',
      nodes: [
        { id: 'q', kind: 'input' },
        { id: 'answer', kind: 'generate', sampling: { maxTokens: 4 } },
        { id: 'o', kind: 'output' },
      ],
      edges: [
        { from: 'q', to: 'answer.prompt' },
        { from: 'answer', to: 'o' },
      ],
    };
    const events = await lastValueFrom(runGraph(spec, { q: 'word '.repeat(600) }, { engine, seed: 1 }).pipe(toArray()));
    const end = events.at(-1) as Extract<RunEvent, { type: 'run-end' }>;
    expect(end).toMatchObject({ status: 'error', error: { name: 'ContextLengthError', code: 'context_length_exceeded', node: 'answer' } });
    expect(end.error!.message).toMatch(/the prompt has \d+ tokens, the model's context is 512/);
    expect(engine.stats()).toMatchObject({ runningSequences: 0, kvBlocksUsed: 0 });
  }, 60_000);

  it('cancelling mid-generation frees every sequence, KV block and (on close) tensor', async () => {
    await lastValueFrom(runGraph(forkGraph(4), { q: 'warm up' }, { engine, seed: 1 }).pipe(toArray()));
    expect(engine.stats().kvBlocksUsed).toBe(0);
    await new Promise<void>((resolve) => {
      let deltas = 0;
      const sub = runGraph(forkGraph(200), { q: 'Tell me a long story' }, { engine, seed: 2 }).subscribe((e) => {
        if (e.type === 'text-delta' && ++deltas === 6) {
          sub.unsubscribe();
          resolve();
        }
      });
    });
    for (let i = 0; i < 100 && engine.stats().runningSequences > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(engine.stats()).toMatchObject({ runningSequences: 0, queueDepth: 0, kvBlocksUsed: 0 });
    // Full blocks of finished or cancelled sequences may stay in the prefix cache as
    // tensors until evicted; closing the engine must free every one of them.
    await engine.close();
    closed = true;
    expect(tf.memory().numTensors).toBe(tensorsBefore);
  }, 60_000);
});
