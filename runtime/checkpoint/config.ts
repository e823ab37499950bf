/**
 * Turns a Hugging Face config.json into the runtime's normalised ModelConfig for the
 * three Llama-family architectures Skein runs. Defaults follow transformers' config
 * classes (LlamaConfig, Qwen2Config, MistralConfig); the sizes that define the weights
 * are required, since guessing them would only turn into a confusing shape error later.
 * Anything the forward pass cannot honour (another rope type, MLP biases, another
 * activation) is refused here with a CheckpointError rather than silently mis-run.
 *
 * @example
 * const config = parseModelConfig(JSON.parse(fs.readFileSync(file, 'utf8')), file);
 * config.headDim; // head_dim, or hidden_size / num_attention_heads
 */
import { CheckpointError } from '../../core/errors.js';
import type { Architecture, Llama3RopeScaling, ModelConfig } from '../model/types.js';

const ARCHITECTURES: Architecture[] = ['LlamaForCausalLM', 'Qwen2ForCausalLM', 'MistralForCausalLM'];
const MODEL_TYPES: Record<string, Architecture> = {
  llama: 'LlamaForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
  mistral: 'MistralForCausalLM',
};

/** Per-architecture defaults, from the transformers config classes. */
const DEFAULTS: Record<Architecture, { rmsNormEps: number; maxPositionEmbeddings: number; bos: number | null; eos: number | null; slidingWindow: number | null }> = {
  LlamaForCausalLM: { rmsNormEps: 1e-6, maxPositionEmbeddings: 2048, bos: 1, eos: 2, slidingWindow: null },
  Qwen2ForCausalLM: { rmsNormEps: 1e-6, maxPositionEmbeddings: 32768, bos: null, eos: null, slidingWindow: 4096 },
  MistralForCausalLM: { rmsNormEps: 1e-6, maxPositionEmbeddings: 4096 * 32, bos: 1, eos: 2, slidingWindow: 4096 },
};

type Json = Record<string, unknown>;

/** Reads the architecture from architectures[0], falling back to model_type. */
export function detectArchitecture(json: Json, file: string): Architecture {
  const archs = json.architectures;
  if (Array.isArray(archs) && archs.length > 0) {
    const name = archs[0];
    if (typeof name === 'string' && (ARCHITECTURES as string[]).includes(name)) return name as Architecture;
    throw new CheckpointError({ file, reason: `unsupported architecture ${JSON.stringify(name)} (supported: ${ARCHITECTURES.join(', ')})` });
  }
  const type = json.model_type;
  if (typeof type === 'string' && type in MODEL_TYPES) return MODEL_TYPES[type]!;
  throw new CheckpointError({
    file,
    reason: `unsupported architecture: no architectures list and model_type ${JSON.stringify(type)} (supported: ${ARCHITECTURES.join(', ')})`,
  });
}

