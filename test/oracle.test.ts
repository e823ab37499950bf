/**
 * Oracle: random Hugging Face checkpoints written to disk (f32/f16/bf16, sharded, GQA,
 * biases, tied, llama3 rope), loaded by the checkpoint loader and run by the optimised
 * forward, against the reference forward run on weights built here straight from the
 * written HF tensors (nn.Linear (out, in) transposed by hand) — so the loader's layout
 * and the forward's maths are both checked. Tolerance: 1e-4 relative per logit row.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../runtime/backend.js';
import { loadModel } from '../runtime/checkpoint/load.js';
import { forward } from '../runtime/model/forward.js';
import { referenceForward } from '../runtime/model/reference.js';
import type { LayerWeights, LoadedModel } from '../runtime/model/types.js';
import { makeTempCheckpoint, type CheckpointSpec, type WrittenCheckpoint } from './fixtures/checkpoints.js';
import { relErr } from './fixtures/numeric.js';

/** The reference's model, built from the HF tensors without the loader. */
function fromHfTensors(written: WrittenCheckpoint, loaded: LoadedModel): LoadedModel {
  const t = written.tensors;
  const c = loaded.config;
  const vec = (name: string) => tf.tensor1d(t[name]!.data);
  const linear = (name: string) => {
    const [out, inp] = t[name]!.shape as [number, number];
    return tf.tidy(() => tf.transpose(tf.tensor2d(t[name]!.data, [out, inp]))) as tf.Tensor2D; // (in, out)
  };
  const opt = (name: string) => (t[name] ? vec(name) : null);
  const layers: LayerWeights[] = Array.from({ length: c.numLayers }, (_, l) => {
    const p = `model.layers.${l}`;
    return {
      inputNorm: vec(`${p}.input_layernorm.weight`),
      wq: linear(`${p}.self_attn.q_proj.weight`),
      wk: linear(`${p}.self_attn.k_proj.weight`),
      wv: linear(`${p}.self_attn.v_proj.weight`),
      bq: opt(`${p}.self_attn.q_proj.bias`),
      bk: opt(`${p}.self_attn.k_proj.bias`),
      bv: opt(`${p}.self_attn.v_proj.bias`),
      wo: linear(`${p}.self_attn.o_proj.weight`),
      bo: opt(`${p}.self_attn.o_proj.bias`),
      postNorm: vec(`${p}.post_attention_layernorm.weight`),
      wGate: linear(`${p}.mlp.gate_proj.weight`),
      wUp: linear(`${p}.mlp.up_proj.weight`),
      wDown: linear(`${p}.mlp.down_proj.weight`),
    };
  });
  const embedShape = t['model.embed_tokens.weight']!.shape as [number, number];
  const weights = {
    embed: tf.tensor2d(t['model.embed_tokens.weight']!.data, embedShape),
    layers,
    finalNorm: vec('model.norm.weight'),
    lmHead: linear(t['lm_head.weight'] ? 'lm_head.weight' : 'model.embed_tokens.weight'),
  };
  return {
    config: c,
    weights,
    source: 'hf tensors',
    dispose: () => tf.dispose([weights.embed, weights.finalNorm, weights.lmHead, ...layers.flatMap((l) => Object.values(l).filter((x): x is tf.Tensor => x !== null))]),
  };
}

const cases: [string, CheckpointSpec][] = [
  ['llama f32 MHA untied', {}],
  ['llama f16 GQA tied, attention bias', { dtype: 'F16', numKvHeads: 2, tieWordEmbeddings: true, attentionBias: true }],
  ['llama bf16 sharded, llama3 rope', { dtype: 'BF16', shards: 3, ropeScaling: true, ropeTheta: 500000, numLayers: 3 }],
  ['qwen2 GQA (q/k/v bias), head_dim 16', { architecture: 'Qwen2ForCausalLM', numKvHeads: 1, headDim: 16 }],
];

let baseline = 0;
beforeAll(async () => {
  await initBackend();
  baseline = tf.memory().numTensors;
});
afterAll(() => expect(tf.memory().numTensors).toBe(baseline));

describe.each(cases)('checkpoint on disk: %s', (_name, spec) => {
  it('forward on the loaded model equals the reference on the HF tensors', async () => {
    const ckpt = makeTempCheckpoint({ ...spec, seed: 7 });
    const model = await loadModel(ckpt.dir);
    const oracle = fromHfTensors(ckpt, model);
    try {
      const ids = [5, 17, 42, 99, 3, 250, 8];
      const ref = referenceForward(oracle, ids);
      const [r] = forward(model, [{ ids, logits: 'all' }]);
      tf.dispose(r!.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
      expect(r!.logits.length).toBe(ids.length);
      for (let i = 0; i < ids.length; i++) expect(relErr(r!.logits[i]!, ref.logits[i]!)).toBeLessThan(1e-4);
    } finally {
      oracle.dispose();
      model.dispose();
      ckpt.cleanup();
    }
  });
});
