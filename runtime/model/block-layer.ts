/**
 * A whole decoder layer on the block-weight path as ONE tfjs kernel call: norm + q/k/v +
 * rotary (block-linear.ts), each sequence's new keys and values stored where the attention
 * kernel reads them (MatmulKernels.store, head by head), attention over its cached chunks
 * and those rows, then o-proj + residual + norm + MLP + residual. Three tensors come out —
 * the layer's output rows and the new K and V rows — where the unfused path made eight
 * tensors and four dispatches per layer (q/k/v, attention, MLP, the KV copies through
 * dataSync). Measured in the engine before it: the attention wrapper alone (dispatch, KV
 * copies, bookkeeping) was ~3 ms of a ~40 ms SmolLM2 decode step.
 *
 * The arithmetic is the unfused path's, call for call (the same kernels on the same
 * inputs), so every row gets the same bits; forward.ts takes this path when no sequence
 * revives tokens or wants attention rows at the layer, and forward-exact.test.ts checks
 * both paths against each other.
 *
 * @example
 * const r = blockLayer(x, { qkv, mlp, rotary, shape, kernels, mirror, seqs: [{ n: 1, keys, values, visible }] });
 * mirror.adopt(r.k, r.kChunks[0]); // the new rows' kernel copies, for later steps
 */
import * as tf from '@tensorflow/tfjs-core';
import type { AttentionShape, KernelChunk, MatmulKernels } from '../kernels/matmul.js';
import { computeLinear, computeMlp, type BlockLinearOp, type BlockMlpOp, type RotaryRows } from './block-linear.js';
import type { KvMirror } from './kv-mirror.js';
import type { WasmBackendLike } from './wasm-backend.js';

/** One sequence's rows of the packed call, in order. */
export interface BlockLayerSeq {
  n: number;
  /** Its cached key and value chunks in position order (kernel copies). */
  keys: KernelChunk[];
  values: KernelChunk[];
  /** (n, n): new row i sees new key j when visible[i·n + j] is 1. */
  visible: Uint8Array;
}

export interface BlockLayerOp {
  qkv: BlockLinearOp; // outputs q·scale, k, v
  mlp: BlockMlpOp;
  rotary: RotaryRows; // on outputs 0 and 1
  shape: AttentionShape;
  kernels: MatmulKernels;
  /** Where the new rows are stored for attention, as the cached ones are (KvMirror.store). */
  mirror: KvMirror;
  seqs: BlockLayerSeq[];
}

export interface BlockLayerResult {
  x: tf.Tensor2D; // (T, hidden)
  k: tf.Tensor2D; // (T, kvDim), every sequence's new rows in order
  v: tf.Tensor2D;
  /** Per sequence, the kernel copies of its new K and V rows (hand them to the KV mirror). */
  kChunks: KernelChunk[];
  vChunks: KernelChunk[];
}

/** Runs the layer on plain arrays: x (T, hidden) → xOut, kOut, vOut; returns the stored chunks. */
function run(op: BlockLayerOp, x: Float32Array, T: number, xOut: Float32Array, kOut: Float32Array, vOut: Float32Array): { kChunks: KernelChunk[]; vChunks: KernelChunk[] } {
  const fused = fusedOp(op);
  if (op.kernels.fusesLayer(fused)) return op.kernels.layer(fused, x, T, xOut, kOut, vOut);
  const { heads: H, kvHeads: KV, headDim: D } = op.shape;
  const qd = H * D;
  const kvd = KV * D;
  const q = new Float32Array(T * qd);
  computeLinear(op.qkv, x, T, x.length / T, [q, kOut, vOut], op.rotary);
  const attn = new Float32Array(T * qd);
  const kChunks: KernelChunk[] = [];
  const vChunks: KernelChunk[] = [];
  let r = 0;
  for (const s of op.seqs) {
    const kc = op.mirror.store(kOut.subarray(r * kvd, (r + s.n) * kvd), s.n, true);
    const vc = op.mirror.store(vOut.subarray(r * kvd, (r + s.n) * kvd), s.n);
    kChunks.push(kc);
    vChunks.push(vc);
    const { out } = op.kernels.attention(q.subarray(r * qd, (r + s.n) * qd), [...s.keys, kc], [...s.values, vc], s.n, s.visible, op.shape);
    attn.set(out, r * qd);
    r += s.n;
  }
  computeMlp(op.mlp, attn, x, T, xOut);
  return { kChunks, vChunks };
}

