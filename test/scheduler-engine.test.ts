/**
 * The Engine over the scheduler, on a tiny checkpoint written by the fixture: request
 * forms, streamed text, stop strings, prefix reuse, cancellation by unsubscribing, typed
 * errors, and the worker-thread engine end to end.
 */
import * as tf from '@tensorflow/tfjs-core';
import { firstValueFrom, lastValueFrom, take, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvExhaustedError, StageUnavailableError } from '../core/errors.js';
import { resolveSampling } from '../core/sampling.js';
import { initBackend } from '../runtime/backend.js';
import { loadTokenizer } from '../runtime/checkpoint/load.js';
import { EngineCore, type CoreEvent } from '../runtime/engine/core.js';
import { tokenSampler } from '../runtime/engine/sampling.js';
import { quantizeModel } from '../runtime/model/block-weights.js';
import { randomModel } from '../runtime/model/random.js';
import { prepareModel } from '../runtime/model/forward.js';
import { greedyAlone } from './fixtures/kv-cache.js';
import type { ForwardSequence } from '../runtime/model/types.js';
import { createEngine } from '../runtime/engine/index.js';
import type { EngineFront } from '../runtime/engine/front.js';
import type { GenerateEvent, GenerateRequest } from '../core/engine.js';
import { makeTempCheckpoint, TINY_SPECIAL_TOKENS } from './fixtures/checkpoints.js';

type Done = Extract<GenerateEvent, { type: 'done' }>;

let ckpt: ReturnType<typeof makeTempCheckpoint>;
let engine: EngineFront;
let baseline = 0;

async function run(e: EngineFront, request: GenerateRequest): Promise<{ tokens: GenerateEvent[]; done: Done }> {
  const events = await lastValueFrom(e.generate(request).pipe(toArray()));
  const done = events.at(-1) as Done;
  expect(done.type).toBe('done');
  return { tokens: events.slice(0, -1), done };
}

