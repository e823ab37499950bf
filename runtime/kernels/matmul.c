/*
 * Skein's matmul kernels over weights kept in GGUF's own blocks, for wasm32 + SIMD128.
 * Built freestanding by runtime/kernels/build.sh (clang --target=wasm32 -msimd128 -O3);
 * the .wasm beside this file is that build, checked against a rebuild in CI.
 *
 * Every product is y = x·Wᵀ with W as GGUF stores it: `rows` output rows, each row `cols`
 * input values long, laid out as consecutive blocks (ggml's ne0 = cols). y is (T, rows),
 * x is (T, cols) f32. matmul_quant and matmul_float read the file's bytes as they are;
 * matmul_x4 reads quantized rows repacked once at upload (repack_x4, below).
 *
 * Block layouts (ggml-quants.h), 32 values per block, d and m little-endian f16:
 *   Q8_0  { f16 d; int8 q[32]; }            34 bytes  value i = d·q[i]
 *   Q4_0  { f16 d; uint8 q[16]; }           18 bytes  value i = d·((q[i] & 15) − 8),
 *                                                     value i+16 = d·((q[i] >> 4) − 8)
 *   Q4_1  { f16 d; f16 m; uint8 q[16]; }    20 bytes  value i = d·(q[i] & 15) + m,
 *                                                     value i+16 = d·(q[i] >> 4) + m
 *   F16   row of cols f16 values; F32 row of cols f32 values.
 *
 * Quantized weights meet activations quantized the way llama.cpp's q8_0/q8_1 dot products
 * do: per block of 32, a = da·qa with da = max|x|/127 and qa ∈ [−127, 127], stored here
 * pre-widened to int16 (so the inner loop widens only the weights) and with the block's
 * sum sa = da·Σqa kept for the offset terms:
 *   Σ w·a = d·da·Σ q·qa + m·sa        (Q4_0: m = −8·d; Q8_0: no m)
 * The integer dot is i32x4.dot_i16x8_s (pmaddwd on x86).
 *
 * For Q4 rows as in the file (matmul_quant; the x4 layout below multiplies activations in
 * natural order) the activations are stored permuted so that nibbles need no byte widening: the
 * 16 weight bytes are read as eight u16 lanes j = (byte 2j, byte 2j+1), and
 *   (lane & 15) holds value 2j,  (lane >> 4 & 15) value 2j+16,
 *   (lane >> 8 & 15) value 2j+1, (lane >> 12) value 2j+17,
 * so the activations go in four i16x8 vectors in that order (quantize_q4_order).
 *
 * Tested in matmul.test.ts against a plain-JS dequantize + float64 dot (blocks.ts), with
 * the activations rounded the same way; the figures that chose each variant sit beside it.
 * Int8 activations over f32 dequant-on-the-fly: per 32 weights the int path is ~20 wasm
 * SIMD ops (unpack, 4 pmaddwd, adds) against ~50 for widen-to-f32 + mul + add (no FMA in
 * SIMD128); the f32 path is kept for F32/F16 weights only, where it is exact.
 */
#include <stddef.h>
#include <stdint.h>
#include <wasm_simd128.h>

#define QK 32
/* Query heads attention handles together per KV head. */
#define HEADS_AT_ONCE 4
/* Values per head that the value sum holds in registers (16 measured 10 % slower). */
#define PV_W 8

typedef __SIZE_TYPE__ size_t;

/* f16 → f32 for finite values (scales are never inf/nan): shift the exponent and mantissa
 * into place and let a multiply by 2^112 re-bias the exponent, which also handles
 * subnormals and zero. */
static inline float f16_to_f32(uint16_t h) {
  union { uint32_t u; float f; } v;
  v.u = (uint32_t)(h & 0x7fff) << 13;
  float f = v.f * 0x1p112f;
  return (h & 0x8000) ? -f : f;
}

static inline uint16_t load_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static inline float hsum_f32(v128_t v) {
  return wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1) + wasm_f32x4_extract_lane(v, 2) + wasm_f32x4_extract_lane(v, 3);
}

/*
 * One row's block quantization: writes 32 int16 (natural or Q4 order), returns da, sets *sa.
 * Four lanes at a time (a decode step quantizes ~120 rows; scalar, this took ~4 % of it)
 * with the scalar version's exact steps per value: |x| maxed, d = amax/127, x·(1/d)
 * rounded half away from zero by adding ±0.5 and truncating — the same f32 operations,
 * so the same integers.
 */
