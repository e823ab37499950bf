/**
 * A GGUF file as a model checkpoint: the ModelConfig from its metadata, and its tensors
 * under the Hugging Face names the loader asks for (runtime/checkpoint/load.ts), converted
 * to the HF layout — dequantized to f32, and for the `llama` architecture with the rows
 * of the Q and K projections put back in HF order.
 *
 * Why the reordering: llama.cpp's converter (convert_hf_to_gguf.py, LlamaModel.permute)
 * reorders the rows of q_proj/k_proj (weights and biases) inside each head from HF's
 * rotate-half layout — the first half of a head's dimensions pairs with the second half —
 * to ggml's interleaved rotary layout, where dimensions 2i and 2i+1 form a pair. Our
 * forward uses HF's rotate-half convention, so GGUF row h·D + 2i + s goes back to HF row
 * h·D + s·D/2 + i (s ∈ {0, 1}, i < D/2). The `qwen2` converter does not permute (llama.cpp
 * runs qwen2 with NEOX, i.e. rotate-half, rope), so its rows are used as stored.
 *
 * Supported: architectures `llama` (Llama 2/3.x, Mistral-style, SmolLM/SmolLM2,
 * TinyLlama) and `qwen2`; rope scaling none, `linear`, and Llama 3's per-frequency factors
 * (the `rope_freqs.weight` tensor the converter writes instead of metadata).
 *
 * @example
 * const g = GgufFile.open('SmolLM2-135M-Instruct.Q4_1.gguf');
 * const config = ggufModelConfig(g); // numLayers 30, hiddenSize 576, ...
 * const src = new GgufTensorSource(g, config);
 * const wq = src.read('model.layers.0.self_attn.q_proj.weight', [576, 576]); // HF (out, in)
 */
import { CheckpointError } from '../../core/errors.js';
import type { Architecture, ModelConfig, RopeFactorScaling } from '../model/types.js';
import { dequantize, GGML_TYPES, type GgmlType } from './ggml-quants.js';
import type { GgufFile, GgufTensorInfo } from './gguf.js';
import { ggufStopIds } from './gguf-tokenizer.js';
import type { TensorSource } from './tensor-source.js';

const ARCHITECTURES: Record<string, Architecture> = {
  llama: 'LlamaForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
};

/** Sizes no real model reaches; a header claiming more is corrupt (refused before use). */
const MAX_DIM = 1 << 20;

/** HF tensor name → GGUF tensor name (llama.cpp's gguf-py tensor_mapping, LLM_TENSOR_*). */
export function ggufTensorName(hfName: string): string | null {
  const fixed: Record<string, string> = {
    'model.embed_tokens.weight': 'token_embd.weight',
    'model.norm.weight': 'output_norm.weight',
    'lm_head.weight': 'output.weight',
  };
  if (fixed[hfName] !== undefined) return fixed[hfName]!;
  const m = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(hfName);
  if (m === null) return null;
  const parts: Record<string, string> = {
    input_layernorm: 'attn_norm',
    'self_attn.q_proj': 'attn_q',
    'self_attn.k_proj': 'attn_k',
    'self_attn.v_proj': 'attn_v',
    'self_attn.o_proj': 'attn_output',
    post_attention_layernorm: 'ffn_norm',
    'mlp.gate_proj': 'ffn_gate',
    'mlp.up_proj': 'ffn_up',
    'mlp.down_proj': 'ffn_down',
  };
  const part = parts[m[2]!];
  return part === undefined ? null : `blk.${m[1]}.${part}.${m[3]}`;
}

/** Reads the architecture name and checks it is one the forward pass runs. */
export function ggufArchitecture(g: GgufFile): { name: string; architecture: Architecture } {
  const name = g.string('general.architecture');
  if (name === undefined) throw new CheckpointError({ file: g.file, reason: 'missing metadata general.architecture' });
  const architecture = ARCHITECTURES[name];
  if (architecture === undefined) {
    throw new CheckpointError({ file: g.file, reason: `unsupported architecture ${JSON.stringify(name)} (supported: ${Object.keys(ARCHITECTURES).join(', ')})` });
  }
  return { name, architecture };
}

