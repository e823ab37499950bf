/**
 * Loads a model into a LoadedModel: tf tensors in the runtime's layout
 * (runtime/model/types.ts), every projection transposed from HF's (out, in) to (in, out)
 * while still a JS array, so wasm memory only ever holds the final copy. Two formats:
 * - a Hugging Face-layout folder (config.json, generation_config.json, model.safetensors
 *   or a sharded index, tokenizer.json);
 * - a GGUF file, or a folder holding one (runtime/checkpoint/gguf-model.ts): config,
 *   weights and tokenizer all come from the one file.
 * A model is named by a path, or by the name of a folder under <repo>/models/.
 * Tensors are read and converted one at a time; each JS buffer is dropped as soon as its
 * tensor exists. The tokenizer is loaded lazily: commands that work on ids (logits) run on
 * folders without tokenizer.json.
 *
 * @example
 * const model = await loadModel('smollm2-135m-instruct'); // models/<name>/, a folder or a .gguf
 * const ids = model.tokenizer().encode('Hello');
 * model.dispose();
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { CheckpointError } from '../../core/errors.js';
import { initBackend } from '../backend.js';
import { dequantizeMatrix, type BlockMatrix } from '../kernels/blocks.js';
import { MatmulKernels, UploadedMatrix } from '../kernels/matmul.js';
import type { BlockWeights, EmbeddingTable, LayerWeights, LoadedModel, ModelConfig, ModelWeights } from '../model/types.js';
import { parseModelConfig, parseTokenId, parseTokenIds } from './config.js';
import { BlockEmbedding, KernelEmbedding } from './embedding-table.js';
import { GgufFile } from './gguf.js';
import { ggufBlockPlan, ggufBlockWeights } from './gguf-blocks.js';
import { ggufModelConfig, GgufTensorSource } from './gguf-model.js';
import { ggufTokenizer } from './gguf-tokenizer.js';
import { readJson } from './json.js';
import { SafetensorsCheckpoint } from './safetensors.js';
import { SafetensorsSource, type TensorSource } from './tensor-source.js';
import { ModelTokenizer } from './tokenizer.js';

/** <repo>/models, found from this file so that the current directory does not matter. */
export const MODELS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../models');

/** Sampling defaults a checkpoint suggests in generation_config.json (informational). */
export interface GenerationDefaults {
  temperature?: number;
  topP?: number;
  topK?: number;
  repetitionPenalty?: number;
  maxNewTokens?: number;
}

export interface LoadedCheckpoint extends LoadedModel {
  /** The resolved folder (for a GGUF file, the folder it is in). */
  dir: string;
  /** The format it was read from. */
  format: ModelLocation['format'];
  generationDefaults: GenerationDefaults;
  /** Whether a tokenizer exists (tokenizer() throws a CheckpointError when not). */
  hasTokenizer: boolean;
  /** The tokenizer, read on first call and cached. */
  tokenizer(): ModelTokenizer;
}

export interface LoadModelOptions {
  /** Load the tokenizer now rather than on first use, failing early if it is missing. */
  eagerTokenizer?: boolean;
}

/** Where a model's files are: a Hugging Face folder, or one GGUF file. */
export type ModelLocation = { format: 'hf'; dir: string } | { format: 'gguf'; dir: string; file: string };

const GGUF_FILE = /\.gguf$/i;

/** A folder with config.json is HF layout; otherwise the one .gguf file in it, if any. */
function locateInDir(dir: string): ModelLocation {
  if (fs.existsSync(path.join(dir, 'config.json'))) return { format: 'hf', dir };
  const ggufs = fs.readdirSync(dir).filter((f) => GGUF_FILE.test(f)).sort();
  if (ggufs.length === 1) return { format: 'gguf', dir, file: path.join(dir, ggufs[0]!) };
  if (ggufs.length > 1) {
    throw new CheckpointError({ file: dir, reason: `holds ${ggufs.length} .gguf files (${ggufs.join(', ')}): give the one to load as the path` });
  }
  // Neither: an HF folder missing config.json (tokenizer-only folders are fine for loadTokenizer).
  return { format: 'hf', dir };
}

