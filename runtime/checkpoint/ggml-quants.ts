/**
 * ggml tensor types and their dequantizers (GGUF tensor data → Float32Array). Each block
 * format is documented beside its dequantizer: block size in elements, byte layout, and
 * the formula. All multi-byte fields are little-endian; `half` is an IEEE binary16.
 * The layouts follow llama.cpp's ggml-common.h / ggml-quants.c (block_q4_0 … block_q6_K);
 * the code is written from those descriptions, and runtime/checkpoint/gguf-writer.ts holds an
 * independent quantizer that the tests round-trip through these.
 *
 * Dequantizing is the only way weights reach the runtime today. A later "keep quantized"
 * path (the kernels issue, #11) would take the raw blocks from GgufFile.readTensorBytes
 * instead; nothing here assumes the f32 copy is the final form.
 *
 * @example
 * const f32 = dequantize(GgmlType.Q4_1, bytes, 4096); // 4096 values from 128 blocks
 */
import { f16BitsToF32 } from './safetensors.js';

export enum GgmlType {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30,
}

export interface GgmlTypeInfo {
  name: string;
  /** Elements per block (1 for the plain float types). */
  blockSize: number;
  /** Bytes per block. */
  blockBytes: number;
}

/** The types this loader reads. */
export const GGML_TYPES: Record<GgmlType, GgmlTypeInfo> = {
  [GgmlType.F32]: { name: 'F32', blockSize: 1, blockBytes: 4 },
  [GgmlType.F16]: { name: 'F16', blockSize: 1, blockBytes: 2 },
  [GgmlType.BF16]: { name: 'BF16', blockSize: 1, blockBytes: 2 },
  [GgmlType.Q4_0]: { name: 'Q4_0', blockSize: 32, blockBytes: 18 },
  [GgmlType.Q4_1]: { name: 'Q4_1', blockSize: 32, blockBytes: 20 },
  [GgmlType.Q5_0]: { name: 'Q5_0', blockSize: 32, blockBytes: 22 },
  [GgmlType.Q5_1]: { name: 'Q5_1', blockSize: 32, blockBytes: 24 },
  [GgmlType.Q8_0]: { name: 'Q8_0', blockSize: 32, blockBytes: 34 },
  [GgmlType.Q4_K]: { name: 'Q4_K', blockSize: 256, blockBytes: 144 },
  [GgmlType.Q5_K]: { name: 'Q5_K', blockSize: 256, blockBytes: 176 },
  [GgmlType.Q6_K]: { name: 'Q6_K', blockSize: 256, blockBytes: 210 },
};

/** Names of the ggml types this loader does not read, for error messages. */
const OTHER_TYPE_NAMES: Record<number, string> = {
  4: 'Q4_2 (removed)', 5: 'Q4_3 (removed)', 9: 'Q8_1', 10: 'Q2_K', 11: 'Q3_K', 15: 'Q8_K', 16: 'IQ2_XXS',
  17: 'IQ2_XS', 18: 'IQ3_XXS', 19: 'IQ1_S', 20: 'IQ4_NL', 21: 'IQ3_S', 22: 'IQ2_S', 23: 'IQ4_XS',
  24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64', 28: 'F64', 29: 'IQ1_M', 34: 'TQ1_0', 35: 'TQ2_0', 39: 'MXFP4',
};

export function ggmlTypeName(type: number): string {
  const known = GGML_TYPES[type as GgmlType];
  if (known !== undefined) return known.name;
  return OTHER_TYPE_NAMES[type] !== undefined ? `${OTHER_TYPE_NAMES[type]} (type ${type})` : `unknown type ${type}`;
}

/** Bytes of `numel` elements; numel must be a multiple of the block size. */
export function tensorByteSize(type: GgmlType, numel: number): number {
  const { blockSize, blockBytes } = GGML_TYPES[type];
  return (numel / blockSize) * blockBytes;
}

const half = (src: Uint8Array, o: number): number => f16BitsToF32(src[o]! | (src[o + 1]! << 8));

/**
 * Dequantizes `numel` elements of `type` from `src` (whole blocks, as stored) into a new
 * Float32Array.
 */
export function dequantize(type: GgmlType, src: Uint8Array, numel: number): Float32Array {
  const { blockSize, blockBytes, name } = GGML_TYPES[type];
  if (numel % blockSize !== 0) throw new RangeError(`${numel} elements is not a whole number of ${name} blocks of ${blockSize}`);
  const need = (numel / blockSize) * blockBytes;
  if (src.length < need) throw new RangeError(`${name}: ${numel} elements need ${need} bytes, got ${src.length}`);
  const out = new Float32Array(numel);
  switch (type) {
    case GgmlType.F32:
      // Copy through bytes: src may sit at an offset that is not a multiple of 4.
      new Uint8Array(out.buffer).set(src.subarray(0, need));
      break;
    case GgmlType.F16:
      for (let i = 0; i < numel; i++) out[i] = half(src, 2 * i);
      break;
    case GgmlType.BF16: {
      // bf16 is the top half of an f32.
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < numel; i++) bits[i] = ((src[2 * i]! | (src[2 * i + 1]! << 8)) << 16) >>> 0;
      break;
    }
    case GgmlType.Q4_0:
      dequantQ4_0(src, out);
      break;
    case GgmlType.Q4_1:
      dequantQ4_1(src, out);
      break;
    case GgmlType.Q5_0:
      dequantQ5_0(src, out);
      break;
    case GgmlType.Q5_1:
      dequantQ5_1(src, out);
      break;
    case GgmlType.Q8_0:
      dequantQ8_0(src, out);
      break;
    case GgmlType.Q4_K:
      dequantQ4K(src, out);
      break;
    case GgmlType.Q5_K:
      dequantQ5K(src, out);
      break;
    case GgmlType.Q6_K:
      dequantQ6K(src, out);
      break;
  }
  return out;
}