static inline float quantize_block(const float *x, int16_t *q, float *sa, int q4_order) {
  v128_t mx = wasm_f32x4_splat(0.f);
  for (int i = 0; i < QK; i += 4) mx = wasm_f32x4_max(mx, wasm_f32x4_abs(wasm_v128_load(x + i)));
  float amax = wasm_f32x4_extract_lane(mx, 0);
  for (int k = 1; k < 4; k++) {
    const float a = k == 1 ? wasm_f32x4_extract_lane(mx, 1) : k == 2 ? wasm_f32x4_extract_lane(mx, 2) : wasm_f32x4_extract_lane(mx, 3);
    if (a > amax) amax = a;
  }
  float d = amax / 127.f;
  float id = d > 0 ? 1.f / d : 0.f;
  const v128_t vid = wasm_f32x4_splat(id), half = wasm_f32x4_splat(0.5f), zero = wasm_f32x4_splat(0.f);
  v128_t sum = wasm_i32x4_splat(0);
  int32_t r[QK] __attribute__((aligned(16)));
  for (int i = 0; i < QK; i += 4) {
    const v128_t v = wasm_f32x4_mul(wasm_v128_load(x + i), vid);
    const v128_t neg = wasm_f32x4_lt(v, zero);
    const v128_t ri = wasm_i32x4_trunc_sat_f32x4(wasm_v128_bitselect(wasm_f32x4_sub(v, half), wasm_f32x4_add(v, half), neg));
    sum = wasm_i32x4_add(sum, ri);
    wasm_v128_store(r + i, ri);
  }
  if (q4_order) {
    for (int i = 0; i < QK; i++) {
      /* value i sits in vector (i>>4 ? 1 : 0) + (odd ? 2 : 0), lane (i & 15) >> 1 */
      int hi = i >> 4, lo = i & 15;
      q[((lo & 1) * 2 + hi) * 8 + (lo >> 1)] = (int16_t)r[i];
    }
  } else {
    for (int i = 0; i < QK; i += 8) wasm_v128_store(q + i, wasm_i16x8_narrow_i32x4(wasm_v128_load(r + i), wasm_v128_load(r + i + 4)));
  }
  *sa = d * (float)(wasm_i32x4_extract_lane(sum, 0) + wasm_i32x4_extract_lane(sum, 1) + wasm_i32x4_extract_lane(sum, 2) + wasm_i32x4_extract_lane(sum, 3));
  return d;
}

/*
 * Quantizes x (T, cols) per block of 32: qa (T, cols) int16, da and sa (T, cols/32).
 * q4_order selects the Q4 permutation above.
 */
__attribute__((export_name("quantize_rows")))
void quantize_rows(const float *x, int T, int cols, int16_t *qa, float *da, float *sa, int q4_order) {
  int nb = cols / QK;
  for (int t = 0; t < T; t++) {
    for (int b = 0; b < nb; b++) {
      size_t i = (size_t)t * nb + b;
      da[i] = quantize_block(x + (size_t)t * cols + b * QK, qa + i * QK, sa + i, q4_order);
    }
  }
}

/* Σ over one Q8_0 row against one quantized activation row. */
static inline float dot_q8_0(const uint8_t *w, const int16_t *qa, const float *da, int nb) {
  v128_t acc = wasm_f32x4_splat(0.f);
  for (int b = 0; b < nb; b++, w += 34, qa += QK) {
    v128_t w0 = wasm_v128_load(w + 2);
    v128_t w1 = wasm_v128_load(w + 18);
    v128_t s = wasm_i32x4_dot_i16x8(wasm_i16x8_extend_low_i8x16(w0), wasm_v128_load(qa));
    s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(wasm_i16x8_extend_high_i8x16(w0), wasm_v128_load(qa + 8)));
    s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(wasm_i16x8_extend_low_i8x16(w1), wasm_v128_load(qa + 16)));
    s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(wasm_i16x8_extend_high_i8x16(w1), wasm_v128_load(qa + 24)));
    acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(s), wasm_f32x4_splat(f16_to_f32(load_u16(w)) * da[b])));
  }
  return hsum_f32(acc);
}

