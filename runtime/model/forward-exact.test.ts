/**
 * A row's result does not depend on what else is in the forward call: the same token at
 * the same position over the same cache gives bit-identical logits and KV whether it runs
 * alone (a decode step), as one row of a multi-row call (verifying drafts, a tree, a
 * prefill chunk), or beside other sequences in a batch. Batching, chunked prefill, prefix
 * sharing and greedy speculative decoding are lossless only because of this; on the
 * block-weight path int8 activation rounding turns any last-bit difference into a visible
 * one (0.67 logits apart on SmolLM2 before attention had its own kernel).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvCache } from '../../test/fixtures/kv-cache.js';
import { initBackend } from '../backend.js';
import { loadModel } from '../checkpoint/load.js';
import { quantizeModel } from './block-weights.js';
import { forward } from './forward.js';
import { randomModel } from './random.js';
import type { LoadedModel } from './types.js';

// Past 64 rows and 8 logit rows, where tfjs's own ops would have switched shapes.
const longPrompt = Array.from({ length: 70 }, (_, i) => (i * 37 + 3) % 90);
const longNext = [11, 40, 23, 66, 8, 19, 77, 30, 52, 4];

function expectSameBits(a: Float32Array, b: Float32Array, what: string): void {
  expect(a.length, what).toBe(b.length);
  let differing = 0;
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) {
      differing++;
      worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    }
  }
  expect({ differing, worst }, what).toEqual({ differing: 0, worst: 0 });
}

/** Prefill `prompt` into a fresh cache (in chunks of `chunk`). */
function prefill(model: LoadedModel, prompt: number[], chunk: number): KvCache {
  const cache = new KvCache(model.config.numLayers);
  for (let i = 0; i < prompt.length; i += chunk) {
    const [r] = forward(model, [{ ids: prompt.slice(i, i + chunk), past: cache.past(), logits: 'none' }]);
    cache.append(r!.newKv);
  }
  return cache;
}

function checkRowIndependence(model: LoadedModel, prompt: number[], next: number[], chunk: number): void {
  const cache = prefill(model, prompt, prompt.length);
  try {
    // Alone: one decode step per token, each appended.
    const alone: Float32Array[] = [];
    const stepCache = prefill(model, prompt, prompt.length);
    try {
      for (const id of next) {
        const [r] = forward(model, [{ ids: [id], past: stepCache.past() }]);
        alone.push(r!.logits[0]!);
        stepCache.append(r!.newKv);
      }
    } finally {
      stepCache.dispose();
    }
    // The same tokens as one multi-row call (draft verification).
    const [multi] = forward(model, [{ ids: next, past: cache.past(), logits: 'all' }]);
    next.forEach((_, i) => expectSameBits(multi!.logits[i]!, alone[i]!, `row ${i} of a ${next.length}-row call vs alone`));
    // And with attention rows asked for: on the block path every layer then runs op by op
    // instead of as one fused call (block-layer.ts); logits and KV must not change.
    const [unfused] = forward(model, [{ ids: next, past: cache.past(), logits: 'all', returnAttention: true }]);
    next.forEach((_, i) => expectSameBits(unfused!.logits[i]!, multi!.logits[i]!, `row ${i}: layer op by op vs fused`));
    unfused!.newKv.forEach((kv, l) => {
      expectSameBits(kv!.k.dataSync() as Float32Array, multi!.newKv[l]!.k.dataSync() as Float32Array, `layer ${l} keys: op by op vs fused`);
      expectSameBits(kv!.v.dataSync() as Float32Array, multi!.newKv[l]!.v.dataSync() as Float32Array, `layer ${l} values: op by op vs fused`);
      tf.dispose([kv!.k, kv!.v]);
    });
    multi!.newKv.forEach((kv) => kv && tf.dispose([kv.k, kv.v]));
    // Beside other sequences in one batch: a decode row of another cache and a prefill.
    const other = prefill(model, prompt.slice(0, 9), 4);
    try {
      const batch = forward(model, [
        { ids: [9], past: other.past() },
        { ids: [next[0]!], past: cache.past() },
        { ids: [5, 6, 7], logits: 'all' },
      ]);
      expectSameBits(batch[1]!.logits[0]!, alone[0]!, 'decode row batched with other sequences vs alone');
      for (const r of batch) r.newKv.forEach((kv) => kv && tf.dispose([kv.k, kv.v]));
    } finally {
      other.dispose();
    }
    // Chunked prefill gives the same cache as one chunk: the next step's logits agree.
    const chunked = prefill(model, prompt, chunk);
    try {
      const [r] = forward(model, [{ ids: [next[0]!], past: chunked.past() }]);
      expectSameBits(r!.logits[0]!, alone[0]!, `decode after a prefill in chunks of ${chunk} vs in one`);
      r!.newKv.forEach((kv) => kv && tf.dispose([kv.k, kv.v]));
    } finally {
      chunked.dispose();
    }
  } finally {
    cache.dispose();
  }
}

beforeAll(async () => {
  await initBackend();
});

describe('forward rows are independent of the call they run in (bit for bit)', () => {
  const shape = { hiddenSize: 64, numHeads: 4, numKvHeads: 2, headDim: 16, intermediateSize: 96, numLayers: 3, vocabSize: 96 };
  let baseline = 0;
  beforeAll(() => {
    baseline = tf.memory().numTensors;
  });
  afterAll(() => {
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('on a float checkpoint (f32 blocks on wasm)', () => {
    const model = randomModel(shape, 5);
    try {
      checkRowIndependence(model, longPrompt, longNext, 16);
    } finally {
      model.dispose();
    }
  });

  for (const type of ['q8_0', 'q4_1', 'f16'] as const) {
    it(`on ${type} block weights (wasm kernels)`, () => {
      const model = quantizeModel(randomModel(shape, 5), type);
      try {
        checkRowIndependence(model, longPrompt, longNext, 16);
      } finally {
        model.dispose();
      }
    });
  }

  it('on q4_1 block weights over a q8 KV cache (lossy, but each row its own bits still)', () => {
    const model = quantizeModel(randomModel(shape, 5), 'q4_1');
    model.kvCache = 'q8';
    try {
      checkRowIndependence(model, longPrompt, longNext, 16);
    } finally {
      model.dispose();
    }
  });
});

const smolDir = fileURLToPath(new URL('../../models/smollm2-135m-instruct/', import.meta.url));
const haveSmol = existsSync(`${smolDir}SmolLM2-135M-Instruct.Q4_1.gguf`);
if (!haveSmol) console.warn('SmolLM2 row-independence test skipped: models/smollm2-135m-instruct is not pulled (npx skein pull smollm2-135m-instruct)');

describe.skipIf(!haveSmol)('on SmolLM2-135M Q4_1 (the default model)', () => {
  it('a verification row equals the decode step, batched rows equal alone', async () => {
    const model = await loadModel(smolDir);
    try {
      // Shorter than the random models' case (those cover the long shapes): same checks.
      checkRowIndependence(model, [1, 504, 2683, 314, 5248, 28, 3358, 30, 253, 1123, 2391, 282], [357, 314, 1380, 30], 5);
    } finally {
      model.dispose();
    }
  }, 120_000);
});