/** A .gguf file, a folder (HF layout or holding one .gguf), or the name of a folder under <repo>/models/. */
export function resolveModel(spec: string): ModelLocation {
  if (fs.existsSync(spec)) {
    const abs = path.resolve(spec);
    const stat = fs.statSync(abs);
    if (stat.isDirectory()) return locateInDir(abs);
    if (GGUF_FILE.test(abs)) return { format: 'gguf', dir: path.dirname(abs), file: abs };
    throw new CheckpointError({ file: spec, reason: 'not a .gguf file (a Hugging Face model is given as its folder)' });
  }
  const named = path.join(MODELS_DIR, spec);
  if (!/[\\/]/.test(spec) && fs.existsSync(named) && fs.statSync(named).isDirectory()) return locateInDir(named);
  throw new CheckpointError({
    file: spec,
    reason: `no such model (neither a .gguf file, a folder, nor a name under ${MODELS_DIR})`,
  });
}

/** The folder of a model (for a GGUF file, the folder it is in). */
export function resolveModelDir(dirOrName: string): string {
  return resolveModel(dirOrName).dir;
}

/** Whether the model has a tokenizer (tokenizer.json, or tokenizer.ggml.* in the GGUF). */
export function modelHasTokenizer(location: ModelLocation): boolean {
  if (location.format === 'hf') return fs.existsSync(path.join(location.dir, 'tokenizer.json'));
  return GgufFile.inspect(location.file, (g) => g.metadata.has('tokenizer.ggml.tokens'));
}

/** config.json plus generation_config.json's eos/bos ids, which extend the config's. */
export function readModelConfig(dir: string): { config: ModelConfig; generationDefaults: GenerationDefaults } {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) throw new CheckpointError({ file, reason: 'missing config.json' });
  const config = parseModelConfig(readJson(file), file);
  const generationDefaults: GenerationDefaults = {};
  const genFile = path.join(dir, 'generation_config.json');
  if (fs.existsSync(genFile)) {
    const gen = readJson(genFile) as Record<string, unknown>;
    // Chat checkpoints list their end-of-turn token here; keep the config's ids too.
    const eos = parseTokenIds(gen.eos_token_id, 'eos_token_id', genFile);
    config.eosTokenIds = [...eos, ...config.eosTokenIds.filter((id) => !eos.includes(id))];
    config.bosTokenId ??= parseTokenId(gen.bos_token_id, 'bos_token_id', genFile);
    const num = (k: string) => (typeof gen[k] === 'number' ? (gen[k] as number) : undefined);
    if (gen.do_sample !== false) {
      generationDefaults.temperature = num('temperature');
      generationDefaults.topP = num('top_p');
      generationDefaults.topK = num('top_k');
    }
    generationDefaults.repetitionPenalty = num('repetition_penalty');
    generationDefaults.maxNewTokens = num('max_new_tokens');
    for (const k of Object.keys(generationDefaults) as (keyof GenerationDefaults)[]) {
      if (generationDefaults[k] === undefined) delete generationDefaults[k];
    }
  }
  return { config, generationDefaults };
}

/** Reads the tokenizer of a model, with eos/bos ids from its config when present. */
export function loadTokenizer(spec: string): ModelTokenizer {
  const location = resolveModel(spec);
  if (location.format === 'gguf') return GgufFile.inspect(location.file, ggufTokenizer);
  const { dir } = location;
  if (!fs.existsSync(path.join(dir, 'config.json'))) return ModelTokenizer.fromDir(dir);
  const { config } = readModelConfig(dir);
  return ModelTokenizer.fromDir(dir, { eosIds: config.eosTokenIds, bosId: config.bosTokenId, modelVocabSize: config.vocabSize });
}

