import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../../core/errors.js';
import { relErr } from '../../test/fixtures/numeric.js';
import { writeRandomCheckpoint, type CheckpointSpec, type WrittenCheckpoint } from '../../test/fixtures/checkpoints.js';
import { ggufFromCheckpoint, permuteRotaryRows, type GgufConversion } from '../../test/fixtures/gguf-checkpoints.js';
import { u32 } from './gguf-writer.js';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import { initBackend } from '../backend.js';
import { loadSpecTokenizer } from '../engine/model-spec.js';
import { forward } from '../model/forward.js';
import { inverseFrequencies } from '../model/rope.js';
import type { LoadedModel } from '../model/types.js';
import { GgmlType } from './ggml-quants.js';
import { BlockEmbedding } from './embedding-table.js';
import { unpermuteRotaryRows } from './gguf-model.js';
import { loadModel, loadTokenizer, resolveModel, transpose2d, type LoadedCheckpoint } from './load.js';

const root = tempDir('skein-gguf-model-');
let counter = 0;
beforeAll(async () => {
  await initBackend();
});

/** An HF checkpoint and the GGUF converted from it, in two folders. */
function pair(spec: CheckpointSpec, conversion: GgufConversion = {}): { hf: WrittenCheckpoint; gguf: string; stored: Record<string, Float32Array> } {
  const base = path.join(root, `m${counter++}`);
  const hf = writeRandomCheckpoint(path.join(base, 'hf'), spec);
  const gguf = path.join(base, 'gguf', 'model.gguf');
  const stored = ggufFromCheckpoint(hf, gguf, conversion);
  return { hf, gguf, stored };
}

/** Every embedding row, (vocab, hidden) row-major. */
function embedValues(m: LoadedModel): Float32Array {
  const e = m.weights.embed;
  return e instanceof tf.Tensor ? (e.dataSync() as Float32Array) : e.rows([...Array(e.vocabSize).keys()]);
}

function allWeights(m: LoadedModel): [string, { dataSync(): ArrayLike<number>; shape: number[] }][] {
  const w = m.weights;
  const embed = { dataSync: () => embedValues(m), shape: [m.config.vocabSize, m.config.hiddenSize] };
  const out: [string, { dataSync(): ArrayLike<number>; shape: number[] }][] = [['embed', embed], ['finalNorm', w.finalNorm], ['lmHead', w.lmHead]];
  w.layers.forEach((l, i) => {
    for (const [k, t] of Object.entries(l)) if (t !== null) out.push([`${i}.${k}`, t as tf.Tensor]);
  });
  return out;
}

/** Element-wise equality where 0 and -0 count as equal (quantized zeros carry either sign). */
function expectSame(actual: ArrayLike<number>, expected: ArrayLike<number>, what = ''): void {
  expect(actual.length, what).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) if (actual[i] !== expected[i]) expect(actual[i], `${what}[${i}]`).toBe(expected[i]);
}

const IDS = [5, 77, 200, 13, 101, 42, 250, 9];

function logits(m: LoadedModel): Float32Array[] {
  const [r] = forward(m, [{ ids: IDS, logits: 'all' }]);
  for (const kv of r!.newKv) if (kv) tf.dispose([kv.k, kv.v]);
  return r!.logits;
}

async function loadError(spec: string): Promise<CheckpointError> {
  const before = tf.memory().numTensors;
  try {
    const m = await loadModel(spec, { eagerTokenizer: true });
    m.dispose();
  } catch (err) {
    expect(err).toBeInstanceOf(CheckpointError);
    expect(tf.memory().numTensors).toBe(before);
    return err as CheckpointError;
  }
  throw new Error('expected a CheckpointError');
}

