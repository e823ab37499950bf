/**
 * Engine.score: teacher-forced logits on the engine's own model, on the main thread and
 * through the worker (the rows cross the thread boundary), equal to the reference forward;
 * typed errors for bad ids; a score dropped before it runs; nothing left behind.
 */
import * as tf from '@tensorflow/tfjs-core';
import { lastValueFrom, Subscription } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadRequestError } from '../../core/errors.js';
import { makeTempCheckpoint } from '../../test/fixtures/checkpoints.js';
import { initBackend } from '../backend.js';
import { loadModel } from '../checkpoint/load.js';
import { referenceForward } from '../model/reference.js';
import { createEngine } from './index.js';

const IDS = [5, 6, 7, 1, 9];
let ckpt: ReturnType<typeof makeTempCheckpoint>;
let reference: Float32Array[];

beforeAll(async () => {
  await initBackend();
  ckpt = makeTempCheckpoint({ numKvHeads: 2, maxPositionEmbeddings: 64, seed: 11 });
  const model = await loadModel(ckpt.dir);
  reference = referenceForward(model, IDS).logits;
  model.dispose();
});
afterAll(() => ckpt.cleanup());

function expectReference(logits: Float32Array[]) {
  expect(logits).toHaveLength(IDS.length);
  logits.forEach((row, t) => {
    expect(row).toBeInstanceOf(Float32Array);
    expect(row.length).toBe(reference[t]!.length);
    let worst = 0;
    row.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - reference[t]![j]!))));
    expect(worst).toBeLessThan(1e-4);
  });
}

describe.each(['main', 'worker'] as const)('Engine.score on the %s thread', (thread) => {
  it('gives the reference logits of every position, then frees everything', async () => {
    const baseline = tf.memory().numTensors;
    const engine = await createEngine({ model: ckpt.dir, thread, blockSize: 4, kvBudgetBlocks: 16 });
    try {
      const scored = await lastValueFrom(engine.score({ ids: IDS }));
      expectReference(scored.logits);
      // A worker engine counts its own thread's tensors, reported with each step's events;
      // the first forward prepares the model's weights once, so count after it.
      const workerTensors = engine.stats().tensors;
      const again = await Promise.all([lastValueFrom(engine.score({ ids: IDS })), lastValueFrom(engine.score({ ids: IDS.slice(0, 2) }))]);
      // Scoring is deterministic and keeps no state between calls.
      expect(again[0].logits).toEqual(scored.logits);
      expect(again[1].logits).toEqual(scored.logits.slice(0, 2));
      expect(engine.stats().kvBlocksUsed).toBe(0);
      expect(engine.stats().tensors).toBe(workerTensors);
      await expect(lastValueFrom(engine.score({ ids: [5, 1_000_000] }))).rejects.toThrow(BadRequestError);
      await expect(lastValueFrom(engine.score({ ids: [] }))).rejects.toThrow(/Bad request: ids: give at least one token id/);
      await expect(lastValueFrom(engine.score({ ids: Array.from({ length: 65 }, () => 3) }))).rejects.toThrow(/65 tokens exceed the model's context of 64/);
    } finally {
      await engine.close();
    }
    expect(tf.memory().numTensors).toBe(baseline);
  });
});

describe('Engine.score cancelled', () => {
  it('drops a score unsubscribed before it ran, and serves the next', async () => {
    const engine = await createEngine({ model: ckpt.dir, thread: 'main', blockSize: 4, kvBudgetBlocks: 16 });
    try {
      const seen: unknown[] = [];
      const sub: Subscription = engine.score({ ids: IDS }).subscribe({ next: (r) => seen.push(r), error: (e) => seen.push(e) });
      sub.unsubscribe();
      expectReference((await lastValueFrom(engine.score({ ids: IDS }))).logits);
      expect(seen).toEqual([]);
      expect(engine.stats().queueDepth).toBe(0);
    } finally {
      await engine.close();
    }
  });
});
