import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../backend.js';
import { prepareModel } from '../model/forward.js';
import { randomModel } from '../model/random.js';
import { bestDrafts, measureSelfSpecCost } from './self-spec-cost.js';

beforeAll(async () => {
  await initBackend();
});

describe('self-speculation costs', () => {
  it('pick no chain where rows cost as much as steps, the longest where drafting is free, in between by acceptance', () => {
    expect(bestDrafts({ rowCost: (n) => n, shallow: 0.5 }, 1, 4)).toEqual({ drafts: 0, speedup: 1 });
    expect(bestDrafts({ rowCost: () => 1, shallow: 0 }, 0.9, 4).drafts).toBe(4);
    // This CPU's kind of figures: a row 0.2 of a step, a draft 0.6 — 60 % acceptance loses, 95 % pays with one draft or more.
    const cpu = { rowCost: (n: number) => 1 + 0.2 * (n - 1), shallow: 0.6 };
    expect(bestDrafts(cpu, 0.6, 4).drafts).toBe(0);
    expect(bestDrafts(cpu, 0.95, 4).drafts).toBeGreaterThan(0);
    expect(bestDrafts(cpu, 0.95, 0)).toEqual({ drafts: 0, speedup: 1 });
  });

  it("measure a model's forwards by rows and a shallow draft against a one-row step, leaving no tensors", () => {
    const model = randomModel({ hiddenSize: 32, numHeads: 4, numKvHeads: 2, numLayers: 6, vocabSize: 64 }, 3);
    try {
      prepareModel(model); // the model's prepared weights live as long as it does
      const before = tf.memory().numTensors;
      const cost = measureSelfSpecCost(model, [0, 5], 3);
      expect(tf.memory().numTensors).toBe(before);
      expect(cost.rowCost(1)).toBe(1);
      for (const n of [2, 3, 4]) expect(cost.rowCost(n)).toBeGreaterThan(0);
      expect(cost.shallow).toBeGreaterThan(0);
      expect(cost.shallow).toBeLessThan(5);
    } finally {
      model.dispose();
    }
  });
});
