/**
 * Speculative heads at decode time (runtime/heads/heads.ts): on the block-kernel path the
 * heads run off tfjs (Q8_0 matrices, top-k in JS) and propose what the tfjs maths would,
 * for Medusa and Cerberus, with and without the pending token's embedding; the pending
 * token changes what heads trained to read it propose; topColumns ranks like tf.topk.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../backend.js';
import { prepareModel } from '../model/forward.js';
import { embedTokens } from '../model/kernels.js';
import { randomModel } from '../model/random.js';
import type { LoadedModel } from '../model/types.js';
import { headInput, type HeadsKind } from './files.js';
import { headOutputs, SpeculativeHeads, topColumns } from './heads.js';

const D = 64;
const V = 128;
const K = 3;
let model: LoadedModel;

beforeAll(async () => {
  await initBackend();
  model = randomModel({ hiddenSize: D, numHeads: 4, numKvHeads: 2, numLayers: 1, vocabSize: V }, 7);
});
afterAll(() => model.dispose());

function randomData(kind: HeadsKind, pendingToken: boolean, seed: number) {
  let s = seed;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 0.5;
  return {
    meta: { kind, numHeads: K, hiddenSize: D, vocabSize: V, tree: [[0]], gateThreshold: null, ...(pendingToken ? { pendingToken } : {}) },
    weights: Array.from({ length: K }, (_, k) => Float32Array.from({ length: headInput(kind, k, D, pendingToken) * D }, rand)),
    biases: Array.from({ length: K }, () => Float32Array.from({ length: D }, rand)),
  };
}

/** Each head's logits for the rows by tfjs alone (headOutputs, then the whole LM head): [row][head] → logits. */
function reference(data: ReturnType<typeof randomData>, rows: Float32Array[], pending: number[]): Float32Array[][] {
  const logits = tf.tidy(() => {
    const h = tf.tensor2d(rows.flatMap((r) => Array.from(r)), [rows.length, D]);
    const e = data.meta.pendingToken ? embedTokens(model.weights.embed, pending) : null;
    const w = data.weights.map((x) => tf.tensor2d(x, [x.length / D, D]));
    const b = data.biases.map((x) => tf.tensor1d(x));
    return headOutputs(data.meta.kind, h, w, b, tf.matMul, e).map((z) => tf.matMul(z, model.weights.lmHead).arraySync() as number[][]);
  });
  return rows.map((_, r) => logits.map((perHead) => Float32Array.from(perHead[r]!)));
}

describe('speculative heads on the block kernels', () => {
  it('topColumns ranks like tf.topk, ties to the lower column', () => {
    const x = Float32Array.from([0.5, 2, -1, 2, 7, 0, 0, 0, -Infinity, 3]);
    expect(Array.from(topColumns(x, 2, 5, 3))).toEqual([4, 1, 3, 4, 0, 1]);
  });

  for (const kind of ['medusa', 'cerberus'] as const) {
    for (const pendingToken of [false, true]) {
      it(`${kind}${pendingToken ? ' reading the pending token' : ''}: propose the tfjs maths' top tokens`, () => {
        expect(prepareModel(model).blocks).not.toBeNull();
        const data = randomData(kind, pendingToken, 3);
        const heads = new SpeculativeHeads(model, data);
        const rows = Array.from({ length: 5 }, (_, r) => Float32Array.from({ length: D }, (_, i) => Math.sin(i * 0.7 + r)));
        const pending = [3, 50, 3, 127, 9];
        const before = tf.memory().numTensors;
        const out = heads.candidates(rows, [3, 3, 3], pending);
        expect(tf.memory().numTensors).toBe(before);
        const ref = reference(data, rows, pending);
        let compared = 0;
        out.forEach((perHead, r) =>
          perHead.forEach((cands, k) => {
            const logits = ref[r]![k]!;
            const sorted = Array.from(logits).sort((a, b) => b - a);
            // Q8_0 head weights move a logit by well under this; closer calls may swap.
            if (sorted[0]! - sorted[1]! < 0.05) return;
            expect(cands[0]).toBe(logits.indexOf(sorted[0]!));
            compared++;
          }),
        );
        expect(compared).toBeGreaterThan(8);
        heads.dispose();
      });
    }
  }

  it('heads reading the pending token propose differently for different pending tokens; plain heads do not', () => {
    const row = [Float32Array.from({ length: D }, (_, i) => Math.cos(i))];
    for (const pendingToken of [true, false]) {
      const heads = new SpeculativeHeads(model, randomData('cerberus', pendingToken, 11));
      const picks = [1, 40, 77, 120].map((p) => JSON.stringify(heads.candidates(row, [4, 4, 4], [p])));
      expect(new Set(picks).size > 1).toBe(pendingToken);
      heads.dispose();
    }
  });

  it('refuse a pending token per row that is missing', () => {
    const heads = new SpeculativeHeads(model, randomData('medusa', true, 5));
    expect(() => heads.candidates([new Float32Array(D), new Float32Array(D)], [2, 0, 0], [1])).toThrow(/2 hidden rows but 1 pending tokens/);
    heads.dispose();
  });
});
