/**
 * Backends without the wasm kernels (tfjs-node, cpu) run a float model's projections as
 * tfjs matMuls and its attention through the kernels' JavaScript entry (dataSync): that
 * path still matches the reference forward, and the wasm path, to float rounding.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relErr } from '../../test/fixtures/numeric.js';
import { initBackend } from '../backend.js';
import { forward, prepareModel, releasePrepared } from './forward.js';
import { randomModel } from './random.js';
import { referenceForward } from './reference.js';

const shape = { hiddenSize: 64, numHeads: 4, numKvHeads: 2, headDim: 16, intermediateSize: 96, numLayers: 3, vocabSize: 96 };
const ids = [3, 17, 42, 5, 9, 33, 60, 71];

beforeAll(async () => {
  await initBackend();
});
afterAll(async () => {
  await tf.setBackend('wasm');
});

describe('the forward without the wasm backend (tfjs matMul projections)', () => {
  it('matches the reference forward and the wasm block path', async () => {
    const model = randomModel(shape, 9);
    try {
      const onWasm = forward(model, [{ ids, logits: 'all' }])[0]!;
      onWasm.newKv.forEach((kv) => kv && tf.dispose([kv.k, kv.v]));
      expect(prepareModel(model).blocks).not.toBeNull();
      releasePrepared(model);
      await tf.setBackend('cpu');
      // The model's tensors live on wasm; the cpu backend reads them through dataSync.
      expect(prepareModel(model).blocks).toBeNull();
      const [r] = forward(model, [{ ids, logits: 'all' }]);
      const ref = referenceForward(model, ids);
      r!.logits.forEach((row, i) => {
        expect(relErr(row, ref.logits[i]!)).toBeLessThan(1e-5);
        expect(relErr(row, onWasm.logits[i]!)).toBeLessThan(1e-5);
      });
      r!.newKv.forEach((kv) => kv && tf.dispose([kv.k, kv.v]));
      releasePrepared(model);
    } finally {
      await tf.setBackend('wasm');
      model.dispose();
    }
  });
});
