/**
 * The architecture of a model Skein trains from scratch (a Llama: RMSNorm, rotary,
 * GQA, SwiGLU, tied embeddings) and its parameter table. Each parameter is stored in the
 * runtime layout (projections as (in, out), see runtime/model/types.ts) inside one flat
 * Float32Array, so the optimiser, the checkpoint and the worker threads share one buffer.
 *
 * @example
 * const table = paramTable(PRESETS.tiny);
 * const flat = new Float32Array(table.total);
 */

import type { ModelConfig } from '../model/types.js';

/** The runtime's ModelConfig sizes, with the one end-of-text id a trained model has. */
export type TrainModelConfig = Pick<
  ModelConfig,
  | 'vocabSize'
  | 'hiddenSize'
  | 'intermediateSize'
  | 'numLayers'
  | 'numHeads'
  | 'numKvHeads'
  | 'headDim'
  | 'rmsNormEps'
  | 'ropeTheta'
  | 'maxPositionEmbeddings'
  | 'bosTokenId'
> & {
  eosTokenId: number | null;
};

const BASE = { rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 2048, bosTokenId: null, eosTokenId: null };

/** Sizes measured for training speed on 2 wasm cores (see models/skein-mini/README.md). */
export const PRESETS: Record<string, TrainModelConfig> = {
  // For tests: every code path, a few thousand parameters.
  tiny: { ...BASE, vocabSize: 64, hiddenSize: 16, intermediateSize: 40, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 4, maxPositionEmbeddings: 64 },
  // For CLI and export tests against the real 4096-token data: seconds per step.
  micro: { ...BASE, vocabSize: 4096, hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, numKvHeads: 1, headDim: 16, bosTokenId: 4093, eosTokenId: 4095 },
  // The shipped default (models/skein-mini): the largest that sees enough tokens in ~75 min on 2 shared cores.
  'skein-mini': { ...BASE, vocabSize: 4096, hiddenSize: 256, intermediateSize: 768, numLayers: 8, numHeads: 4, numKvHeads: 2, headDim: 64, bosTokenId: 4093, eosTokenId: 4095 },
  a256: { ...BASE, vocabSize: 4096, hiddenSize: 256, intermediateSize: 768, numLayers: 6, numHeads: 4, numKvHeads: 2, headDim: 64 },
  b384: { ...BASE, vocabSize: 4096, hiddenSize: 384, intermediateSize: 1024, numLayers: 6, numHeads: 6, numKvHeads: 2, headDim: 64 },
  c384: { ...BASE, vocabSize: 4096, hiddenSize: 384, intermediateSize: 1024, numLayers: 6, numHeads: 3, numKvHeads: 1, headDim: 128 },
  d512: { ...BASE, vocabSize: 4096, hiddenSize: 512, intermediateSize: 1408, numLayers: 6, numHeads: 4, numKvHeads: 2, headDim: 128 },
};

export interface ParamEntry {
  name: string;
  shape: number[];
  offset: number;
  size: number;
  /** 1-D parameters (norm weights) get no weight decay. */
  decay: boolean;
}

export interface ParamTable {
  entries: ParamEntry[];
  byName: Map<string, ParamEntry>;
  total: number;
}

/** Names follow the runtime's LayerWeights fields: `layers.3.wq`, `embed`, `finalNorm`. */
export function paramTable(c: TrainModelConfig): ParamTable {
  const entries: ParamEntry[] = [];
  let offset = 0;
  const add = (name: string, shape: number[]) => {
    const size = shape.reduce((a, b) => a * b, 1);
    entries.push({ name, shape, offset, size, decay: shape.length > 1 });
    offset += size;
  };
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  add('embed', [c.vocabSize, c.hiddenSize]);
  for (let l = 0; l < c.numLayers; l++) {
    add(`layers.${l}.inputNorm`, [c.hiddenSize]);
    add(`layers.${l}.wq`, [c.hiddenSize, q]);
    add(`layers.${l}.wk`, [c.hiddenSize, kv]);
    add(`layers.${l}.wv`, [c.hiddenSize, kv]);
    add(`layers.${l}.wo`, [q, c.hiddenSize]);
    add(`layers.${l}.postNorm`, [c.hiddenSize]);
    add(`layers.${l}.wGate`, [c.hiddenSize, c.intermediateSize]);
    add(`layers.${l}.wUp`, [c.hiddenSize, c.intermediateSize]);
    add(`layers.${l}.wDown`, [c.intermediateSize, c.hiddenSize]);
  }
  add('finalNorm', [c.hiddenSize]);
  return { entries, byName: new Map(entries.map((e) => [e.name, e])), total: offset };
}

/** Matmul FLOPs per trained token (forward + backward = 3× forward), attention included. */
export function trainFlopsPerToken(c: TrainModelConfig, seqLen: number, layersRun = c.numLayers): number {
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const perLayer = 2 * (c.hiddenSize * (q + 2 * kv) + q * c.hiddenSize + 3 * c.hiddenSize * c.intermediateSize);
  // q·kᵀ and p·v over the whole (unmasked) window, as computed.
  const attn = 2 * 2 * seqLen * q;
  const head = 2 * c.hiddenSize * c.vocabSize;
  return 3 * (layersRun * (perLayer + attn) + head);
}

/** config.json in the Hugging Face Llama layout. */
export function hfConfig(c: TrainModelConfig, torchDtype: string): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.headDim,
    hidden_act: 'silu',
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: null,
    max_position_embeddings: c.maxPositionEmbeddings,
    tie_word_embeddings: true,
    attention_bias: false,
    mlp_bias: false,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    torch_dtype: torchDtype,
    initializer_range: 0.02,
  };
}
