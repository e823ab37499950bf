/**
 * The shapes every part of the model runtime agrees on: the normalised model config,
 * the loaded weights (pre-transposed, see ARCHITECTURE.md: wasm matMul with transposeB
 * is 10–40× slower than a plain one), and the per-call shaping of one batched forward.
 *
 * Weight layout convention: every projection is stored as (in, out) so that `x·W` is a
 * plain matMul. Hugging Face stores nn.Linear weights as (out, in); the loader transposes.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { BlockMatrix } from '../kernels/blocks.js';
import type { KvType } from '../kernels/matmul.js';

export type Architecture = 'LlamaForCausalLM' | 'Qwen2ForCausalLM' | 'MistralForCausalLM';

export interface Llama3RopeScaling {
  ropeType: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

/**
 * Per-frequency divisors of the rotary inverse frequencies: GGUF's `rope_freqs.weight`
 * (how llama.cpp's converter stores Llama 3 scaling) or linear scaling (all equal).
 */
export interface RopeFactorScaling {
  ropeType: 'factors';
  /** headDim / 2 factors: inv_freq[i] / factors[i]. */
  factors: number[];
}

/** config.json, normalised (camelCase, defaults filled, derived sizes computed). */
export interface ModelConfig {
  architecture: Architecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** config.head_dim, or hidden/heads when absent. */
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: Llama3RopeScaling | RopeFactorScaling | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry biases (Qwen2 always; Llama when attention_bias). */
  qkvBias: boolean;
  /** o_proj carries a bias (Llama attention_bias). */
  oBias: boolean;
  /** Mistral's sliding window, or null. Past it the runtime raises a clear error. */
  slidingWindow: number | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
  /** The torch dtype named by the checkpoint, informational. */
  torchDtype: string | null;
}

export interface LayerWeights {
  inputNorm: tf.Tensor1D; // (hidden)
  wq: tf.Tensor2D; // (hidden, heads*headDim)
  wk: tf.Tensor2D; // (hidden, kvHeads*headDim)
  wv: tf.Tensor2D; // (hidden, kvHeads*headDim)
  bq: tf.Tensor1D | null; // (heads*headDim)
  bk: tf.Tensor1D | null; // (kvHeads*headDim)
  bv: tf.Tensor1D | null; // (kvHeads*headDim)
  wo: tf.Tensor2D; // (heads*headDim, hidden)
  bo: tf.Tensor1D | null; // (hidden)
  postNorm: tf.Tensor1D; // (hidden)
  wGate: tf.Tensor2D; // (hidden, intermediate)
  wUp: tf.Tensor2D; // (hidden, intermediate)
  wDown: tf.Tensor2D; // (intermediate, hidden)
}

/**
 * Token embeddings held outside the tensor heap (loaded checkpoints): the forward only
 * ever needs the rows of the ids it runs, so the (vocab, hidden) table stays in JS memory,
 * in its stored format (GGUF blocks are dequantized row by row), and the wasm heap keeps
 * room for the projections. A 49152 × 576 Q8_0 table is 30 MB here instead of 113 MB of
 * f32 in the heap.
 */
export interface EmbeddingTable {
  readonly vocabSize: number;
  readonly hiddenSize: number;
  /** Bytes of JS memory the table holds. */
  readonly byteLength: number;
  /** The rows of `ids`, (ids.length, hidden) row-major; an id out of range is a RangeError. */
  rows(ids: readonly number[]): Float32Array;
}

export interface ModelWeights {
  embed: tf.Tensor2D | EmbeddingTable; // (vocab, hidden), rows gathered by token id
  layers: LayerWeights[];
  finalNorm: tf.Tensor1D; // (hidden)
  lmHead: tf.Tensor2D; // (hidden, vocab); a transposed copy of embed when tied
}

/**
 * One layer's cached keys and values for one sequence, as a list of chunks in position
 * order (a contiguous cache has one chunk; the paged KV pool passes one chunk per block).
 * Keys are stored after rotary embedding, so a chunk's positions are baked in and the
 * lengths may differ between layers (pruned tokens and skipped layers leave no entry).
 */
export interface LayerKvChunks {
  k: tf.Tensor2D[]; // each (chunkLen, kvHeads*headDim)
  v: tf.Tensor2D[]; // each (chunkLen, kvHeads*headDim)
}

/** One pruning step: an explicit keep set, or the top `keepTop` by last-token attention. */
export type PruneStep = { fromLayer: number; keep: number[]; keepTop?: undefined } | { fromLayer: number; keepTop: number; keep?: undefined };

/**
 * Tokens brought back from LazyLLM's Aux Cache: tokens of earlier steps that were pruned at
 * `fromLayer` (they have KV below it, none from it on) resume from their hidden state at
 * that layer's input instead of being recomputed from layer 0, and run every later layer.
 * A resumed token attends causally by position: to the past rows before it (by
 * `pastPositions`), to resumed tokens up to itself, never to the new tokens; every new
 * token sees every resumed one.
 */
export interface ResumeStep {
  fromLayer: number;
  /** Positions of the parked tokens, ascending, all before the new tokens. */
  positions: number[];
  /** Their hidden states at fromLayer's input, (hidden) each. */
  hidden: Float32Array[];
  /**
   * Absent: every one resumes. Else the forward picks inside the call, from the last new
   * token's attention at the layer run before fromLayer (mean over heads): those ranked
   * among the `rank` keys it attends to most, best first, at most `max` of them.
   */
  select?: { rank: number; max: number };
}

