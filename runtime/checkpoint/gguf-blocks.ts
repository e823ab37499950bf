/**
 * A GGUF file's projections kept as stored (quantized blocks) for the forward's wasm
 * kernels (runtime/kernels): read one tensor at a time, Q/K rows put back in HF order
 * exactly as gguf-model.ts does for an f32 read (whole rows move, so blocks stay intact),
 * and uploaded straight into the model's own kernel memory, so the bytes exist once
 * (UploadedMatrix): a Llama-3.2-1B-shaped Q8_0 file is 1.3 GB there and nothing in
 * JavaScript. Null when any projection is of a type the kernels do not take (K-quants,
 * Q5_x, BF16) or has a row length the kernels cannot split into blocks of 32: the loader
 * then builds f32 tensors instead. `ggufBlockPlan` says which from the header alone.
 *
 * @example
 * const g = GgufFile.open(file);
 * const plan = ggufBlockPlan(g, config); // { bytes } | null, before any weight is read
 * const blocks = ggufBlockWeights(g, config, new MatmulKernels()); // BlockWeights | null
 */
import { CheckpointError } from '../../core/errors.js';
import type { BlockMatrix, BlockType } from '../kernels/blocks.js';
import { halfToFloat, permuteRows, QK, rowBytes } from '../kernels/blocks.js';
import { UploadedMatrix, type MatmulKernels } from '../kernels/matmul.js';
import type { BlockWeights, LayerBlockWeights, ModelConfig } from '../model/types.js';
import { GgmlType } from './ggml-quants.js';
import type { GgufFile } from './gguf.js';

const KERNEL_TYPES: Partial<Record<GgmlType, BlockType>> = {
  [GgmlType.F32]: 'f32',
  [GgmlType.F16]: 'f16',
  [GgmlType.Q4_0]: 'q4_0',
  [GgmlType.Q4_1]: 'q4_1',
  [GgmlType.Q8_0]: 'q8_0',
};

/** Row order that undoes llama.cpp's rotary permutation: HF row r is GGUF row order[r]. */
function rotaryRowOrder(heads: number, headDim: number): Int32Array {
  const order = new Int32Array(heads * headDim);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let s = 0; s < 2; s++) order[h * headDim + s * half + i] = h * headDim + 2 * i + s;
    }
  }
  return order;
}

function tensorNames(g: GgufFile, config: ModelConfig): { layers: string[]; head: string } {
  const layers = [...Array(config.numLayers).keys()].flatMap((l) =>
    ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down'].map((p) => `blk.${l}.${p}.weight`),
  );
  return { layers, head: config.tieWordEmbeddings || !g.has('output.weight') ? 'token_embd.weight' : 'output.weight' };
}

/**
 * Whether the projections and the lm head can run on the kernels as stored, and the bytes
 * they take there; null when not (a type or row length the kernels do not take).
 */
export function ggufBlockPlan(g: GgufFile, config: ModelConfig): { bytes: number } | null {
  const { layers, head } = tensorNames(g, config);
  let bytes = 0;
  for (const name of [...layers, head]) {
    if (!g.has(name)) return null;
    const t = g.tensor(name);
    const type = KERNEL_TYPES[t.type];
    if (type === undefined || t.shape.length !== 2 || t.shape[1]! % QK !== 0) return null;
    bytes += t.shape[0]! * rowBytes(type, t.shape[1]!);
  }
  return { bytes };
}

/**
 * The flat index of the first value a matrix's blocks decode to that is not finite, or
 * -1. Quantized values are d·q (+ m), finite exactly when the block's f16 scale (and min)
 * are, so only those are read; float types are read whole.
 */
export function firstNonFinite(m: BlockMatrix): { index: number; value: number } | null {
  const view = new DataView(m.data.buffer, m.data.byteOffset, m.data.byteLength);
  const n = m.rows * m.cols;
  if (m.type === 'f32') {
    for (let i = 0; i < n; i++) {
      const v = view.getFloat32(4 * i, true);
      if (v - v !== 0) return { index: i, value: v };
    }
    return null;
  }
  const halfBad = (at: number) => (view.getUint16(at, true) & 0x7c00) === 0x7c00;
  if (m.type === 'f16') {
    for (let i = 0; i < n; i++) if (halfBad(2 * i)) return { index: i, value: halfToFloat(view.getUint16(2 * i, true)) };
    return null;
  }
  const bs = rowBytes(m.type, QK);
  for (let b = 0; b < n / QK; b++) {
    for (const at of m.type === 'q4_1' ? [b * bs, b * bs + 2] : [b * bs]) {
      if (halfBad(at)) return { index: b * QK, value: halfToFloat(view.getUint16(at, true)) };
    }
  }
  return null;
}

/**
 * Reads every projection and the lm head into `kernels` (see the module header); null
 * when ggufBlockPlan says the kernels cannot take them. A non-finite weight is a
 * CheckpointError naming the tensor and the first bad value's flat index.
 */
export function ggufBlockWeights(g: GgufFile, config: ModelConfig, kernels: MatmulKernels): BlockWeights | null {
  if (ggufBlockPlan(g, config) === null) return null;
  const { head } = tensorNames(g, config);
  const permuted = config.architecture === 'LlamaForCausalLM';
  const read = (name: string, heads = 0): UploadedMatrix => {
    const t = g.tensor(name);
    const [rows, cols] = t.shape as [number, number];
    let m: BlockMatrix = { type: KERNEL_TYPES[t.type]!, rows, cols, data: g.readTensorBytes(name) };
    const bad = firstNonFinite(m);
    if (bad !== null) throw new CheckpointError({ file: g.file, tensor: name, reason: `value ${bad.value} at flat index ${bad.index}: weights must be finite` });
    if (permuted && heads > 0) m = permuteRows(m, rotaryRowOrder(heads, config.headDim));
    return UploadedMatrix.upload(kernels, m);
  };
  const layers: LayerBlockWeights[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const p = `blk.${l}`;
    layers.push({
      wq: read(`${p}.attn_q.weight`, config.numHeads),
      wk: read(`${p}.attn_k.weight`, config.numKvHeads),
      wv: read(`${p}.attn_v.weight`),
      wo: read(`${p}.attn_output.weight`),
      wGate: read(`${p}.ffn_gate.weight`),
      wUp: read(`${p}.ffn_up.weight`),
      wDown: read(`${p}.ffn_down.weight`),
    });
  }
  return { layers, lmHead: read(head) };
}