/** The normalised ModelConfig from a GGUF header (and its small rope_freqs tensor). */
export function ggufModelConfig(g: GgufFile): ModelConfig {
  const { name: arch, architecture } = ggufArchitecture(g);
  const bad = (reason: string, tensor?: string) => new CheckpointError({ file: g.file, tensor, reason });
  const size = (key: string, fallback?: number): number => {
    const v = g.number(`${arch}.${key}`);
    if (v === undefined) {
      if (fallback !== undefined) return fallback;
      throw bad(`missing metadata ${arch}.${key}`);
    }
    if (!Number.isSafeInteger(v) || v <= 0 || v > MAX_DIM) throw bad(`metadata ${arch}.${key} = ${v} is not a size (1..${MAX_DIM})`);
    return v;
  };
  const positive = (key: string, fallback: number): number => {
    const v = g.number(`${arch}.${key}`);
    if (v === undefined) return fallback;
    if (!Number.isFinite(v) || v <= 0) throw bad(`metadata ${arch}.${key} = ${v} must be a positive number`);
    return v;
  };

  const hiddenSize = size('embedding_length');
  const numHeads = size('attention.head_count');
  // head_count_kv may be a per-layer array in some files; Skein needs one value.
  if (Array.isArray(g.metadata.get(`${arch}.attention.head_count_kv`))) {
    throw bad(`metadata ${arch}.attention.head_count_kv differs per layer, which is not supported`);
  }
  const numKvHeads = size('attention.head_count_kv', numHeads);
  if (numHeads % numKvHeads !== 0) throw bad(`head_count ${numHeads} is not a multiple of head_count_kv ${numKvHeads}`);
  if (g.number(`${arch}.attention.key_length`) === undefined && hiddenSize % numHeads !== 0) {
    throw bad(`embedding_length ${hiddenSize} is not divisible by head_count ${numHeads} and attention.key_length is not given`);
  }
  const headDim = size('attention.key_length', hiddenSize / numHeads);
  if (size('attention.value_length', headDim) !== headDim) throw bad('attention.value_length differs from key_length, which is not supported');
  if (size('rope.dimension_count', headDim) !== headDim) {
    throw bad(`rope.dimension_count ${g.number(`${arch}.rope.dimension_count`)} differs from the head size ${headDim} (partial rotary is not supported)`);
  }
  if (headDim % 2 !== 0) throw bad(`head size ${headDim} is odd`);

  const tokens = g.array('tokenizer.ggml.tokens');
  const embed = g.tensors.get('token_embd.weight');
  const vocabSize = tokens?.length ?? g.number(`${arch}.vocab_size`) ?? embed?.shape[0];
  if (vocabSize === undefined || vocabSize <= 0) throw bad('no vocabulary size: no tokenizer.ggml.tokens, vocab_size or token_embd.weight');

  const tied = !g.has('output.weight');
  const qkvBias = g.has('blk.0.attn_q.bias');
  const oBias = g.has('blk.0.attn_output.bias');
  if (oBias && !qkvBias) throw bad('blk.0.attn_output.bias without q/k/v biases is not supported');
  if (architecture === 'Qwen2ForCausalLM' && !qkvBias) throw bad('qwen2 without attention biases (blk.0.attn_q.bias missing)');

  const bosTokenId = g.number('tokenizer.ggml.bos_token_id') ?? null;
  if (bosTokenId !== null && !(Number.isSafeInteger(bosTokenId) && bosTokenId >= 0 && bosTokenId < vocabSize)) {
    throw bad(`metadata tokenizer.ggml.bos_token_id = ${bosTokenId} is not a token id (vocabulary of ${vocabSize})`);
  }

  const typeCounts = new Map<string, number>();
  for (const t of g.tensors.values()) typeCounts.set(GGML_TYPES[t.type].name, (typeCounts.get(GGML_TYPES[t.type].name) ?? 0) + 1);

  return {
    architecture,
    vocabSize,
    hiddenSize,
    intermediateSize: size('feed_forward_length'),
    numLayers: size('block_count'),
    numHeads,
    numKvHeads,
    headDim,
    // llama.cpp's defaults when a file omits them.
    rmsNormEps: positive('attention.layer_norm_rms_epsilon', 1e-5),
    ropeTheta: positive('rope.freq_base', 10000),
    ropeScaling: ropeScaling(g, arch, headDim),
    maxPositionEmbeddings: size('context_length', 2048),
    tieWordEmbeddings: tied,
    qkvBias,
    oBias,
    slidingWindow: null,
    bosTokenId,
    eosTokenIds: ggufStopIds(g, vocabSize),
    torchDtype: `gguf ${[...typeCounts].map(([n, c]) => `${n}×${c}`).join(' ')}`,
  };
}