/** (rows, cols) row-major → (cols, rows), in blocks so both sides stay cache-friendly. */
export function transpose2d(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  const B = 32;
  for (let r0 = 0; r0 < rows; r0 += B) {
    const r1 = Math.min(r0 + B, rows);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(c0 + B, cols);
      for (let r = r0; r < r1; r++) {
        const base = r * cols;
        for (let c = c0; c < c1; c++) out[c * rows + r] = src[base + c]!;
      }
    }
  }
  return out;
}

/** Reads tensors by HF name, checks shapes and values, and tracks what it created for cleanup. */
class WeightReader {
  readonly created: tf.Tensor[] = [];
  constructor(private readonly src: TensorSource) {}

  has(name: string): boolean {
    return this.src.has(name);
  }

  fileOf(name: string): string {
    return this.src.fileOf(name);
  }

  private raw(name: string, shape: number[]): Float32Array {
    const data = this.src.read(name, shape);
    this.checkFinite(name, data, 0);
    return data;
  }

  private checkFinite(name: string, data: Float32Array, offset: number): void {
    // x - x is NaN exactly for NaN and ±Infinity: one subtraction per weight, no branches taken.
    for (let i = 0; i < data.length; i++) {
      if (data[i]! - data[i]! !== 0) {
        const at = offset + i;
        throw new CheckpointError({ file: this.src.fileOf(name), tensor: this.src.fileTensorName(name), reason: `value ${data[i]} at flat index ${at}: weights must be finite` });
      }
    }
  }

  /** The embedding, kept in JS memory in its stored format (out of the tensor heap). */
  embedding(name: string, vocab: number, hidden: number): EmbeddingTable {
    const stored = this.src.readStored?.(name, [vocab, hidden]);
    const table =
      stored !== undefined ? new BlockEmbedding(stored.type, stored.bytes, vocab, hidden) : BlockEmbedding.fromF32(this.src.read(name, [vocab, hidden]), vocab, hidden);
    const chunk = 1024;
    for (let r0 = 0; r0 < vocab; r0 += chunk) {
      const ids = Array.from({ length: Math.min(chunk, vocab - r0) }, (_, i) => r0 + i);
      this.checkFinite(name, table.rows(ids), r0 * hidden);
    }
    return table;
  }

  vector(name: string, size: number): tf.Tensor1D {
    return this.keep(tf.tensor1d(this.raw(name, [size]), 'float32'));
  }

  /** A matrix kept as stored, (rows, cols). */
  matrix(name: string, rows: number, cols: number): tf.Tensor2D {
    return this.keep(tf.tensor2d(this.raw(name, [rows, cols]), [rows, cols], 'float32'));
  }

  /** An nn.Linear weight stored (out, in), returned as (in, out). */
  linear(name: string, inDim: number, outDim: number): tf.Tensor2D {
    const data = transpose2d(this.raw(name, [outDim, inDim]), outDim, inDim);
    return this.keep(tf.tensor2d(data, [inDim, outDim], 'float32'));
  }

  /**
   * An nn.Linear weight whose blocks the kernels hold: checked for shape now, its (in, out)
   * f32 tensor made from the blocks on first use only. The forward never asks for it (it
   * multiplies by the blocks); the reference forward, training and tests do. Eager f32
   * copies were 3.9 GB for a Llama-3.2-1B shape, past the wasm heap.
   */
  lazyLinear(name: string, inDim: number, outDim: number, blocks: BlockMatrix): () => tf.Tensor2D {
    this.src.checkShape?.(name, [outDim, inDim]);
    return () => this.keep(tf.keep(tf.tensor2d(transpose2d(dequantizeMatrix(blocks), outDim, inDim), [inDim, outDim], 'float32')));
  }

  keep<T extends tf.Tensor>(t: T): T {
    this.created.push(t);
    return t;
  }
}

