/**
 * Embedding tables held in JS memory rather than the tensor heap (see EmbeddingTable in
 * runtime/model/types.ts): `BlockEmbedding` keeps a GGUF tensor's rows in their stored
 * blocks and dequantizes only the rows asked for (each row is whole blocks: the GGUF
 * reader checks that a row's length is a multiple of the block size); a Float32Array is
 * the same with F32 "blocks". `KernelEmbedding` is a tied model's table read from its lm
 * head's blocks in the kernels' memory (the same tensor, token_embd), so the table is not
 * held a second time: 279 MB of JS memory saved on a Llama-3.2-1B-shaped Q8_0 file.
 *
 * @example
 * const table = new BlockEmbedding(GgmlType.Q8_0, bytes, 49152, 576);
 * table.rows([1, 9690]); // Float32Array(2 * 576)
 */
import { dequantizeMatrix } from '../kernels/blocks.js';
import type { UploadedMatrix } from '../kernels/matmul.js';
import type { EmbeddingTable } from '../model/types.js';
import { dequantize, GgmlType, tensorByteSize } from './ggml-quants.js';

export class BlockEmbedding implements EmbeddingTable {
  private readonly rowBytes: number;

  constructor(
    readonly type: GgmlType,
    private readonly data: Uint8Array,
    readonly vocabSize: number,
    readonly hiddenSize: number,
  ) {
    this.rowBytes = tensorByteSize(type, hiddenSize);
    if (data.length !== this.rowBytes * vocabSize) {
      throw new RangeError(`embedding of ${vocabSize} rows × ${hiddenSize} needs ${this.rowBytes * vocabSize} bytes, got ${data.length}`);
    }
  }

  /** An f32 table (safetensors checkpoints): the rows are copied out as they are. */
  static fromF32(data: Float32Array, vocabSize: number, hiddenSize: number): BlockEmbedding {
    return new BlockEmbedding(GgmlType.F32, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), vocabSize, hiddenSize);
  }

  get byteLength(): number {
    return this.data.length;
  }

  rows(ids: readonly number[]): Float32Array {
    const h = this.hiddenSize;
    const out = new Float32Array(ids.length * h);
    ids.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new RangeError(`token id ${id} is outside 0..${this.vocabSize - 1}`);
      const start = id * this.rowBytes;
      out.set(dequantize(this.type, this.data.subarray(start, start + this.rowBytes), h), i * h);
    });
    return out;
  }

  /** Every row, (vocab, hidden) row-major (to build a tied lm head, or to check values). */
  all(): Float32Array {
    return dequantize(this.type, this.data, this.vocabSize * this.hiddenSize);
  }
}

/** A tied embedding read from the lm head's blocks in kernel memory; holds no bytes itself. */
export class KernelEmbedding implements EmbeddingTable {
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly byteLength = 0;

  constructor(private readonly head: UploadedMatrix) {
    this.vocabSize = head.rows;
    this.hiddenSize = head.cols;
  }

  rows(ids: readonly number[]): Float32Array {
    const h = this.hiddenSize;
    const out = new Float32Array(ids.length * h);
    ids.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new RangeError(`token id ${id} is outside 0..${this.vocabSize - 1}`);
      out.set(dequantizeMatrix(this.head.kernels.read(this.head.weight, id, id + 1)), i * h);
    });
    return out;
  }
}
