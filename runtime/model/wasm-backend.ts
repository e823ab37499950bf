/**
 * The two methods of tfjs's wasm backend that Skein's custom kernels use: make an output
 * tensor on its heap, and view a tensor's data there in place (no dataSync copy). tfjs-
 * backend-wasm does not export its class's type, so the kernels cast to this.
 */
import type * as tf from '@tensorflow/tfjs-core';

export interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
}
