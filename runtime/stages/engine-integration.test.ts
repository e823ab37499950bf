/**
 * The stages inside the real engine (runtime/engine/core.ts, runtime/stages/registry.ts): a
 * request with stages.compress is compressed on the model's thread, one segment per step,
 * then prefilled with the shorter ids; metrics say by how much; cancelling during
 * compression frees everything; the worker engine runs it too. skipLayers and
 * prunedPrefill run from the registry and report on the stream; speculate is refused.
 */
import * as tf from '@tensorflow/tfjs-core';
import { firstValueFrom, lastValueFrom, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadRequestError, StageUnavailableError } from '../../core/errors.js';
import { makeTempCheckpoint } from '../../test/fixtures/checkpoints.js';
import { initBackend } from '../backend.js';
import { defaultSchedule } from './lazy-schedule.js';
import { createEngine } from '../engine/index.js';
import type { EngineFront } from '../engine/front.js';
import type { GenerateEvent, GenerateRequest } from '../../core/engine.js';

type Done = Extract<GenerateEvent, { type: 'done' }>;

const PASSAGE = 'The river runs past the old mill and the town square, and the secret number of the green door is 85448. '.repeat(4);
const request = (stages?: GenerateRequest['stages']): GenerateRequest => ({
  messages: [{ role: 'user', content: `${PASSAGE}\n\nQuestion: What is the secret number of the green door?` }],
  sampling: { maxTokens: 4 },
  ...(stages ? { stages } : {}),
});

let ckpt: ReturnType<typeof makeTempCheckpoint>;
let engine: EngineFront;
let baseline = 0;

async function done(e: EngineFront, r: GenerateRequest): Promise<Done> {
  const events = await lastValueFrom(e.generate(r).pipe(toArray()));
  return events.at(-1) as Done;
}