/* Σ over one Q4_0 (has_min = 0, block 18 bytes) or Q4_1 (has_min = 1, 20 bytes) row. */
static inline float dot_q4(const uint8_t *w, const int16_t *qa, const float *da, const float *sa, int nb, int has_min) {
  const int bs = has_min ? 20 : 18;
  const v128_t m4 = wasm_i16x8_splat(15);
  v128_t acc = wasm_f32x4_splat(0.f);
  float extra = 0.f;
  for (int b = 0; b < nb; b++, w += bs, qa += QK) {
    v128_t q = wasm_v128_load(w + bs - 16);
    v128_t s = wasm_i32x4_dot_i16x8(wasm_v128_and(q, m4), wasm_v128_load(qa));
    s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(wasm_v128_and(wasm_u16x8_shr(q, 4), m4), wasm_v128_load(qa + 8)));
    s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(wasm_v128_and(wasm_u16x8_shr(q, 8), m4), wasm_v128_load(qa + 16)));
    s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(wasm_u16x8_shr(q, 12), wasm_v128_load(qa + 24)));
    float d = f16_to_f32(load_u16(w));
    float m = has_min ? f16_to_f32(load_u16(w + 2)) : -8.f * d;
    acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(s), wasm_f32x4_splat(d * da[b])));
    extra += m * sa[b];
  }
  return hsum_f32(acc) + extra;
}

/* Σ over one Q4 row against four activation rows at once: the unpacked weights are reused. */
static inline void dot_q4_x4(const uint8_t *w, const int16_t *qa, const float *da, const float *sa, int nb, int has_min, float *out, size_t out_stride) {
  const int bs = has_min ? 20 : 18;
  const size_t qs = (size_t)nb * QK; /* int16 per activation row */
  const v128_t m4 = wasm_i16x8_splat(15);
  v128_t acc0 = wasm_f32x4_splat(0.f), acc1 = acc0, acc2 = acc0, acc3 = acc0;
  float e0 = 0.f, e1 = 0.f, e2 = 0.f, e3 = 0.f;
  for (int b = 0; b < nb; b++, w += bs) {
    v128_t q = wasm_v128_load(w + bs - 16);
    v128_t u0 = wasm_v128_and(q, m4);
    v128_t u1 = wasm_v128_and(wasm_u16x8_shr(q, 4), m4);
    v128_t u2 = wasm_v128_and(wasm_u16x8_shr(q, 8), m4);
    v128_t u3 = wasm_u16x8_shr(q, 12);
    float d = f16_to_f32(load_u16(w));
    float m = has_min ? f16_to_f32(load_u16(w + 2)) : -8.f * d;
#define ROW(k, acc, e)                                                                                    \
  {                                                                                                       \
    const int16_t *a = qa + (k) * qs + (size_t)b * QK;                                                     \
    v128_t s = wasm_i32x4_dot_i16x8(u0, wasm_v128_load(a));                                               \
    s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(u1, wasm_v128_load(a + 8)));                               \
    s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(u2, wasm_v128_load(a + 16)));                              \
    s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(u3, wasm_v128_load(a + 24)));                              \
    acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(s), wasm_f32x4_splat(d * da[(k) * nb + b]))); \
    e += m * sa[(k) * nb + b];                                                                            \
  }
    ROW(0, acc0, e0) ROW(1, acc1, e1) ROW(2, acc2, e2) ROW(3, acc3, e3)
#undef ROW
  }
  out[0] = hsum_f32(acc0) + e0;
  out[out_stride] = hsum_f32(acc1) + e1;
  out[2 * out_stride] = hsum_f32(acc2) + e2;
  out[3 * out_stride] = hsum_f32(acc3) + e3;
}

/* Σ over one Q8_0 row against four activation rows at once. */
static inline void dot_q8_0_x4(const uint8_t *w, const int16_t *qa, const float *da, int nb, float *out, size_t out_stride) {
  const size_t qs = (size_t)nb * QK;
  v128_t acc0 = wasm_f32x4_splat(0.f), acc1 = acc0, acc2 = acc0, acc3 = acc0;
  for (int b = 0; b < nb; b++, w += 34) {
    v128_t w0 = wasm_v128_load(w + 2);
    v128_t w1 = wasm_v128_load(w + 18);
    v128_t u0 = wasm_i16x8_extend_low_i8x16(w0), u1 = wasm_i16x8_extend_high_i8x16(w0);
    v128_t u2 = wasm_i16x8_extend_low_i8x16(w1), u3 = wasm_i16x8_extend_high_i8x16(w1);
    float d = f16_to_f32(load_u16(w));
#define ROW(k, acc)                                                                                        \
  {                                                                                                        \
    const int16_t *a = qa + (k) * qs + (size_t)b * QK;                                                      \
    v128_t s = wasm_i32x4_dot_i16x8(u0, wasm_v128_load(a));                                                \
    s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(u1, wasm_v128_load(a + 8)));                                \
    s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(u2, wasm_v128_load(a + 16)));                               \
    s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(u3, wasm_v128_load(a + 24)));                               \
    acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(s), wasm_f32x4_splat(d * da[(k) * nb + b]))); \
  }
    ROW(0, acc0) ROW(1, acc1) ROW(2, acc2) ROW(3, acc3)
