import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../../core/errors.js';
import { initBackend } from '../backend.js';
import {
  replaceTensors,
  rewriteHeader,
  TINY_SPECIAL_TOKENS,
  writeRandomCheckpoint,
  type CheckpointSpec,
  type WrittenCheckpoint,
} from '../../test/fixtures/checkpoints.js';
import { BlockEmbedding } from './embedding-table.js';
import { loadModel, loadTokenizer, MODELS_DIR, resolveModelDir, transpose2d } from './load.js';

let root: string;
let counter = 0;
beforeAll(async () => {
  await initBackend();
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'skein-load-'));
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

function write(spec: CheckpointSpec = {}): WrittenCheckpoint {
  return writeRandomCheckpoint(path.join(root, `m${counter++}`), spec);
}

async function loadError(dir: string): Promise<CheckpointError> {
  const before = tf.memory().numTensors;
  try {
    const m = await loadModel(dir);
    m.dispose();
  } catch (err) {
    expect(err).toBeInstanceOf(CheckpointError);
    // A failed load releases whatever it had already converted.
    expect(tf.memory().numTensors).toBe(before);
    return err as CheckpointError;
  }
  throw new Error('expected a CheckpointError');
}

/** Element (r, c) of a row-major HF tensor. */
function at(t: { shape: number[]; data: Float32Array }, r: number, c: number): number {
  return t.data[r * t.shape[1]! + c]!;
}

