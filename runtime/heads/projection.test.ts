/**
 * Head projections (runtime/heads/projection.ts): onto a vocabulary subset, each logit is
 * the whole LM head's logit of that token (within f32 rounding), on the block-kernel path
 * and on the tfjs path, and the candidates SpeculativeHeads proposes come from the subset.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../backend.js';
import { prepareModel } from '../model/forward.js';
import { randomModel } from '../model/random.js';
import type { LoadedModel } from '../model/types.js';
import { SpeculativeHeads } from './heads.js';
import { headProjection } from './projection.js';

const D = 32;
const V = 96;
let model: LoadedModel;
const vocab = [2, 5, 17, 40, 41, 63, 90, 95];

beforeAll(async () => {
  await initBackend();
  model = randomModel({ hiddenSize: D, numHeads: 4, numKvHeads: 2, numLayers: 1, vocabSize: V }, 5);
});
afterAll(() => model.dispose());

function expectColumns(m: LoadedModel, z: tf.Tensor2D) {
  const full = headProjection(m);
  const sub = headProjection(m, vocab);
  const all = full.logits(z).arraySync() as number[][];
  const part = sub.logits(z).arraySync() as number[][];
  expect(Array.from(sub.ids!)).toEqual(vocab);
  part.forEach((row, r) => row.forEach((x, j) => expect(x).toBeCloseTo(all[r]![vocab[j]!]!, 4)));
  sub.dispose();
}

describe('head projection onto a vocabulary subset', () => {
  it('gives the whole LM head\'s logits of those tokens, on the block kernels', () => {
    expect(prepareModel(model).blocks).not.toBeNull();
    const before = tf.memory().numTensors;
    tf.tidy(() => expectColumns(model, tf.randomNormal([3, D], 0, 1, 'float32', 1) as tf.Tensor2D));
    expect(tf.memory().numTensors).toBe(before);
  });

  it('and on tfjs matrices (a hidden size the kernels do not take), owning and freeing its gathered columns', () => {
    const odd = randomModel({ hiddenSize: 24, numHeads: 4, numKvHeads: 2, numLayers: 1, vocabSize: V }, 6);
    try {
      expect(prepareModel(odd).blocks).toBeNull();
      const before = tf.memory().numTensors;
      tf.tidy(() => expectColumns(odd, tf.randomNormal([3, 24], 0, 1, 'float32', 1) as tf.Tensor2D));
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      odd.dispose();
    }
  });

  it('SpeculativeHeads propose only tokens of their vocabulary', () => {
    const weights = [new Float32Array(D * D).fill(0.01), new Float32Array(D * D).fill(-0.01)];
    const biases = [new Float32Array(D), new Float32Array(D).fill(0.1)];
    const heads = new SpeculativeHeads(model, { meta: { kind: 'medusa', numHeads: 2, hiddenSize: D, vocabSize: V, tree: [[0]], gateThreshold: null, vocab }, weights, biases });
    const rows = [Float32Array.from({ length: D }, (_, i) => Math.sin(i)), Float32Array.from({ length: D }, (_, i) => Math.cos(i))];
    const out = heads.candidates(rows, [4, 3], rows.map(() => 0));
    expect(out.map((r) => r.map((c) => c.length))).toEqual([[4, 3], [4, 3]]);
    for (const c of out.flat(2)) expect(vocab).toContain(c);
    heads.dispose();
  });
});