#undef ROW
  }
  out[0] = hsum_f32(acc0);
  out[out_stride] = hsum_f32(acc1);
  out[2 * out_stride] = hsum_f32(acc2);
  out[3 * out_stride] = hsum_f32(acc3);
}

/* Weight types, numbered as ggml numbers them. */
enum { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q8_0 = 8 };

/*
 * y (T, rows) = x·Wᵀ for a quantized W, activations already quantized by quantize_rows
 * (qa, da, sa for T rows of cols). Rows [r0, r1) only, so that a caller may split the work.
 */
__attribute__((export_name("matmul_quant")))
void matmul_quant(int type, const uint8_t *w, int rows, int cols, const int16_t *qa, const float *da, const float *sa, int T, float *y, int r0, int r1) {
  const int nb = cols / QK;
  const size_t bs = type == T_Q8_0 ? 34 : type == T_Q4_1 ? 20 : 18;
  const size_t row_bytes = bs * nb;
  const size_t qs = (size_t)nb * QK;
  (void)rows;
  for (int r = r0; r < r1; r++) {
    const uint8_t *wr = w + (size_t)r * row_bytes;
    int t = 0;
    for (; t + 4 <= T; t += 4) {
      if (type == T_Q8_0) dot_q8_0_x4(wr, qa + t * qs, da + t * nb, nb, y + (size_t)t * rows + r, rows);
      else dot_q4_x4(wr, qa + t * qs, da + t * nb, sa + t * nb, nb, type == T_Q4_1, y + (size_t)t * rows + r, rows);
    }
    for (; t < T; t++) {
      float v = type == T_Q8_0 ? dot_q8_0(wr, qa + t * qs, da + t * nb, nb) : dot_q4(wr, qa + t * qs, da + t * nb, sa + t * nb, nb, type == T_Q4_1);
      y[(size_t)t * rows + r] = v;
    }
  }
}

/*
 * Row-interleaved ("x4") layout, made by repack_x4 at upload from the file's blocks: for
 * each group of 4 rows and each block index b, the 4 rows' scales side by side as f32,
 * then their 4 offsets (Q4_1's m, Q4_0's −8·d, both exact in f32), then the 4 rows' 32
 * quants each, arranged by column pairs:
 *   Q8_0x4 { f32 d[4]; int8 q[128]; }                  144 bytes (file: 4 × 34)
 *   Q4_0x4 { f32 d[4]; f32 m[4]; uint8 q[64]; }        96 bytes  (file: 4 × 18)
 *   Q4_1x4 { f32 d[4]; f32 m[4]; uint8 q[64]; }        96 bytes  (file: 4 × 20)
 * Pair k (columns 2k and 2k+1, k < 16) of the 4 rows is the 8 values
 *   r0c2k r0c2k+1 r1c2k r1c2k+1 r2c2k r2c2k+1 r3c2k r3c2k+1.
 * Widened to i16x8 and multiplied by i32x4.dot_i16x8 against the activation pair
 * (2k, 2k+1) broadcast to every lane (one load32_splat of two int16), its 4 lanes are the
 * 4 rows' partial sums: no horizontal sum, and one unpacked weight vector serves every
 * token of a pass. Q8_0: pair k is bytes 8k..8k+7, so one load and extend_low/high give
 * pairs 2u and 2u+1. Q4: the 64 bytes are four vectors s read as u16 lanes j; bits
 * 4e..4e+3 of lane j hold lane j of pair 4s + e, so an and and a shift give each pair.
 *
 * The scales are f32 so that one vector op applies 4 rows' scales (f16 scales cost ~15 of
 * ~80 wasm ops per 4 rows × 32 values, for 20 % fewer weight bytes). Measured (all 181
 * GEMVs of a SmolLM2-135M decode step, batch 1, CPU ms per step, median of 5 interleaved,
 * loaded 2-core host): file rows Q4_1 38.0 → x4 24.7; Q8_0 34.8 → x4 30.2 (with the first
 * x4 quant order: one row's 32 values together, four dot products and a 4-way horizontal
 * sum per block and token). The column pairs against it, kernels alone, SmolLM2's
 * 1536×576, 576×1536 and 576×576 summed, best of 9–11 interleaved runs:
 *   T = 128 (prefill): Q4_1 16.9 → 12.0 ms (with widen_q4), Q8_0 15.2 → 11.2;
 *   T = 4:             Q4_1 0.52 → 0.43,                   Q8_0 0.47 → 0.35;
 *   T = 1 (decode), weights cycled through 90 copies so that they come from memory as in
 *   a real step: Q4_1 0.185 → 0.179, Q8_0 0.228 → 0.220 (in cache: level).
 * What did not pay: Q4 stored widened to bytes (160 bytes per group; prefill as with
 * widen_q4, decode 0.26 ms from memory, 40 % slower: decode streams the weights); widened
 * to int16 (level, for twice the bytes); a lone token over four groups per pass (each
 * activation pair broadcast once for 16 rows: 1.45× faster in cache, 15 % slower from
 * memory — four weight streams at once). kernels.ts uses x4 whenever rows is a multiple
 * of 4.
 */
