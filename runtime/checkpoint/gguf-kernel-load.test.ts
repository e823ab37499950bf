/**
 * A GGUF whose projections the kernels take is held once: its blocks in the kernels'
 * memory (no f32 tensor until one is asked for, no second copy in JavaScript), a tied
 * embedding read from the lm head's blocks. A Llama-3.2-1B-shaped file shrunk to a few
 * MB runs through the same code path as the `big` bench's.
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relErr } from '../../test/fixtures/numeric.js';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import { initBackend } from '../backend.js';
import { memorySnapshot, rssLimit } from '../bench/memory.js';
import { LLAMA_3_2_1B, writeRandomGguf } from '../bench/random-gguf.js';
import { dequantizeMatrix, type BlockType } from '../kernels/blocks.js';
import { UploadedMatrix } from '../kernels/matmul.js';
import { forward } from '../model/forward.js';
import { referenceForward } from '../model/reference.js';
import { BlockEmbedding, KernelEmbedding } from './embedding-table.js';
import { GgufFile } from './gguf.js';
import { ggufModelConfig, GgufTensorSource } from './gguf-model.js';
import { loadModel, transpose2d, type LoadedCheckpoint } from './load.js';

const root = tempDir('skein-gguf-kernel-load-');
const shape = { ...LLAMA_3_2_1B, numLayers: 2, vocabSize: 640, hiddenSize: 128, intermediateSize: 256, numHeads: 4, numKvHeads: 2 };
/** Values with -0 read as 0 (a quantized zero carries either sign, depending on the formula). */
const values = (x: ArrayLike<number>) => Array.from(x, (v) => v + 0);
let baseline = 0;
beforeAll(async () => {
  await initBackend();
  baseline = tf.memory().numTensors;
});

describe.each(['q4_0', 'q8_0'] as BlockType[])('a shrunken Llama-3.2-1B shape as %s', (type) => {
  const file = path.join(root, `${type}.gguf`);
  let model: LoadedCheckpoint;
  let tensorBytesBefore = 0;
  beforeAll(async () => {
    writeRandomGguf(file, shape, type, 3);
    tensorBytesBefore = tf.memory().numBytes;
    model = await loadModel(file);
  });
  afterAll(() => {
    model.dispose();
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('holds the projections only in the kernels\' memory, and the norms as tensors', () => {
    const { hiddenSize: h, numLayers } = model.config;
    // 2 norms per layer and the final one; no f32 projection or lm head yet.
    expect(tf.memory().numBytes - tensorBytesBefore).toBe(4 * h * (2 * numLayers + 1));
    const b = model.blockWeights!;
    expect(b.layers[0]!.wq).toBeInstanceOf(UploadedMatrix);
    expect(b.lmHead).toMatchObject({ type, rows: 640, cols: 128 });
    const mem = memorySnapshot(model);
    // Bytes per 32 values as the kernels hold them, every matrix here having rows in fours:
    // matmul.c's x4 layout (f32 scales: Q8_0 144 and Q4_0 96 bytes per 4 rows), or the
    // native kernels' x4h (f16 scales: Q8_0 136, Q4_0 72).
    const native = b.lmHead instanceof UploadedMatrix && b.lmHead.weight.layout === 'x4h';
    const rb = (type === 'q8_0' ? (native ? 136 : 144) : native ? 72 : 96) / 4;
    const blockBytes = ((numLayers * (2 * h * h + 2 * 64 * h + 3 * h * 256) + 640 * h) / 32) * rb;
    expect(mem.kernelsInUse).toBeGreaterThanOrEqual(blockBytes);
    expect(mem.kernelsInUse).toBeLessThan(blockBytes + 2 ** 17); // + the kernels' stack and alignment
    expect(mem.kernelsMemory).toBeGreaterThanOrEqual(mem.kernelsInUse!);
  });

  it('gathers tied embedding rows from the lm head\'s blocks: each equals the dequantized stored row', () => {
    expect(model.weights.embed).toBeInstanceOf(KernelEmbedding);
    const g = GgufFile.open(file);
    try {
      const stored = new BlockEmbedding(g.tensor('token_embd.weight').type, g.readTensorBytes('token_embd.weight'), 640, 128);
      const ids = [0, 1, 5, 257, 639, 5];
      expect(model.weights.embed as KernelEmbedding).toMatchObject({ vocabSize: 640, hiddenSize: 128, byteLength: 0 });
      expect(values((model.weights.embed as KernelEmbedding).rows(ids))).toEqual(values(stored.rows(ids)));
      expect(() => (model.weights.embed as KernelEmbedding).rows([640])).toThrow(/token id 640 is outside 0..639/);
    } finally {
      g.close();
    }
  });

  it('makes an f32 projection on demand equal to the file\'s values, Q/K rows in HF order', () => {
    const g = GgufFile.open(file);
    try {
      const src = new GgufTensorSource(g, ggufModelConfig(g));
      const wq = src.read('model.layers.1.self_attn.q_proj.weight', [128, 128]);
      expect(values(model.weights.layers[1]!.wq.dataSync())).toEqual(values(transpose2d(wq, 128, 128)));
      const head = dequantizeMatrix(model.blockWeights!.lmHead);
      expect(values(model.weights.lmHead.dataSync())).toEqual(values(transpose2d(head, 640, 128)));
    } finally {
      g.close();
    }
  });

  it('runs the forward on the blocks within 5% of the reference on the dequantized weights', () => {
    const ids = [3, 17, 42, 5, 300, 9];
    const ref = referenceForward(model, ids);
    const [r] = forward(model, [{ ids, logits: 'all' }]);
    r!.logits.forEach((row, i) => expect(relErr(row, ref.logits[i]!)).toBeLessThan(0.05));
    tf.dispose(r!.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
  });
});

it('rssLimit is twice the file plus the KV budget', () => {
  expect(rssLimit(98_362_432, 256 * 2 ** 20)).toBe(2 * 98_362_432 + 268_435_456);
});
