/**
 * Where the loader's weights come from, by Hugging Face tensor name: a safetensors
 * checkpoint (single file or shards) or a GGUF file. `read` returns the tensor as f32 in
 * HF layout, row-major, after checking its shape, so load.ts builds the runtime's weights
 * the same way from either. Each call reads one tensor; the caller drops the array once
 * its tf tensor exists.
 *
 * @example
 * const src = new SafetensorsSource(SafetensorsCheckpoint.openDir(dir));
 * const w = src.read('model.norm.weight', [576]);
 * src.close();
 */
import { CheckpointError } from '../../core/errors.js';
import type { GgmlType } from './ggml-quants.js';
import type { SafetensorsCheckpoint } from './safetensors.js';

export interface TensorSource {
  /** The file a tensor is (or would be) in, for error messages. */
  fileOf(name: string): string;
  /** The tensor's name in the file, for error messages (GGUF names differ from HF's). */
  fileTensorName(name: string): string;
  has(name: string): boolean;
  /** The tensor as f32, row-major; a missing tensor or another shape is a CheckpointError. */
  read(name: string, shape: number[]): Float32Array;
  /**
   * The tensor in its stored format (ggml type and raw blocks, rows as stored), when the
   * source keeps one other than f32; checked like `read`. The embedding table uses it.
   */
  readStored?(name: string, shape: number[]): { type: GgmlType; bytes: Uint8Array };
  /** Checks a tensor's presence and shape without reading it (a CheckpointError when wrong). */
  checkShape?(name: string, shape: number[]): void;
  close(): void;
}

export class SafetensorsSource implements TensorSource {
  constructor(private readonly cp: SafetensorsCheckpoint) {}

  fileOf(name: string): string {
    return this.cp.expectedFile(name);
  }

  fileTensorName(name: string): string {
    return name;
  }

  has(name: string): boolean {
    return this.cp.has(name);
  }

  read(name: string, shape: number[]): Float32Array {
    const file = this.cp.expectedFile(name);
    if (!this.cp.has(name)) throw new CheckpointError({ file, tensor: name, reason: `missing tensor (expected shape [${shape.join(', ')}])` });
    const t = this.cp.read(name);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new CheckpointError({ file, tensor: name, reason: `shape [${t.shape.join(', ')}] but expected [${shape.join(', ')}]` });
    }
    return t.data;
  }

  close(): void {
    this.cp.close();
  }
}
