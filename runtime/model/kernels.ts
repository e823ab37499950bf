/**
 * Small fused kernels for the decode path. At a few rows, a tfjs op costs far more in
 * dispatch than in arithmetic (RMSNorm is five ops: square, mean, add, rsqrt, mul), so on
 * the wasm backend these run as one custom kernel each — a plain loop over the rows on the
 * wasm heap. Past `FUSED_MAX_ROWS` rows the wasm ops win and are used instead; other
 * backends always use the composite ops. Both paths compute the same maths.
 *
 * Decode attention uses three more (queryBlocks, softmaxColumns, ownHeads) and every row
 * selection uses gatherRows, a row copy (the wasm Gather kernel goes element by element).
 *
 * @example
 * const xn = rmsNorm(x, 1e-5, tf.scalar(1e-5)); // (T, hidden) → (T, hidden), without the weight
 */
import * as tf from '@tensorflow/tfjs-core';
import type { EmbeddingTable } from './types.js';

/**
 * Row counts up to which the fused loops beat the wasm op sequence (measured on SmolLM2
 * shapes, CPU time per call: RMSNorm 2.4 vs 13.7 µs at 1 row, even at 8, behind at 16;
 * rotary 2.8 vs 24.9 µs at 1 row, 50 vs 98 µs at 32). A fused SwiGLU lost at every size
 * (Math.exp in JS is slower than the wasm sigmoid), so it stays composite.
 */
export const FUSED_MAX_ROWS = { rmsNorm: 8, rope: 64 } as const;

/**
 * Element counts up to which the fused decode-attention helpers are used: the index
 * shuffles stay cheap in JS at any decode size; the column softmax (Math.exp per element)
 * only at batch-1 sizes.
 */
export const FUSED_MAX_ELEMENTS = { queryBlocks: 32768, softmaxColumns: 4096, ownHeads: 32768 } as const;

/** Head layout of a model's attention. */
export interface HeadShape {
  heads: number;
  kvHeads: number;
  dim: number;
}

interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
}