/* A Q4 group widened for a multi-token call (widen_q4): its quants a byte each, as Q8_0's. */
#define T_Q4_WIDE (-1)
static inline size_t group_bytes(int type) { return type == T_Q8_0 ? 144 : type == T_Q4_WIDE ? 160 : 96; }
static inline size_t block_bytes(int type) { return type == T_Q8_0 ? 34 : type == T_Q4_1 ? 20 : 18; }

__attribute__((export_name("x4_bytes")))
size_t x4_bytes(int type, int rows, int cols) { return (size_t)(rows / 4) * (cols / QK) * group_bytes(type); }

__attribute__((export_name("repack_x4")))
void repack_x4(int type, const uint8_t *src, int rows, int cols, uint8_t *dst) {
  const int nb = cols / QK;
  const size_t bs = block_bytes(type), gb = group_bytes(type);
  const int head = type == T_Q4_1 ? 4 : 2;
  for (int g = 0; g < rows / 4; g++) {
    for (int b = 0; b < nb; b++) {
      uint8_t *o = dst + ((size_t)g * nb + b) * gb;
      float *dm = (float *)o;
      uint8_t *q = o + (type == T_Q8_0 ? 16 : 32);
      if (type != T_Q8_0) for (int i = 0; i < 64; i++) q[i] = 0;
      for (int k = 0; k < 4; k++) {
        const uint8_t *blk = src + ((size_t)(4 * g + k) * nb + b) * bs;
        const float d = f16_to_f32(load_u16(blk));
        dm[k] = d;
        if (type == T_Q4_1) dm[4 + k] = f16_to_f32(load_u16(blk + 2));
        else if (type == T_Q4_0) dm[4 + k] = d * -8.f;
        for (int c = 0; c < QK; c++) {
          const int pair = c >> 1, lane = 2 * k + (c & 1);
          if (type == T_Q8_0) {
            q[pair * 8 + lane] = blk[head + c];
          } else {
            const int nibble = c < 16 ? blk[head + c] & 15 : blk[head + c - 16] >> 4;
            const int s = pair >> 2, e = pair & 3;
            q[s * 16 + 2 * lane + (e >> 1)] |= (uint8_t)(nibble << (4 * (e & 1)));
          }
        }
      }
    }
  }
}

/*
 * One pass of TT tokens (1, 2 or 4; a constant once inlined) over one x4 group: y[t·ys]
 * gets the group's 4 outputs for token t. Each token's integer block sums are exact in
 * any order, and its float steps per block (acc += sum·(d·da), accm += m·sa; then
 * acc + accm) are the same whatever TT, so a row's bits do not depend on how many tokens
 * share the call. Below 4 tokens each token's block sum runs in two independent chains
 * (even and odd pairs) so that decode is not bound by the adds' latency.
 */
