/**
 * The whole layer in one native call (MatmulKernels.layer, native/layer.inc.c) against the
 * same layer call by call (linearGroups, store, attention, mlpBlock): the same bits for
 * logits, new K/V rows and the stored copies attention reads later, for a batch of
 * sequences of different lengths over chunked caches, on quantized and float weights, f16
 * and f32 KV, with q/k/v and o biases. Skipped where the native kernels are not built.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { KvCache } from '../../test/fixtures/kv-cache.js';
import { initBackend } from '../backend.js';
import type { BlockType } from '../kernels/blocks.js';
import { MatmulKernels } from '../kernels/matmul.js';
import { nativeKernels } from '../kernels/native.js';
import { quantizeModel } from './block-weights.js';
import { forward, prepareModel } from './forward.js';
import { randomModel } from './random.js';
import type { LoadedModel, ModelConfig } from './types.js';

const shape: Partial<ModelConfig> = { hiddenSize: 64, numHeads: 4, numKvHeads: 2, headDim: 16, intermediateSize: 96, numLayers: 3, vocabSize: 96, qkvBias: true, oBias: true };
const prompts = [
  [3, 17, 42, 5, 9, 33, 60, 71, 2, 88, 14, 27],
  [8, 1, 90, 45],
];

function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

/**
 * Two sequences prefilled in chunks of 5, then a batched step of 3 rows and of 1 row: every
 * row's logits and new K/V (each layer's attention reads the stored copies of the earlier
 * ones). `layerByLayer`: every sequence carries a pruning step that keeps all its rows,
 * which makes the forward run its layers one call each instead of chained.
 */
function run(model: LoadedModel, layerByLayer = false): { logits: Float32Array[]; kv: Float32Array[] } {
  const keepAll = (n: number) => (layerByLayer ? { prune: [{ fromLayer: 1, keep: Array.from({ length: n }, (_, i) => i) }] } : {});
  const caches = prompts.map(() => new KvCache(model.config.numLayers, 4));
  const logits: Float32Array[] = [];
  const kv: Float32Array[] = [];
  const collect = (results: ReturnType<typeof forward>, seqs: number[]) =>
    results.forEach((r, j) => {
      logits.push(...r.logits);
      for (const e of r.newKv) kv.push(e!.k.dataSync() as Float32Array, e!.v.dataSync() as Float32Array);
      caches[seqs[j]!]!.append(r.newKv);
    });
  try {
    for (let at = 0; at < 12; at += 5) {
      const seqs = prompts.flatMap((p, i) => (at < p.length ? [i] : []));
      collect(forward(model, seqs.map((i) => ({ ids: prompts[i]!.slice(at, at + 5), past: caches[i]!.past(), logits: 'all' as const, ...keepAll(prompts[i]!.slice(at, at + 5).length) }))), seqs);
    }
    collect(forward(model, caches.map((c, i) => ({ ids: [11 + i, 40, 23], past: c.past(), logits: 'all' as const, ...keepAll(3) }))), [0, 1]);
    collect(forward(model, caches.map((c) => ({ ids: [66], past: c.past(), ...keepAll(1) }))), [0, 1]);
    return { logits, kv };
  } finally {
    for (const c of caches) c.dispose();
  }
}

let baseline = 0;
beforeAll(async () => {
  await initBackend();
  baseline = tf.memory().numTensors;
});
afterAll(() => {
  expect(tf.memory().numTensors).toBe(baseline);
});

