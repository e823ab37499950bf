import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import { loadWarmTempModel, type WarmModel } from '../../test/fixtures/warm-model.js';
import { LLAMA_3_2_1B, writeRandomGguf } from '../bench/random-gguf.js';
import { loadModel } from '../checkpoint/load.js';
import { forward } from '../model/forward.js';
import type { LoadedModel } from '../model/types.js';
import { negLogProb } from './compress.js';
import { ScorerHead } from './scorer-head.js';

/** −log softmax over the columns `vocab` only, at column `id`, in float64. */
function restrictedNll(logits: Float32Array, vocab: readonly number[], id: number): number {
  return negLogProb(Float32Array.from(vocab, (v) => logits[v]!), vocab.indexOf(id));
}

/** The head's information against the forward's own logits, for both vocabularies. */
function check(model: LoadedModel, ids: number[]): void {
  const before = tf.memory().numTensors;
  const [r] = forward(model, [{ ids, logits: 'all', returnHidden: true }]);
  tf.dispose(r!.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
  const h = model.config.hiddenSize;
  const rows = tf.tensor2d(Float32Array.from(r!.hidden!.slice(0, -1).flatMap((x) => [...x])), [ids.length - 1, h]);
  const targets = ids.slice(1);
  const vocab = [...new Set(ids)].sort((a, b) => a - b);
  for (const kind of ['full', 'context'] as const) {
    const head = new ScorerHead(model, kind, ids);
    const info = head.information(rows, targets);
    head.dispose();
    targets.forEach((t, i) => {
      const want = kind === 'full' ? negLogProb(r!.logits[i]!, t) : restrictedNll(r!.logits[i]!, vocab, t);
      expect(Math.abs(info[i]! - want)).toBeLessThan(2e-3 * Math.max(1, want));
    });
    if (kind === 'context') {
      // The restricted normaliser sums over fewer ids: never more surprising than the full one.
      const full = new ScorerHead(model, 'full', ids);
      const all = full.information(rows, targets);
      full.dispose();
      targets.forEach((_, i) => expect(info[i]!).toBeLessThanOrEqual(all[i]! + 1e-4));
    }
  }
  rows.dispose();
  expect(tf.memory().numTensors).toBe(before);
}

describe('ScorerHead', () => {
  let warm: WarmModel;
  beforeAll(async () => {
    warm = await loadWarmTempModel({ seed: 5 });
  });
  afterAll(() => warm.dispose());

  it('f32 head: full and context information equal the forward logits\' (context: softmax over the prompt\'s ids)', () => {
    check(warm.model, warm.tok.encode('The miller keeps the price at 3.14 coins, and the miller keeps the mill.'));
  });

  it('GGUF q8_0 head: the same from the quantized blocks', async () => {
    const file = path.join(tempDir('skein-scorer-head-'), 'q8.gguf');
    writeRandomGguf(file, { ...LLAMA_3_2_1B, numLayers: 2, vocabSize: 640, hiddenSize: 128, intermediateSize: 256, numHeads: 4, numKvHeads: 2 }, 'q8_0', 4);
    const model = await loadModel(file);
    try {
      expect(model.blockWeights).toBeDefined();
      // The first forward and head call prepare the model's kernels' state (it lives with the model).
      tf.tidy(() => void new ScorerHead(model, 'full', [1]).information(tf.zeros([1, 128]) as tf.Tensor2D, [1]));
      check(model, [5, 17, 300, 17, 42, 639, 5, 5, 88, 300, 1]);
    } finally {
      model.dispose();
    }
  });

  it('refuses a target outside the prompt\'s ids under the context vocabulary', () => {
    const head = new ScorerHead(warm.model, 'context', [3, 4, 5]);
    const rows = tf.zeros([1, warm.model.config.hiddenSize]) as tf.Tensor2D;
    expect(() => head.information(rows, [6])).toThrow(/token 6 is not among the prompt's ids/);
    rows.dispose();
    head.dispose();
  });
});
