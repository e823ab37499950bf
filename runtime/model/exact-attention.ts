/**
 * Attention as one tfjs op over the wasm kernel of runtime/kernels (matmul.c's
 * `attention`): each query row's output depends only on its own query and the keys it
 * sees, so a token gets the same bits as a decode step, as a row of a verification or
 * tree forward, in a prefill chunk of any size, or beside other sequences. The forward's
 * lossless paths (batching, chunked prefill, prefix sharing, greedy speculative decoding)
 * rest on that.
 *
 * On the wasm backend this is a custom kernel that reads q and the KV chunks straight from
 * tfjs's heap; other backends go through dataSync.
 *
 * @example
 * const [out, last] = exactAttention(q, { row: 0, n: 3, keys, values, visible, shape, kernels, wantLast: false });
 */
import * as tf from '@tensorflow/tfjs-core';
import type { AttentionShape, MatmulKernels } from '../kernels/matmul.js';

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
  /** Also return the last row's probabilities over every key (mean over heads). */
  wantLast: boolean;
}

interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
}

type Attrs = Omit<ExactAttentionOp, 'keys' | 'values'> & { chunks: number; qDim: number };

function run(attrs: Attrs, q: Float32Array, keys: Float32Array[], values: Float32Array[]) {
  const { row, n, qDim } = attrs;
  return attrs.kernels.attention(q.subarray(row * qDim, (row + n) * qDim), keys, values, n, attrs.visible, attrs.shape, attrs.wantLast);
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
      const S = Array.from({ length: a.chunks }, (_, i) => (inputs[`k${i}`] as tf.TensorInfo).shape[0]!).reduce((x, y) => x + y, 0);
      // makeOutput first: it may grow the heap, which detaches earlier views.
      const out = b.makeOutput([a.n, a.qDim], 'float32');
      const last = a.wantLast ? b.makeOutput([S], 'float32') : null;
      const view = (name: string) => b.typedArrayFromHeap(inputs[name] as tf.TensorInfo);
      const chunk = (p: string) => Array.from({ length: a.chunks }, (_, i) => view(`${p}${i}`));
      const r = run(a, view('q'), chunk('k'), chunk('v'));
      b.typedArrayFromHeap(out).set(r.out);
      if (last) b.typedArrayFromHeap(last).set(r.last!);
      return last ? [out, last] : [out];
    },
  });
}

/** q (T, qDim) packed rows → (n, qDim) attention outputs of rows row..row+n-1, and the last row's key weights when asked. */
export function exactAttention(q: tf.Tensor2D, op: ExactAttentionOp): [tf.Tensor2D, tf.Tensor1D | null] {
  const attrs: Attrs = { row: op.row, n: op.n, visible: op.visible, shape: op.shape, kernels: op.kernels, wantLast: op.wantLast, chunks: op.keys.length, qDim: q.shape[1] };
  if (tf.getBackend() === 'wasm') {
    ensureRegistered();
    const inputs: tf.NamedTensorMap = { q };
    op.keys.forEach((k, i) => (inputs[`k${i}`] = k));
    op.values.forEach((v, i) => (inputs[`v${i}`] = v));
    const outs = tf.engine().runKernel('SkeinExactAttention', inputs, { op: attrs } as unknown as tf.NamedAttrMap) as unknown as tf.Tensor[];
    return [outs[0] as tf.Tensor2D, (outs[1] as tf.Tensor1D | undefined) ?? null];
  }
  const data = (t: tf.Tensor) => t.dataSync() as Float32Array;
  const r = run(attrs, data(q), op.keys.map(data), op.values.map(data));
  return [tf.tensor2d(r.out, [op.n, attrs.qDim]), r.last ? tf.tensor1d(r.last) : null];
}
