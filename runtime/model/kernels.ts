/**
 * Small fused kernels for the decode path. At a few rows, a tfjs op costs far more in
 * dispatch than in arithmetic (RMSNorm is five ops: square, mean, add, rsqrt, mul), so on
 * the wasm backend these run as one custom kernel each — a plain loop over the rows on the
 * wasm heap. They are used at every row count, not only at decode sizes: a row's result
 * must not depend on how many rows share the call (the forward's batching, chunked prefill
 * and speculative verification are lossless because of it), and the composite ops reduce
 * differently at different shapes. Other backends use the composite ops (same maths).
 *
 * Every row selection uses gatherRows, a row copy (the wasm Gather kernel goes element by
 * element). Attention has its own kernel (exact-attention.ts).
 *
 * @example
 * const xn = rmsNorm(x, 1e-5, tf.scalar(1e-5)); // (T, hidden) → (T, hidden), without the weight
 */
import * as tf from '@tensorflow/tfjs-core';
import type { EmbeddingTable } from './types.js';
import type { WasmBackendLike } from './wasm-backend.js';

/*
 * Measured on SmolLM2 shapes, CPU time per call: RMSNorm 2.4 vs 13.7 µs at 1 row, rotary
 * 2.8 vs 24.9 µs at 1 row and 50 vs 98 µs at 32; past a few hundred rows the composite ops
 * would win back well under a millisecond per layer of a prefill that takes seconds. A
 * fused SwiGLU lost at every size (Math.exp in JS is slower than the wasm sigmoid), so it
 * stays composite (elementwise, so row-independent anyway).
 */

/** Head layout of a model's attention. */
export interface HeadShape {
  heads: number;
  kvHeads: number;
  dim: number;
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
}

/** Whether the fused kernels run (the wasm backend). */
function fused(): boolean {
  if (tf.getBackend() !== 'wasm') return false;
  ensureRegistered();
  return true;
}

/** x·rsqrt(mean(x²) + eps) over the last axis. `epsTensor` serves the composite path. */
export function rmsNorm(x: tf.Tensor2D, eps: number, epsTensor: tf.Scalar): tf.Tensor2D {
  if (fused()) return tf.engine().runKernel('SkeinRmsNorm', { x }, { eps } as unknown as tf.NamedAttrMap) as tf.Tensor2D;
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
  if (fused()) {
    return tf.engine().runKernel('SkeinRopeQk', { x, cos, sin }, shape as unknown as tf.NamedAttrMap) as unknown as [tf.Tensor2D, tf.Tensor2D];
  }
  const x3 = tf.reshape(x, [T, heads + kvHeads, dim]);
  const rot = tf.reshape(tf.matMul(tf.reshape(x, [T * (heads + kvHeads), dim]), rotateHalf), [T, heads + kvHeads, dim]);
  const out = tf.reshape(tf.add(tf.mul(x3, cos), tf.mul(rot, sin)), [T, (heads + kvHeads) * dim]);
  return tf.split(out, [heads * dim, kvHeads * dim], 1) as [tf.Tensor2D, tf.Tensor2D];
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
  if (x.dtype === 'float32' && fused()) {
    return tf.engine().runKernel('SkeinGatherRows', { x }, { rows } as unknown as tf.NamedAttrMap) as tf.Tensor2D;
  }
  return tf.gather(x, tf.tensor1d(rows, 'int32'));
}