describe('compress stage in the engine', () => {
  beforeAll(async () => {
    await initBackend();
    ckpt = makeTempCheckpoint({ maxPositionEmbeddings: 2048, seed: 4 });
    baseline = tf.memory().numTensors;
    engine = await createEngine({ model: ckpt.dir, thread: 'main' });
  });

  afterAll(async () => {
    await engine?.close();
    expect(tf.memory().numTensors).toBe(baseline);
    ckpt.cleanup();
  });

  it('is available, compresses the prompt before prefill and reports it as a stage event', async () => {
    expect(engine.checkStage('compress')).toBeUndefined();
    const full = await done(engine, request());
    const events = await lastValueFrom(engine.generate(request({ compress: { rate: 0.5, keep: ['85448'] } })).pipe(toArray()));
    const small = events.at(-1) as Done;
    const stage = events.find((e) => e.type === 'stage' && e.stage === 'compress');
    expect(events.indexOf(stage!)).toBeLessThan(events.findIndex((e) => e.type === 'token'));
    expect(stage).toMatchObject({ decided: { rate: 0.5, keepPhrases: 1, scorerLayers: expect.any(Number) }, figures: { tokensIn: full.usage.promptTokens, tokensOut: small.usage.promptTokens } });
    expect(stage!.type === 'stage' && stage!.figures.wallMs).toBeGreaterThan(0);
    expect(full.metrics.compressedFrom).toBeUndefined();
    expect(small.metrics.compressedFrom).toBe(full.usage.promptTokens);
    expect(small.metrics.compressedTo).toBe(small.usage.promptTokens);
    expect(small.usage.promptTokens / full.usage.promptTokens).toBeGreaterThan(0.45);
    expect(small.usage.promptTokens / full.usage.promptTokens).toBeLessThan(0.55);
    expect(small.usage.completionTokens).toBe(4);
    expect(small.metrics.ttftMs).toBeGreaterThan(0);
  });

  it('rate 1 changes nothing; a bad rate is a typed error', async () => {
    const full = await done(engine, request());
    const same = await done(engine, request({ compress: { rate: 1 } }));
    expect(same.usage.promptTokens).toBe(full.usage.promptTokens);
    expect(same.ids).toEqual(full.ids);
    await expect(firstValueFrom(engine.generate(request({ compress: { rate: 0 } })))).rejects.toBeInstanceOf(BadRequestError);
  });

  it('runs skipLayers and prunedPrefill from the registry, each reporting a stage event with its figures', async () => {
    expect(engine.checkStage('skipLayers')).toBeUndefined();
    expect(engine.checkStage('prunedPrefill')).toBeUndefined();
    const plain = await done(engine, request());
    const events = await lastValueFrom(
      engine.generate(request({ prunedPrefill: { keepRatio: 0.5 }, skipLayers: { targetSpeedup: 2, mode: 'self-speculative' } })).pipe(toArray()),
    );
    const end = events.at(-1) as Done;
    // Self-speculative decoding is lossless: the full model verifies every drafted token.
    const lossless = await done(engine, request({ skipLayers: { targetSpeedup: 2, mode: 'self-speculative' } }));
    expect(lossless.ids).toEqual(plain.ids);
    const stages = events.filter((e): e is Extract<GenerateEvent, { type: 'stage' }> => e.type === 'stage');
    const lazy = stages.find((e) => e.stage === 'prunedPrefill');
    // Each verification streams as it happens (decided.step); the stage's totals come last.
    const skipSteps = stages.filter((e) => e.stage === 'skipLayers' && typeof e.decided.step === 'number');
    const skip = stages.filter((e) => e.stage === 'skipLayers').at(-1);
    expect(skipSteps.length).toBeGreaterThan(0);
    expect(skipSteps.reduce((n, e) => n + e.figures.draftsAccepted!, 0)).toBe(skip!.figures.draftsAccepted);
    expect(lazy?.figures.prunedTokens).toBeGreaterThan(0);
    expect(lazy?.decided).toMatchObject({ layers: expect.any(String), keep: expect.any(String) });
    expect(skip).toMatchObject({ decided: { mode: 'self-speculative', targetSpeedup: 2 }, figures: { layersRun: end.metrics.stages!.skipLayers!.layers.length } });
    expect(skip!.figures.draftsProposed).toBeGreaterThan(0);
    expect(events.indexOf(skip!)).toBeLessThan(events.length - 1);
    expect(engine.stats()).toMatchObject({ runningSequences: 0, kvBlocksUsed: 0 });
  });

  it('prunedPrefill without keepRatio runs the default long-prompt schedule and reports it', async () => {
    const end = await done(engine, request({ prunedPrefill: {} }));
    const d = defaultSchedule(2); // the fixture checkpoint's depth: all three depths land on layer 1, at the last share
    expect(end.metrics.stages!.prunedPrefill).toMatchObject({ layers: d.layers, keep: d.keep, revive: 4 });
    expect(Object.values(end.metrics.stages!.prunedPrefill!.prunedAtLayer).some((n) => n > 0)).toBe(true);
    expect(engine.stats()).toMatchObject({ runningSequences: 0, kvBlocksUsed: 0 });
  });

  it('refuses speculate with a typed error saying what is missing and how to get it', async () => {
    const run = firstValueFrom(engine.generate(request({ speculate: {} })));
    await expect(run).rejects.toBeInstanceOf(StageUnavailableError);
    await expect(run).rejects.toThrow(/no trained heads beside the model.*npx skein train heads/);
    expect(engine.stats().runningSequences).toBe(0);
  });

  it('unsubscribing while the prompt is being compressed frees its cache', async () => {
    const long = { ...request({ compress: { rate: 0.3 } }), messages: [{ role: 'user' as const, content: PASSAGE.repeat(3) }] };
    const before = tf.memory().numTensors;
    const sub = engine.generate(long).subscribe();
    await new Promise((r) => setImmediate(r)); // one engine step: the first segment
    expect(tf.memory().numTensors).toBeGreaterThan(before); // the scorer's cache
    expect(engine.stats().queueDepth).toBe(1);
    sub.unsubscribe();
    expect(tf.memory().numTensors).toBe(before);
    expect(engine.stats()).toMatchObject({ runningSequences: 0, queueDepth: 0 });
    const after = await done(engine, request({ compress: { rate: 0.5 } }));
    expect(after.metrics.compressedTo).toBe(after.usage.promptTokens);
  });

  it('lets a prompt longer than the context fit: the context is checked after compression', async () => {
    const small = makeTempCheckpoint({ maxPositionEmbeddings: 300, seed: 4 });
    const e = await createEngine({ model: small.dir, thread: 'main' });
    try {
      const long = request();
      expect(e.tokenize(e.renderChat(long.messages!)).length).toBeGreaterThan(350);
      await expect(firstValueFrom(e.generate(long))).rejects.toThrow(/the model's context is 300/);
      const r = await done(e, { ...long, stages: { compress: { rate: 0.5 } } });
      expect(r.usage.promptTokens).toBeLessThan(300);
    } finally {
      await e.close();
      small.cleanup();
    }
  });

  it('runs in the worker engine too', async () => {
    const worker = await createEngine({ model: ckpt.dir, thread: 'worker' });
    try {
      const r = await done(worker, request({ compress: { rate: 0.5 } }));
      expect(r.metrics.compressedTo).toBe(r.usage.promptTokens);
      expect(r.metrics.compressedFrom! / 2).toBeCloseTo(r.metrics.compressedTo!, -1);
    } finally {
      await worker.close();
    }
  });
});
