import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../backend.js';
import { releasePrepared } from '../model/forward.js';
import { randomModel } from '../model/random.js';
import { referenceForward } from '../model/reference.js';
import type { LoadedModel } from '../model/types.js';
import { generate, generateAll, type GenerateTokenizer } from './generate.js';
import { argmax } from './sampler.js';

/** One letter per id, so stop strings can be written as text. */
const letters: GenerateTokenizer = {
  encode: (text) => Array.from(text, (ch) => ch.charCodeAt(0) - 97),
  detokenizer: () => ({ push: (id: number) => String.fromCharCode(97 + (id % 26)), flush: () => '' }),
  eosIds: [],
};

let model: LoadedModel;
let baseline = 0;
beforeAll(async () => {
  await initBackend();
  baseline = tf.memory().numTensors;
  model = randomModel({ numHeads: 4, numKvHeads: 2, vocabSize: 26, eosTokenIds: [] }, 3);
});
afterAll(() => {
  model.dispose();
  expect(tf.memory().numTensors).toBe(baseline);
});

function greedyReference(prompt: number[], n: number): number[] {
  const ids = [...prompt];
  for (let i = 0; i < n; i++) ids.push(argmax(referenceForward(model, ids).logits.at(-1)!));
  return ids.slice(prompt.length);
}

describe('generate', () => {
  it('greedy generation equals the reference, batched or alone', async () => {
    const prompts = [[1, 2, 3], [4, 5, 6, 7, 8], [9]];
    const together = await generateAll(model, null, prompts.map((ids) => ({ ids })), { maxTokens: 6, prefillChunk: 2 });
    for (let i = 0; i < prompts.length; i++) {
      const expected = greedyReference(prompts[i]!, 6);
      expect(together[i]!.ids).toEqual(expected);
      expect(together[i]!.finishReason).toBe('length');
      const [alone] = await generateAll(model, null, [{ ids: prompts[i]! }], { maxTokens: 6 });
      expect(alone!.ids).toEqual(expected);
    }
    expect(together[0]!.metrics.decodeTokensPerSec).toBeGreaterThan(0);
  });

  it('stops on eos ids without emitting them', async () => {
    const expected = greedyReference([1, 2, 3], 4);
    const eosModel = { ...model, config: { ...model.config, eosTokenIds: [expected[2]!] } };
    const [r] = await generateAll(eosModel, null, [{ ids: [1, 2, 3] }], { maxTokens: 10 });
    expect(r!.finishReason).toBe('eos');
    expect(r!.ids).toEqual(expected.slice(0, 2));
    releasePrepared(eosModel); // the copy got its own prepared weights
  });

  it('stops on a stop string, trims it, and streams only the kept text', async () => {
    const full = greedyReference([1, 2, 3], 8).map((id) => String.fromCharCode(97 + id)).join('');
    const stop = full.slice(3, 5);
    const streamed: string[] = [];
    const [r] = await generateAll(model, letters, [{ prompt: 'bcd' }], { maxTokens: 8, stop: [stop] }, (e) => {
      if (e.type === 'token') streamed.push(e.text);
    });
    const cut = full.indexOf(stop);
    expect(r!.finishReason).toBe('stop');
    expect(r!.text).toBe(full.slice(0, cut));
    expect(streamed.join('')).toBe(r!.text);
  });

  it('samples reproducibly per seed and frees KV when the consumer stops early', async () => {
    const run = (seed: number) => generateAll(model, null, [{ ids: [1, 2] }], { maxTokens: 8, temperature: 1, seed });
    expect((await run(5))[0]!.ids).toEqual((await run(5))[0]!.ids);
    const before = tf.memory().numTensors;
    for await (const e of generate(model, null, [{ ids: [1, 2] }, { ids: [3] }], { maxTokens: 50 })) {
      if (e.type === 'token') break;
    }
    expect(tf.memory().numTensors).toBe(before);
  });
});
