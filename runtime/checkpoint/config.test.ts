import { describe, expect, it } from 'vitest';
import { CheckpointError } from '../../core/errors.js';
import { parseModelConfig } from './config.js';

const FILE = '/m/config.json';

const base = {
  vocab_size: 300,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
};

function err(json: unknown): CheckpointError {
  try {
    parseModelConfig(json, FILE);
  } catch (e) {
    expect(e).toBeInstanceOf(CheckpointError);
    return e as CheckpointError;
  }
  throw new Error('expected a CheckpointError');
}

describe('parseModelConfig', () => {
  it('Llama defaults follow transformers', () => {
    const c = parseModelConfig({ ...base, architectures: ['LlamaForCausalLM'] }, FILE);
    expect(c).toMatchObject({
      architecture: 'LlamaForCausalLM',
      numKvHeads: 4,
      headDim: 16,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      ropeScaling: null,
      maxPositionEmbeddings: 2048,
      tieWordEmbeddings: false,
      qkvBias: false,
      oBias: false,
      slidingWindow: null,
      bosTokenId: 1,
      eosTokenIds: [2],
      torchDtype: null,
    });
  });

  it('Llama attention_bias gives q, k, v and o biases; head_dim is honoured', () => {
    const c = parseModelConfig({ ...base, architectures: ['LlamaForCausalLM'], attention_bias: true, head_dim: 24, num_key_value_heads: 2 }, FILE);
    expect(c.qkvBias).toBe(true);
    expect(c.oBias).toBe(true);
    expect(c.headDim).toBe(24);
    expect(c.numKvHeads).toBe(2);
  });

  it('Qwen2 always has q/k/v biases and no o bias; no sliding window unless enabled', () => {
    const q = { ...base, architectures: ['Qwen2ForCausalLM'], sliding_window: 4096, use_sliding_window: false, tie_word_embeddings: true, eos_token_id: 151643, bos_token_id: 151643 };
    const c = parseModelConfig(q, FILE);
    expect(c).toMatchObject({ qkvBias: true, oBias: false, slidingWindow: null, tieWordEmbeddings: true, eosTokenIds: [151643], bosTokenId: 151643 });
    expect(parseModelConfig({ ...q, use_sliding_window: true }, FILE).slidingWindow).toBe(4096);
    expect(parseModelConfig({ ...base, model_type: 'qwen2' }, FILE).bosTokenId).toBeNull();
  });

  it('Mistral sliding window, default and null', () => {
    expect(parseModelConfig({ ...base, architectures: ['MistralForCausalLM'] }, FILE).slidingWindow).toBe(4096);
    expect(parseModelConfig({ ...base, architectures: ['MistralForCausalLM'], sliding_window: 64 }, FILE).slidingWindow).toBe(64);
    expect(parseModelConfig({ ...base, architectures: ['MistralForCausalLM'], sliding_window: null }, FILE).slidingWindow).toBeNull();
  });

  it('falls back to model_type', () => {
    expect(parseModelConfig({ ...base, model_type: 'mistral' }, FILE).architecture).toBe('MistralForCausalLM');
  });

  it('eos as a list, deduplicated; torch_dtype or dtype', () => {
    const c = parseModelConfig({ ...base, model_type: 'llama', eos_token_id: [128001, 128008, 128001], torch_dtype: 'bfloat16' }, FILE);
    expect(c.eosTokenIds).toEqual([128001, 128008]);
    expect(c.torchDtype).toBe('bfloat16');
    expect(parseModelConfig({ ...base, model_type: 'llama', dtype: 'float16' }, FILE).torchDtype).toBe('float16');
  });

  it('llama3 rope scaling, under rope_type or type', () => {
    const rs = { factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
    const expected = { ropeType: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };
    expect(parseModelConfig({ ...base, model_type: 'llama', rope_scaling: { ...rs, rope_type: 'llama3' } }, FILE).ropeScaling).toEqual(expected);
    expect(parseModelConfig({ ...base, model_type: 'llama', rope_scaling: { ...rs, type: 'llama3' } }, FILE).ropeScaling).toEqual(expected);
    expect(parseModelConfig({ ...base, model_type: 'llama', rope_scaling: { rope_type: 'default' } }, FILE).ropeScaling).toBeNull();
  });

  it('unsupported rope type', () => {
    const e = err({ ...base, model_type: 'llama', rope_scaling: { rope_type: 'yarn', factor: 4 } });
    expect(e.file).toBe(FILE);
    expect(e.reason).toMatch(/unsupported rope_scaling type "yarn"/);
  });

  it('unknown architecture names config.json and the architecture', () => {
    const e = err({ ...base, architectures: ['GPT2LMHeadModel'] });
    expect(e.file).toBe(FILE);
    expect(e.message).toContain('GPT2LMHeadModel');
    expect(err({ ...base, model_type: 'gpt2' }).message).toContain('gpt2');
  });

  it('missing or bad sizes, bad head counts, unsupported features', () => {
    expect(err({ ...base, hidden_size: undefined, model_type: 'llama' }).reason).toMatch(/missing hidden_size/);
    expect(err({ ...base, num_key_value_heads: 3, model_type: 'llama' }).reason).toMatch(/multiple/);
    expect(err({ ...base, num_attention_heads: 5, model_type: 'llama' }).reason).toMatch(/divisible/);
    expect(err({ ...base, hidden_act: 'gelu', model_type: 'llama' }).reason).toMatch(/hidden_act/);
    expect(err({ ...base, mlp_bias: true, model_type: 'llama' }).reason).toMatch(/mlp_bias/);
    expect(err({ ...base, vocab_size: -1, model_type: 'llama' }).reason).toMatch(/vocab_size/);
    expect(err([1, 2]).reason).toMatch(/not a JSON object/);
  });
});
