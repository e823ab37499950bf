import { describe, expect, it } from 'vitest';
import { quantize } from './gguf-writer.js';
import { mulberry32 } from '../model/random.js';
import { dequantize, GgmlType, GGML_TYPES, ggmlTypeName, tensorByteSize } from './ggml-quants.js';
import { f32ToF16Bits } from './safetensors.js';

const ALL = Object.keys(GGML_TYPES).map(Number) as GgmlType[];

function randomData(n: number, seed: number): Float32Array {
  const rand = mulberry32(seed);
  const out = new Float32Array(n);
  // Mixed magnitudes per block, and some all-negative / all-positive stretches.
  for (let i = 0; i < n; i++) out[i] = (rand() * 2 - 1) * (1 + 4 * ((i >> 5) % 3)) + ((i >> 8) % 4 === 1 ? 3 : 0);
  return out;
}

/** Largest error a type may make per element, relative to its block's spread (max - min). */
const ERROR_BOUND: Record<GgmlType, number> = {
  [GgmlType.F32]: 0,
  [GgmlType.F16]: 2 ** -11,
  [GgmlType.BF16]: 2 ** -8,
  // Half a quantisation step, plus the f16 rounding of the scales.
  [GgmlType.Q8_0]: 0.5 / 127 + 0.002,
  [GgmlType.Q4_0]: 0.5 / 7 + 0.01,
  [GgmlType.Q4_1]: 0.5 / 15 + 0.01,
  [GgmlType.Q5_0]: 0.5 / 15 + 0.01,
  [GgmlType.Q5_1]: 0.5 / 31 + 0.01,
  // K-quants also round each sub-block's scale and min to 6 bits (Q6_K: 8-bit scales).
  [GgmlType.Q4_K]: 0.5 / 15 + 1 / 63 + 0.02,
  [GgmlType.Q5_K]: 0.5 / 31 + 1 / 63 + 0.02,
  [GgmlType.Q6_K]: 0.5 / 31 + 1 / 127 + 0.01,
};

describe('dequantize: round trip through an independent quantizer', () => {
  for (const type of ALL) {
    const { name, blockSize } = GGML_TYPES[type];
    it(`${name}: equals the quantizer's own values, within the block-format error of the input`, () => {
      const n = Math.max(blockSize, 32) * 16;
      const x = randomData(n, type + 1);
      const { bytes, values } = quantize(type, x);
      expect(bytes.length).toBe(tensorByteSize(type, n));
      const y = dequantize(type, bytes, n);
      for (let i = 0; i < n; i++) expect(Math.abs(y[i]! - values[i]!)).toBeLessThanOrEqual(1e-6 * Math.abs(values[i]!) + 1e-7);
      const block = Math.max(blockSize, 32);
      for (let b = 0; b < n; b += block) {
        const xs = x.subarray(b, b + block);
        const spread = Math.max(...xs) - Math.min(...xs, 0) + Math.max(...xs.map(Math.abs));
        for (let i = b; i < b + block; i++) expect(Math.abs(y[i]! - x[i]!)).toBeLessThanOrEqual(ERROR_BOUND[type] * spread + 1e-6);
      }
    });
  }

  it('reads from a buffer at any byte offset (F32 copies bytes)', () => {
    const x = new Float32Array([1.5, -2, 3.25, 4]);
    const raw = new Uint8Array(17);
    raw.set(new Uint8Array(x.buffer), 1);
    expect([...dequantize(GgmlType.F32, raw.subarray(1), 4)]).toEqual([1.5, -2, 3.25, 4]);
  });

  it('refuses a partial block or too few bytes', () => {
    expect(() => dequantize(GgmlType.Q4_0, new Uint8Array(18), 31)).toThrow(/whole number of Q4_0 blocks/);
    expect(() => dequantize(GgmlType.Q8_0, new Uint8Array(33), 32)).toThrow(/need 34 bytes/);
  });

  it('names types it does not read', () => {
    expect(ggmlTypeName(10)).toBe('Q2_K (type 10)');
    expect(ggmlTypeName(99)).toBe('unknown type 99');
  });
});