/** Normalises a config.json object; `file` is only used to locate errors. */
export function parseModelConfig(json: unknown, file: string): ModelConfig {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new CheckpointError({ file, reason: 'config is not a JSON object' });
  }
  const c = json as Json;
  const architecture = detectArchitecture(c, file);
  const defaults = DEFAULTS[architecture];
  const bad = (reason: string) => new CheckpointError({ file, reason });

  const int = (key: string, fallback?: number): number => {
    const v = c[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw bad(`missing ${key}`);
    }
    if (!Number.isSafeInteger(v) || (v as number) <= 0) throw bad(`${key} must be a positive integer, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const num = (key: string, fallback: number): number => {
    const v = c[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw bad(`${key} must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  };

  const vocabSize = int('vocab_size');
  const hiddenSize = int('hidden_size');
  const intermediateSize = int('intermediate_size');
  const numLayers = int('num_hidden_layers');
  const numHeads = int('num_attention_heads');
  const numKvHeads = int('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw bad(`num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  }
  if ((c.head_dim === undefined || c.head_dim === null) && hiddenSize % numHeads !== 0) {
    throw bad(`hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads} and head_dim is not given`);
  }
  const headDim = int('head_dim', hiddenSize / numHeads);

  const act = c.hidden_act ?? c.hidden_activation ?? 'silu';
  if (act !== 'silu') throw bad(`unsupported hidden_act ${JSON.stringify(act)} (only silu)`);
  if (c.mlp_bias === true) throw bad('unsupported mlp_bias true (MLP projections without biases only)');

  // Qwen2 always has q/k/v biases and never an o bias; Llama's attention_bias adds all four.
  const attentionBias = c.attention_bias === true;
  const qkvBias = architecture === 'Qwen2ForCausalLM' ? true : architecture === 'LlamaForCausalLM' && attentionBias;
  const oBias = architecture === 'LlamaForCausalLM' && attentionBias;

  let slidingWindow: number | null;
  if (architecture === 'LlamaForCausalLM') slidingWindow = null;
  else if (architecture === 'Qwen2ForCausalLM' && c.use_sliding_window !== true) slidingWindow = null;
  else slidingWindow = c.sliding_window === null ? null : int('sliding_window', defaults.slidingWindow ?? undefined);

  const eosRaw = c.eos_token_id === undefined ? defaults.eos : c.eos_token_id;
  const bosRaw = c.bos_token_id === undefined ? defaults.bos : c.bos_token_id;

  return {
    architecture,
    vocabSize,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: num('rms_norm_eps', defaults.rmsNormEps),
    ropeTheta: num('rope_theta', 10000),
    ropeScaling: parseRopeScaling(c.rope_scaling, file),
    maxPositionEmbeddings: int('max_position_embeddings', defaults.maxPositionEmbeddings),
    // All three transformers configs default tie_word_embeddings to false.
    tieWordEmbeddings: c.tie_word_embeddings === true,
    qkvBias,
    oBias,
    slidingWindow,
    bosTokenId: parseTokenId(bosRaw, 'bos_token_id', file),
    eosTokenIds: parseTokenIds(eosRaw, 'eos_token_id', file),
    torchDtype: typeof c.torch_dtype === 'string' ? c.torch_dtype : typeof c.dtype === 'string' ? c.dtype : null,
  };
}

function parseRopeScaling(raw: unknown, file: string): Llama3RopeScaling | null {
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new CheckpointError({ file, reason: 'rope_scaling is not an object' });
  const r = raw as Json;
  const type = r.rope_type ?? r.type;
  if (type === 'default') return null;
  if (type !== 'llama3') {
    throw new CheckpointError({ file, reason: `unsupported rope_scaling type ${JSON.stringify(type)} (supported: llama3)` });
  }
  const field = (key: string): number => {
    const v = r[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw new CheckpointError({ file, reason: `rope_scaling.${key} must be a positive number, got ${JSON.stringify(v)}` });
    }
    return v;
  };
  return {
    ropeType: 'llama3',
    factor: field('factor'),
    lowFreqFactor: field('low_freq_factor'),
    highFreqFactor: field('high_freq_factor'),
    originalMaxPositionEmbeddings: field('original_max_position_embeddings'),
  };
}

/** A token id field: a non-negative integer or null. */
export function parseTokenId(raw: unknown, key: string, file: string): number | null {
  if (raw === undefined || raw === null) return null;
  if (Array.isArray(raw)) return raw.length > 0 ? parseTokenId(raw[0], key, file) : null;
  if (!Number.isSafeInteger(raw) || (raw as number) < 0) {
    throw new CheckpointError({ file, reason: `${key} must be a token id, got ${JSON.stringify(raw)}` });
  }
  return raw as number;
}

/** An eos_token_id field: one id, a list of ids, or null (→ []). */
export function parseTokenIds(raw: unknown, key: string, file: string): number[] {
  if (raw === undefined || raw === null) return [];
  const list = Array.isArray(raw) ? raw : [raw];
  const out: number[] = [];
  for (const v of list) {
    const id = parseTokenId(v, key, file);
    if (id !== null && !out.includes(id)) out.push(id);
  }
  return out;
}