let registered = false;
function ensureRegistered(): void {
  if (registered) return;
  registered = true;
  // makeOutput first: it may grow the wasm memory, which detaches earlier heap views.
  tf.registerKernel({
    kernelName: 'SkeinRmsNorm',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const x = inputs.x as tf.TensorInfo;
      const b = backend as unknown as WasmBackendLike;
      const eps = (attrs as unknown as { eps: number }).eps;
      const out = b.makeOutput(x.shape, 'float32');
      const xv = b.typedArrayFromHeap(x);
      const ov = b.typedArrayFromHeap(out);
      const w = x.shape[x.shape.length - 1]!;
      for (let o = 0; o < xv.length; o += w) {
        let ss = 0;
        for (let i = 0; i < w; i++) ss += xv[o + i]! * xv[o + i]!;
        const s = 1 / Math.sqrt(ss / w + eps);
        for (let i = 0; i < w; i++) ov[o + i] = xv[o + i]! * s;
      }
      return out;
    },
  });
  tf.registerKernel({
    kernelName: 'SkeinRopeQk',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const x = inputs.x as tf.TensorInfo; // (T, (heads + kvHeads)·D): [q | k]
      const cos = inputs.cos as tf.TensorInfo; // (T, 1, D)
      const sin = inputs.sin as tf.TensorInfo; // (T, 1, D)
      const b = backend as unknown as WasmBackendLike;
      const { heads, kvHeads, dim } = attrs as unknown as HeadShape;
      const T = x.shape[0]!;
      const q = b.makeOutput([T, heads * dim], 'float32');
      const k = b.makeOutput([T, kvHeads * dim], 'float32');
      const xv = b.typedArrayFromHeap(x);
      const cv = b.typedArrayFromHeap(cos);
      const sv = b.typedArrayFromHeap(sin);
      const qv = b.typedArrayFromHeap(q);
      const kv = b.typedArrayFromHeap(k);
      const half = dim / 2;
      const all = heads + kvHeads;
      for (let t = 0; t < T; t++) {
        const c = t * dim;
        for (let h = 0; h < all; h++) {
          const src = (t * all + h) * dim;
          const out = h < heads ? qv : kv;
          const dst = h < heads ? (t * heads + h) * dim : (t * kvHeads + h - heads) * dim;
          for (let j = 0; j < half; j++) {
            const x1 = xv[src + j]!;
            const x2 = xv[src + half + j]!;
            out[dst + j] = x1 * cv[c + j]! - x2 * sv[c + j]!;
            out[dst + half + j] = x2 * cv[c + half + j]! + x1 * sv[c + half + j]!;
          }
        }
      }
      return [q, k];
    },
  });
  tf.registerKernel({
    kernelName: 'SkeinGatherRows',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const x = inputs.x as tf.TensorInfo; // (N, width)
      const b = backend as unknown as WasmBackendLike;
      const { rows } = attrs as unknown as { rows: number[] };
      const w = x.shape[1]!;
      const out = b.makeOutput([rows.length, w], 'float32');
      const xv = b.typedArrayFromHeap(x);
      const ov = b.typedArrayFromHeap(out);
      rows.forEach((r, i) => ov.set(xv.subarray(r * w, (r + 1) * w), i * w));
      return out;
    },
  });
  tf.registerKernel({
    kernelName: 'SkeinQueryBlocks',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const q = inputs.q as tf.TensorInfo; // (B, heads·D)
      const b = backend as unknown as WasmBackendLike;
      const { heads, kvHeads, dim } = attrs as unknown as HeadShape;
      const B = q.shape[0]!;
      const out = b.makeOutput([B * kvHeads * dim, heads], 'float32');
      const qv = b.typedArrayFromHeap(q);
      const ov = b.typedArrayFromHeap(out);
      ov.fill(0);
      const group = heads / kvHeads;
      for (let s = 0; s < B; s++) {
        for (let h = 0; h < heads; h++) {
          const kv = Math.floor(h / group);
          const src = s * heads * dim + h * dim;
          const dst = (s * kvHeads + kv) * dim * heads + h;
          for (let d = 0; d < dim; d++) ov[dst + d * heads] = qv[src + d]!;
        }
      }
      return out;
    },
  });
  tf.registerKernel({
    kernelName: 'SkeinSoftmaxColumns',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const x = inputs.x as tf.TensorInfo; // (B·S, cols)
      const b = backend as unknown as WasmBackendLike;
      const { blocks } = attrs as unknown as { blocks: number };
      const out = b.makeOutput(x.shape, 'float32');
      const xv = b.typedArrayFromHeap(x);
      const ov = b.typedArrayFromHeap(out);
      const cols = x.shape[1]!;
      const S = x.shape[0]! / blocks;
      for (let blk = 0; blk < blocks; blk++) {
        const base = blk * S * cols;
        for (let c = 0; c < cols; c++) {
          let max = -Infinity;
          for (let r = 0; r < S; r++) max = Math.max(max, xv[base + r * cols + c]!);
          let sum = 0;
          for (let r = 0; r < S; r++) {
            const e = Math.exp(xv[base + r * cols + c]! - max);
            ov[base + r * cols + c] = e;
            sum += e;
          }
          const inv = 1 / sum;
          for (let r = 0; r < S; r++) ov[base + r * cols + c]! *= inv;
        }
      }
      return out;
    },
  });
  tf.registerKernel({
    kernelName: 'SkeinOwnHeads',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const x = inputs.x as tf.TensorInfo; // (B·kvHeads·D, heads)
      const b = backend as unknown as WasmBackendLike;
      const { heads, kvHeads, dim } = attrs as unknown as HeadShape;
      const B = x.shape[0]! / (kvHeads * dim);
      const out = b.makeOutput([B, heads * dim], 'float32');
      const xv = b.typedArrayFromHeap(x);
      const ov = b.typedArrayFromHeap(out);
      const group = heads / kvHeads;
      for (let s = 0; s < B; s++) {
        for (let h = 0; h < heads; h++) {
          const kv = Math.floor(h / group);
          const src = (s * kvHeads + kv) * dim * heads + h;
          const dst = s * heads * dim + h * dim;
          for (let d = 0; d < dim; d++) ov[dst + d] = xv[src + d * heads]!;
        }
      }
      return out;
    },
  });
}

/** Whether to run the fused kernel for a problem of this size (rows or elements). */
function fused(size: number, max: number): boolean {
  if (size > max || tf.getBackend() !== 'wasm') return false;
  ensureRegistered();
  return true;
}

/** x·rsqrt(mean(x²) + eps) over the last axis. `epsTensor` serves the composite path. */
export function rmsNorm(x: tf.Tensor2D, eps: number, epsTensor: tf.Scalar): tf.Tensor2D {
  if (fused(x.shape[0], FUSED_MAX_ROWS.rmsNorm)) return tf.engine().runKernel('SkeinRmsNorm', { x }, { eps } as unknown as tf.NamedAttrMap) as tf.Tensor2D;
  return tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), epsTensor)));
}

/** silu(g)·u, elementwise. */
export function swiGlu(g: tf.Tensor2D, u: tf.Tensor2D): tf.Tensor2D {
  return tf.mul(tf.mul(g, tf.sigmoid(g)), u);
}

/**
 * Rotary embedding on fused query/key rows, HF rotate_half convention:
 * x·cos + rotate_half(x)·sin with rotate_half([x1, x2]) = [-x2, x1]. x (T, (heads +
 * kvHeads)·D) holds [q | k]; cos/sin (T, 1, D) with both halves equal; `rotateHalf`
 * (D, D) is the signed permutation matrix used by the composite path. Returns the
 * rotated q (T, heads·D) and k (T, kvHeads·D).
 */