/**
 * Q4_0: 32 elements in 18 bytes.
 *   [0..2)  half d
 *   [2..18) u8 qs[16]: element j (j < 16) is the low nibble of qs[j], element j + 16 its
 *           high nibble.
 *   x = (q - 8) · d
 */
function dequantQ4_0(src: Uint8Array, out: Float32Array): void {
  for (let b = 0, o = 0; o < out.length; b += 18, o += 32) {
    const d = half(src, b);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 2 + j]!;
      out[o + j] = ((q & 0x0f) - 8) * d;
      out[o + j + 16] = ((q >> 4) - 8) * d;
    }
  }
}

/**
 * Q4_1: 32 elements in 20 bytes.
 *   [0..2) half d · [2..4) half m · [4..20) u8 qs[16], nibbles as in Q4_0
 *   x = q · d + m
 */
function dequantQ4_1(src: Uint8Array, out: Float32Array): void {
  for (let b = 0, o = 0; o < out.length; b += 20, o += 32) {
    const d = half(src, b);
    const m = half(src, b + 2);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 4 + j]!;
      out[o + j] = (q & 0x0f) * d + m;
      out[o + j + 16] = (q >> 4) * d + m;
    }
  }
}

/** The u32 of 5th bits that Q5_0 and Q5_1 carry: bit j belongs to element j. */
const u32At = (src: Uint8Array, o: number): number => (src[o]! | (src[o + 1]! << 8) | (src[o + 2]! << 16) | (src[o + 3]! << 24)) >>> 0;

/**
 * Q5_0: 32 elements in 22 bytes.
 *   [0..2) half d · [2..6) u32 qh (bit j = 5th bit of element j) · [6..22) u8 qs[16],
 *   low 4 bits as the nibbles of Q4_0
 *   x = (q - 16) · d, q = nibble | (bit << 4)
 */
function dequantQ5_0(src: Uint8Array, out: Float32Array): void {
  for (let b = 0, o = 0; o < out.length; b += 22, o += 32) {
    const d = half(src, b);
    const qh = u32At(src, b + 2);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 6 + j]!;
      out[o + j] = (((q & 0x0f) | (((qh >>> j) & 1) << 4)) - 16) * d;
      out[o + j + 16] = (((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16) * d;
    }
  }
}

/**
 * Q5_1: 32 elements in 24 bytes.
 *   [0..2) half d · [2..4) half m · [4..8) u32 qh · [8..24) u8 qs[16], bits as in Q5_0
 *   x = q · d + m
 */
function dequantQ5_1(src: Uint8Array, out: Float32Array): void {
  for (let b = 0, o = 0; o < out.length; b += 24, o += 32) {
    const d = half(src, b);
    const m = half(src, b + 2);
    const qh = u32At(src, b + 4);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 8 + j]!;
      out[o + j] = ((q & 0x0f) | (((qh >>> j) & 1) << 4)) * d + m;
      out[o + j + 16] = ((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) * d + m;
    }
  }
}

/**
 * Q8_0: 32 elements in 34 bytes.
 *   [0..2) half d · [2..34) i8 qs[32], element j = qs[j]
 *   x = q · d
 */
function dequantQ8_0(src: Uint8Array, out: Float32Array): void {
  for (let b = 0, o = 0; o < out.length; b += 34, o += 32) {
    const d = half(src, b);
    for (let j = 0; j < 32; j++) out[o + j] = ((src[b + 2 + j]! << 24) >> 24) * d;
  }
}

/**
 * The 6-bit (scale, min) pair of sub-block j (0..7) of a Q4_K or Q5_K super-block, packed
 * in 12 bytes `s`: for j < 4, scale = s[j] & 63 and min = s[j + 4] & 63; for j ≥ 4 the low
 * 4 bits come from s[j + 4] (scale: low nibble, min: high nibble) and the top 2 bits from
 * the spare top bits of s[j - 4] (scale) and s[j] (min).
 */
function scaleMinK4(src: Uint8Array, s: number, j: number): [number, number] {
  if (j < 4) return [src[s + j]! & 63, src[s + j + 4]! & 63];
  return [(src[s + j + 4]! & 0x0f) | ((src[s + j - 4]! >> 6) << 4), (src[s + j + 4]! >> 4) | ((src[s + j]! >> 6) << 4)];
}