/** Defines obj[key] as made by `make` on first read, then kept (a skip adapter's merged layers use it too: adapters/adapted-model.ts). */
export function defineLazy<T extends object>(obj: T, key: keyof T, make: () => T[keyof T]): void {
  let value: T[keyof T] | undefined;
  Object.defineProperty(obj, key, { enumerable: true, get: () => (value ??= make()) });
}

/** Checks the shapes of the tensors the kernels will hold, before any of them is read. */
function checkBlockShapes(config: ModelConfig, src: TensorSource): void {
  const { hiddenSize: h, intermediateSize: inter, numHeads, numKvHeads, headDim, vocabSize } = config;
  const qDim = numHeads * headDim;
  const kvDim = numKvHeads * headDim;
  for (let i = 0; i < config.numLayers; i++) {
    const a = `model.layers.${i}.self_attn`;
    const m = `model.layers.${i}.mlp`;
    src.checkShape?.(`${a}.q_proj.weight`, [qDim, h]);
    src.checkShape?.(`${a}.k_proj.weight`, [kvDim, h]);
    src.checkShape?.(`${a}.v_proj.weight`, [kvDim, h]);
    src.checkShape?.(`${a}.o_proj.weight`, [h, qDim]);
    src.checkShape?.(`${m}.gate_proj.weight`, [inter, h]);
    src.checkShape?.(`${m}.up_proj.weight`, [inter, h]);
    src.checkShape?.(`${m}.down_proj.weight`, [h, inter]);
  }
  src.checkShape?.(config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight', [vocabSize, h]);
}

/**
 * The model's weights as the runtime holds them. With `blocks` (a GGUF whose projections
 * the kernels hold, already uploaded) the projections and lm head are lazy f32 tensors
 * (WeightReader.lazyLinear) and a tied embedding reads its rows from the lm head's blocks.
 */
function readWeights(config: ModelConfig, r: WeightReader, blocks: BlockWeights | null): ModelWeights {
  const { hiddenSize: h, intermediateSize: inter, numHeads, numKvHeads, headDim, vocabSize } = config;
  const qDim = numHeads * headDim;
  const kvDim = numKvHeads * headDim;
  const tiedHead = config.tieWordEmbeddings && blocks?.lmHead instanceof UploadedMatrix ? blocks.lmHead : null;
  const embed = tiedHead !== null ? new KernelEmbedding(tiedHead) : r.embedding('model.embed_tokens.weight', vocabSize, h);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}`;
    const a = `${p}.self_attn`;
    const m = `${p}.mlp`;
    const B = blocks?.layers[i];
    const projections: [keyof LayerWeights, string, number, number][] = [
      ['wq', `${a}.q_proj.weight`, h, qDim],
      ['wk', `${a}.k_proj.weight`, h, kvDim],
      ['wv', `${a}.v_proj.weight`, h, kvDim],
      ['wo', `${a}.o_proj.weight`, qDim, h],
      ['wGate', `${m}.gate_proj.weight`, h, inter],
      ['wUp', `${m}.up_proj.weight`, h, inter],
      ['wDown', `${m}.down_proj.weight`, inter, h],
    ];
    const layer = {
      inputNorm: r.vector(`${p}.input_layernorm.weight`, h),
      bq: config.qkvBias ? r.vector(`${a}.q_proj.bias`, qDim) : null,
      bk: config.qkvBias ? r.vector(`${a}.k_proj.bias`, kvDim) : null,
      bv: config.qkvBias ? r.vector(`${a}.v_proj.bias`, kvDim) : null,
      bo: config.oBias ? r.vector(`${a}.o_proj.bias`, h) : null,
      postNorm: r.vector(`${p}.post_attention_layernorm.weight`, h),
    } as LayerWeights;
    for (const [key, name, inDim, outDim] of projections) {
      if (B === undefined) layer[key] = r.linear(name, inDim, outDim) as never;
      else defineLazy(layer, key, r.lazyLinear(name, inDim, outDim, B[key as keyof typeof B]));
    }
    layers.push(layer);
  }
  const finalNorm = r.vector('model.norm.weight', h);
  if (blocks !== null) {
    const weights = { embed, layers, finalNorm } as ModelWeights;
    const head = config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
    defineLazy(weights, 'lmHead', r.lazyLinear(head, h, vocabSize, blocks.lmHead));
    return weights;
  }
  let lmHead: tf.Tensor2D;
  if (config.tieWordEmbeddings) {
    lmHead = r.keep(tf.tensor2d(transpose2d((embed as BlockEmbedding).all(), vocabSize, h), [h, vocabSize], 'float32'));
  } else if (r.has('lm_head.weight')) {
    lmHead = r.linear('lm_head.weight', h, vocabSize);
  } else {
    throw new CheckpointError({
      file: r.fileOf('lm_head.weight'),
      tensor: 'lm_head.weight',
      reason: 'missing tensor and tie_word_embeddings is false',
    });
  }
  return { embed, layers, finalNorm, lmHead };
}

/**
 * Memory. Two wasm32 memories of 4 GB at most each: tfjs's heap and the matmul kernels'
 * own (runtime/kernels/matmul.ts). A GGUF whose projections the kernels take (F32, F16,
 * Q8_0, Q4_0, Q4_1) keeps them, and the lm head, only in the kernels' memory as stored
 * (gguf-blocks.ts): tfjs's heap holds norms, biases, activations and the KV cache, and a
 * tied embedding reads its rows from the lm head's blocks. The limit is then the kernels'
 * memory: weights up to KERNEL_WEIGHT_LIMIT leave room for the KV mirror and scratch
 * (Llama-3.2-1B's shape, `skein bench big`: the kernels' memory 804 MiB as Q4_0 and
 * 1,518 MiB as Q8_0 after a 128-token prefill, tfjs's heap 33 MiB; about 6B parameters
 * would fit as Q4_0, 3B as Q8_0). Other files (K-quants, BF16, safetensors) run on f32 tensors in
 * tfjs's heap, where the forward adds norm-folded copies and XNNPACK's packed ones: the
 * largest of those measured here is SmolLM2-360M's shape (362M parameters; a 3.92 GB heap
 * after a 512-token prefill), so more than WASM_WEIGHT_LIMIT of f32 weights is refused up
 * front rather than left to abort inside tfjs-wasm.
 */
const WASM_WEIGHT_LIMIT = 3.5 * 2 ** 30;
const KERNEL_WEIGHT_LIMIT = 3.5 * 2 ** 30;

/** Bytes the weights take in the tensor heap as f32 (the embedding table is elsewhere). */
function tensorHeapBytes(c: ModelConfig): number {
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const layer = c.hiddenSize * (qDim + 2 * kvDim) + qDim * c.hiddenSize + 3 * c.hiddenSize * c.intermediateSize + 2 * c.hiddenSize;
  return 4 * (c.numLayers * layer + c.hiddenSize * c.vocabSize + c.hiddenSize);
}

interface OpenedModel {
  location: ModelLocation;
  config: ModelConfig;
  generationDefaults: GenerationDefaults;
  source: TensorSource;
  hasTokenizer: boolean;
  makeTokenizer(): ModelTokenizer;
  /** GGUF: bytes the kernels would hold, null when they cannot take the projections (header only). */
  blockBytes: number | null;
  /** GGUF: the projections uploaded into `kernels` as stored (read before close). */
  readBlockWeights?(kernels: MatmulKernels): BlockWeights | null;
}

function openModel(spec: string): OpenedModel {
  const location = resolveModel(spec);
  if (location.format === 'hf') {
    const { dir } = location;
    const { config, generationDefaults } = readModelConfig(dir);
    return {
      location,
      config,
      generationDefaults,
      source: new SafetensorsSource(SafetensorsCheckpoint.openDir(dir)),
      hasTokenizer: fs.existsSync(path.join(dir, 'tokenizer.json')),
      makeTokenizer: () => ModelTokenizer.fromDir(dir, { eosIds: config.eosTokenIds, bosId: config.bosTokenId }),
      blockBytes: null,
    };
  }
  const g = GgufFile.open(location.file);
  try {
    const config = ggufModelConfig(g);
    return {
      location,
      config,
      generationDefaults: {},
      source: new GgufTensorSource(g, config),
      hasTokenizer: g.metadata.has('tokenizer.ggml.tokens'),
      // The header's metadata stays readable after the file is closed.
      makeTokenizer: () => ggufTokenizer(g),
      blockBytes: ggufBlockPlan(g, config)?.bytes ?? null,
      readBlockWeights: (kernels) => ggufBlockWeights(g, config, kernels),
    };
  } catch (err) {
    g.close();
    throw err;
  }
}

/** Refuses, from the header alone, a model whose weights cannot fit where they would live. */
function checkFits(opened: OpenedModel, backend: string): void {
  const { config, location } = opened;
  const file = location.format === 'gguf' ? location.file : location.dir;
  const gb = (n: number) => (n / 2 ** 30).toFixed(1);
  if (opened.blockBytes !== null && opened.blockBytes > KERNEL_WEIGHT_LIMIT) {
    throw new CheckpointError({
      file,
      reason: `too large: its projections need ${gb(opened.blockBytes)} GB in the matmul kernels' wasm32 memory, which holds 4 GB (with the KV cache and scratch, ${gb(KERNEL_WEIGHT_LIMIT)} GB of weights run)`,
    });
  }
  if (opened.blockBytes === null && backend === 'wasm' && tensorHeapBytes(config) > WASM_WEIGHT_LIMIT) {
    throw new CheckpointError({
      file,
      reason: `too large for the wasm backend: its weights need ${gb(tensorHeapBytes(config))} GB as f32 tensors and the wasm32 heap holds 4 GB (with the forward's working memory, about 360M parameters run); a GGUF in F32, F16, Q8_0, Q4_0 or Q4_1 runs on the kernels instead`,
    });
  }
}

