/**
 * Embeddings: the mean of the reference forward's final hidden states, L2-normalised,
 * within 1e-4, on the main thread and through the worker; in chunks (an input longer than
 * a step's budget carries its KV to the next chunk) the same; typed errors naming the
 * field; a cancelled request frees the KV of its chunks.
 */
import * as tf from '@tensorflow/tfjs-core';
import { lastValueFrom } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadRequestError, ContextLengthError } from '../../core/errors.js';
import { makeTempCheckpoint } from '../../test/fixtures/checkpoints.js';
import { initBackend } from '../backend.js';
import { loadModel, loadTokenizer } from '../checkpoint/load.js';
import { forward } from '../model/forward.js';
import { referenceForward } from '../model/reference.js';
import type { LoadedModel } from '../model/types.js';
import { EmbeddingQueue, meanNormalised } from './embed.js';
import { createEngine } from './index.js';

const INPUTS = [[5, 6, 7, 1, 9], [3], [9, 8, 7, 6, 5, 4, 3, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]];
let ckpt: ReturnType<typeof makeTempCheckpoint>;
let model: LoadedModel;
let expected: Float32Array[];

/** The embedding computed directly: the reference forward's hidden rows, averaged and scaled to unit length. */
function referenceEmbedding(ids: number[]): Float32Array {
  const { hidden } = referenceForward(model, ids);
  const sum = new Float64Array(hidden[0]!.length);
  for (const row of hidden) row.forEach((x, d) => (sum[d]! += x));
  return meanNormalised(sum, hidden.length);
}

function expectClose(vectors: Float32Array[]) {
  expect(vectors).toHaveLength(expected.length);
  vectors.forEach((v, i) => {
    expect(v.length).toBe(model.config.hiddenSize);
    let worst = 0;
    v.forEach((x, d) => (worst = Math.max(worst, Math.abs(x - expected[i]![d]!))));
    expect(worst).toBeLessThan(1e-4);
    expect(Math.hypot(...v)).toBeCloseTo(1, 5);
  });
}

beforeAll(async () => {
  await initBackend();
  ckpt = makeTempCheckpoint({ numKvHeads: 2, maxPositionEmbeddings: 64, seed: 11 });
  model = await loadModel(ckpt.dir);
  expected = INPUTS.map(referenceEmbedding);
});
afterAll(() => {
  model?.dispose();
  ckpt.cleanup();
});

describe('forward with hiddenOnly', () => {
  it('gives hidden rows and no logits for that sequence, and leaves the others\' logits as they were alone', () => {
    const [a, b] = [INPUTS[0]!, INPUTS[2]!];
    const alone = forward(model, [{ ids: a, logits: 'all' }]);
    const mixed = forward(model, [{ ids: b, hiddenOnly: true }, { ids: a, logits: 'all' }, { ids: [4, 5], logits: 'last', returnHidden: true }]);
    for (const r of [...alone, ...mixed]) for (const kv of r.newKv) if (kv) tf.dispose([kv.k, kv.v]);
    expect(mixed[0]!.logits).toEqual([]);
    expect(mixed[0]!.hidden).toHaveLength(b.length);
    const ref = referenceForward(model, b).hidden;
    mixed[0]!.hidden!.forEach((row, t) => row.forEach((x, d) => expect(Math.abs(x - ref[t]![d]!)).toBeLessThan(1e-4)));
    mixed[1]!.logits.forEach((row, t) => row.forEach((x, j) => expect(Math.abs(x - alone[0]!.logits[t]![j]!)).toBeLessThan(1e-4)));
    expect(mixed[2]!.logits).toHaveLength(1);
    expect(mixed[2]!.hidden).toHaveLength(1);
  });
});

