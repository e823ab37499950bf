/**
 * The speculate stage in the real engine (runtime/stages/speculate.ts, runtime/engine/core.ts):
 * refused with what is missing until heads sit beside the model, then run from the registry
 * with the model's own heads (Cerberus by default, Medusa by mode): greedy output identical
 * to the plain run, a speculate stage event and metrics; heads for another hidden size are a
 * CheckpointError naming the file; a cancelled speculative run leaves no KV and no tensors.
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { firstValueFrom, lastValueFrom, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadRequestError, CheckpointError, StageUnavailableError } from '../../core/errors.js';
import type { GenerateEvent, GenerateRequest } from '../../core/engine.js';
import { makeTempCheckpoint } from '../../test/fixtures/checkpoints.js';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import { initBackend } from '../backend.js';
import { createEngine } from '../engine/index.js';
import type { EngineFront } from '../engine/front.js';
import { writeHeads, type HeadsData } from '../heads/files.js';

type Done = Extract<GenerateEvent, { type: 'done' }>;

const D = 32;
const V = 288;

function randomHeads(kind: 'medusa' | 'cerberus', seed: number, hiddenSize = D): HeadsData {
  let s = seed;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 0.6;
  const K = 3;
  return {
    meta: { kind, numHeads: K, hiddenSize, vocabSize: V, tree: [[0], [0, 0], [1], [0, 0, 0], [0, 1], [2]], gateThreshold: kind === 'cerberus' ? 100 : null },
    weights: Array.from({ length: K }, (_, k) => Float32Array.from({ length: (kind === 'cerberus' && k > 0 ? 2 : 1) * hiddenSize * hiddenSize }, rand)),
    biases: Array.from({ length: K }, () => Float32Array.from({ length: hiddenSize }, rand)),
  };
}

const request = (stages?: GenerateRequest['stages'], maxTokens = 24): GenerateRequest => ({
  messages: [{ role: 'user', content: 'Name three things a garden needs, and why.' }],
  sampling: { maxTokens },
  ...(stages ? { stages } : {}),
});

async function done(e: EngineFront, r: GenerateRequest): Promise<{ done: Done; events: GenerateEvent[] }> {
  const events = await lastValueFrom(e.generate(r).pipe(toArray()));
  return { done: events.at(-1) as Done, events };
}

let ckpt: ReturnType<typeof makeTempCheckpoint>;
let engine: EngineFront;
let baseline = 0;

describe('speculate stage in the engine', () => {
  beforeAll(async () => {
    await initBackend();
    ckpt = makeTempCheckpoint({ hiddenSize: D, numLayers: 2, maxPositionEmbeddings: 512, seed: 9 });
    baseline = tf.memory().numTensors;
    engine = await createEngine({ model: ckpt.dir, thread: 'main' });
  });

  afterAll(async () => {
    await engine?.close();
    expect(tf.memory().numTensors).toBe(baseline);
    ckpt.cleanup();
  });

  it('is refused with what is missing until heads are trained', async () => {
    expect(engine.checkStage('speculate')?.message).toMatch(/no trained heads beside the model.*npx skein train heads/);
    await expect(firstValueFrom(engine.generate(request({ speculate: {} })))).rejects.toBeInstanceOf(StageUnavailableError);
  });

  it('runs with the heads beside the model, greedy output identical to plain, and reports drafts on the stream', async () => {
    writeHeads(path.join(ckpt.dir, 'heads', 'cerberus'), randomHeads('cerberus', 3));
    writeHeads(path.join(ckpt.dir, 'heads', 'medusa'), randomHeads('medusa', 5));
    expect(engine.checkStage('speculate')).toBeUndefined();
    const plain = await done(engine, request());
    for (const stages of [{ speculate: {} }, { speculate: { mode: 'medusa' as const } }, { speculate: { mode: 'cerberus' as const, entropyGate: false, nodes: 3 } }]) {
      const { done: d, events } = await done(engine, request(stages));
      expect(d.ids).toEqual(plain.done.ids);
      expect(d.text).toBe(plain.done.text);
      const specEvents = events.filter((e) => e.type === 'stage' && e.stage === 'speculate') as Extract<GenerateEvent, { type: 'stage' }>[];
      for (const stage of specEvents) expect(stage).toMatchObject({ decided: { kind: stages.speculate.mode ?? 'cerberus', acceptance: 'exact' }, figures: { draftsProposed: expect.any(Number) } });
      // One event per verification or closed gate as it happens, numbered; then the totals.
      const steps = specEvents.filter((e) => typeof e.decided.step === 'number');
      const totals = specEvents.at(-1)!;
      expect(steps.map((e) => e.decided.step)).toEqual(steps.map((_, i) => i + 1));
      expect(steps.filter((e) => !e.decided.gated).length).toBe(totals.decided.verifications);
      expect(steps.reduce((n, e) => n + e.figures.draftsAccepted!, 0)).toBe(totals.figures.draftsAccepted);
      expect(steps.reduce((n, e) => n + e.figures.draftsProposed!, 0)).toBe(totals.figures.draftsProposed);
      const report = d.metrics.stages!.speculate!;
      expect(report.verifications).toBeGreaterThan(0);
      expect(report.draftsAccepted).toBe(d.metrics.acceptedDraftTokens);
      expect(report.meanAcceptedLength).toBeGreaterThanOrEqual(1);
    }
    expect(engine.stats()).toMatchObject({ runningSequences: 0, kvBlocksUsed: 0 });
  });

  it('refuses to combine with skipLayers, naming the stage', async () => {
    const run = firstValueFrom(engine.generate(request({ speculate: {}, skipLayers: { targetSpeedup: 2 } })));
    await expect(run).rejects.toBeInstanceOf(BadRequestError);
    await expect(run).rejects.toThrow(/stages\.speculate.*skipLayers/);
  });

  it('refuses heads made for another hidden size, naming the file', async () => {
    const dir = path.join(tempDir('skein-heads-'), 'medusa');
    writeHeads(dir, randomHeads('medusa', 7, 16));
    const run = firstValueFrom(engine.generate(request({ speculate: { heads: dir } })));
    await expect(run).rejects.toBeInstanceOf(CheckpointError);
    await expect(run).rejects.toThrow(new RegExp(`${dir}.*hidden size 16, the model's is 32`));
  });

  it('leaves no KV and no tensors behind when a speculative run is cancelled', async () => {
    const before = tf.memory().numTensors;
    let seen = 0;
    await new Promise<void>((resolve) => {
      const sub = engine.generate(request({ speculate: { entropyGate: false } }, 200)).subscribe((e) => {
        if (e.type === 'token' && ++seen === 5) {
          sub.unsubscribe();
          resolve();
        }
      });
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(engine.stats()).toMatchObject({ runningSequences: 0, kvBlocksUsed: 0 });
    expect(tf.memory().numTensors).toBe(before);
  });
});
