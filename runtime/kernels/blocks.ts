/**
 * Weight matrices as GGUF stores them, and plain-JS quantize/dequantize for the block
 * types the wasm kernels run on (matmul.c documents each layout). These loops are the
 * reference the kernels are tested against and what tests and benches use to write
 * random-weight matrices; the runtime never dequantizes on its hot path.
 *
 * A BlockMatrix is (rows, cols) with rows = output features and each row `cols` input
 * values long in consecutive 32-value blocks — ggml's layout, so y = x·Wᵀ.
 *
 * @example
 * const m = quantizeMatrix(new Float32Array(64 * 32).fill(0.5), 64, 32, 'q8_0');
 * dequantizeMatrix(m)[0]; // 0.5
 */

export type BlockType = 'f32' | 'f16' | 'q4_0' | 'q4_1' | 'q8_0';

/** ggml's numbering of the types (the kernels take these ids). */
export const GGML_TYPE_ID: Record<BlockType, number> = { f32: 0, f16: 1, q4_0: 2, q4_1: 3, q8_0: 8 };

export interface BlockMatrix {
  type: BlockType;
  rows: number;
  cols: number;
  /** rows × rowBytes(type, cols) bytes, row after row. */
  data: Uint8Array;
}

/** Values per block (1 for the float types). */
export const QK = 32;

const BLOCK_BYTES: Record<BlockType, number> = { f32: 4, f16: 2, q4_0: 18, q4_1: 20, q8_0: 34 };

/** Bytes of one row of `cols` values. */
export function rowBytes(type: BlockType, cols: number): number {
  return type === 'f32' || type === 'f16' ? BLOCK_BYTES[type] * cols : (BLOCK_BYTES[type] * cols) / QK;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * Every half's float value, filled on first use: a lookup instead of the arithmetic below
 * with its power of two per call (~0.5 s of the ~7 s a skip adapter took to merge into
 * SmolLM2's 15 kept layers). The same values: a half is exact in f32.
 */
let halfTable: Float32Array | null = null;

/** IEEE half → float. */
export function halfToFloat(h: number): number {
  if (halfTable === null) {
    halfTable = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) halfTable[i] = halfToFloatSlow(i);
  }
  return halfTable[h & 0xffff]!;
}

function halfToFloatSlow(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** float → IEEE half, round to nearest even (finite inputs in half range). */
export function floatToHalf(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = ((b >>> 23) & 0xff) - 127 + 15;
  let mant = b & 0x7fffff;
  if (exp >= 31) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - exp;
    const half = 1 << (shift - 1);
    let v = mant >> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && v & 1)) v++;
    return sign | v;
  }
  let v = (exp << 10) | (mant >> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && v & 1)) v++;
  return sign | v;
}

/** Quantizes a (rows, cols) row-major f32 matrix the way ggml's reference quantizers do. */
export function quantizeMatrix(x: Float32Array, rows: number, cols: number, type: BlockType): BlockMatrix {
  if (x.length !== rows * cols) throw new RangeError(`quantizeMatrix: ${x.length} values for ${rows}×${cols}`);
  if (type !== 'f32' && type !== 'f16' && cols % QK !== 0) throw new RangeError(`quantizeMatrix: ${type} needs cols divisible by ${QK}, got ${cols}`);
  const data = new Uint8Array(rows * rowBytes(type, cols));
  const view = new DataView(data.buffer);
  if (type === 'f32') {
    for (let i = 0; i < x.length; i++) view.setFloat32(i * 4, x[i]!, true);
    return { type, rows, cols, data };
  }
  if (type === 'f16') {
    for (let i = 0; i < x.length; i++) view.setUint16(i * 2, floatToHalf(x[i]!), true);
    return { type, rows, cols, data };
  }
  const bs = BLOCK_BYTES[type];
  for (let b = 0; b < x.length / QK; b++) {
    const v = x.subarray(b * QK, (b + 1) * QK);
    const o = b * bs;
    // Index loops over the block, not for…of on a subarray: ~3× faster (adapter merges quantize ~50M values).
    if (type === 'q8_0') {
      let amax = 0;
      for (let i = 0; i < QK; i++) amax = Math.max(amax, Math.abs(v[i]!));
      const d = amax / 127;
      const id = d ? 1 / d : 0;
      view.setUint16(o, floatToHalf(d), true);
      for (let i = 0; i < QK; i++) view.setInt8(o + 2 + i, Math.round(v[i]! * id));
    } else if (type === 'q4_0') {
      // ggml: the value of largest magnitude maps to −8, d = max / −8.
      let max = 0;
      for (let i = 0; i < QK; i++) if (Math.abs(v[i]!) > Math.abs(max)) max = v[i]!;
      const d = max / -8;
      const id = d ? 1 / d : 0;
      view.setUint16(o, floatToHalf(d), true);
      for (let i = 0; i < QK / 2; i++) {
        const q0 = Math.min(15, Math.trunc(v[i]! * id + 8.5));
        const q1 = Math.min(15, Math.trunc(v[i + 16]! * id + 8.5));
        data[o + 2 + i] = q0 | (q1 << 4);
      }
    } else {
      let min = Infinity;
      let max = -Infinity;
      for (let i = 0; i < QK; i++) {
        min = Math.min(min, v[i]!);
        max = Math.max(max, v[i]!);
      }
      const d = (max - min) / 15;
      const id = d ? 1 / d : 0;
      view.setUint16(o, floatToHalf(d), true);
      view.setUint16(o + 2, floatToHalf(min), true);
      for (let i = 0; i < QK / 2; i++) {
        const q0 = Math.min(15, Math.trunc((v[i]! - min) * id + 0.5));
        const q1 = Math.min(15, Math.trunc((v[i + 16]! - min) * id + 0.5));
        data[o + 4 + i] = q0 | (q1 << 4);
      }
    }
  }
  return { type, rows, cols, data };
}

/** The f32 values of a matrix, (rows, cols) row-major. */
export function dequantizeMatrix(m: BlockMatrix): Float32Array {
  const n = m.rows * m.cols;
  const out = new Float32Array(n);
  // Read once: an UploadedMatrix (kernels/matmul.ts) copies its blocks out on every read.
  const data = m.data;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (m.type === 'f32') {
    for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
    return out;
  }
  if (m.type === 'f16') {
    for (let i = 0; i < n; i++) out[i] = halfToFloat(view.getUint16(i * 2, true));
    return out;
  }
  const bs = BLOCK_BYTES[m.type];
  for (let b = 0; b < n / QK; b++) {
    const o = b * bs;
    const d = halfToFloat(view.getUint16(o, true));
    const base = b * QK;
    if (m.type === 'q8_0') {
      for (let i = 0; i < QK; i++) out[base + i] = d * view.getInt8(o + 2 + i);
    } else {
      const min = m.type === 'q4_1' ? halfToFloat(view.getUint16(o + 2, true)) : -8 * d;
      const q = o + (m.type === 'q4_1' ? 4 : 2);
      for (let i = 0; i < QK / 2; i++) {
        out[base + i] = d * (data[q + i]! & 15) + min;
        out[base + i + 16] = d * (data[q + i]! >> 4) + min;
      }
    }
  }
  return out;
}

/** The matrix with its rows reordered: row r of the result is row order[r] of m. */
export function permuteRows(m: BlockMatrix, order: ArrayLike<number>): BlockMatrix {
  const rb = rowBytes(m.type, m.cols);
  const src = m.data;
  const data = new Uint8Array(src.length);
  for (let r = 0; r < m.rows; r++) data.set(src.subarray(order[r]! * rb, (order[r]! + 1) * rb), r * rb);
  return { ...m, data };
}