static inline __attribute__((always_inline)) void x4_pass(int type, const uint8_t *wg, int nb, const int16_t *qa, size_t qs, const float *da, const float *sa, int TT, float *y, size_t ys) {
  const size_t gb = group_bytes(type);
  const v128_t m4 = wasm_i16x8_splat(15), zero = wasm_i32x4_splat(0);
  v128_t acc[4], accm[4];
  for (int t = 0; t < TT; t++) acc[t] = accm[t] = wasm_f32x4_splat(0.f);
  const uint8_t *p = wg;
  for (int b = 0; b < nb; b++, p += gb) {
    v128_t s0[4], s1[4];
    for (int t = 0; t < TT; t++) s0[t] = s1[t] = zero;
#define PAIR(t, w, off)                                                                            \
  {                                                                                                \
    const v128_t x = wasm_i32x4_dot_i16x8(w, wasm_v128_load32_splat(qa + (t) * qs + (size_t)b * QK + (off))); \
    if (TT >= 4 || ((off) & 2) == 0) s0[t] = wasm_i32x4_add(s0[t], x);                            \
    else s1[t] = wasm_i32x4_add(s1[t], x);                                                         \
  }
    if (type == T_Q8_0 || type == T_Q4_WIDE) {
      for (int u = 0; u < 8; u++) {
        const v128_t v = wasm_v128_load(p + (type == T_Q8_0 ? 16 : 32) + 16 * u);
        const v128_t w0 = wasm_i16x8_extend_low_i8x16(v), w1 = wasm_i16x8_extend_high_i8x16(v);
        for (int t = 0; t < TT; t++) {
          PAIR(t, w0, 4 * u)
          PAIR(t, w1, 4 * u + 2)
        }
      }
    } else {
      for (int u = 0; u < 4; u++) {
        const v128_t v = wasm_v128_load(p + 32 + 16 * u);
        const v128_t w0 = wasm_v128_and(v, m4), w1 = wasm_v128_and(wasm_u16x8_shr(v, 4), m4);
        const v128_t w2 = wasm_v128_and(wasm_u16x8_shr(v, 8), m4), w3 = wasm_u16x8_shr(v, 12);
        for (int t = 0; t < TT; t++) {
          PAIR(t, w0, 8 * u)
          PAIR(t, w1, 8 * u + 2)
          PAIR(t, w2, 8 * u + 4)
          PAIR(t, w3, 8 * u + 6)
        }
      }
    }
#undef PAIR
    const v128_t d = wasm_v128_load(p);
    for (int t = 0; t < TT; t++) {
      const v128_t s = TT >= 4 ? s0[t] : wasm_i32x4_add(s0[t], s1[t]);
      acc[t] = wasm_f32x4_add(acc[t], wasm_f32x4_mul(wasm_f32x4_convert_i32x4(s), wasm_f32x4_mul(d, wasm_f32x4_splat(da[(size_t)t * nb + b]))));
    }
  }
  /* The offsets' sums apart, after the integer sums: fewer live registers in that loop. */
  if (type != T_Q8_0) {
    p = wg + 16;
    for (int b = 0; b < nb; b++, p += gb) {
      const v128_t m = wasm_v128_load(p);
      for (int t = 0; t < TT; t++) accm[t] = wasm_f32x4_add(accm[t], wasm_f32x4_mul(m, wasm_f32x4_splat(sa[(size_t)t * nb + b])));
    }
  }
  for (int t = 0; t < TT; t++) wasm_v128_store(y + (size_t)t * ys, wasm_f32x4_add(acc[t], accm[t]));
}

/*
 * A Q4 group's nb blocks (96 bytes each) widened to 160: scales and offsets as they are,
 * then pair k's 8 quants a byte each at bytes 8k..8k+7 — Q8_0's arrangement, so a pass
 * over it widens bytes (two extends) instead of unpacking nibbles (seven ops per four
 * pairs), once per call instead of once per pass.
 */
static void widen_q4(const uint8_t *src, int nb, uint8_t *dst) {
  const v128_t m4 = wasm_i16x8_splat(15);
  for (int b = 0; b < nb; b++, src += 96, dst += 160) {
    wasm_v128_store(dst, wasm_v128_load(src));
    wasm_v128_store(dst + 16, wasm_v128_load(src + 16));
    for (int s = 0; s < 4; s++) {
      const v128_t v = wasm_v128_load(src + 32 + 16 * s);
      const v128_t w0 = wasm_v128_and(v, m4), w1 = wasm_v128_and(wasm_u16x8_shr(v, 4), m4);
      const v128_t w2 = wasm_v128_and(wasm_u16x8_shr(v, 8), m4), w3 = wasm_u16x8_shr(v, 12);
      wasm_v128_store(dst + 32 + 32 * s, wasm_u8x16_narrow_i16x8(w0, w1));
      wasm_v128_store(dst + 48 + 32 * s, wasm_u8x16_narrow_i16x8(w2, w3));
    }
  }
}

/* Blocks per row up to which a Q4 group is widened on the stack (160 bytes each). */
#define WIDE_MAX_BLOCKS 64