/** One sequence's part of a batched forward call. */
export interface ForwardSequence {
  /** New token ids to run (a prefill chunk, one decode token, or draft tokens). */
  ids: number[];
  /** Rotary positions of the new tokens; default pastLength .. pastLength+ids.length-1. */
  positions?: number[];
  /** Cached KV per layer (index = layer), or undefined for an empty cache. */
  past?: LayerKvChunks[];
  /**
   * Visibility among the new tokens (tree verification of speculative drafts):
   * mask[i][j] = true when new token i may attend to new token j. All cached positions are
   * always visible. Default: causal.
   */
  treeMask?: boolean[][];
  /**
   * Token pruning (LazyLLM): from `fromLayer` on, only the new tokens whose indices are in
   * `keep` are computed; pruned ones produce no KV at those layers. Entries must have
   * increasing fromLayer, and each keep set must include the last new token. Instead of
   * `keep`, `keepTop: n` lets the forward choose inside the same call: the n live new tokens
   * the last new token attends to most (mean over heads) at the layer run before
   * fromLayer, the last one always among them (LazyLLM's selection, one pass).
   */
  prune?: PruneStep[];
  /** Which new positions get logits: 'last' (default) or 'all'. */
  logits?: 'last' | 'all' | 'none';
  /** Return the final hidden state (after the final norm) of the same positions as logits. */
  returnHidden?: boolean;
  /**
   * Return the final hidden state (after the final norm) of every live new token and no
   * logits: the LM head, the widest matmul of the forward (49,152 columns on SmolLM2),
   * does not run for this sequence. Embeddings want this. Overrides `logits`.
   */
  hiddenOnly?: boolean;
  /** Return, per layer, the attention weights of the last new token (mean over heads). */
  returnAttention?: boolean;
  /** Return, per pruning step, the hidden states of tokens pruned there (LazyLLM's Aux Cache). */
  returnPrunedHidden?: boolean;
  /** Aux Cache tokens to resume (revival), at most one step per layer, fromLayer increasing. */
  resume?: ResumeStep[];
  /**
   * Per layer, the position of every past row in chunk order (rows of pruned tokens are
   * missing, revived ones may follow out of order). Needed with `resume`: a resumed token
   * sees only the past rows before it, and `select` finds a parked token's score by it.
   */
  pastPositions?: (readonly number[])[];
}

export interface ForwardCallOptions {
  /** Layers to run, ascending (layer skipping); default every layer. Same for the whole batch. */
  layers?: number[];
}

export interface ForwardSequenceResult {
  /** Logit rows for the requested positions, each of length vocab. */
  logits: Float32Array[];
  /** Indices (into ids) of the logit rows: 'all' gives only tokens live after pruning. */
  logitTokenIndices?: number[];
  /** Final hidden rows for the same positions, when requested. */
  hidden?: Float32Array[];
  /**
   * The new KV produced per layer (index = layer; null for a skipped layer), for the new
   * tokens live at that layer, in order. The caller owns these tensors and disposes them.
   */
  newKv: ({ k: tf.Tensor2D; v: tf.Tensor2D; tokenIndices: number[] } | null)[];
  /** Per layer (null when skipped): attention of the last new token over past+live new keys. */
  attention?: (Float32Array | null)[];
  /** Per pruning step: the hidden state (hidden) of each token pruned at that layer. */
  prunedHidden?: { fromLayer: number; tokenIndices: number[]; hidden: Float32Array[] }[];
  /** Per resume step (when `resume` was given): the positions that resumed. */
  resumed?: { fromLayer: number; positions: number[] }[];
  /**
   * Per layer, the resumed tokens' new KV (rows ascending by position), or null where none
   * ran. The caller owns these tensors, like newKv's.
   */
  resumedKv?: ({ k: tf.Tensor2D; v: tf.Tensor2D; positions: number[] } | null)[];
}

/**
 * A layer's projections as the checkpoint stores them, (out, in) in GGUF blocks, rows in
 * Hugging Face order (GGUF's q/k row permutation undone).
 */
export interface LayerBlockWeights {
  wq: BlockMatrix; // (heads*headDim, hidden)
  wk: BlockMatrix; // (kvHeads*headDim, hidden)
  wv: BlockMatrix; // (kvHeads*headDim, hidden)
  wo: BlockMatrix; // (hidden, heads*headDim)
  wGate: BlockMatrix; // (intermediate, hidden)
  wUp: BlockMatrix; // (intermediate, hidden)
  wDown: BlockMatrix; // (hidden, intermediate)
}

/**
 * The same projections kept in their quantized blocks, when the checkpoint has them: the
 * forward multiplies by these directly (runtime/kernels) instead of by the f32 tensors.
 */
export interface BlockWeights {
  layers: LayerBlockWeights[];
  lmHead: BlockMatrix; // (vocab, hidden): token_embd when tied
}

/** A model ready to run: config, weights and the files it came from. */
export interface LoadedModel {
  config: ModelConfig;
  weights: ModelWeights;
  /** Quantized projections for the fast path (GGUF checkpoints); absent for HF f32/f16 ones. */
  blockWeights?: BlockWeights;
  /**
   * How the fast path keeps this model's KV cache (kv-mirror.ts kvTypeOf): 'q8' halves the
   * f16 cache's bytes (lossy, as llama.cpp's --cache-type-k/v q8_0); unset, f16 for models on
   * quantized blocks and f32 for float ones.
   */
  kvCache?: KvType;
  /** The folder it was loaded from (or a description for in-memory models). */
  source: string;
  dispose(): void;
}
