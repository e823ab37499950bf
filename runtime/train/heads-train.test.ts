/**
 * Training speculative heads (runtime/train/heads-train.ts) on a random model with rows whose
 * targets the heads can learn: the held-out top-1 rises from the zero-initialised heads'
 * (which repeat the base model's own prediction), and a run stopped and resumed from its
 * checkpoint ends with exactly the weights of an uninterrupted one.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import { initBackend } from '../backend.js';
import { prepareModel } from '../model/forward.js';
import { randomModel } from '../model/random.js';
import type { LoadedModel } from '../model/types.js';
import type { DistilledRows } from './heads-data.js';
import { trainHeads } from './heads-train.js';

const D = 16;
const V = 24;
const K = 2;
let model: LoadedModel;

/** Rows whose head-k target is the base model's own next token shifted by k + 1: a fixed permutation per head. */
function rows(n: number, seed: number): DistilledRows {
  let s = seed;
  const rand = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5;
  const hidden = Float32Array.from({ length: n * D }, () => rand() * 4);
  const logits = tf.tidy(() => tf.argMax(tf.matMul(tf.tensor2d(hidden, [n, D]), model.weights.lmHead), 1).dataSync() as Int32Array);
  const targets = new Int32Array(n * K);
  for (let i = 0; i < n; i++) for (let k = 0; k < K; k++) targets[i * K + k] = (logits[i]! + k + 1) % V;
  return { hidden, targets, next: Int32Array.from(logits), rows: n, heads: K, hiddenSize: D, prompts: 1 };
}

beforeAll(async () => {
  await initBackend();
  model = randomModel({ hiddenSize: D, numHeads: 2, numKvHeads: 1, numLayers: 1, vocabSize: V, intermediateSize: 32 }, 3);
  prepareModel(model); // the forward's prepared weights live as long as the model (the cost model runs forwards)
});
afterAll(() => model.dispose());

describe('training speculative heads', () => {
  it('learns held-out targets the zero-initialised heads miss, and resumes to the same weights', () => {
    const train = rows(256, 1);
    const heldOut = rows(64, 2);
    for (const kind of ['medusa', 'cerberus'] as const) {
      const before = tf.memory().numTensors;
      const untrained = trainHeads(model, train, heldOut, { kind, steps: 0, batch: 32, stateDir: tempDir('skein-heads-') });
      const straightDir = tempDir('skein-heads-');
      const straight = trainHeads(model, train, heldOut, { kind, steps: 120, batch: 32, lr: 3e-2, stateDir: straightDir });
      expect(straight.meta.training!.top1[0]!).toBeGreaterThan(untrained.meta.training!.top1[0]! + 0.1);
      expect(straight.meta.training!.top5[0]!).toBeGreaterThanOrEqual(straight.meta.training!.top1[0]!);
      expect(straight.meta.tree.length).toBeGreaterThan(0);
      const resumedDir = tempDir('skein-heads-');
      trainHeads(model, train, heldOut, { kind, steps: 50, batch: 32, lr: 3e-2, stateDir: resumedDir });
      const resumed = trainHeads(model, train, heldOut, { kind, steps: 120, batch: 32, lr: 3e-2, stateDir: resumedDir });
      expect(resumed.meta.training!.steps).toBe(120);
      resumed.weights.forEach((w, k) => expect(Array.from(w)).toEqual(Array.from(straight.weights[k]!)));
      expect(tf.memory().numTensors).toBe(before);
    }
  });
});
