/**
 * A GGUF file's projections kept as stored (quantized blocks) for the forward's wasm
 * kernels (runtime/kernels): the same tensors the loader dequantizes, read again as raw
 * bytes, Q/K rows put back in HF order exactly as gguf-model.ts does for the f32 copy
 * (whole rows move, so blocks stay intact). Null when any projection is of a type the
 * kernels do not take (K-quants, Q5_x, BF16): the forward then runs on the f32 tensors.
 *
 * @example
 * const blocks = ggufBlockWeights(GgufFile.open(file), config); // BlockWeights | null
 */
import type { BlockMatrix, BlockType } from '../kernels/blocks.js';
import { permuteRows } from '../kernels/blocks.js';
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

export function ggufBlockWeights(g: GgufFile, config: ModelConfig): BlockWeights | null {
  const names = [...Array(config.numLayers).keys()].flatMap((l) =>
    ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down'].map((p) => `blk.${l}.${p}.weight`),
  );
  const head = config.tieWordEmbeddings || !g.has('output.weight') ? 'token_embd.weight' : 'output.weight';
  if (![...names, head].every((n) => g.has(n) && KERNEL_TYPES[g.tensor(n).type] !== undefined)) return null;
  const permuted = config.architecture === 'LlamaForCausalLM';
  const read = (name: string, heads = 0): BlockMatrix => {
    const t = g.tensor(name);
    const [rows, cols] = t.shape as [number, number];
    const m: BlockMatrix = { type: KERNEL_TYPES[t.type]!, rows, cols, data: g.readTensorBytes(name) };
    return permuted && heads > 0 ? permuteRows(m, rotaryRowOrder(heads, config.headDim)) : m;
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
