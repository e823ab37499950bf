/**
 * Projections by weights kept in their GGUF blocks, as tfjs ops: `blockLinear(x, op)`
 * takes a (T, in) tensor, optionally RMS-normalises its rows (with the norm weight), runs
 * the wasm matmul kernels (runtime/kernels) on every weight of `op` with one shared copy
 * and quantization of the input, and returns one (T, out) tensor per output group (parts
 * concatenated along columns, each optionally scaled — the fused [q·scale | k] rows).
 *
 * On the wasm backend this is one custom tfjs kernel: it reads x straight from tfjs's
 * heap and writes the outputs into it, so a projection costs one dispatch plus a copy of a
 * few KB each way (batch-1 activations). Other backends go through dataSync.
 *
 * @example
 * const [qk, v] = blockLinear(x, { kernels, norm: { weight, eps: 1e-5 }, outputs: [[{ weight: wq, scale: 0.125 }, { weight: wk }], [{ weight: wv }]] });
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelWeight, MatmulKernels } from '../kernels/matmul.js';
import type { WasmBackendLike } from './wasm-backend.js';

export interface BlockLinearOp {
  kernels: MatmulKernels;
  /** RMSNorm applied to the input rows first: x·rsqrt(mean(x²) + eps)·weight. */
  norm: { weight: Float32Array; eps: number } | null;
  /**
   * Output tensors, each the column-concatenation of its parts; all weights share `in`. A
   * part's product is multiplied by `scale`, then `bias` (rows long, already scaled) added.
   */
  outputs: { weight: KernelWeight; scale?: number; bias?: Float32Array | null }[][];
}

/**
 * Rotary embedding applied to some outputs after the products (and their scales), per row
 * t and head: [x1, x2] → [x1·cos − x2·sin, x2·cos + x1·sin] with cos/sin (T, dim/2) of the
 * row's position. The same arithmetic as ropeQk's wasm kernel (kernels.ts: in double,
 * rounded to f32 once per value), so the same bits, without its dispatch and the cos/sin
 * tensors a forward uploads for it; done in the matmul kernels' memory (matmul.c's
 * rotate_rows), where the products are.
 */
export interface RotaryRows {
  /** Indices of the output groups to rotate (each a whole number of heads wide). */
  outputs: number[];
  dim: number;
  cos: Float32Array;
  sin: Float32Array;
}

/** Runs every weight and writes each output group's rows into `outs` (T × width each), rotating those `rotary` names. */
export function computeLinear(op: BlockLinearOp, x: Float32Array, T: number, cols: number, outs: Float32Array[], rotary: RotaryRows | null): void {
  if (x.length !== T * cols) throw new RangeError(`computeLinear: x has ${x.length} values, expected ${T}×${cols}`);
  op.kernels.linearGroups(op.outputs, x, T, op.norm, rotary, outs);
}

const widths = (op: BlockLinearOp) => op.outputs.map((g) => g.reduce((n, p) => n + p.weight.rows, 0));

let registered = false;
function ensureRegistered(): void {
  if (registered) return;
  registered = true;
  tf.registerKernel({
    kernelName: 'SkeinBlockLinear',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const x = inputs.x as tf.TensorInfo; // (T, in)
      const b = backend as unknown as WasmBackendLike;
      const { op, rotary } = attrs as unknown as { op: BlockLinearOp; rotary: RotaryRows | null };
      const [T, cols] = x.shape as [number, number];
      // makeOutput first: it may grow the heap, which detaches earlier views.
      const infos = widths(op).map((w) => b.makeOutput([T, w], 'float32'));
      computeLinear(op, b.typedArrayFromHeap(x), T, cols, infos.map((i) => b.typedArrayFromHeap(i)), rotary);
      return infos;
    },
  });
  tf.registerKernel({
    kernelName: 'SkeinBlockMlp',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const attn = inputs.attn as tf.TensorInfo; // (T, qDim)
      const x = inputs.x as tf.TensorInfo; // (T, hidden)
      const b = backend as unknown as WasmBackendLike;
      const op = (attrs as unknown as { op: BlockMlpOp }).op;
      const out = b.makeOutput(x.shape, 'float32');
      computeMlp(op, b.typedArrayFromHeap(attn), b.typedArrayFromHeap(x), x.shape[0]!, b.typedArrayFromHeap(out));
      return out;
    },
  });
}

/**
 * The rest of a layer after attention, fused: x + o-proj(attn) (+ bo) = x1, then
 * x1 + down(silu(gate(n)) ⊙ up(n)) with n = RMSNorm(x1)·weight. One tfjs dispatch and
 * three kernel calls instead of about a dozen tfjs ops per layer.
 */
export interface BlockMlpOp {
  kernels: MatmulKernels;
  o: KernelWeight; // (hidden, qDim)
  bo: Float32Array | null; // (hidden)
  norm: { weight: Float32Array; eps: number };
  gate: KernelWeight; // (inter, hidden)
  up: KernelWeight; // (inter, hidden)
  down: KernelWeight; // (hidden, inter)
}

/** The MLP half of a layer on plain arrays (see BlockMlpOp): out = x + o(attn) + mlp(...). */
export function computeMlp(op: BlockMlpOp, attn: Float32Array, x: Float32Array, T: number, out: Float32Array): void {
  out.set(op.kernels.mlpBlock(op, attn, x, T));
}

/** attn (T, qDim), x (T, hidden) → the layer's output x (T, hidden); see BlockMlpOp. */
export function blockMlp(attn: tf.Tensor2D, x: tf.Tensor2D, op: BlockMlpOp): tf.Tensor2D {
  const [T, hidden] = x.shape;
  if (tf.getBackend() === 'wasm') {
    ensureRegistered();
    return tf.engine().runKernel('SkeinBlockMlp', { attn, x }, { op } as unknown as tf.NamedAttrMap) as tf.Tensor2D;
  }
  const out = new Float32Array(T * hidden);
  computeMlp(op, attn.dataSync() as Float32Array, x.dataSync() as Float32Array, T, out);
  return tf.tensor2d(out, [T, hidden]);
}

/** x (T, in) → one (T, out) tensor per output group of `op`, the groups `rotary` names rotated. */
export function blockLinear(x: tf.Tensor2D, op: BlockLinearOp, rotary: RotaryRows | null = null): tf.Tensor2D[] {
  const [T, cols] = x.shape;
  if (rotary !== null && rotary.cos.length !== (T * rotary.dim) / 2) throw new RangeError(`blockLinear: rotary tables for ${rotary.cos.length / (rotary.dim / 2)} rows, x has ${T}`);
  if (tf.getBackend() === 'wasm') {
    ensureRegistered();
    return tf.engine().runKernel('SkeinBlockLinear', { x }, { op, rotary } as unknown as tf.NamedAttrMap) as unknown as tf.Tensor2D[];
  }
  const outs = widths(op).map((w) => new Float32Array(T * w));
  computeLinear(op, x.dataSync() as Float32Array, T, cols, outs, rotary);
  return outs.map((o) => tf.tensor2d(o, [T, o.length / T]));
}
