import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../backend.js';
import { PRESETS, paramTable, type TrainModelConfig } from './config.js';
import { computeGrads, paramTensors } from './grads.js';
import { forwardConsts, headLoss, hiddenStates, lossFn, tokenNll, type Batch } from './forward.js';
import { initParams } from './init.js';
import { Rng } from './rng.js';
import { exportModel, fromHfTensors, toHfTensors } from './export.js';
import { loadModel } from '../checkpoint/load.js';
import { referenceForward } from '../model/reference.js';

const cfg: TrainModelConfig = { ...PRESETS.tiny, headDim: 8, numHeads: 4, numKvHeads: 2 };
const table = paramTable(cfg);
const all = [0, 1];
let tmp: string;

function randomParams(seed: number): Float32Array {
  const flat = new Float32Array(table.total);
  initParams(table, flat, Rng.fromSeed(seed), 0.3);
  // Norm weights away from 1, so a mix-up of norms would show.
  const r = Rng.fromSeed(seed + 1);
  for (const e of table.entries) if (!e.decay) for (let i = e.offset; i < e.offset + e.size; i++) flat[i] = 0.5 + r.next();
  return flat;
}

function randomBatch(rows: number, seqLen: number, seed: number): Batch {
  const r = Rng.fromSeed(seed);
  const ids = new Int32Array(rows * seqLen).map(() => r.int(cfg.vocabSize));
  const targets = new Int32Array(rows * seqLen).map(() => r.int(cfg.vocabSize));
  return { rows, seqLen, ids, targets };
}

beforeAll(async () => {
  await initBackend();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skein-train-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('training forward', () => {
  it('gives the same logits as the runtime reference forward on the exported model', async () => {
    const flat = randomParams(3);
    exportModel({ modelDir: tmp, config: cfg, params: flat, dtype: 'F32' });
    const model = await loadModel(tmp);
    const ids = [5, 17, 3, 60, 22, 9, 41];
    const batch = { rows: 1, seqLen: ids.length, ids: Int32Array.from(ids), targets: new Int32Array(ids.length) };
    for (const layers of [all, [1]]) {
      const ours = tf.tidy(() => {
        const p = paramTensors(table, flat, table.entries.map((e) => e.name));
        const h = hiddenStates(cfg, p, batch, layers, forwardConsts(cfg, ids.length));
        return tf.matMul(h, tf.transpose(p.get('embed')!) as tf.Tensor2D).arraySync() as number[][];
      });
      const ref = tf.tidy(() => referenceForward(model, ids, { layers }));
      ref.logits.forEach((row, t) => {
        let maxDiff = 0;
        row.forEach((x, j) => (maxDiff = Math.max(maxDiff, Math.abs(x - ours[t][j]))));
        expect(maxDiff).toBeLessThan(1e-3);
      });
    }
    model.dispose();
  });

  it('round-trips the parameters through the Hugging Face names and layout', () => {
    const flat = randomParams(4);
    const back = fromHfTensors(table, toHfTensors(table, flat));
    expect(back).toEqual(flat);
    expect(Object.keys(toHfTensors(table, flat))).toContain('model.layers.1.self_attn.q_proj.weight');
  });

  it('has gradients that match finite differences', () => {
    const flat = randomParams(5);
    const batch = randomBatch(2, 6, 6);
    const k = forwardConsts(cfg, 6);
    const g = new Float32Array(table.total);
    const base = tf.memory().numTensors;
    computeGrads(cfg, table, flat, batch, all, k, g);
    expect(tf.memory().numTensors).toBe(base);
    const f = (x: Float32Array) => tf.tidy(() => lossFn(cfg, paramTensors(table, x, table.entries.map((e) => e.name)), batch, all, k).dataSync()[0]);
    const r = Rng.fromSeed(9);
    for (let t = 0; t < 12; t++) {
      const i = r.int(table.total);
      const eps = 1e-2;
      const a = flat.slice();
      a[i] += eps;
      const b = flat.slice();
      b[i] -= eps;
      const num = (f(a) - f(b)) / (2 * eps);
      expect(Math.abs(num - g[i])).toBeLessThan(2e-3 + 0.03 * Math.abs(num));
    }
  });

  it('computes the same loss in headLoss as a plain log-softmax cross-entropy', () => {
    const flat = randomParams(7);
    const batch = randomBatch(1, 5, 8);
    batch.targets[2] = -1;
    const loss = tf.tidy(() => {
      const p = paramTensors(table, flat, table.entries.map((e) => e.name));
      const h = hiddenStates(cfg, p, batch, all, forwardConsts(cfg, 5));
      const nll = tokenNll(h, p.get('embed') as tf.Tensor2D, batch.targets);
      const ours = headLoss(h, p.get('embed') as tf.Tensor2D, batch.targets).dataSync()[0];
      return { ours, nllMean: (nll.reduce((x, y) => x + y, 0)) / 4 };
    });
    expect(loss.ours).toBeCloseTo(loss.nllMean, 4);
  });
});