/** x (T, hidden), the packed rows of `op.seqs` → the layer's output and new K/V rows. */
export function blockLayer(x: tf.Tensor2D, op: BlockLayerOp): BlockLayerResult {
  const [T, hidden] = x.shape;
  const n = op.seqs.reduce((a, s) => a + s.n, 0);
  if (n !== T) throw new RangeError(`blockLayer: sequences hold ${n} rows, x has ${T}`);
  const kvd = op.shape.kvHeads * op.shape.headDim;
  if (tf.getBackend() === 'wasm') {
    const { x: xo, layers } = dispatch(x, [op]);
    return { x: xo, ...layers[0]! };
  }
  const xOut = new Float32Array(T * hidden);
  const kOut = new Float32Array(T * kvd);
  const vOut = new Float32Array(T * kvd);
  const chunks = run(op, x.dataSync() as Float32Array, T, xOut, kOut, vOut);
  return { x: tf.tensor2d(xOut, [T, hidden]), k: tf.tensor2d(kOut, [T, kvd]), v: tf.tensor2d(vOut, [T, kvd]), ...chunks };
}

let registered = false;
/**
 * One tfjs kernel for one layer or consecutive ones: outputs x, then each layer's new K and
 * V rows. One layer runs as `run` does (fused where the kernels can, else call by call),
 * several in one MatmulKernels.layers call (blockLayers has checked that they fuse).
 */
function ensureRegistered(): void {
  if (registered) return;
  registered = true;
  tf.registerKernel({
    kernelName: 'SkeinBlockLayers',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const x = inputs.x as tf.TensorInfo;
      const b = backend as unknown as WasmBackendLike;
      const { ops, holder } = attrs as unknown as { ops: BlockLayerOp[]; holder: { chunks?: { kChunks: KernelChunk[]; vChunks: KernelChunk[] }[] } };
      const [T, hidden] = x.shape as [number, number];
      const kvd = ops[0]!.shape.kvHeads * ops[0]!.shape.headDim;
      // makeOutput first: it may grow the heap, which detaches earlier views. Nothing below
      // allocates on tfjs's heap (the kernels have their own memory).
      const outs = [b.makeOutput([T, hidden], 'float32'), ...ops.flatMap(() => [b.makeOutput([T, kvd], 'float32'), b.makeOutput([T, kvd], 'float32')])];
      const views = outs.map((o) => b.typedArrayFromHeap(o));
      const kvOut = ops.map((_, l) => [views[1 + 2 * l]!, views[2 + 2 * l]!] as const);
      const xIn = b.typedArrayFromHeap(x);
      holder.chunks = ops.length === 1 ? [run(ops[0]!, xIn, T, views[0]!, kvOut[0]![0], kvOut[0]![1])] : ops[0]!.kernels.layers(ops.map(fusedOp), xIn, T, views[0]!, kvOut);
      return outs;
    },
  });
}

/** Runs `ops` on x in one tfjs kernel call (SkeinBlockLayers). */
function dispatch(x: tf.Tensor2D, ops: readonly BlockLayerOp[]): BlockLayersResult {
  ensureRegistered();
  const holder: { chunks?: { kChunks: KernelChunk[]; vChunks: KernelChunk[] }[] } = {};
  const outs = tf.engine().runKernel('SkeinBlockLayers', { x }, { ops, holder } as unknown as tf.NamedAttrMap) as unknown as tf.Tensor2D[];
  return { x: outs[0]!, layers: ops.map((_, l) => ({ k: outs[1 + 2 * l]!, v: outs[2 + 2 * l]!, ...holder.chunks![l]! })) };
}

/** Consecutive layers' results (blockLayers): the last layer's rows, and per layer every sequence's new K and V rows in order with their kernel copies per sequence. */
export interface BlockLayersResult {
  x: tf.Tensor2D;
  layers: Omit<BlockLayerResult, 'x'>[];
}

/**
 * Consecutive decoder layers in ONE tfjs kernel call and one native call
 * (MatmulKernels.layers): the rows stay in the kernels' memory from layer to layer, where
 * blockLayer costs a tfjs dispatch, a scope and copies of the rows in and out per layer —
 * SmolLM2 Q4_1's decode step after a 128-token past 9.05 → 8.29 ms (timers over 256
 * steps). null where the kernels cannot fuse every layer (or off the wasm backend): run
 * them one by one with blockLayer.
 */
export function blockLayers(x: tf.Tensor2D, ops: readonly BlockLayerOp[]): BlockLayersResult | null {
  const kernels = ops[0]?.kernels;
  if (kernels === undefined || tf.getBackend() !== 'wasm' || !ops.every((op) => op.kernels === kernels && kernels.fusesLayer(fusedOp(op)))) return null;
  const T = x.shape[0];
  const n = ops[0]!.seqs.reduce((a, s) => a + s.n, 0);
  if (n !== T) throw new RangeError(`blockLayers: sequences hold ${n} rows, x has ${T}`);
  return dispatch(x, ops);
}

/** What MatmulKernels.layer takes for a block layer op. */
function fusedOp(op: BlockLayerOp) {
  return { groups: op.qkv.outputs, norm: op.qkv.norm, mlp: op.mlp, rotary: op.rotary, shape: op.shape, seqs: op.seqs, kv: op.mirror.kv };
}
