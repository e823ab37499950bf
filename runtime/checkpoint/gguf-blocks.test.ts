/**
 * SmolLM2-135M-Instruct (Q4_1 projections, Q8_0 token_embd) through the block kernels
 * against the reference forward on the loader's dequantized weights. Tolerance: the
 * kernels round activations to int8 per block of 32 as llama.cpp does; across 30 layers
 * that moves logits by up to 5.2% of a row's largest logit here (measured on this prompt:
 * 1.7–5.2%), so the bound is 8%, and the greedy token must agree at every position.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relErr } from '../../test/fixtures/numeric.js';
import { forward, prepareModel } from '../model/forward.js';
import { referenceForward } from '../model/reference.js';
import { loadModel, MODELS_DIR, type LoadedCheckpoint } from './load.js';

const file = path.join(MODELS_DIR, 'smollm2-135m-instruct', 'SmolLM2-135M-Instruct.Q4_1.gguf');
const missing = fs.existsSync(file) ? '' : `${file} is absent (npx skein pull smollm2-135m-instruct)`;
if (missing) console.warn(`gguf-blocks test skipped: ${missing}`);

const argmax = (x: Float32Array) => x.reduce((best, v, i) => (v > x[best]! ? i : best), 0);

describe.skipIf(missing !== '')('SmolLM2-135M Q4_1 on its GGUF blocks', () => {
  let model: LoadedCheckpoint;
  beforeAll(async () => {
    model = await loadModel(file);
  });
  afterAll(() => model?.dispose());

  it('keeps the projections as stored and runs them within 8% of the reference, same greedy tokens', () => {
    const b = model.blockWeights!;
    expect(b.layers).toHaveLength(30);
    expect(b.layers[0]!.wq).toMatchObject({ type: 'q4_1', rows: 576, cols: 576 });
    expect(b.layers[0]!.wDown).toMatchObject({ type: 'q4_1', rows: 576, cols: 1536 });
    expect(b.lmHead).toMatchObject({ type: 'q8_0', rows: 49152, cols: 576 });
    expect(prepareModel(model).blocks).not.toBeNull();
    const ids = model.tokenizer().encode('The capital of France is');
    const ref = referenceForward(model, ids);
    const [r] = forward(model, [{ ids, logits: 'all' }]);
    r!.logits.forEach((row, i) => {
      expect(relErr(row, ref.logits[i]!)).toBeLessThan(0.08);
      expect(argmax(row)).toBe(argmax(ref.logits[i]!));
    });
    tf.dispose(r!.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
  });
});
