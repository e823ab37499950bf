/**
 * Adapting a random model to its kept layers (runtime/train/skip-train.ts): the student
 * without LoRA is the runtime's own shallow decode (full-depth prefix, kept layers after
 * it); a few steps of self-distillation cut the held-out KL; a run stopped and resumed
 * from its checkpoint ends with exactly the factors of an uninterrupted one.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import { initBackend } from '../backend.js';
import { forward } from '../model/forward.js';
import { randomModel } from '../model/random.js';
import type { LoadedModel } from '../model/types.js';
import { unifiedLayers } from '../stages/layer-selection.js';
import { _internal, trainSkip, type SkipSample } from './skip-train.js';

let model: LoadedModel;
const V = 64;

/** Samples whose continuation is the random model's own greedy one, like skip-data.ts makes. */
function samples(n: number, seed: number): SkipSample[] {
  let s = seed;
  const rand = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  return Array.from({ length: n }, () => {
    const ids = Array.from({ length: 6 + Math.floor(rand() * 6) }, () => 3 + Math.floor(rand() * (V - 3)));
    const promptLength = ids.length;
    for (let t = 0; t < 10; t++) {
      const [r] = forward(model, [{ ids }]);
      for (const e of r!.newKv) if (e) tf.dispose([e.k, e.v]);
      ids.push(r!.logits[0]!.indexOf(Math.max(...r!.logits[0]!)));
    }
    return { ids, promptLength };
  });
}

beforeAll(async () => {
  await initBackend();
  model = randomModel({ hiddenSize: 32, numHeads: 4, numKvHeads: 2, numLayers: 4, vocabSize: V, intermediateSize: 64 }, 5);
});
afterAll(() => model.dispose());

describe('skip adaptation training', () => {
  it('without LoRA, the student is the runtime forward on the kept layers after a full-depth prefix', () => {
    const layers = unifiedLayers(4, 2);
    const [sample] = samples(1, 9);
    const piece = { ids: sample!.ids, split: sample!.promptLength, rows: 6 };
    const frozen = _internal.freeze(model, layers);
    const teacher = _internal.teach(model, [piece], layers);
    const student = tf.tidy(() => tf.matMul(_internal.studentHidden(model, frozen, null, 1, [piece], teacher.past), model.weights.lmHead).dataSync() as Float32Array);
    const [pre] = forward(model, [{ ids: piece.ids.slice(0, piece.split), logits: 'none' }]);
    const [shallow] = forward(model, [{ ids: piece.ids.slice(piece.split, piece.split + 6), past: pre!.newKv.map((e) => ({ k: [e!.k], v: [e!.v] })), logits: 'all' }], { layers });
    shallow!.logits.forEach((row, t) => row.forEach((x, j) => expect(Math.abs(x - student[t * V + j]!)).toBeLessThan(2e-3)));
    for (const r of [pre!, shallow!]) for (const e of r.newKv) if (e) tf.dispose([e.k, e.v]);
    tf.dispose(teacher.tensors);
    _internal.disposeFrozen(frozen);
  });

  it('cuts the held-out KL in a few steps and resumes to the same factors', () => {
    const train = samples(12, 1);
    const heldOut = samples(4, 2);
    const before = tf.memory().numTensors;
    const o = { targetSpeedup: 2, batch: 4, window: 8, lr: 2e-2, checkpointEvery: 3 };
    const straight = trainSkip(model, train, heldOut, { ...o, steps: 24, stateDir: tempDir('skein-skip-') });
    const t = straight.meta.training!;
    expect(t.klAfter).toBeLessThan(t.klBefore * 0.7);
    expect(straight.meta.layers).toEqual(unifiedLayers(4, 2));
    const dir = tempDir('skein-skip-');
    trainSkip(model, train, heldOut, { ...o, steps: 9, stateDir: dir });
    const resumed = trainSkip(model, train, heldOut, { ...o, steps: 24, stateDir: dir });
    expect(resumed.meta.training!.steps).toBe(24);
    expect(resumed.meta.training!.klBefore).toBe(t.klBefore);
    resumed.lora.forEach((pairs, i) => {
      for (const p of straight.meta.projections) {
        expect(Array.from(pairs[p].a)).toEqual(Array.from(straight.lora[i]![p].a));
        expect(Array.from(pairs[p].b)).toEqual(Array.from(straight.lora[i]![p].b));
      }
    });
    expect(tf.memory().numTensors).toBe(before);
  });
});