export function ropeQk(x: tf.Tensor2D, cos: tf.Tensor3D, sin: tf.Tensor3D, shape: HeadShape, rotateHalf: tf.Tensor2D): [tf.Tensor2D, tf.Tensor2D] {
  const T = x.shape[0];
  const { heads, kvHeads, dim } = shape;
  if (fused(T, FUSED_MAX_ROWS.rope)) {
    return tf.engine().runKernel('SkeinRopeQk', { x, cos, sin }, shape as unknown as tf.NamedAttrMap) as unknown as [tf.Tensor2D, tf.Tensor2D];
  }
  const x3 = tf.reshape(x, [T, heads + kvHeads, dim]);
  const rot = tf.reshape(tf.matMul(tf.reshape(x, [T * (heads + kvHeads), dim]), rotateHalf), [T, heads + kvHeads, dim]);
  const out = tf.reshape(tf.add(tf.mul(x3, cos), tf.mul(rot, sin)), [T, (heads + kvHeads) * dim]);
  return tf.split(out, [heads * dim, kvHeads * dim], 1) as [tf.Tensor2D, tf.Tensor2D];
}

/**
 * Decode queries as block-diagonal matrices: (B, heads·D) → (B·kvHeads·D, heads) with
 * out[b][kv·D + d, h] = q[b, h, d] when head h reads kv head kv, else 0 — so that one
 * plain matMul K·Qblock, K as cached (S, kvHeads·D), scores every head against its own
 * kv head. `blockMask` (kvHeads, D, heads) serves the composite path.
 */
export function queryBlocks(q: tf.Tensor2D, shape: HeadShape, blockMask: tf.Tensor3D): tf.Tensor2D {
  const B = q.shape[0];
  const { heads, kvHeads, dim } = shape;
  if (fused(q.size * kvHeads, FUSED_MAX_ELEMENTS.queryBlocks)) {
    return tf.engine().runKernel('SkeinQueryBlocks', { q }, shape as unknown as tf.NamedAttrMap) as tf.Tensor2D;
  }
  const qT = tf.transpose(tf.reshape(q, [B, heads, dim]), [0, 2, 1]); // (B, D, heads)
  const blocks = kvHeads === 1 ? qT : tf.mul(tf.reshape(qT, [B, 1, dim, heads]), blockMask); // (B, kvHeads, D, heads)
  return tf.reshape(blocks, [B * kvHeads * dim, heads]);
}

/** Softmax down the columns of each of `blocks` stacked (S, cols) blocks of x (B·S, cols). */
export function softmaxColumns(x: tf.Tensor2D, blocks: number): tf.Tensor2D {
  if (fused(x.size, FUSED_MAX_ELEMENTS.softmaxColumns)) {
    return tf.engine().runKernel('SkeinSoftmaxColumns', { x }, { blocks } as unknown as tf.NamedAttrMap) as tf.Tensor2D;
  }
  const [rows, cols] = x.shape;
  const S = rows / blocks;
  return tf.reshape(tf.transpose(tf.softmax(tf.transpose(tf.reshape(x, [blocks, S, cols]), [0, 2, 1])), [0, 2, 1]), [rows, cols]);
}

/**
 * The inverse of queryBlocks for attention outputs: from (B·kvHeads·D, heads), every head
 * against every kv head, keep each head's own kv head → (B, heads·D).
 */
export function ownHeads(x: tf.Tensor2D, shape: HeadShape, blockMask: tf.Tensor3D): tf.Tensor2D {
  const { heads, kvHeads, dim } = shape;
  const B = x.shape[0] / (kvHeads * dim);
  if (fused(x.size, FUSED_MAX_ELEMENTS.ownHeads)) {
    return tf.engine().runKernel('SkeinOwnHeads', { x }, shape as unknown as tf.NamedAttrMap) as tf.Tensor2D;
  }
  const full = tf.reshape(x, [B, kvHeads, dim, heads]);
  const own = kvHeads === 1 ? tf.reshape(full, [B, dim, heads]) : tf.sum(tf.mul(full, blockMask), 1); // (B, D, heads)
  return tf.reshape(tf.transpose(own, [0, 2, 1]), [B, heads * dim]);
}

/** The embedding rows of `ids`: a row copy from a tensor, or rows of a table outside the heap. */
export function embedTokens(embed: tf.Tensor2D | EmbeddingTable, ids: number[]): tf.Tensor2D {
  if (embed instanceof tf.Tensor) return gatherRows(embed, ids);
  return tf.tensor2d(embed.rows(ids), [ids.length, embed.hiddenSize]);
}

/**
 * Rows of a float matrix, x[rows] (an embedding lookup, a pruning step). The wasm Gather
 * kernel walks element by element (≈4 ms for 256 rows of 576 here); this copies rows.
 */
export function gatherRows(x: tf.Tensor2D, rows: number[]): tf.Tensor2D {
  for (const r of rows) {
    if (!Number.isInteger(r) || r < 0 || r >= x.shape[0]) throw new RangeError(`row ${r} is outside 0..${x.shape[0] - 1}`);
  }
  if (x.dtype === 'float32' && fused(rows.length, Infinity)) {
    return tf.engine().runKernel('SkeinGatherRows', { x }, { rows } as unknown as tf.NamedAttrMap) as tf.Tensor2D;
  }
  return tf.gather(x, tf.tensor1d(rows, 'int32'));
}