/**
 * Loads config, weights and, lazily, the tokenizer of a model: a GGUF the kernels take
 * into their memory as stored (f32 tensors only on demand), anything else as f32 tensors.
 */
export async function loadModel(spec: string, options: LoadModelOptions = {}): Promise<LoadedCheckpoint> {
  const backend = await initBackend();
  const opened = openModel(spec);
  const { config, location } = opened;
  const reader = new WeightReader(opened.source);
  let weights: ModelWeights;
  let blockWeights: BlockWeights | null = null;
  try {
    checkFits(opened, backend);
    if (opened.blockBytes !== null) {
      checkBlockShapes(config, opened.source);
      blockWeights = opened.readBlockWeights?.(new MatmulKernels()) ?? null;
    }
    weights = readWeights(config, reader, blockWeights);
  } catch (err) {
    for (const t of reader.created) t.dispose();
    throw err;
  } finally {
    opened.source.close();
  }
  const created = reader.created;
  let tokenizer: ModelTokenizer | null = null;
  let disposed = false;
  const model: LoadedCheckpoint = {
    config,
    weights,
    ...(blockWeights !== null ? { blockWeights } : {}),
    source: location.format === 'gguf' ? location.file : location.dir,
    dir: location.dir,
    format: location.format,
    generationDefaults: opened.generationDefaults,
    hasTokenizer: opened.hasTokenizer,
    tokenizer() {
      tokenizer ??= opened.makeTokenizer();
      return tokenizer;
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      for (const t of created) t.dispose();
    },
  };
  if (options.eagerTokenizer === true) {
    try {
      model.tokenizer();
    } catch (err) {
      model.dispose();
      throw err;
    }
  }
  return model;
}
