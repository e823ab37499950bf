/**
 * Training speculative heads (runtime/train/heads-train.ts) on a random model with rows whose
 * targets the heads can learn: the held-out top-1 rises from the zero-initialised heads'
 * (which repeat the base model's own prediction), and a run stopped and resumed from its
 * checkpoint ends with exactly the weights of an uninterrupted one; heads reading the pending
 * token learn what only that token tells.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import { initBackend } from '../backend.js';
import { prepareModel } from '../model/forward.js';
import { randomModel } from '../model/random.js';
import type { LoadedModel } from '../model/types.js';
import type { DistilledRows } from './heads-data.js';
import { chooseVocab, trainHeads } from './heads-train.js';

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

  it('heads reading the pending token learn targets that only it determines, which plain heads cannot', () => {
    // The pending token is drawn apart from the hidden row, and every target is a function of it alone.
    const pendingRows = (n: number, seed: number): DistilledRows => {
      const base = rows(n, seed);
      let s = seed * 7 + 1;
      const next = Int32Array.from({ length: n }, () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) % V);
      const targets = new Int32Array(n * K);
      for (let i = 0; i < n; i++) for (let k = 0; k < K; k++) targets[i * K + k] = (next[i]! * 5 + 3 + k) % V;
      return { ...base, next, targets };
    };
    const train = pendingRows(512, 3);
    const heldOut = pendingRows(96, 4);
    const before = tf.memory().numTensors;
    const top1 = (pendingToken: boolean) =>
      trainHeads(model, train, heldOut, { kind: 'cerberus', steps: 160, batch: 32, lr: 3e-2, pendingToken, stateDir: tempDir('skein-heads-') });
    const reading = top1(true);
    const plain = top1(false);
    expect(reading.meta.pendingToken).toBe(true);
    expect(plain.meta.pendingToken).toBeUndefined();
    expect(reading.weights[1]!.length).toBe(3 * D * D);
    expect(reading.meta.training!.top1[0]!).toBeGreaterThan(plain.meta.training!.top1[0]! + 0.4);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('trains over a vocabulary of the most frequent targets, reports its coverage and keeps its ids', () => {
    const train = rows(256, 1);
    const heldOut = rows(64, 2);
    const counts = new Map<number, number>();
    for (const t of [...train.targets, ...train.next]) if (t >= 0) counts.set(t, (counts.get(t) ?? 0) + 1);
    const chosen = chooseVocab(train, 12, V)!;
    expect(chosen.ids).toHaveLength(12);
    const least = Math.min(...chosen.ids.map((id) => counts.get(id) ?? 0));
    for (let t = 0; t < V; t++) if (!chosen.ids.includes(t)) expect(counts.get(t) ?? 0).toBeLessThanOrEqual(least);
    const inside = Array.from(train.targets).filter((t) => t >= 0 && chosen.ids.includes(t)).length;
    expect(chosen.coverage).toBeCloseTo(inside / Array.from(train.targets).filter((t) => t >= 0).length, 4);
    expect(chooseVocab(train, V, V)).toBeNull();
    const before = tf.memory().numTensors;
    const untrained = trainHeads(model, train, heldOut, { kind: 'medusa', steps: 0, batch: 32, vocab: 12, stateDir: tempDir('skein-heads-') });
    const trained = trainHeads(model, train, heldOut, { kind: 'medusa', steps: 120, batch: 32, lr: 3e-2, vocab: 12, stateDir: tempDir('skein-heads-') });
    expect(trained.meta.vocab).toEqual(chosen.ids);
    expect(trained.meta.training!.vocabCoverage).toBe(chosen.coverage);
    expect(trained.meta.training!.top1[0]!).toBeGreaterThan(untrained.meta.training!.top1[0]! + 0.1);
    expect(tf.memory().numTensors).toBe(before);
  });
});