/**
 * Q4_K: 256 elements in 144 bytes, as 8 sub-blocks of 32.
 *   [0..2) half d · [2..4) half dmin · [4..16) 12 bytes of 6-bit (scale, min) pairs (see
 *   scaleMinK4) · [16..144) u8 qs[128]
 *   The 256 elements go in 4 groups of 64: group g uses qs[32g .. 32g+32); its first 32
 *   elements are the low nibbles (sub-block 2g), the next 32 the high nibbles (2g + 1).
 *   x = d · scale · q - dmin · min
 */
function dequantQ4K(src: Uint8Array, out: Float32Array): void {
  for (let b = 0, o = 0; o < out.length; b += 144, o += 256) {
    const d = half(src, b);
    const dmin = half(src, b + 2);
    for (let g = 0; g < 4; g++) {
      const [sc1, m1] = scaleMinK4(src, b + 4, 2 * g);
      const [sc2, m2] = scaleMinK4(src, b + 4, 2 * g + 1);
      const d1 = d * sc1;
      const d2 = d * sc2;
      const mm1 = dmin * m1;
      const mm2 = dmin * m2;
      const q = b + 16 + 32 * g;
      const y = o + 64 * g;
      for (let l = 0; l < 32; l++) {
        out[y + l] = d1 * (src[q + l]! & 0x0f) - mm1;
        out[y + 32 + l] = d2 * (src[q + l]! >> 4) - mm2;
      }
    }
  }
}

/**
 * Q5_K: 256 elements in 176 bytes, as 8 sub-blocks of 32.
 *   [0..2) half d · [2..4) half dmin · [4..16) scales as Q4_K · [16..48) u8 qh[32] ·
 *   [48..176) u8 qs[128]
 *   Low 4 bits as in Q4_K; the 5th bit of element l of sub-block k is bit k of qh[l].
 *   x = d · scale · q - dmin · min
 */
function dequantQ5K(src: Uint8Array, out: Float32Array): void {
  for (let b = 0, o = 0; o < out.length; b += 176, o += 256) {
    const d = half(src, b);
    const dmin = half(src, b + 2);
    const qh = b + 16;
    for (let g = 0; g < 4; g++) {
      const [sc1, m1] = scaleMinK4(src, b + 4, 2 * g);
      const [sc2, m2] = scaleMinK4(src, b + 4, 2 * g + 1);
      const d1 = d * sc1;
      const d2 = d * sc2;
      const mm1 = dmin * m1;
      const mm2 = dmin * m2;
      const q = b + 48 + 32 * g;
      const y = o + 64 * g;
      for (let l = 0; l < 32; l++) {
        const h = src[qh + l]!;
        out[y + l] = d1 * ((src[q + l]! & 0x0f) | (((h >> (2 * g)) & 1) << 4)) - mm1;
        out[y + 32 + l] = d2 * ((src[q + l]! >> 4) | (((h >> (2 * g + 1)) & 1) << 4)) - mm2;
      }
    }
  }
}

/**
 * Q6_K: 256 elements in 210 bytes, as 16 sub-blocks of 16.
 *   [0..128) u8 ql[128] (low 4 bits) · [128..192) u8 qh[64] (high 2 bits) ·
 *   [192..208) i8 scales[16] · [208..210) half d
 *   Two halves of 128 elements; half n uses ql[64n ..], qh[32n ..], scales[8n ..]. For
 *   l < 32 its elements l, l+32, l+64, l+96 take their low bits from the low nibble of
 *   ql[l], the low nibble of ql[l+32], the high nibble of ql[l], the high nibble of
 *   ql[l+32], and their high bits from bits 0-1, 2-3, 4-5, 6-7 of qh[l]. Element e of the
 *   half has scale scales[e / 16].
 *   x = d · scale · (q - 32)
 */
function dequantQ6K(src: Uint8Array, out: Float32Array): void {
  for (let b = 0, o = 0; o < out.length; b += 210, o += 256) {
    const d = half(src, b + 208);
    for (let n = 0; n < 2; n++) {
      const ql = b + 64 * n;
      const qh = b + 128 + 32 * n;
      const sc = b + 192 + 8 * n;
      const y = o + 128 * n;
      for (let l = 0; l < 32; l++) {
        const h = src[qh + l]!;
        const lo = src[ql + l]!;
        const hi = src[ql + l + 32]!;
        const s = (l >> 4) + sc;
        out[y + l] = d * ((src[s]! << 24) >> 24) * (((lo & 0x0f) | ((h & 3) << 4)) - 32);
        out[y + l + 32] = d * ((src[s + 2]! << 24) >> 24) * (((hi & 0x0f) | (((h >> 2) & 3) << 4)) - 32);
        out[y + l + 64] = d * ((src[s + 4]! << 24) >> 24) * (((lo >> 4) | (((h >> 4) & 3) << 4)) - 32);
        out[y + l + 96] = d * ((src[s + 6]! << 24) >> 24) * (((hi >> 4) | (((h >> 6) & 3) << 4)) - 32);
      }
    }
  }
}
