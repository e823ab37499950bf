/**
 * Random-weight llama GGUF files of any shape and block type, written tensor by tensor
 * (never the whole model in memory), that both Skein and llama.cpp load: the `big` bench
 * writes Llama-3.2-1B's shape with them. Weights are uniform with the spread of
 * N(0, 0.02²), norms near 1; Llama 3's rope scaling goes in as the rope_freqs.weight
 * tensor llama.cpp's converter writes. The vocabulary is a minimal SentencePiece (`llama`)
 * one — <unk>, <s>, </s>, the 256 byte tokens llama.cpp looks up ("<0x0A>" for newline),
 * then numbered pieces up to the vocabulary size — because llama.cpp refuses a file
 * without tokenizer metadata and no real tokenizer has Llama 3's 128,256 entries here
 * (SmolLM2's has 49,152). The benches drive the model with token ids.
 *
 * @example
 * writeRandomGguf('/tmp/tiny.gguf', { ...LLAMA_3_2_1B, numLayers: 1, vocabSize: 512 }, 'q8_0');
 */
import { GgmlType } from '../checkpoint/ggml-quants.js';
import { GgufValueType } from '../checkpoint/gguf.js';
import { arr, f32, u32, writeGguf, type GgufTensorSpec } from '../checkpoint/gguf-writer.js';
import { GGML_TYPE_ID, quantizeMatrix, type BlockType } from '../kernels/blocks.js';
import { mulberry32 } from '../model/random.js';

export interface RandomGgufShape {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  ropeTheta: number;
  /** Llama 3's rope scaling (factor, low/high frequency factors, original context), or none. */
  llama3Rope: { factor: number; lowFreqFactor: number; highFreqFactor: number; originalContext: number } | null;
  tied: boolean;
}

/** meta-llama/Llama-3.2-1B's config.json, as a shape. */
export const LLAMA_3_2_1B: RandomGgufShape = {
  vocabSize: 128256,
  hiddenSize: 2048,
  intermediateSize: 8192,
  numLayers: 16,
  numHeads: 32,
  numKvHeads: 8,
  ropeTheta: 500000,
  llama3Rope: { factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 8192 },
  tied: true,
};

/** Llama 3 rope factors as the converter computes them for rope_freqs.weight. */
export function llama3RopeFactors(headDim: number, theta: number, r: NonNullable<RandomGgufShape['llama3Rope']>): number[] {
  const factors: number[] = [];
  const lowWavelen = r.originalContext / r.lowFreqFactor;
  const highWavelen = r.originalContext / r.highFreqFactor;
  for (let i = 0; i < headDim / 2; i++) {
    const freq = 1 / theta ** ((2 * i) / headDim);
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) factors.push(1);
    else if (wavelen > lowWavelen) factors.push(r.factor);
    else {
      const smooth = (r.originalContext / wavelen - r.lowFreqFactor) / (r.highFreqFactor - r.lowFreqFactor);
      factors.push(1 / ((1 - smooth) / r.factor + smooth));
    }
  }
  return factors;
}

/** The minimal SentencePiece vocabulary of the module header, as tokenizer.ggml.* metadata. */
export function minimalLlamaVocab(vocabSize: number): Record<string, ReturnType<typeof arr> | string | boolean> {
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [2, 3, 3]; // llama.cpp's unknown, control
  for (let b = 0; b < 256; b++) tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`), types.push(6); // byte
  for (let i = tokens.length; i < vocabSize; i++) tokens.push(`▁t${i}`), types.push(1); // normal
  if (tokens.length > vocabSize) throw new RangeError(`a vocabulary of ${vocabSize} cannot hold the ${tokens.length} tokens every llama vocabulary needs`);
  return {
    'tokenizer.ggml.model': 'llama',
    'tokenizer.ggml.tokens': arr(GgufValueType.STRING, tokens),
    'tokenizer.ggml.scores': arr(GgufValueType.FLOAT32, tokens.map((_, i) => -i)),
    'tokenizer.ggml.token_type': arr(GgufValueType.INT32, types),
    'tokenizer.ggml.bos_token_id': u32(1),
    'tokenizer.ggml.eos_token_id': u32(2),
    'tokenizer.ggml.unknown_token_id': u32(0),
    'tokenizer.ggml.add_bos_token': false,
  };
}

/** Writes a random-weight llama model of `shape` with every matrix as `type`. */
export function writeRandomGguf(file: string, shape: RandomGgufShape, type: BlockType, seed = 1): void {
  const rand = mulberry32(seed);
  const h = shape.hiddenSize;
  const headDim = h / shape.numHeads;
  const kv = shape.numKvHeads * headDim;
  const ggmlType = GGML_TYPE_ID[type] as GgmlType;
  const spread = 0.02 * Math.sqrt(3);
  const values = (n: number, scale: number, offset: number) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = offset + (2 * rand() - 1) * scale;
    return out;
  };
  const matrix = (name: string, rows: number, cols: number): GgufTensorSpec => ({
    name,
    shape: [rows, cols],
    type: ggmlType,
    blocks: () => quantizeMatrix(values(rows * cols, spread, 0), rows, cols, type).data,
  });
  const norm = (name: string): GgufTensorSpec => ({ name, shape: [h], type: GgmlType.F32, data: () => values(h, 0.1, 1) });
  const tensors: GgufTensorSpec[] = [];
  if (shape.llama3Rope !== null) {
    tensors.push({ name: 'rope_freqs.weight', shape: [headDim / 2], type: GgmlType.F32, data: new Float32Array(llama3RopeFactors(headDim, shape.ropeTheta, shape.llama3Rope)) });
  }
  tensors.push(matrix('token_embd.weight', shape.vocabSize, h));
  for (let i = 0; i < shape.numLayers; i++) {
    const b = `blk.${i}`;
    tensors.push(
      norm(`${b}.attn_norm.weight`),
      matrix(`${b}.attn_q.weight`, h, h),
      matrix(`${b}.attn_k.weight`, kv, h),
      matrix(`${b}.attn_v.weight`, kv, h),
      matrix(`${b}.attn_output.weight`, h, h),
      norm(`${b}.ffn_norm.weight`),
      matrix(`${b}.ffn_gate.weight`, shape.intermediateSize, h),
      matrix(`${b}.ffn_up.weight`, shape.intermediateSize, h),
      matrix(`${b}.ffn_down.weight`, h, shape.intermediateSize),
    );
  }
  tensors.push(norm('output_norm.weight'));
  if (!shape.tied) tensors.push(matrix('output.weight', shape.vocabSize, h));
  writeGguf(file, {
    metadata: {
      'general.architecture': 'llama',
      'general.name': 'random llama',
      'llama.block_count': u32(shape.numLayers),
      'llama.context_length': u32(131072),
      'llama.embedding_length': u32(h),
      'llama.feed_forward_length': u32(shape.intermediateSize),
      'llama.attention.head_count': u32(shape.numHeads),
      'llama.attention.head_count_kv': u32(shape.numKvHeads),
      'llama.rope.freq_base': f32(shape.ropeTheta),
      'llama.rope.dimension_count': u32(headDim),
      'llama.attention.layer_norm_rms_epsilon': f32(1e-5),
      'llama.vocab_size': u32(shape.vocabSize),
      ...minimalLlamaVocab(shape.vocabSize),
    },
    tensors,
  });
}
