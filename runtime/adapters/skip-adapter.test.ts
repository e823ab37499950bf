/**
 * Skip adapters on disk and merged (runtime/adapters): a written adapter reads back the
 * same; every mismatch is a CheckpointError naming the file (and tensor); the merge is
 * W + scale·A·B as tfjs computes it, exactly for a float model and within the q8_0 step
 * for a block model, whose f32 tensors are its blocks dequantized.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../../core/errors.js';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import { initBackend } from '../backend.js';
import { dequantizeMatrix } from '../kernels/blocks.js';
import { quantizeModel } from '../model/block-weights.js';
import { mulberry32, randomModel } from '../model/random.js';
import type { LoadedModel } from '../model/types.js';
import { unifiedLayers } from '../stages/layer-selection.js';
import { adaptedModel } from './adapted-model.js';
import { LORA_PROJECTIONS, projectionShape, readSkipAdapter, writeSkipAdapter, type SkipAdapter } from './skip-adapter.js';

const L = 4;
const SHA = 'ab'.repeat(32);
let model: LoadedModel;

function adapter(m: LoadedModel, rank = 2, seed = 1): SkipAdapter {
  const rng = mulberry32(seed);
  const layers = unifiedLayers(L, 2);
  return {
    meta: { format: 'skein-skip-adapter', base: { file: 'base.gguf', sha256: SHA }, targetSpeedup: 2, numLayers: L, layers, rank, scale: 1.5, projections: [...LORA_PROJECTIONS] },
    lora: layers.map(() => {
      const pairs = {} as SkipAdapter['lora'][number];
      for (const p of LORA_PROJECTIONS) {
        const [i, o] = projectionShape(m.config, p);
        // f16-exact values, so the file (stored as f16) reads back bit for bit.
        pairs[p] = { a: Float32Array.from({ length: i * rank }, () => Math.round((rng() - 0.5) * 64) / 64), b: Float32Array.from({ length: rank * o }, () => Math.round((rng() - 0.5) * 64) / 256) };
      }
      return pairs;
    }),
  };
}

beforeAll(async () => {
  await initBackend();
  model = randomModel({ hiddenSize: 32, numHeads: 4, numKvHeads: 2, numLayers: L, vocabSize: 64, intermediateSize: 64 }, 5);
});
afterAll(() => model.dispose());

describe('skip adapter files', () => {
  it('reads back what was written', () => {
    const a = adapter(model);
    const file = writeSkipAdapter(tempDir('skein-adapter-'), a);
    expect(path.basename(file)).toBe('skip-r2.json');
    const b = readSkipAdapter(file, model.config, SHA);
    expect(b.meta).toEqual(a.meta);
    b.lora.forEach((pairs, i) => LORA_PROJECTIONS.forEach((p) => expect(Array.from(pairs[p].b)).toEqual(Array.from(a.lora[i]![p].b))));
  });

  it('refuses a missing file, another base, other layers, a bad shape and bad JSON with a CheckpointError naming the problem', () => {
    const dir = tempDir('skein-adapter-');
    const file = writeSkipAdapter(dir, adapter(model));
    const fail = (f: () => unknown, pattern: RegExp) => {
      try {
        f();
      } catch (err) {
        expect(err).toBeInstanceOf(CheckpointError);
        expect((err as Error).message).toMatch(pattern);
        return err as CheckpointError;
      }
      throw new Error('expected a CheckpointError');
    };
    fail(() => readSkipAdapter(path.join(dir, 'skip-r3.json'), model.config, SHA), /skip-r3\.json.*no such file/);
    fail(() => readSkipAdapter(file, model.config, 'cd'.repeat(32)), /made for base base\.gguf/);
    fail(() => readSkipAdapter(file, { ...model.config, numLayers: 6 }, SHA), /made for 4 layers/);
    const meta = JSON.parse(fs.readFileSync(file, 'utf8'));
    fs.writeFileSync(file, JSON.stringify({ ...meta, layers: [0, 1] }));
    fail(() => readSkipAdapter(file, model.config, SHA), /layers \[0, 1\] are not the ones a 2× target keeps \(\[0, 3\]\)/);
    fs.writeFileSync(file, JSON.stringify({ ...meta, rank: 3 }));
    const e = fail(() => readSkipAdapter(file, model.config, SHA), /shape \[32, 2\], expected \[32, 3\]/);
    expect(e.tensor).toBe('layers.0.wq.a');
    fs.writeFileSync(file, '{ no');
    fail(() => readSkipAdapter(file, model.config, SHA), /not JSON/);
  });
});

describe('merging an adapter', () => {
  it('is W + scale·A·B on the kept layers of a float model, and nothing else changes', () => {
    const a = adapter(model);
    const view = adaptedModel(model, a);
    a.meta.layers.forEach((l, i) => {
      for (const p of LORA_PROJECTIONS) {
        const pair = a.lora[i]![p];
        const [inDim, outDim] = projectionShape(model.config, p);
        const want = tf.tidy(() => tf.add(model.weights.layers[l]![p], tf.mul(tf.matMul(tf.tensor2d(pair.a, [inDim, 2]), tf.tensor2d(pair.b, [2, outDim])), 1.5)).dataSync());
        const got = view.weights.layers[l]![p].dataSync();
        got.forEach((x, j) => expect(Math.abs(x - want[j]!)).toBeLessThan(1e-6));
      }
    });
    expect(view.weights.layers[1]).toBe(model.weights.layers[1]);
    expect(view.weights.lmHead).toBe(model.weights.lmHead);
    view.dispose();
  });

  it('re-quantizes a block model\'s merged projections (to their own type by default) and keeps f32 tensors equal to the blocks', () => {
    const q = quantizeModel(randomModel({ hiddenSize: 32, numHeads: 4, numKvHeads: 2, numLayers: L, vocabSize: 64, intermediateSize: 64 }, 5), 'q4_1');
    const a = adapter(q);
    const before = tf.memory().numTensors;
    for (const blockType of ['q8_0', undefined] as const) {
      const view = adaptedModel(q, a, blockType ? { blockType } : {});
      const l = a.meta.layers[1]!;
      const blocks = view.blockWeights!.layers[l]!.wGate;
      expect(blocks.type).toBe(blockType ?? 'q4_1');
      const [inDim, outDim] = projectionShape(q.config, 'wGate');
      const exact = tf.tidy(() =>
        tf.add(q.weights.layers[l]!.wGate, tf.mul(tf.matMul(tf.tensor2d(a.lora[1]!.wGate.a, [inDim, 2]), tf.tensor2d(a.lora[1]!.wGate.b, [2, outDim])), 1.5)).dataSync(),
      );
      const deq = dequantizeMatrix(blocks); // (out, in)
      const f32 = view.weights.layers[l]!.wGate.dataSync(); // (in, out)
      const step = blockType === 'q8_0' ? 0.02 : 0.2;
      for (let i = 0; i < inDim; i++) {
        for (let o = 0; o < outDim; o++) {
          expect(f32[i * outDim + o]).toBe(deq[o * inDim + i]);
          expect(Math.abs(f32[i * outDim + o]! - exact[i * outDim + o]!)).toBeLessThan(step);
        }
      }
      expect(view.blockWeights!.layers[1]).toBe(q.blockWeights!.layers[1]);
      expect(view.ownedBytes.blocks).toBeGreaterThan(0);
      view.dispose();
      expect(tf.memory().numTensors).toBe(before);
    }
    q.dispose();
  });

  it('reads none of a block model\'s f32 tensors and makes its own on first read only (a GGUF model makes them lazily)', () => {
    const q = quantizeModel(randomModel({ hiddenSize: 32, numHeads: 4, numKvHeads: 2, numLayers: L, vocabSize: 64, intermediateSize: 64 }, 5), 'q4_1');
    const a = adapter(q);
    // The base's projections and lm head as getters that count their reads, as a GGUF load defines them.
    const reads: string[] = [];
    const layers = q.weights.layers.map((layer, l) => {
      const copy = { ...layer };
      for (const p of LORA_PROJECTIONS) Object.defineProperty(copy, p, { enumerable: true, get: () => (reads.push(`${l}.${p}`), layer[p]) });
      return copy;
    });
    const weights = { ...q.weights, layers };
    Object.defineProperty(weights, 'lmHead', { enumerable: true, get: () => (reads.push('lmHead'), q.weights.lmHead) });
    const lazy: LoadedModel = { ...q, weights };
    const before = tf.memory().numTensors;
    const view = adaptedModel(lazy, a);
    expect(reads).toEqual([]);
    expect(view.ownedBytes.tensors).toBe(0);
    expect(tf.memory().numTensors).toBe(before);
    const l = a.meta.layers[1]!;
    const [inDim, outDim] = projectionShape(q.config, 'wUp');
    const f32 = view.weights.layers[l]!.wUp;
    expect(f32).toBe(view.weights.layers[l]!.wUp);
    expect(f32.shape).toEqual([inDim, outDim]);
    const deq = dequantizeMatrix(view.blockWeights!.layers[l]!.wUp);
    const got = f32.dataSync();
    for (let i = 0; i < inDim; i++) for (let o = 0; o < outDim; o++) expect(got[i * outDim + o]).toBe(deq[o * inDim + i]);
    expect(view.ownedBytes.tensors).toBe(4 * inDim * outDim);
    // The base's own tensors are still read through the view where it did not merge.
    expect(view.weights.layers[l]!.inputNorm).toBe(q.weights.layers[l]!.inputNorm);
    expect(view.weights.lmHead).toBe(q.weights.lmHead);
    expect(reads).toEqual(['lmHead']);
    view.dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect(() => view.weights.layers[a.meta.layers[0]!]!.wq).toThrow(/after dispose/);
    q.dispose();
  });
});