async function settle(e: EngineFront) {
  for (let i = 0; i < 100 && (e.stats().runningSequences > 0 || e.stats().queueDepth > 0); i++) {
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('Engine on the scheduler', () => {
  beforeAll(async () => {
    await initBackend();
    ckpt = makeTempCheckpoint({ numKvHeads: 2, maxPositionEmbeddings: 256, seed: 3 });
    baseline = tf.memory().numTensors;
    engine = await createEngine({ model: ckpt.dir, thread: 'main', blockSize: 4, kvBudgetBlocks: 40 });
  });

  afterAll(async () => {
    await engine?.close();
    expect(tf.memory().numTensors).toBe(baseline);
    ckpt.cleanup();
  });

  it('streams tokens whose texts add up to the final text, with usage and metrics', async () => {
    const { tokens, done } = await run(engine, { prompt: 'hello there', sampling: { maxTokens: 12 } });
    expect(tokens.length).toBe(done.ids.length);
    expect(tokens.map((t) => (t as { id: number }).id)).toEqual(done.ids);
    expect(tokens.map((t) => (t as { text: string }).text).join('')).toBe(done.text);
    expect(done.text).toBe(engine.detokenize(done.ids));
    expect(['length', 'eos']).toContain(done.reason);
    expect(done.usage).toMatchObject({ promptTokens: engine.tokenize('hello there').length, completionTokens: done.ids.length });
    expect(done.metrics.ttftMs).toBeGreaterThan(0);
    expect(done.metrics.kvBlocksShared).toBe(0);
  });

  it('renders chat messages with an assistant prefix and reuses a cached prefix', async () => {
    const messages = [{ role: 'user' as const, content: 'list three colours' }];
    const a = await run(engine, { messages, assistantPrefix: '1.', sampling: { maxTokens: 6 } });
    const ids = engine.tokenize(engine.renderChat(messages, '1.'));
    expect(a.done.usage.promptTokens).toBe(ids.length);
    const b = await run(engine, { ids, sampling: { maxTokens: 6 } });
    expect(b.done.ids).toEqual(a.done.ids);
    expect(b.done.usage.cachedPromptTokens).toBe(ids.length - 1);
    expect(b.done.metrics.kvBlocksShared).toBeGreaterThan(0);
  });

  it('ends at a stop string, leaving it out of the text', async () => {
    const free = await run(engine, { prompt: 'abc', sampling: { maxTokens: 16 } });
    const stop = free.done.text.slice(4, 6);
    const cut = free.done.text.indexOf(stop);
    const stopped = await run(engine, { prompt: 'abc', sampling: { maxTokens: 16, stop: [stop] } });
    expect(stopped.done.reason).toBe('stop');
    expect(stopped.done.text).toBe(free.done.text.slice(0, cut));
    expect(stopped.tokens.map((t) => (t as { text: string }).text).join('')).toBe(stopped.done.text);
  });

  it('cancels on unsubscribe and frees the blocks', async () => {
    const first = await lastValueFrom(engine.generate({ prompt: 'a long story', sampling: { maxTokens: 50 } }).pipe(take(3), toArray()));
    expect(first).toHaveLength(3);
    await settle(engine);
    expect(engine.stats()).toMatchObject({ kvBlocksUsed: 0, runningSequences: 0, queueDepth: 0 });
  });

  it('runs skipLayers and prunedPrefill, reporting each stage in metrics.stages', async () => {
    const plain = await run(engine, { prompt: 'hello there, a prompt of some length', sampling: { maxTokens: 8 } });
    const spec = await run(engine, {
      prompt: 'hello there, a prompt of some length',
      sampling: { maxTokens: 8 },
      stages: { skipLayers: { targetSpeedup: 2, mode: 'self-speculative', drafts: 2 }, prunedPrefill: { keepRatio: 1 } },
    });
    expect(spec.done.ids).toEqual(plain.done.ids);
    // Both stages also report on the stream, before the end, as stage events with their
    // figures (the self-speculative steps stream as they happen; the totals are these).
    const stageEvents = spec.tokens.filter((e) => e.type === 'stage' && e.stage !== 'kvShare' && typeof e.decided.step !== 'number');
    expect(stageEvents.map((e) => e.type === 'stage' && e.stage)).toEqual(['prunedPrefill', 'skipLayers']);
    expect(stageEvents[1]).toMatchObject({ decided: { mode: 'self-speculative', targetSpeedup: 2 }, figures: { layersRun: 2 } });
    expect(stageEvents[1]!.type === 'stage' && stageEvents[1]!.figures.draftsProposed).toBeGreaterThan(0);
    const L = 2; // the tiny checkpoint's depth
    expect(spec.done.metrics.stages).toMatchObject({
      skipLayers: { mode: 'self-speculative', targetSpeedup: 2, layers: [0, L - 1] },
      prunedPrefill: { layers: [1], keep: [1], prunedAtLayer: { 1: 0 } },
    });
    const lossy = await run(engine, { prompt: 'hello there', sampling: { maxTokens: 4 }, stages: { skipLayers: { targetSpeedup: 2 } } });
    expect(lossy.done.metrics).toMatchObject({ layersRun: 2, stages: { skipLayers: { mode: 'lossy', shallowForwards: 3 } } });
    await expect(firstValueFrom(engine.generate({ prompt: 'x', stages: { prunedPrefill: { keepRatio: 0.5, layers: [5] } } }))).rejects.toThrow(
      /prunedPrefill\.layers\/0/,
    );
    await settle(engine);
    expect(engine.stats().kvBlocksUsed).toBe(0);
  });

  it('refuses stages it cannot run and requests that can never fit', async () => {
    await expect(firstValueFrom(engine.generate({ prompt: 'x', stages: { speculate: { mode: 'medusa' } } }))).rejects.toThrow(
      StageUnavailableError,
    );
    await expect(
      firstValueFrom(engine.generate({ ids: Array.from({ length: 150 }, (_, i) => i), sampling: { maxTokens: 60 } })),
    ).rejects.toThrow(KvExhaustedError);
    expect(engine.stats().kvBlocksUsed).toBe(0);
  });

  it('streams a character split over byte tokens once, whole, and ends at eos', () => {
    // A scripted model: whatever the context, position p of the answer is script[p].
    const tokenizer = loadTokenizer(ckpt.dir);
    const model = randomModel({ vocabSize: 288, numLayers: 1, hiddenSize: 8, numHeads: 2 }, 1);
    const script = [104, 0xc3, 0xa9, 33, TINY_SPECIAL_TOKENS.imEnd];
    const prompt = [104, 105];
    const scripted = (_m: unknown, seqs: ForwardSequence[]) =>
      seqs.map((q) => {
        const past = q.past?.[0]?.k.reduce((n, t) => n + t.shape[0], 0) ?? 0;
        const logits = new Float32Array(288);
        logits[script[past + q.ids.length - prompt.length]!] = 1;
        const kv = () => ({ k: tf.zeros([q.ids.length, 8]) as tf.Tensor2D, v: tf.zeros([q.ids.length, 8]) as tf.Tensor2D, tokenIndices: q.ids.map((_, i) => i) });
        return { logits: [logits], newKv: [kv()] };
      });
    const events: CoreEvent[] = [];
    const core = new EngineCore({ model, tokenizer, sampler: tokenSampler, forward: scripted, blockSize: 4, emit: (e) => events.push(e) });
    core.submit({ requestId: 'u', ids: prompt, sampling: { ...resolveSampling({ maxTokens: 10 }) } });
    while (core.hasWork()) core.step();
    expect(events.map((e) => (e.type === 'token' ? e.text : e.type))).toEqual(['h', '', 'é', '!', '', 'done']);
    expect(events.at(-1)).toMatchObject({ reason: 'eos', text: 'hé!', ids: script });
    core.close(new Error('closed'));
    model.dispose();
  });

  it('self-speculative skipLayers on block-kernel (GGUF-style) weights gives the plain greedy tokens, alone and batched', () => {
    const model = quantizeModel(randomModel({ vocabSize: 64, numLayers: 4, hiddenSize: 64, numHeads: 2 }, 3), 'q8_0');
    const events: CoreEvent[] = [];
    const core = new EngineCore({ model, tokenizer: null, sampler: tokenSampler, blockSize: 4, emit: (e) => events.push(e) });
    const sampling = resolveSampling({ maxTokens: 24 });
    const prompts = [[1, 2, 3], [7, 9, 11, 13, 2], [40, 41]];
    const run = (stages: Record<string, unknown> | undefined, tag: string) => {
      prompts.forEach((ids, i) => core.submit({ requestId: `${tag}${i}`, ids, sampling, ...(stages ? { stages } : {}) }));
      while (core.hasWork()) core.step();
      return prompts.map((_, i) => events.find((e) => e.type === 'done' && e.requestId === `${tag}${i}`));
    };
    const plain = run(undefined, 'p');
    const speculative = run({ skipLayers: { targetSpeedup: 2, mode: 'self-speculative' } }, 's');
    expect(events.filter((e) => e.type === 'error')).toEqual([]);
    speculative.forEach((done, i) => {
      expect(done).toMatchObject({ type: 'done' });
      expect((done as { ids: number[] }).ids).toEqual((plain[i] as { ids: number[] }).ids);
    });
    // Drafts were really verified by multi-row forwards (not every step a plain one).
    const report = (d: unknown) => (d as { metrics: { stages?: { skipLayers?: { verifications?: number; draftsProposed?: number } } } }).metrics.stages?.skipLayers;
    expect(speculative.reduce((n, d) => n + (report(d)?.verifications ?? 0), 0)).toBeGreaterThan(0);
    expect(speculative.reduce((n, d) => n + (report(d)?.draftsProposed ?? 0), 0)).toBeGreaterThan(0);
    core.close(new Error('closed'));
    model.dispose();
  });

  it.each(['f16', 'q8'] as const)('reads a chunked prompt\'s blocks as views of its stored %s KV: plain greedy tokens, nothing stored twice, all of it freed', (kv) => {
    // Prefill chunks of 6 rows cut into blocks of 4: the block table makes pieces, and the KV
    // mirror reads them as views of each chunk's stored copy (kv-pieces.ts).
    const model = quantizeModel(randomModel({ vocabSize: 64, numLayers: 3, hiddenSize: 64, numHeads: 4, numKvHeads: 2 }, 5), 'q8_0');
    model.kvCache = kv;
    const { kernels, mirror } = prepareModel(model);
    const prompt = Array.from({ length: 23 }, (_, i) => (i * 7 + 3) % 64);
    const direct = greedyAlone(model, prompt, 12);
    mirror.sweep();
    const before = kernels.storedBytes;
    const stored = { rows4: 0, joined4: 0 };
    const store = kernels.store.bind(kernels);
    kernels.store = (data, rows, heads, type) => ((stored.rows4 += rows === 4 ? 1 : 0), store(data, rows, heads, type));
    const join = kernels.join.bind(kernels);
    kernels.join = (chunks, headDim) => ((stored.joined4 += chunks.reduce((n, c) => n + c.rows, 0) === 4 ? 1 : 0), join(chunks, headDim));
    const events: CoreEvent[] = [];
    const core = new EngineCore({ model, tokenizer: null, sampler: tokenSampler, blockSize: 4, prefillChunk: 6, prefixSharing: false, emit: (e) => events.push(e) });
    core.submit({ requestId: 'v', ids: prompt, sampling: resolveSampling({ maxTokens: 12 }) });
    while (core.hasWork()) core.step();
    const done = events.find((e) => e.type === 'done') as { ids: number[] } | undefined;
    expect(done?.ids).toEqual(direct);
    // 34 positions hold KV (23 prompt + 11 fed back): 8 sealed blocks of K and V per layer.
    // Blocks 0–3, 8–11 and 12–15 lie inside one prefill chunk (0–5, 6–11, 12–17): views,
    // never copied; the others join rows of two chunks or of decode steps, and each gets
    // one copy, joined from its rows' copies as it is sealed (KvMirror.joinRows), none
    // narrowed again from its tensor.
    const layers = model.config.numLayers;
    expect(stored.joined4).toBe((8 - 3) * 2 * layers);
    expect(stored.rows4).toBe(0);
    core.close(new Error('closed'));
    mirror.sweep();
    expect(kernels.storedBytes).toBe(before);
    kernels.store = store;
    kernels.join = join;
    model.dispose();
  });

  it.each(['f16', 'q8'] as const)('joins a long generation\'s sealed %s blocks into longer runs: plain greedy tokens, all of it freed', (kv) => {
    const model = quantizeModel(randomModel({ vocabSize: 64, numLayers: 2, hiddenSize: 64, numHeads: 4, numKvHeads: 2 }, 8), 'q4_1');
    model.kvCache = kv;
    const { kernels, mirror } = prepareModel(model);
    const prompt = [5, 9, 13];
    const direct = greedyAlone(model, prompt, 48);
    mirror.sweep();
    const before = kernels.storedBytes;
    const joins = { runs: 0, blocks: 0 };
    const join = kernels.join.bind(kernels);
    kernels.join = (chunks, headDim) => (chunks.length === 8 ? joins.runs++ : joins.blocks++, join(chunks, headDim));
    const events: CoreEvent[] = [];
    const core = new EngineCore({ model, tokenizer: null, sampler: tokenSampler, blockSize: 4, prefixSharing: false, emit: (e) => events.push(e) });
    core.submit({ requestId: 'j', ids: prompt, sampling: resolveSampling({ maxTokens: 48 }) });
    while (core.hasWork()) core.step();
    expect((events.find((e) => e.type === 'done') as { ids: number[] } | undefined)?.ids).toEqual(direct);
    // 50 positions: 12 sealed blocks, each joined from its rows' copies as it is sealed, and
    // the first 8 of them then joined into one run per layer, keys and values.
    expect(joins.blocks).toBe(12 * 2 * model.config.numLayers);
    expect(joins.runs).toBe(2 * model.config.numLayers);
    core.close(new Error('closed'));
    mirror.sweep();
    expect(kernels.storedBytes).toBe(before);
    kernels.join = join;
    model.dispose();
  });

  it('runs the model in a worker thread with the same outputs', async () => {
    const worker = await createEngine({ model: ckpt.dir, thread: 'worker', blockSize: 4, kvBudgetBlocks: 40 });
    try {
      const requests: GenerateRequest[] = [
        { prompt: 'hello there', sampling: { maxTokens: 8 } },
        { prompt: 'abc', sampling: { maxTokens: 8 } },
      ];
      const [inWorker, inMain] = await Promise.all([
        Promise.all(requests.map((r) => run(worker, r))),
        Promise.all(requests.map((r) => run(engine, r))),
      ]);
      expect(inWorker.map((r) => r.done.text)).toEqual(inMain.map((r) => r.done.text));
      await lastValueFrom(worker.generate({ prompt: 'cancel me', sampling: { maxTokens: 40 } }).pipe(take(2), toArray()));
      await expect(
        firstValueFrom(worker.generate({ ids: Array.from({ length: 150 }, (_, i) => i), sampling: { maxTokens: 60 } })),
      ).rejects.toThrow(KvExhaustedError);
      await settle(worker);
      expect(worker.stats()).toMatchObject({ kvBlocksUsed: 0, runningSequences: 0 });
    } finally {
      await worker.close();
    }
  });
});