describe('GGUF checkpoints: an F32 GGUF loads exactly like the HF checkpoint it was converted from', () => {
  const cases: [string, CheckpointSpec][] = [
    ['llama, GQA, untied', { architecture: 'LlamaForCausalLM', numHeads: 4, numKvHeads: 2 }],
    ['llama, tied, attention_bias, head_dim ≠ hidden/heads', { tieWordEmbeddings: true, attentionBias: true, headDim: 12, numKvHeads: 2 }],
    ['qwen2, GQA biases (not permuted)', { architecture: 'Qwen2ForCausalLM', numKvHeads: 1 }],
  ];
  for (const [name, spec] of cases) {
    it(name, async () => {
      const { hf, gguf } = pair(spec);
      const a = await loadModel(hf.dir);
      const b = await loadModel(path.dirname(gguf)); // the folder holding the .gguf
      try {
        expect(b.format).toBe('gguf');
        expect(b.source).toBe(gguf);
        // GGUF stores the epsilon as f32 (which is what the forward computes with).
        const { torchDtype: _a, maxPositionEmbeddings: _pa, rmsNormEps: ea, ...ca } = a.config;
        const { torchDtype: _b, maxPositionEmbeddings: _pb, rmsNormEps: eb, ...cb } = b.config;
        expect(cb).toEqual(ca);
        expect(eb).toBe(Math.fround(ea));
        expect(b.config.torchDtype).toMatch(/^gguf F32×\d+$/);
        const wa = allWeights(a);
        const wb = new Map(allWeights(b));
        for (const [k, t] of wa) {
          expect(wb.get(k)!.shape, k).toEqual(t.shape);
          expect(wb.get(k)!.dataSync(), k).toEqual(t.dataSync());
        }
        // Same weights, but where every row length is a multiple of 32 the GGUF model runs
        // its projections on the wasm f32 block kernels (runtime/kernels) instead of
        // XNNPACK: equal to float rounding, not bit for bit.
        const la = logits(a);
        const lb = logits(b);
        const c = b.config;
        const fits = [c.hiddenSize, c.numHeads * c.headDim, c.intermediateSize].every((n) => n % 32 === 0);
        expect(b.blockWeights?.layers[0]!.wq.type).toBe(fits ? 'f32' : undefined);
        la.forEach((row, i) => expect(relErr(lb[i]!, row)).toBeLessThan(1e-6));
      } finally {
        a.dispose();
        b.dispose();
      }
    });
  }

  it('llama3 rope scaling from rope_freqs.weight gives the same frequencies', async () => {
    const { hf, gguf } = pair({ ropeScaling: true, ropeTheta: 500000, headDim: 16, numHeads: 2 });
    const a = await loadModel(hf.dir);
    const b = await loadModel(gguf);
    try {
      expect(b.config.ropeScaling?.ropeType).toBe('factors');
      const ia = inverseFrequencies(a.config);
      const ib = inverseFrequencies(b.config);
      ia.forEach((v, i) => expect(Math.abs(ib[i]! - v) / v).toBeLessThan(1e-6));
      const la = logits(a);
      logits(b).forEach((row, i) => expect(relErr(row, la[i]!)).toBeLessThan(1e-5));
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it('the tokenizer from tokenizer.ggml.* encodes, decodes and renders chats as tokenizer.json does', () => {
    const { hf, gguf } = pair({});
    const a = loadTokenizer(hf.dir);
    const b = loadTokenizer(gguf);
    for (const text of ['Hello world, the world is here.', '  two  spaces\nand\ttabs', 'ünïcödé 123 4567', '<|im_start|>user\nhi<|im_end|>']) {
      expect(b.encode(text), text).toEqual(a.encode(text));
      expect(b.decode(b.encode(text))).toBe(text);
    }
    const chat = [{ role: 'user', content: 'Hello there' }];
    expect(b.renderChat(chat)).toBe(a.renderChat(chat));
    expect(new Set(b.eosIds)).toEqual(new Set(a.eosIds));
    expect(b.bosId).toBe(a.bosId);
    expect(b.vocabSize).toBe(288);
    expect(b.isSpecial(b.tokenToId('<|im_end|>')!)).toBe(true);
    expect(loadSpecTokenizer(gguf)!.encode('Hello')).toEqual(a.encode('Hello'));
  });
});

describe('GGUF checkpoints: quantized weights', () => {
  it('Q8_0 (and a Q4_0 embedding): weights are the stored values, Q/K rows back in HF order', async () => {
    const { hf, gguf, stored } = pair({ numKvHeads: 2 }, { type: GgmlType.Q8_0, embedType: GgmlType.Q4_0 });
    const m = await loadModel(gguf);
    const ref = await loadModel(hf.dir);
    try {
      const { hiddenSize: h, numHeads, numKvHeads, headDim } = m.config;
      const wq = unpermuteRotaryRows(stored['blk.1.attn_q.weight']!, numHeads, headDim, h);
      expectSame(m.weights.layers[1]!.wq.dataSync(), transpose2d(wq, numHeads * headDim, h));
      const wk = unpermuteRotaryRows(stored['blk.0.attn_k.weight']!, numKvHeads, headDim, h);
      expectSame(m.weights.layers[0]!.wk.dataSync(), transpose2d(wk, numKvHeads * headDim, h));
      expectSame(embedValues(m), stored['token_embd.weight']);
      // The embedding stays in its 4-bit blocks, out of the tensor heap: 18 bytes per 32 values.
      expect(m.weights.embed).toBeInstanceOf(BlockEmbedding);
      expect((m.weights.embed as BlockEmbedding).type).toBe(GgmlType.Q4_0);
      expect((m.weights.embed as BlockEmbedding).byteLength).toBe((288 * 32 * 18) / 32);
      expectSame(m.weights.layers[0]!.wDown.dataSync(), transpose2d(stored['blk.0.ffn_down.weight']!, h, m.config.intermediateSize));
      // Quantized weights stay close to the f32 model's outputs (the 4-bit embedding is off
      // by up to 1/15 of each block's range, which dominates).
      const lr = logits(ref);
      logits(m).forEach((row, i) => expect(relErr(row, lr[i]!)).toBeLessThan(0.25));
    } finally {
      m.dispose();
      ref.dispose();
    }
  });

  it('Q4_K_M-style mix (Q4_K weights, Q6_K embedding) on a 256-wide model', async () => {
    const { gguf, stored } = pair({ hiddenSize: 256, intermediateSize: 256, numHeads: 4, numLayers: 1, tieWordEmbeddings: true }, { type: GgmlType.Q4_K, embedType: GgmlType.Q6_K });
    const m = await loadModel(gguf);
    try {
      expect(m.config.torchDtype).toMatch(/Q4_K×7/);
      expectSame(embedValues(m), stored['token_embd.weight']);
      expectSame(m.weights.layers[0]!.wUp.dataSync(), transpose2d(stored['blk.0.ffn_up.weight']!, 256, 256));
      expect(logits(m).every((row) => row.every(Number.isFinite))).toBe(true);
    } finally {
      m.dispose();
    }
  });

  it('un-permuting undoes the converter permutation', () => {
    const x = new Float32Array(3 * 8 * 5).map((_, i) => i);
    expect(unpermuteRotaryRows(permuteRotaryRows(x, 3, 8, 5), 3, 8, 5)).toEqual(x);
    // Row 1 of a head (the converter's 2·0 + 1) is HF row D/2 = 4.
    expect(permuteRotaryRows(x, 3, 8, 5).subarray(5, 10)).toEqual(x.subarray(20, 25));
  });
});

describe('GGUF checkpoints: resolving and bad files', () => {
  it('resolves a file, a folder holding one .gguf, and refuses ambiguous or foreign paths', () => {
    const { gguf } = pair({});
    const folder = path.dirname(gguf);
    expect(resolveModel(gguf)).toEqual({ format: 'gguf', dir: folder, file: gguf });
    expect(resolveModel(folder)).toEqual({ format: 'gguf', dir: folder, file: gguf });
    fs.copyFileSync(gguf, path.join(folder, 'other.gguf'));
    expect(() => resolveModel(folder)).toThrow(/holds 2 .gguf files \(model.gguf, other.gguf\)/);
    const text = path.join(folder, 'notes.txt');
    fs.writeFileSync(text, 'hi');
    expect(() => resolveModel(text)).toThrow(/not a .gguf file/);
  });

  it('shapes that do not match the architecture name the GGUF tensor', async () => {
    const { gguf } = pair({}, { reshape: { 'blk.1.attn_k.weight': [16, 32] } });
    const e = await loadError(gguf);
    expect(e.file).toBe(gguf);
    expect(e.tensor).toBe('blk.1.attn_k.weight');
    expect(e.reason).toMatch(/shape \[16, 32\] but the architecture needs \[32, 32\]/);
  });

  it('a missing tensor', async () => {
    const e = await loadError(pair({}, { omit: ['blk.1.ffn_up.weight'] }).gguf);
    expect(e.tensor).toBe('blk.1.ffn_up.weight');
    expect(e.reason).toMatch(/missing tensor/);
  });

  it('NaN or Inf in weights', async () => {
    const bad = new Float32Array(64 * 32).fill(0.01);
    bad[100] = Number.NaN;
    let e = await loadError(pair({}, { replace: { 'blk.0.ffn_gate.weight': bad } }).gguf);
    expect(e.tensor).toBe('blk.0.ffn_gate.weight');
    expect(e.reason).toMatch(/value NaN at flat index \d+: weights must be finite/);
    const badEmbed = new Float32Array(288 * 32).fill(0.5);
    badEmbed[287 * 32 + 3] = Number.NEGATIVE_INFINITY;
    e = await loadError(pair({}, { replace: { 'token_embd.weight': badEmbed } }).gguf);
    expect(e.tensor).toBe('token_embd.weight');
    expect(e.reason).toMatch(`value -Infinity at flat index ${287 * 32 + 3}`);
    bad[100] = Number.POSITIVE_INFINITY;
    e = await loadError(pair({}, { type: GgmlType.F16, replace: { 'blk.0.ffn_gate.weight': bad } }).gguf);
    expect(e.reason).toMatch(/value Infinity/);
  });

  it('metadata the architecture needs, and an architecture it does not run', async () => {
    let e = await loadError(pair({}, { metadataOverrides: { 'llama.embedding_length': null } }).gguf);
    expect(e.reason).toMatch(/missing metadata llama.embedding_length/);
    e = await loadError(pair({}, { metadataOverrides: { 'llama.block_count': u32(2 ** 30) } }).gguf);
    expect(e.reason).toMatch(/llama.block_count = 1073741824 is not a size/);
    e = await loadError(pair({}, { metadataOverrides: { 'general.architecture': 'gpt2' } }).gguf);
    expect(e.reason).toMatch(/unsupported architecture "gpt2" \(supported: llama, qwen2\)/);
    e = await loadError(pair({}, { metadataOverrides: { 'llama.rope.dimension_count': u32(4) } }).gguf);
    expect(e.reason).toMatch(/partial rotary/);
  });

  it('a model too large for the wasm heap is refused before any weight is read', async () => {
    if (tf.getBackend() !== 'wasm') return;
    // 1000 layers with a 2^20-wide MLP: the header is all it takes to know.
    const e = await loadError(pair({}, { metadataOverrides: { 'llama.block_count': u32(1000), 'llama.feed_forward_length': u32(2 ** 20) } }).gguf);
    expect(e.reason).toMatch(/too large for the wasm backend: its weights need \d+\.\d GB as f32 tensors/);
  });

  it('a tokenizer it cannot build fails when the tokenizer is needed', async () => {
    const { gguf } = pair({}, { metadataOverrides: { 'tokenizer.ggml.pre': 'mystery' } });
    const e = await loadError(gguf);
    expect(e.reason).toMatch(/unsupported tokenizer.ggml.pre "mystery" \(supported: default, gpt-2/);
    // Commands that work on ids still load it.
    const m: LoadedCheckpoint = await loadModel(gguf);
    expect(m.hasTokenizer).toBe(true);
    m.dispose();
  });
});