describe('EmbeddingQueue', () => {
  it('gives the reference embedding whole or in chunks of 4 tokens, and frees every chunk’s KV', async () => {
    // The first forward prepares the model's weights once: count tensors after it.
    const warm = new EmbeddingQueue(model);
    warm.submit('warm', [[1]], () => {}, (e) => { throw e; });
    warm.step();
    for (const perStep of [512, 4]) {
      const queue = new EmbeddingQueue(model, perStep);
      const baseline = tf.memory().numTensors;
      let out: Float32Array[] | undefined;
      queue.submit('r', INPUTS, (v) => (out = v), (e) => { throw e; });
      let steps = 0;
      while (queue.hasWork()) queue.step(), steps++;
      expect(steps).toBe(perStep === 4 ? Math.ceil(INPUTS.flat().length / 4) : 1);
      expectClose(out!);
      expect(tf.memory().numTensors).toBe(baseline);
    }
  });

  it('cancelled between chunks, frees the KV it carried', () => {
    const queue = new EmbeddingQueue(model, 4);
    queue.step();
    const baseline = tf.memory().numTensors;
    queue.submit('r', [INPUTS[2]!], () => { throw new Error('cancelled work must not answer'); }, (e) => { throw e; });
    queue.step();
    expect(tf.memory().numTensors).toBeGreaterThan(baseline);
    queue.cancel('r');
    expect(queue.hasWork()).toBe(false);
    expect(tf.memory().numTensors).toBe(baseline);
  });
});

describe.each(['main', 'worker'] as const)('Engine.embed on the %s thread', (thread) => {
  it('embeds ids as the reference does, and refuses bad requests naming the field', async () => {
    const engine = await createEngine({ model: ckpt.dir, thread, blockSize: 4, kvBudgetBlocks: 16 });
    try {
      const result = await lastValueFrom(engine.embed({ input: INPUTS, dimensions: model.config.hiddenSize }));
      expectClose(result.vectors);
      expect(result.tokens).toEqual(INPUTS.map((ids) => ids.length));
      expect(engine.stats().kvBlocksUsed).toBe(0);
      // A text is tokenized as a prompt is, in the core, then embedded the same way.
      const text = 'the cat sat on the mat';
      const [fromText] = (await lastValueFrom(engine.embed({ input: [text] }))).vectors;
      const direct = referenceEmbedding(loadTokenizer(ckpt.dir).encodePrompt(text));
      fromText!.forEach((x, d) => expect(Math.abs(x - direct[d]!)).toBeLessThan(1e-4));
      const refused = (input: Array<string | number[]>, dimensions?: number) =>
        lastValueFrom(engine.embed({ input, ...(dimensions !== undefined ? { dimensions } : {}) })).catch((e: unknown) => e);
      expect(await refused([[1, 2]], 3)).toMatchObject({ name: 'BadRequestError', field: 'dimensions' });
      expect(await refused([])).toBeInstanceOf(BadRequestError);
      expect(await refused([[1], []])).toMatchObject({ field: 'input[1]', message: expect.stringMatching(/is empty/) });
      expect(await refused([[1, 1_000_000]])).toMatchObject({ field: 'input[0]', message: expect.stringMatching(/outside the vocabulary/) });
      const long = await refused([[1], Array.from({ length: 65 }, () => 3)]);
      expect(long).toBeInstanceOf(ContextLengthError);
      expect(long).toMatchObject({ field: 'input[1]' });
      // A text whose length alone proves it past the context is refused without tokenizing it.
      expect(await refused(['x', 'x'.repeat(10_000)])).toMatchObject({ field: 'input[1]', message: expect.stringMatching(/10000 characters are at least \d+ tokens, the model's context is 64/) });
      expect(await refused(Array.from({ length: 513 }, () => [1]))).toMatchObject({ field: 'input', message: expect.stringMatching(/1 to 512 inputs/) });
      expect(await refused(Array.from({ length: 300 }, () => Array.from({ length: 60 }, () => 2)))).toMatchObject({ field: 'input', message: expect.stringMatching(/18000 tokens in all, more than the 16384/) });
    } finally {
      await engine.close();
    }
  });
});
