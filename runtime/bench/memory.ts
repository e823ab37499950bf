/**
 * Memory accounting for benches: the process's RSS, the two wasm32 memories a model uses
 * (tfjs's heap and its matmul kernels' own, each 4 GB at most and never shrinking) and the
 * bytes of live tensors, so a bench can say where a model's memory went. `rssLimit` is
 * issue #11's bound for a model: twice its GGUF file plus the KV budget.
 *
 * @example
 * const before = memorySnapshot(null);
 * const model = await loadModel(file);
 * const after = memorySnapshot(model);
 * after.rss - before.rss; // bytes the load added
 */
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import * as tf from '@tensorflow/tfjs-core';
import { prepareModel } from '../model/forward.js';
import type { LoadedModel } from '../model/types.js';

export interface MemorySnapshot {
  /** Resident set size of the process. */
  rss: number;
  /** tfjs's wasm heap (null on other backends). */
  tfjsHeap: number | null;
  /** Bytes of live tfjs tensors. */
  tensorBytes: number;
  /** The model's kernel memory: all of it, and the part in use (weights first, then KV copies); null without a model. */
  kernelsMemory: number | null;
  kernelsInUse: number | null;
}

let gc: (() => void) | null = null;

/** Runs a full garbage collection, so that dropped models' wasm memories leave the RSS. */
export function collectGarbage(): void {
  if (gc === null) {
    v8.setFlagsFromString('--expose-gc');
    gc = vm.runInNewContext('gc') as () => void;
  }
  gc();
}

/** The size of tfjs's wasm heap, when the wasm backend is the one running. */
export function tfjsHeapBytes(): number | null {
  if (tf.getBackend() !== 'wasm') return null;
  const wasm = (tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } }).wasm;
  return wasm?.HEAPU8?.buffer.byteLength ?? null;
}

export function memorySnapshot(model: LoadedModel | null): MemorySnapshot {
  const kernels = model === null ? null : prepareModel(model).kernels;
  return {
    rss: process.memoryUsage().rss,
    tfjsHeap: tfjsHeapBytes(),
    tensorBytes: tf.memory().numBytes,
    kernelsMemory: kernels?.memoryBytes ?? null,
    kernelsInUse: kernels?.weightBytes ?? null,
  };
}

/** Issue #11's memory bound for a model: 2 × its GGUF file + the KV budget. */
export function rssLimit(ggufBytes: number, kvBudgetBytes: number): number {
  return 2 * ggufBytes + kvBudgetBytes;
}

export const MiB = (bytes: number | null): number | null => (bytes === null ? null : Math.round(bytes / 2 ** 20));