/*
 * y (T, rows) = x·Wᵀ for a W repacked by repack_x4 (rows a multiple of 4), activations
 * quantized by quantize_rows in natural order. Groups [g0, g1) of 4 rows only. A group's
 * rows stay in L1 (4 × 1536 values of Q4_1 = 4.6 KB) while every token runs over them:
 * four tokens per pass, then two, then one. From 4 tokens on, a Q4 group is first widened
 * to bytes (widen_q4) on the stack; longer rows than WIDE_MAX_BLOCKS blocks (the down
 * projections of 1B-class models) unpack nibbles in every pass instead, with the same bits.
 */
__attribute__((export_name("matmul_x4")))
void matmul_x4(int type, const uint8_t *w, int rows, int cols, const int16_t *qa, const float *da, const float *sa, int T, float *y, int g0, int g1) {
  const int nb = cols / QK;
  const size_t qs = (size_t)nb * QK;
  uint8_t wide[WIDE_MAX_BLOCKS * 160] __attribute__((aligned(16)));
  const int widen = type != T_Q8_0 && T >= 4 && nb <= WIDE_MAX_BLOCKS;
  for (int g = g0; g < g1; g++) {
    const uint8_t *wg = w + (size_t)g * nb * group_bytes(type);
    float *yg = y + 4 * g;
    int t = 0;
#define PASSES(TYPE, WG)                                                                                                          \
  for (; t + 4 <= T; t += 4) x4_pass(TYPE, WG, nb, qa + t * qs, qs, da + (size_t)t * nb, sa + (size_t)t * nb, 4, yg + (size_t)t * rows, rows); \
  for (; t + 2 <= T; t += 2) x4_pass(TYPE, WG, nb, qa + t * qs, qs, da + (size_t)t * nb, sa + (size_t)t * nb, 2, yg + (size_t)t * rows, rows); \
  for (; t < T; t++) x4_pass(TYPE, WG, nb, qa + t * qs, qs, da + (size_t)t * nb, sa + (size_t)t * nb, 1, yg + (size_t)t * rows, rows);
    if (type == T_Q8_0) {
      PASSES(T_Q8_0, wg)
    } else if (widen) {
      widen_q4(wg, nb, wide);
      PASSES(T_Q4_WIDE, wide)
    } else {
      PASSES(type, wg)
    }
#undef PASSES
  }
}

#ifdef __wasm_relaxed_simd__
/*
 * Relaxed SIMD (this file built a second time with -mrelaxed-simd into matmul-relaxed.wasm,
 * which matmul.ts loads where the engine runs relaxed SIMD): Q4 x4 groups multiplied by
 * 8-bit dot products, 4 rows × 4 columns of products per two instructions where
 * i32x4.dot_i16x8 does 4 × 2 after a widening. The x4 layout is unchanged
 * (repack_x4): in a group's quant vector u, i32 lane k holds row k's nibbles of columns
 * 8u + {0, 4, 1, 5} in the low halves of its four bytes and 8u + {2, 6, 3, 7} in the high
 * halves, so one byte mask and one byte shift give two vectors of 4 rows × 4 columns with
 * values 0..15. Those are the instruction's 7-bit operand, for which the result is defined
 * (its pair sums, ≤ 2·15·127, never saturate); matmul.ts still checks this engine's
 * answers against matmul_x4 before using the build. The activations go as int8 in that
 * column order (quantize_rows_r8). Each block's integer sums are the same integers as
 * x4_pass's, and the float steps after them are the same steps, so the outputs equal
 * matmul_x4's bit for bit (matmul.test.ts checks it).
 */

/* Column order of the int8 activations within each group of 8 (see above). */
static const int R8_ORDER[8] = {0, 4, 1, 5, 2, 6, 3, 7};

/* quantize_rows for matmul_x4r: the same blocks (da, sa, rounding) as int8 in R8_ORDER. */
__attribute__((export_name("quantize_rows_r8")))
void quantize_rows_r8(const float *x, int T, int cols, int8_t *qa, float *da, float *sa) {
  int nb = cols / QK;
  int16_t q[QK];
  for (int t = 0; t < T; t++) {
    for (int b = 0; b < nb; b++) {
      size_t i = (size_t)t * nb + b;
      da[i] = quantize_block(x + (size_t)t * cols + b * QK, q, sa + i, 0);
      for (int c = 0; c < QK; c++) qa[i * QK + c] = (int8_t)q[(c & ~7) + R8_ORDER[c & 7]];
    }
  }
}