/** Little-endian f16 bytes of a value that f16 holds exactly. */
const h = (x: number): number[] => {
  const b = f32ToF16Bits(x);
  return [b & 0xff, b >> 8];
};

describe('dequantize: golden blocks derived by hand from the documented layouts', () => {
  it('F16, BF16', () => {
    // 0x3C00 = 1.0, 0xC000 = -2.0, 0x3555 ≈ 0.33325; bf16 0x3FC0 = 1.5, 0xC120 = -10.
    expect([...dequantize(GgmlType.F16, new Uint8Array([0x00, 0x3c, 0x00, 0xc0, 0x55, 0x35]), 3)]).toEqual([1, -2, 0.333251953125]);
    expect([...dequantize(GgmlType.BF16, new Uint8Array([0xc0, 0x3f, 0x20, 0xc1]), 2)]).toEqual([1.5, -10]);
  });

  it('Q4_0: (nibble - 8) · d; byte j holds elements j (low) and j + 16 (high)', () => {
    const qs = new Array(16).fill(0x88); // all zero
    qs[0] = 0x9a; // element 0: 0xA - 8 = 2; element 16: 0x9 - 8 = 1
    qs[15] = 0x0f; // element 15: 15 - 8 = 7; element 31: 0 - 8 = -8
    const y = dequantize(GgmlType.Q4_0, new Uint8Array([...h(0.5), ...qs]), 32);
    expect([y[0], y[16], y[15], y[31], y[7]]).toEqual([1, 0.5, 3.5, -4, 0]);
  });

  it('Q4_1: nibble · d + m', () => {
    const qs = new Array(16).fill(0);
    qs[3] = 0x5c; // element 3: 12, element 19: 5
    const y = dequantize(GgmlType.Q4_1, new Uint8Array([...h(0.25), ...h(-1), ...qs]), 32);
    expect([y[3], y[19], y[0]]).toEqual([12 * 0.25 - 1, 5 * 0.25 - 1, -1]);
  });

  it('Q5_0: (nibble | bit j of qh << 4) - 16, times d', () => {
    const qs = new Array(16).fill(0);
    qs[2] = 0x31; // element 2 low 1, element 18 low 3
    // qh: bit 2 (element 2) and bit 18 (element 18) set; bit 31 (element 31) set.
    const qh = (1 << 2) | (1 << 18) | (1 << 31);
    const y = dequantize(GgmlType.Q5_0, new Uint8Array([...h(2), qh & 0xff, (qh >>> 8) & 0xff, (qh >>> 16) & 0xff, qh >>> 24, ...qs]), 32);
    // element 2: (1 | 16) - 16 = 1; element 18: (3 | 16) - 16 = 3; element 31: 16 - 16 = 0; element 0: -16.
    expect([y[2], y[18], y[31], y[0]]).toEqual([2, 6, 0, -32]);
  });

  it('Q5_1: (nibble | high bit) · d + m', () => {
    const qs = new Array(16).fill(0);
    qs[0] = 0xf2; // element 0 low 2, element 16 low 15
    const qh = (1 << 16) >>> 0; // element 16's 5th bit
    const y = dequantize(GgmlType.Q5_1, new Uint8Array([...h(1), ...h(0.5), qh & 0xff, (qh >>> 8) & 0xff, (qh >>> 16) & 0xff, qh >>> 24, ...qs]), 32);
    expect([y[0], y[16], y[1]]).toEqual([2.5, 31.5, 0.5]);
  });

  it('Q8_0: int8 · d', () => {
    const qs = new Array(32).fill(0);
    qs[0] = 127;
    qs[1] = 0x80; // -128
    qs[31] = 0xff; // -1
    const y = dequantize(GgmlType.Q8_0, new Uint8Array([...h(0.125), ...qs]), 32);
    expect([y[0], y[1], y[31], y[5]]).toEqual([15.875, -16, -0.125, 0]);
  });

  it('Q4_K: d·sc·q - dmin·m with 6-bit (sc, m) pairs packed in 12 bytes', () => {
    const scales = new Array(12).fill(0);
    scales[0] = 3 | (1 << 6); // sub-block 0: sc 3; top bits of sub-block 4's sc = 1
    scales[4] = 5 | (2 << 6); // sub-block 0: m 5; top bits of sub-block 4's m = 2
    scales[1] = 63; // sub-block 1: sc 63
    scales[8] = 0x7a; // sub-block 4: sc low nibble 0xa, m low nibble 0x7
    const qs = new Array(128).fill(0);
    qs[0] = 0x4f; // sub-block 0 element 0: 15; sub-block 1 element 0 (element 32): 4
    qs[64] = 0x09; // sub-block 4 element 0 (element 128): 9
    const y = dequantize(GgmlType.Q4_K, new Uint8Array([...h(0.5), ...h(0.25), ...scales, ...qs]), 256);
    // sub-block 4: sc = 0xa | 1 << 4 = 26, m = 0x7 | 2 << 4 = 39.
    expect(y[0]).toBe(0.5 * 3 * 15 - 0.25 * 5);
    expect(y[1]).toBe(-0.25 * 5);
    expect(y[32]).toBe(0.5 * 63 * 4);
    expect(y[128]).toBe(0.5 * 26 * 9 - 0.25 * 39);
    expect(y[160]).toBe(0); // sub-block 5: sc 0, m 0
  });

  it('Q5_K: Q4_K plus a 5th bit: bit k of qh[l] for element l of sub-block k', () => {
    const scales = new Array(12).fill(0);
    scales[2] = 2; // sub-block 2: sc 2, m 0
    scales[3] = 1; // sub-block 3: sc 1
    scales[7] = 4; // sub-block 3: m 4
    const qh = new Array(32).fill(0);
    qh[5] = (1 << 2) | (1 << 3); // element 5 of sub-blocks 2 and 3
    const qs = new Array(128).fill(0);
    qs[32 + 5] = 0x3c; // group 1 byte 5: sub-block 2 low nibble 12, sub-block 3 high nibble 3
    const y = dequantize(GgmlType.Q5_K, new Uint8Array([...h(1), ...h(0.5), ...scales, ...qh, ...qs]), 256);
    expect(y[64 + 5]).toBe(2 * (12 + 16)); // sub-block 2 starts at element 64
    expect(y[96 + 5]).toBe(1 * (3 + 16) - 0.5 * 4);
    expect(y[96 + 6]).toBe(-0.5 * 4);
  });

  it('Q6_K: d · scale · (q - 32), low nibbles from ql, 2 high bits from qh', () => {
    const ql = new Array(128).fill(0);
    const qh = new Array(64).fill(0);
    const sc = new Array(16).fill(0);
    sc[0] = 2; // elements 0-15
    sc[2] = -1; // elements 32-47
    sc[4] = 3; // elements 64-79
    sc[14] = 1; // second half, elements 128 + 96..111
    ql[0] = 0x5a; // element 0 low 0xa; element 64 low 0x5
    ql[32] = 0x01; // element 32 low 1
    qh[0] = 0b00_10_01_11; // element 0 high 3, element 32 high 1, element 64 high 2
    ql[64 + 32 + 1] = 0xf0; // second half: element 96+1 gets high nibble 0xf...
    qh[32 + 1] = 0b11_00_00_00; // ...and high bits 3 → q = 63
    const y = dequantize(GgmlType.Q6_K, new Uint8Array([...ql, ...qh, ...sc.map((v) => v & 0xff), ...h(0.5)]), 256);
    expect(y[0]).toBe(0.5 * 2 * ((0xa | (3 << 4)) - 32));
    expect(y[32]).toBe(0.5 * -1 * ((1 | (1 << 4)) - 32));
    expect(y[64]).toBe(0.5 * 3 * ((5 | (2 << 4)) - 32));
    expect(y[128 + 96 + 1]).toBe(0.5 * 1 * (63 - 32));
    expect(y[1]).toBe(0.5 * 2 * -32);
  });
});