function ropeScaling(g: GgufFile, arch: string, headDim: number): RopeFactorScaling | null {
  const type = g.string(`${arch}.rope.scaling.type`) ?? 'none';
  const bad = (reason: string, tensor?: string) => new CheckpointError({ file: g.file, tensor, reason });
  if (g.has('rope_freqs.weight')) {
    if (type !== 'none') throw bad(`rope_freqs.weight together with rope.scaling.type ${type} is not supported`);
    const t = g.tensor('rope_freqs.weight');
    if (t.shape.length !== 1 || t.shape[0] !== headDim / 2) {
      throw bad(`shape [${t.shape.join(', ')}] but expected [${headDim / 2}] (one factor per rotary frequency)`, t.name);
    }
    const f = dequantize(t.type, g.readTensorBytes(t.name), t.numel);
    for (const x of f) if (!(Number.isFinite(x) && x > 0)) throw bad(`factor ${x} is not a positive number`, t.name);
    return { ropeType: 'factors', factors: [...f] };
  }
  if (type === 'none') return null;
  if (type === 'linear') {
    const factor = g.number(`${arch}.rope.scaling.factor`);
    if (factor === undefined || !Number.isFinite(factor) || factor <= 0) throw bad(`rope.scaling.type linear needs a positive ${arch}.rope.scaling.factor`);
    return { ropeType: 'factors', factors: new Array<number>(headDim / 2).fill(factor) };
  }
  throw bad(`unsupported ${arch}.rope.scaling.type ${JSON.stringify(type)} (supported: none, linear, and llama3 via rope_freqs.weight)`);
}

/**
 * Rows of a Q or K projection from ggml's interleaved rotary order back to HF's
 * rotate-half order (see the module header). `data` holds `heads · headDim` rows of
 * `cols` values (cols = 1 for a bias).
 */
export function unpermuteRotaryRows(data: Float32Array, heads: number, headDim: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let s = 0; s < 2; s++) {
        const from = (h * headDim + 2 * i + s) * cols;
        const to = (h * headDim + s * half + i) * cols;
        out.set(data.subarray(from, from + cols), to);
      }
    }
  }
  return out;
}

/** A GGUF file's tensors by HF name, as f32 in HF layout. */
export class GgufTensorSource implements TensorSource {
  /** Whether Q/K rows come in ggml's interleaved rotary order (llama converter). */
  private readonly permutedQk: boolean;

  constructor(
    private readonly g: GgufFile,
    private readonly config: ModelConfig,
  ) {
    this.permutedQk = config.architecture === 'LlamaForCausalLM';
  }

  fileOf(): string {
    return this.g.file;
  }

  fileTensorName(hfName: string): string {
    return ggufTensorName(hfName) ?? hfName;
  }

  has(hfName: string): boolean {
    const name = ggufTensorName(hfName);
    return name !== null && this.g.has(name);
  }

  /** The GGUF tensor behind an HF name, checked against the HF (row-major) shape expected. */
  private info(hfName: string, shape: number[]): GgufTensorInfo {
    const name = ggufTensorName(hfName) ?? hfName;
    const bad = (reason: string) => new CheckpointError({ file: this.g.file, tensor: name, reason });
    if (!this.g.has(name)) throw bad(`missing tensor (expected shape [${shape.join(', ')}], HF name ${hfName})`);
    const t = this.g.tensor(name);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw bad(`shape [${t.shape.join(', ')}] but the architecture needs [${shape.join(', ')}]`);
    }
    return t;
  }

  /** Checks that the tensor exists with the HF (row-major) shape expected, reading nothing. */
  checkShape(hfName: string, shape: number[]): void {
    this.info(hfName, shape);
  }

  /** The raw blocks, rows as stored (so not for Q/K, whose rows `read` reorders). */
  readStored(hfName: string, shape: number[]): { type: GgmlType; bytes: Uint8Array } {
    const t = this.info(hfName, shape);
    if (this.permutedQk && /\.attn_[qk]\./.test(t.name)) throw new RangeError(`${t.name} needs its rows reordered: use read`);
    return { type: t.type, bytes: this.g.readTensorBytes(t.name) };
  }

  /** Reads, checks and converts one tensor; `shape` is the HF (row-major) shape expected. */
  read(hfName: string, shape: number[]): Float32Array {
    const t = this.info(hfName, shape);
    const name = t.name;
    let data = dequantize(t.type, this.g.readTensorBytes(name), t.numel);
    const rotary = /\.attn_([qk])\.(weight|bias)$/.exec(name);
    if (this.permutedQk && rotary !== null) {
      const heads = rotary[1] === 'q' ? this.config.numHeads : this.config.numKvHeads;
      data = unpermuteRotaryRows(data, heads, this.config.headDim, rotary[2] === 'weight' ? shape[1]! : 1);
    }
    return data;
  }

  close(): void {
    this.g.close();
  }
}