describe('loadModel', () => {
  it('Llama MHA f32: shapes, transposed projections, untied lm_head, no leaks', async () => {
    const ck = write({ architecture: 'LlamaForCausalLM' });
    const before = tf.memory().numTensors;
    const m = await loadModel(ck.dir);
    const { weights: w, config } = m;
    expect(config.architecture).toBe('LlamaForCausalLM');
    expect(w.layers).toHaveLength(2);
    // The embedding stays out of the tensor heap, in JS memory.
    expect(w.embed).toBeInstanceOf(BlockEmbedding);
    const embed = w.embed as BlockEmbedding;
    expect([embed.vocabSize, embed.hiddenSize, embed.byteLength]).toEqual([288, 32, 288 * 32 * 4]);
    expect(w.lmHead.shape).toEqual([32, 288]);
    const l1 = w.layers[1]!;
    expect(l1.wq.shape).toEqual([32, 32]);
    expect(l1.wGate.shape).toEqual([32, 64]);
    expect(l1.wDown.shape).toEqual([64, 32]);
    expect(l1.bq).toBeNull();
    expect(l1.bo).toBeNull();
    // HF (out, in)[j][i] must be ours (in, out)[i][j].
    const q = ck.tensors['model.layers.1.self_attn.q_proj.weight']!;
    const wq = l1.wq.arraySync();
    expect(wq[3]![17]).toBe(at(q, 17, 3));
    expect(wq[30]![1]).toBe(at(q, 1, 30));
    const down = ck.tensors['model.layers.1.mlp.down_proj.weight']!;
    expect(l1.wDown.arraySync()[50]![7]).toBe(at(down, 7, 50));
    const head = ck.tensors['lm_head.weight']!;
    expect(w.lmHead.arraySync()[5]![200]).toBe(at(head, 200, 5));
    expect(embed.rows([7, 200])[32 + 5]).toBe(at(ck.tensors['model.embed_tokens.weight']!, 200, 5));
    expect(() => embed.rows([288])).toThrow(/token id 288 is outside 0..287/);
    expect(Array.from(w.finalNorm.dataSync())).toEqual(Array.from(ck.tensors['model.norm.weight']!.data));
    for (const t of [w.lmHead, l1.wq, l1.inputNorm]) expect(t.dtype).toBe('float32');
    m.dispose();
    m.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('Qwen2 GQA, tied, bf16, sharded: biases and lmHead = embedᵀ', async () => {
    const ck = write({ architecture: 'Qwen2ForCausalLM', numKvHeads: 2, tieWordEmbeddings: true, dtype: 'BF16', shards: 3 });
    expect(fs.existsSync(path.join(ck.dir, 'model.safetensors.index.json'))).toBe(true);
    const before = tf.memory().numTensors;
    const m = await loadModel(ck.dir);
    const l0 = m.weights.layers[0]!;
    expect(l0.wk.shape).toEqual([32, 16]);
    expect(l0.bk!.shape).toEqual([16]);
    expect(l0.bo).toBeNull();
    expect(Array.from(l0.bv!.dataSync())).toEqual(Array.from(ck.tensors['model.layers.0.self_attn.v_proj.bias']!.data));
    const embed = ck.tensors['model.embed_tokens.weight']!;
    expect(m.weights.lmHead.arraySync()[9]![281]).toBe(at(embed, 281, 9));
    expect(m.config.torchDtype).toBe('bfloat16');
    m.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('Llama attention_bias, head_dim ≠ hidden/heads, f16, unused extra tensors', async () => {
    const ck = write({ attentionBias: true, headDim: 12, dtype: 'F16', extraTensors: true, numKvHeads: 2 });
    const m = await loadModel(ck.dir);
    const l0 = m.weights.layers[0]!;
    expect(m.config.headDim).toBe(12);
    expect(l0.wq.shape).toEqual([32, 48]);
    expect(l0.wk.shape).toEqual([32, 24]);
    expect(l0.wo.shape).toEqual([48, 32]);
    expect(l0.bq!.shape).toEqual([48]);
    expect(l0.bo!.shape).toEqual([32]);
    const o = ck.tensors['model.layers.0.self_attn.o_proj.weight']!;
    expect(l0.wo.arraySync()[40]![2]).toBe(at(o, 2, 40));
    m.dispose();
  });

  it('Mistral with llama3 rope scaling; generation_config extends eos ids', async () => {
    const ck = write({ architecture: 'MistralForCausalLM', ropeScaling: true, slidingWindow: 64 });
    const m = await loadModel(ck.dir);
    expect(m.config.ropeScaling).toEqual({ ropeType: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 32 });
    expect(m.config.slidingWindow).toBe(64);
    expect(m.config.eosTokenIds).toEqual([TINY_SPECIAL_TOKENS.imEnd, TINY_SPECIAL_TOKENS.endOfText]);
    expect(m.generationDefaults).toEqual({ temperature: 0.7, topP: 0.8, topK: 20, repetitionPenalty: 1.05 });
    expect(m.source).toBe(path.resolve(ck.dir));
    m.dispose();
  });

  it('loads without tokenizer.json; the tokenizer is only required when asked for', async () => {
    const ck = write({ tokenizer: false });
    const m = await loadModel(ck.dir);
    expect(m.hasTokenizer).toBe(false);
    let e: unknown;
    try {
      m.tokenizer();
    } catch (err) {
      e = err;
    }
    expect(e).toBeInstanceOf(CheckpointError);
    expect((e as CheckpointError).file).toBe(path.join(ck.dir, 'tokenizer.json'));
    m.dispose();
    const e2 = await (async () => {
      const before = tf.memory().numTensors;
      try {
        await loadModel(ck.dir, { eagerTokenizer: true });
      } catch (err) {
        expect(tf.memory().numTensors).toBe(before);
        return err as CheckpointError;
      }
      throw new Error('expected a CheckpointError');
    })();
    expect(e2.file).toBe(path.join(ck.dir, 'tokenizer.json'));
  });

  it('the lazy tokenizer carries config eos ids', async () => {
    const ck = write();
    const m = await loadModel(ck.dir);
    const tok = m.tokenizer();
    expect(m.tokenizer()).toBe(tok);
    expect(tok.eosIds).toEqual([TINY_SPECIAL_TOKENS.imEnd, TINY_SPECIAL_TOKENS.endOfText]);
    expect(tok.bosId).toBe(TINY_SPECIAL_TOKENS.endOfText);
    expect(loadTokenizer(ck.dir).eosIds).toEqual(tok.eosIds);
    m.dispose();
  });
});

describe('bad checkpoints', () => {
  it('missing config.json', async () => {
    const ck = write();
    fs.rmSync(path.join(ck.dir, 'config.json'));
    const e = await loadError(ck.dir);
    expect(e.file).toBe(path.join(ck.dir, 'config.json'));
  });

  it('missing weights', async () => {
    const ck = write();
    fs.rmSync(path.join(ck.dir, 'model.safetensors'));
    const e = await loadError(ck.dir);
    expect(e.file).toBe(path.join(ck.dir, 'model.safetensors'));
    expect(e.reason).toMatch(/no weights/);
  });

  it('unknown architecture', async () => {
    const ck = write({ configOverrides: { architectures: ['PhiForCausalLM'] } });
    const e = await loadError(ck.dir);
    expect(e.file).toBe(path.join(ck.dir, 'config.json'));
    expect(e.reason).toContain('PhiForCausalLM');
  });

  it('missing tensor names it and its file', async () => {
    const ck = write();
    const file = path.join(ck.dir, 'model.safetensors');
    rewriteHeader(file, (h) => {
      delete h['model.layers.1.self_attn.q_proj.weight'];
    });
    const e = await loadError(ck.dir);
    expect(e.file).toBe(file);
    expect(e.tensor).toBe('model.layers.1.self_attn.q_proj.weight');
    expect(e.reason).toMatch(/missing/);
  });

  it('missing tensor in a sharded checkpoint names the shard it was expected in', async () => {
    const ck = write({ shards: 2 });
    const shard = ck.weightFiles[1]!;
    rewriteHeader(shard, (h) => {
      delete h['model.norm.weight'];
    });
    const e = await loadError(ck.dir);
    expect(e.file).toBe(shard);
    expect(e.tensor).toBe('model.norm.weight');
  });

  it('missing qkv bias in Qwen2', async () => {
    const ck = write({ architecture: 'Qwen2ForCausalLM' });
    rewriteHeader(ck.weightFiles[0]!, (h) => {
      delete h['model.layers.0.self_attn.k_proj.bias'];
    });
    expect((await loadError(ck.dir)).tensor).toBe('model.layers.0.self_attn.k_proj.bias');
  });

  it('untied without lm_head.weight', async () => {
    const ck = write();
    rewriteHeader(ck.weightFiles[0]!, (h) => {
      delete h['lm_head.weight'];
    });
    const e = await loadError(ck.dir);
    expect(e.tensor).toBe('lm_head.weight');
    expect(e.file).toBe(ck.weightFiles[0]);
    expect(e.reason).toMatch(/tie_word_embeddings/);
  });

  it('misshaped tensor gives expected and actual shapes', async () => {
    const ck = write();
    replaceTensors(ck.weightFiles[0]!, (t) => {
      t['model.layers.1.mlp.up_proj.weight'] = { shape: [32, 64], data: new Float32Array(32 * 64) };
    });
    const e = await loadError(ck.dir);
    expect(e.tensor).toBe('model.layers.1.mlp.up_proj.weight');
    expect(e.reason).toBe('shape [32, 64] but expected [64, 32]');
  });

  it('unsupported dtype in the weights', async () => {
    const ck = write();
    rewriteHeader(ck.weightFiles[0]!, (h) => {
      h['model.norm.weight'].dtype = 'U8';
    });
    const e = await loadError(ck.dir);
    expect(e.file).toBe(ck.weightFiles[0]);
    expect(e.tensor).toBe('model.norm.weight');
  });

  it('missing shard', async () => {
    const ck = write({ shards: 2 });
    fs.rmSync(ck.weightFiles[1]!);
    const e = await loadError(ck.dir);
    expect(e.file).toBe(ck.weightFiles[1]);
  });

  it('no such folder or name', async () => {
    const e = await loadError('no-such-model-anywhere');
    expect(e.file).toBe('no-such-model-anywhere');
    expect(e.reason).toContain(MODELS_DIR);
  });
});

describe('helpers', () => {
  it('MODELS_DIR is <repo>/models whatever the cwd', () => {
    expect(MODELS_DIR).toBe(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../models'));
  });

  it('resolveModelDir takes paths', () => {
    const ck = write();
    expect(resolveModelDir(ck.dir)).toBe(path.resolve(ck.dir));
  });

  it('transpose2d', () => {
    const src = new Float32Array(70 * 45).map((_, i) => i);
    const t = transpose2d(src, 70, 45);
    expect(t[44 * 70 + 69]).toBe(69 * 45 + 44);
    expect(t[3 * 70 + 10]).toBe(10 * 45 + 3);
  });
});