/*
 * x4_pass for a Q4 group on relaxed dot products: same sums, same float steps. The
 * products go through i16x8.relaxed_dot_i8x16_i7x16 (activations signed, weights the 7-bit
 * operand): each of its i16 lanes holds two products of at most 127·15, so a block's eight
 * results add up in i16 without overflow (16·1905 < 32768) and widen to i32 once per block.
 * (The fused i32x4 dot-add form is not used: Node 20's V8 returns it doubled.)
 */
static inline __attribute__((always_inline)) void x4r_pass(const uint8_t *wg, int nb, const int8_t *qa, size_t qs, const float *da, const float *sa, int TT, float *y, size_t ys) {
  const v128_t m4 = wasm_i8x16_splat(15);
  v128_t acc[4], accm[4];
  for (int t = 0; t < TT; t++) acc[t] = accm[t] = wasm_f32x4_splat(0.f);
  const uint8_t *p = wg;
  for (int b = 0; b < nb; b++, p += 96) {
    v128_t s0[4], s1[4];
    for (int u = 0; u < 4; u++) {
      const v128_t v = wasm_v128_load(p + 32 + 16 * u);
      /* A 16-bit shift and the mask: V8 lowers u8x16.shr to a 16-bit shift plus a mask it rebuilds every time. */
      const v128_t lo = wasm_v128_and(v, m4), hi = wasm_v128_and(wasm_u16x8_shr(v, 4), m4);
      for (int t = 0; t < TT; t++) {
        const int8_t *a = qa + (size_t)t * qs + (size_t)b * QK + 8 * u;
        const v128_t x0 = wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load32_splat(a), lo);
        const v128_t x1 = wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load32_splat(a + 4), hi);
        s0[t] = u == 0 ? x0 : wasm_i16x8_add(s0[t], x0);
        s1[t] = u == 0 ? x1 : wasm_i16x8_add(s1[t], x1);
      }
    }
    const v128_t d = wasm_v128_load(p);
    for (int t = 0; t < TT; t++) {
      const v128_t s = wasm_i32x4_extadd_pairwise_i16x8(wasm_i16x8_add(s0[t], s1[t]));
      acc[t] = wasm_f32x4_add(acc[t], wasm_f32x4_mul(wasm_f32x4_convert_i32x4(s), wasm_f32x4_mul(d, wasm_f32x4_splat(da[(size_t)t * nb + b]))));
    }
  }
  p = wg + 16;
  for (int b = 0; b < nb; b++, p += 96) {
    const v128_t m = wasm_v128_load(p);
    for (int t = 0; t < TT; t++) accm[t] = wasm_f32x4_add(accm[t], wasm_f32x4_mul(m, wasm_f32x4_splat(sa[(size_t)t * nb + b])));
  }
  for (int t = 0; t < TT; t++) wasm_v128_store(y + (size_t)t * ys, wasm_f32x4_add(acc[t], accm[t]));
}

/* matmul_x4 for Q4_0/Q4_1 groups with activations from quantize_rows_r8: no widening (a pass unpacks with two ops per 32 weights). */
__attribute__((export_name("matmul_x4r")))
void matmul_x4r(int type, const uint8_t *w, int rows, int cols, const int8_t *qa, const float *da, const float *sa, int T, float *y, int g0, int g1) {
  (void)type;
  const int nb = cols / QK;
  const size_t qs = (size_t)nb * QK;
  for (int g = g0; g < g1; g++) {
    const uint8_t *wg = w + (size_t)g * nb * 96;
    float *yg = y + 4 * g;
    int t = 0;
    for (; t + 4 <= T; t += 4) x4r_pass(wg, nb, qa + t * qs, qs, da + (size_t)t * nb, sa + (size_t)t * nb, 4, yg + (size_t)t * rows, rows);
    for (; t + 2 <= T; t += 2) x4r_pass(wg, nb, qa + t * qs, qs, da + (size_t)t * nb, sa + (size_t)t * nb, 2, yg + (size_t)t * rows, rows);
    for (; t < T; t++) x4r_pass(wg, nb, qa + t * qs, qs, da + (size_t)t * nb, sa + (size_t)t * nb, 1, yg + (size_t)t * rows, rows);
  }
}
#endif

/* Exported under its name from the wasm module (native/kernels.c defines it as nothing). */
#define KERNEL_EXPORT(name) __attribute__((export_name(name)))
#include "float-kernels.inc.c"
