/**
 * Attention as one tfjs op over the wasm kernel of runtime/kernels (matmul.c's
 * `attention`): each query row's output depends only on its own query and the keys it
 * sees, so a token gets the same bits as a decode step, as a row of a verification or
 * tree forward, in a prefill chunk of any size, or beside other sequences. The forward's
 * lossless paths (batching, chunked prefill, prefix sharing, greedy speculative decoding)
 * rest on that.
 *
 * The KV chunks are read where kv-mirror.ts keeps them in the kernels' memory (copied there
 * once per chunk, not once per step and layer). On the wasm backend this is a custom
 * kernel that reads q straight from tfjs's heap; other backends go through dataSync.
 *
 * @example
 * const [out, last] = exactAttention(q, { row: 0, n: 3, keys, values, visible, shape, kernels, mirror, wantLast: false });
 */
import * as tf from '@tensorflow/tfjs-core';
import type { AttentionShape, KernelChunk, MatmulKernels } from '../kernels/matmul.js';
import type { KvMirror } from './kv-mirror.js';
import type { WasmBackendLike } from './wasm-backend.js';

export interface ExactAttentionOp {
  /** First row of this sequence in the packed q, and its number of rows. */
  row: number;
  n: number;
  /** Key and value chunks in position order: the cached ones, then the n new rows. */
  keys: tf.Tensor2D[];
  values: tf.Tensor2D[];
  /** (n, n): new row i sees new key j when visible[i·n + j] is 1. */
  visible: Uint8Array;
  shape: AttentionShape;
  kernels: MatmulKernels;
  /** Where the chunks are read in the kernels' memory (copied there once per chunk). */
  mirror: KvMirror;
  /** Also return the last row's probabilities over every key (mean over heads). */
  wantLast: boolean;
}

interface Attrs {
  row: number;
  n: number;
  qDim: number;
  keys: KernelChunk[];
  values: KernelChunk[];
  visible: Uint8Array;
  shape: AttentionShape;
  kernels: MatmulKernels;
  wantLast: boolean;
}

function run(a: Attrs, q: Float32Array) {
  return a.kernels.attention(q.subarray(a.row * a.qDim, (a.row + a.n) * a.qDim), a.keys, a.values, a.n, a.visible, a.shape, a.wantLast);
}

let registered = false;
function ensureRegistered(): void {
  if (registered) return;
  registered = true;
  tf.registerKernel({
    kernelName: 'SkeinExactAttention',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const b = backend as unknown as WasmBackendLike;
      const a = (attrs as unknown as { op: Attrs }).op;
      const S = a.keys.reduce((x, c) => x + c.rows, 0);
      // makeOutput first: it may grow the heap, which detaches earlier views.
      const out = b.makeOutput([a.n, a.qDim], 'float32');
      const last = a.wantLast ? b.makeOutput([S], 'float32') : null;
      const r = run(a, b.typedArrayFromHeap(inputs.q as tf.TensorInfo));
      b.typedArrayFromHeap(out).set(r.out);
      if (last) b.typedArrayFromHeap(last).set(r.last!);
      return last ? [out, last] : [out];
    },
  });
}

/** q (T, qDim) packed rows → (n, qDim) attention outputs of rows row..row+n-1, and the last row's key weights when asked. */
export function exactAttention(q: tf.Tensor2D, op: ExactAttentionOp): [tf.Tensor2D, tf.Tensor1D | null] {
  const attrs: Attrs = {
    row: op.row,
    n: op.n,
    qDim: q.shape[1],
    keys: op.mirror.layerChunks(op.keys, true),
    values: op.mirror.layerChunks(op.values),
    visible: op.visible,
    shape: op.shape,
    kernels: op.kernels,
    wantLast: op.wantLast,
  };
  if (tf.getBackend() === 'wasm') {
    ensureRegistered();
    const outs = tf.engine().runKernel('SkeinExactAttention', { q }, { op: attrs } as unknown as tf.NamedAttrMap) as unknown as tf.Tensor[];
    return [outs[0] as tf.Tensor2D, (outs[1] as tf.Tensor1D | undefined) ?? null];
  }
  const r = run(attrs, q.dataSync() as Float32Array);
  return [tf.tensor2d(r.out, [op.n, attrs.qDim]), r.last ? tf.tensor1d(r.last) : null];
}