describe.skipIf(nativeKernels()?.block_layers === undefined)('a layer in one native call equals the layer call by call (bit for bit)', () => {
  for (const type of ['q4_1', 'q8_0', 'q4_0', 'f16', 'f32'] as BlockType[]) {
    it(`on ${type} blocks (${type === 'f16' || type === 'f32' ? 'f32' : 'f16'} KV), biases on q/k/v and o`, () => {
      const model = quantizeModel(randomModel(shape, 7), type);
      try {
        const kernels = prepareModel(model).kernels;
        const layer = vi.spyOn(kernels, 'layer');
        const layers = vi.spyOn(kernels, 'layers');
        kernels.setFusedLayers(false);
        const apart = run(model);
        expect(layers).not.toHaveBeenCalled();
        const stored = kernels.storedBytes;
        kernels.setFusedLayers(true);
        const same = (got: ReturnType<typeof run>) => {
          expect(kernels.storedBytes).toBe(stored);
          expect(got.logits.length).toBe(apart.logits.length);
          expect(got.logits.every((l, i) => sameBits(l, apart.logits[i]!))).toBe(true);
          expect(got.kv.length).toBe(apart.kv.length);
          expect(got.kv.every((x, i) => sameBits(x, apart.kv[i]!))).toBe(true);
        };
        // One call per layer: 3 layers × (3 prefill chunks + 2 steps).
        same(run(model, true));
        expect(layer).toHaveBeenCalledTimes(15);
        expect(layers).toHaveBeenCalledTimes(15);
        // All layers in one call per forward.
        same(run(model));
        expect(layer).toHaveBeenCalledTimes(15);
        expect(layers).toHaveBeenCalledTimes(20);
        layer.mockRestore();
        layers.mockRestore();
      } finally {
        model.dispose();
      }
    });
  }

  it('on two threads fuses only layers whose products would not split, and refuses a layer whose sequences do not hold its rows', () => {
    const model = quantizeModel(randomModel(shape, 7), 'q4_1');
    try {
      const L = model.blockWeights!.layers[0]!;
      // The widest weight (gate, up: 96×64) is 6,144 multiply-adds a row: one row stays under 10,000, two do not.
      const kernels = new MatmulKernels({ threads: 2, splitMinWork: 10_000, nativePool: false });
      const up = (m: typeof L.wq) => kernels.upload(m);
      const norm = { weight: new Float32Array(64).fill(1), eps: 1e-5 };
      const weights = { groups: [[{ weight: up(L.wq) }], [{ weight: up(L.wk) }], [{ weight: up(L.wv) }]], norm, mlp: { o: up(L.wo), bo: null, norm, gate: up(L.wGate), up: up(L.wUp), down: up(L.wDown) } };
      const shape = { heads: 4, kvHeads: 2, headDim: 16 };
      const rows = (n: number) => ({ n, keys: [], values: [], visible: new Uint8Array(n * n).fill(1) });
      expect(kernels.fusesLayer(weights)).toBe(true);
      expect(kernels.fusesLayer({ ...weights, shape, seqs: [rows(1)] })).toBe(true);
      expect(kernels.fusesLayer({ ...weights, shape, seqs: [rows(2)] })).toBe(false);
      expect(kernels.fusesLayer({ ...weights, shape, seqs: [rows(1), rows(1)] })).toBe(false);
      kernels.setThreads(1);
      expect(kernels.fusesLayer({ ...weights, shape, seqs: [rows(2)] })).toBe(true);
      const op = { ...weights, rotary: null, shape, kv: 'f16' as const, seqs: [rows(1)] };
      const zeros = (n: number) => new Float32Array(n);
      expect(() => kernels.layer(op, zeros(128), 2, zeros(128), zeros(64), zeros(64))).toThrow(/sequences hold 1 rows, x has 2/);
      expect(kernels.storedBytes).toBe(0);
    } finally {
      model.dispose();
    }
  });
});

describe.skipIf(nativeKernels()?.pool === undefined || nativeKernels()?.block_layers === undefined)('the native pool (SKEIN_THREADS ≥ 2) gives one thread\'s bits', () => {
  for (const type of ['q4_1', 'q8_0', 'f16'] as BlockType[]) {
    it(`on ${type} blocks, on 2 and 3 threads: chained, layer by layer and call by call, every product cut into pieces`, () => {
      const model = quantizeModel(randomModel(shape, 7), type);
      const kernels = prepareModel(model).kernels;
      try {
        const one = run(model);
        // Pieces of any size, so that this model's small products split too.
        kernels.setPoolPieceWork(1);
        const before = kernels.poolCounts();
        for (const threads of [2, 3]) {
          kernels.setThreads(threads);
          expect(kernels.poolWidth).toBe(threads);
          for (const fused of [true, false]) {
            kernels.setFusedLayers(fused);
            for (const layerByLayer of [false, true]) {
              const got = run(model, layerByLayer);
              const where = `${threads} threads, ${fused ? (layerByLayer ? 'layer by layer' : 'chained') : 'call by call'}`;
              expect(got.logits.every((l, i) => sameBits(l, one.logits[i]!)), where).toBe(true);
              expect(got.kv.every((x, i) => sameBits(x, one.kv[i]!)), where).toBe(true);
            }
          }
        }
        // Parts went to the pool (whether a helper ran them depends on the machine's load: the caller runs any part no helper has claimed).
        expect(kernels.poolCounts().posted).toBeGreaterThan(before.posted);
      } finally {
        kernels.setThreads(1);
        kernels.setPoolPieceWork(0);
        kernels.setFusedLayers(true);
        model.dispose();
      }
    });
  }

  it('splits a lone decode row\'s keys (≥ 256) between two threads with one thread\'s bits', () => {
    const model = quantizeModel(randomModel(shape, 8), 'q8_0');
    const kernels = prepareModel(model).kernels;
    /** A 300-token prompt in two chunks, then three lone decode steps: their logits and new K/V. */
    const decodeLong = () => {
      const cache = new KvCache(model.config.numLayers, 16);
      const out: Float32Array[] = [];
      try {
        const prompt = Array.from({ length: 300 }, (_, i) => (i * 37 + 11) % 96);
        for (const ids of [prompt.slice(0, 150), prompt.slice(150)]) cache.append(forward(model, [{ ids, past: cache.past() }])[0]!.newKv);
        for (const id of [5, 61, 30]) {
          const [r] = forward(model, [{ ids: [id], past: cache.past() }]);
          out.push(...r!.logits);
          for (const e of r!.newKv) out.push(e!.k.dataSync() as Float32Array, e!.v.dataSync() as Float32Array);
          cache.append(r!.newKv);
        }
        return out;
      } finally {
        cache.dispose();
      }
    };
    try {
      const one = decodeLong();
      kernels.setThreads(2);
      for (const fused of [true, false]) {
        kernels.setFusedLayers(fused);
        const two = decodeLong();
        expect(two.every((x, i) => sameBits(x, one[i]!)), fused ? 'chained' : 'call by call').toBe(true);
      }
    } finally {
      kernels.setThreads(1);
      kernels.setFusedLayers(true);
      model.dispose();
    }
  });
});
