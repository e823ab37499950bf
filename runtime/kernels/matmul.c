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

/* 8 f16 → two f32x4, finite values only (see f16_to_f32). */
static inline void f16x8_to_f32(v128_t h, v128_t *lo, v128_t *hi) {
  const v128_t mag = wasm_i32x4_splat(0x7fff), sign = wasm_i32x4_splat(0x8000);
  const v128_t scale = wasm_f32x4_splat(0x1p112f);
  v128_t a = wasm_u32x4_extend_low_u16x8(h), b = wasm_u32x4_extend_high_u16x8(h);
  *lo = wasm_v128_or(wasm_f32x4_mul(wasm_i32x4_shl(wasm_v128_and(a, mag), 13), scale), wasm_i32x4_shl(wasm_v128_and(a, sign), 16));
  *hi = wasm_v128_or(wasm_f32x4_mul(wasm_i32x4_shl(wasm_v128_and(b, mag), 13), scale), wasm_i32x4_shl(wasm_v128_and(b, sign), 16));
}

/*
 * y (T, rows) = x·Wᵀ for an F32 or F16 W, f32 activations (no quantization, so the
 * result matches a plain f32 matmul up to summation order). cols must be a multiple of 8.
 */
__attribute__((export_name("matmul_float")))
void matmul_float(int type, const uint8_t *w, int rows, int cols, const float *x, int T, float *y, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    int t = 0;
    for (; t + 4 <= T; t += 4) {
      /* Same sums as the one-row loop below (low and high halves apart, added at the end),
         so that a row's result does not depend on how many rows share the call. */
      const float *x0 = x + (size_t)t * cols, *x1 = x0 + cols, *x2 = x1 + cols, *x3 = x2 + cols;
      v128_t a0 = wasm_f32x4_splat(0.f), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
      for (int i = 0; i < cols; i += 8) {
        v128_t wl, wh;
        if (type == T_F32) {
          const float *wr = (const float *)w + (size_t)r * cols + i;
          wl = wasm_v128_load(wr);
          wh = wasm_v128_load(wr + 4);
        } else {
          f16x8_to_f32(wasm_v128_load((const uint16_t *)w + (size_t)r * cols + i), &wl, &wh);
        }
        a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(wl, wasm_v128_load(x0 + i)));
        b0 = wasm_f32x4_add(b0, wasm_f32x4_mul(wh, wasm_v128_load(x0 + i + 4)));
        a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(wl, wasm_v128_load(x1 + i)));
        b1 = wasm_f32x4_add(b1, wasm_f32x4_mul(wh, wasm_v128_load(x1 + i + 4)));
        a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(wl, wasm_v128_load(x2 + i)));
        b2 = wasm_f32x4_add(b2, wasm_f32x4_mul(wh, wasm_v128_load(x2 + i + 4)));
        a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(wl, wasm_v128_load(x3 + i)));
        b3 = wasm_f32x4_add(b3, wasm_f32x4_mul(wh, wasm_v128_load(x3 + i + 4)));
      }
      y[(size_t)t * rows + r] = hsum_f32(wasm_f32x4_add(a0, b0));
      y[(size_t)(t + 1) * rows + r] = hsum_f32(wasm_f32x4_add(a1, b1));
      y[(size_t)(t + 2) * rows + r] = hsum_f32(wasm_f32x4_add(a2, b2));
      y[(size_t)(t + 3) * rows + r] = hsum_f32(wasm_f32x4_add(a3, b3));
    }
    for (; t < T; t++) {
      const float *x0 = x + (size_t)t * cols;
      v128_t a0 = wasm_f32x4_splat(0.f), a1 = a0;
      for (int i = 0; i < cols; i += 8) {
        v128_t wl, wh;
        if (type == T_F32) {
          const float *wr = (const float *)w + (size_t)r * cols + i;
          wl = wasm_v128_load(wr);
          wh = wasm_v128_load(wr + 4);
        } else {
          f16x8_to_f32(wasm_v128_load((const uint16_t *)w + (size_t)r * cols + i), &wl, &wh);
        }
        a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(wl, wasm_v128_load(x0 + i)));
        a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(wh, wasm_v128_load(x0 + i + 4)));
      }
      y[(size_t)t * rows + r] = hsum_f32(wasm_f32x4_add(a0, a1));
    }
  }
}

/*
 * e^x for the SwiGLU gate: x = n·ln2 + r with |r| ≤ ln2/2, e^r by its degree-6 Taylor
 * polynomial (relative error < 2e-7 on that range, below f32 rounding of the product),
 * 2^n by building the exponent bits. Inputs are clamped to ±87 (e^±87 stays finite).
 */
static inline float exp_f32(float x) {
  if (x > 87.f) x = 87.f;
  if (x < -87.f) x = -87.f;
  float fn = x * 1.44269504089f;
  int n = (int)(fn < 0 ? fn - 0.5f : fn + 0.5f);
  float r = x - (float)n * 0.693145751953125f - (float)n * 1.428606765330187e-06f;
  float p = 1.f + r * (1.f + r * (0.5f + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120 + r * (1.f / 720))))));
  union { uint32_t u; float f; } v;
  v.u = (uint32_t)(n + 127) << 23;
  return p * v.f;
}

/* exp_f32 on four lanes, operation for operation (so each lane's bits equal exp_f32's). */
static inline v128_t exp_f32x4(v128_t x) {
  x = wasm_f32x4_min(x, wasm_f32x4_splat(87.f));
  x = wasm_f32x4_max(x, wasm_f32x4_splat(-87.f));
  const v128_t fn = wasm_f32x4_mul(x, wasm_f32x4_splat(1.44269504089f));
  const v128_t half = wasm_v128_bitselect(wasm_f32x4_splat(-0.5f), wasm_f32x4_splat(0.5f), wasm_f32x4_lt(fn, wasm_f32x4_splat(0.f)));
  const v128_t n = wasm_i32x4_trunc_sat_f32x4(wasm_f32x4_add(fn, half));
  const v128_t nf = wasm_f32x4_convert_i32x4(n);
  const v128_t r = wasm_f32x4_sub(wasm_f32x4_sub(x, wasm_f32x4_mul(nf, wasm_f32x4_splat(0.693145751953125f))), wasm_f32x4_mul(nf, wasm_f32x4_splat(1.428606765330187e-06f)));
  v128_t p = wasm_f32x4_add(wasm_f32x4_splat(1.f / 120), wasm_f32x4_mul(r, wasm_f32x4_splat(1.f / 720)));
  p = wasm_f32x4_add(wasm_f32x4_splat(1.f / 24), wasm_f32x4_mul(r, p));
  p = wasm_f32x4_add(wasm_f32x4_splat(1.f / 6), wasm_f32x4_mul(r, p));
  p = wasm_f32x4_add(wasm_f32x4_splat(0.5f), wasm_f32x4_mul(r, p));
  p = wasm_f32x4_add(wasm_f32x4_splat(1.f), wasm_f32x4_mul(r, p));
  p = wasm_f32x4_add(wasm_f32x4_splat(1.f), wasm_f32x4_mul(r, p));
  return wasm_f32x4_mul(p, wasm_i32x4_shl(wasm_i32x4_add(n, wasm_i32x4_splat(127)), 23));
}

/* g[i] ← silu(g[i])·u[i] = g/(1 + e^−g)·u, the SwiGLU of one MLP, in place. */
__attribute__((export_name("silu_mul")))
void silu_mul(float *g, const float *u, int n) {
  for (int i = 0; i < n; i++) g[i] = g[i] / (1.f + exp_f32(-g[i])) * u[i];
}

/* Whether a row sees key j: every cached key (j < P), new key j − P where its mask says. */
/*
 * f32 → f16, round to nearest even, clamped to ±65504 (the attention kernel widens finite
 * values only; llama.cpp's f16 KV cache rounds the same way). n values from src to dst.
 */
__attribute__((export_name("store_f16")))
void store_f16(const float *src, int n, uint16_t *dst) {
  for (int i = 0; i < n; i++) {
    union { float f; uint32_t u; } v = { src[i] };
    const uint32_t sign = (v.u >> 16) & 0x8000u;
    uint32_t a = v.u & 0x7fffffffu;
    if (a > 0x477fefffu) a = 0x477fe000u; /* ≥ 65520 rounds past the largest half: clamp to 65504 */
    uint16_t h;
    if (a < 0x38800000u) {
      /* subnormal half (or zero): scale into the integer range and round to nearest even */
      union { uint32_t u; float f; } m = { a };
      const float scaled = m.f * 0x1p24f; /* exact: a power of two */
      uint32_t q = (uint32_t)scaled;
      const float rem = scaled - (float)q;
      if (rem > 0.5f || (rem == 0.5f && (q & 1u))) q++;
      h = (uint16_t)q;
    } else {
      const uint32_t mant = a & 0x1fffu;
      uint32_t b = (a >> 13) - (112u << 10);
      if (mant > 0x1000u || (mant == 0x1000u && (b & 1u))) b++;
      h = (uint16_t)b;
    }
    dst[i] = (uint16_t)(sign | h);
  }
}

/*
 * Four K or V values at element i of a stored chunk: f32, or f16 (the mirror's copy for
 * models on quantized blocks, as llama.cpp keeps its KV cache) widened here. Finite values only (store
 * clamps to ±65504).
 */
static inline __attribute__((always_inline)) v128_t kv4(const void *base, size_t i, int f16) {
  if (!f16) return wasm_v128_load((const float *)base + i);
  v128_t lo, hi;
  f16x8_to_f32(wasm_v128_load64_zero((const uint16_t *)base + i), &lo, &hi);
  return lo;
}

/* Element offset of row r of KV head g in a chunk of `rows` rows stored head by head. */
static inline size_t kv_at(int g, int rows, int r, int D) { return ((size_t)g * rows + r) * D; }

static inline int seen(const uint8_t *vi, int P, int j) { return j < P || vi[j - P]; }

/* Whether it sees keys j..j+3. */
static inline int seen4(const uint8_t *vi, int P, int j) {
  if (j + 4 <= P) return 1;
  return seen(vi, P, j) && seen(vi, P, j + 1) && seen(vi, P, j + 2) && seen(vi, P, j + 3);
}

/*
 * Scores of NH query heads (a constant once inlined) against four consecutive keys whose
 * rows are at kr[0..3] (in one chunk or across chunks): head a's four scores go to scores[a·S ..], and their maximum
 * into mxv[a]. Each key's dot product runs in four lanes over D and one transpose sums
 * the lanes in hsum_f32's order ((l0 + l1) + l2) + l3 — the bits a key gets alone. The
 * key rows are loaded once for all heads.
 */
static inline __attribute__((always_inline)) void qk4(const float *const *qh, const void *const *kb, const size_t *ko, int f16, int D, int NH, float *scores, int S, v128_t *mxv) {
  v128_t s[HEADS_AT_ONCE][4];
  for (int a = 0; a < NH; a++) s[a][0] = s[a][1] = s[a][2] = s[a][3] = wasm_f32x4_splat(0.f);
  for (int d = 0; d < D; d += 4) {
    const v128_t k0v = kv4(kb[0], ko[0] + d, f16), k1v = kv4(kb[1], ko[1] + d, f16);
    const v128_t k2v = kv4(kb[2], ko[2] + d, f16), k3v = kv4(kb[3], ko[3] + d, f16);
    for (int a = 0; a < NH; a++) {
      const v128_t qv = wasm_v128_load(qh[a] + d);
      s[a][0] = wasm_f32x4_add(s[a][0], wasm_f32x4_mul(qv, k0v));
      s[a][1] = wasm_f32x4_add(s[a][1], wasm_f32x4_mul(qv, k1v));
      s[a][2] = wasm_f32x4_add(s[a][2], wasm_f32x4_mul(qv, k2v));
      s[a][3] = wasm_f32x4_add(s[a][3], wasm_f32x4_mul(qv, k3v));
    }
  }
  for (int a = 0; a < NH; a++) {
    const v128_t t01l = wasm_i32x4_shuffle(s[a][0], s[a][1], 0, 4, 1, 5), t23l = wasm_i32x4_shuffle(s[a][2], s[a][3], 0, 4, 1, 5);
    const v128_t t01h = wasm_i32x4_shuffle(s[a][0], s[a][1], 2, 6, 3, 7), t23h = wasm_i32x4_shuffle(s[a][2], s[a][3], 2, 6, 3, 7);
    const v128_t l0 = wasm_i64x2_shuffle(t01l, t23l, 0, 2), l1 = wasm_i64x2_shuffle(t01l, t23l, 1, 3);
    const v128_t l2 = wasm_i64x2_shuffle(t01h, t23h, 0, 2), l3 = wasm_i64x2_shuffle(t01h, t23h, 1, 3);
    const v128_t sc = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_add(l0, l1), l2), l3);
    wasm_v128_store(scores + (size_t)a * S, sc);
    mxv[a] = wasm_f32x4_pmax(mxv[a], sc);
  }
}

/*
 * o[a·D + d] = inv[a]·Σ_{j < end} sp[a][j]·V_j[d] for NH heads (a constant once inlined) sharing
 * KV head g (chunk c's rows of it at vc[c] + g·rows[c]·D, D floats apart), in blocks of 8 values so that
 * each value row is loaded once for every head. Keys a row does not see are skipped (their
 * probability is 0; adding ±0 would not change a sum either), the rest summed in key order.
 */
static inline __attribute__((always_inline)) void pv(const float *const *sp, const float *inv, const void *const *vc, int f16, const int *rows, int chunks, int P, int end, const uint8_t *vi, int g, int D, int NH, float *o) {
  for (int d = 0; d < D; d += PV_W) {
    const int w = D - d < PV_W ? (D - d) / 4 : PV_W / 4;
    v128_t acc[HEADS_AT_ONCE][PV_W / 4];
    for (int a = 0; a < NH; a++) for (int e = 0; e < PV_W / 4; e++) acc[a][e] = wasm_f32x4_splat(0.f);
    for (int c = 0, j = 0; c < chunks && j < end; c++) {
      size_t vrow = kv_at(g, rows[c], 0, D) + d;
      for (int r = 0; r < rows[c] && j < end; r++, j++, vrow += D) {
        if (j >= P && !vi[j - P]) continue;
        v128_t v[PV_W / 4];
        for (int e = 0; e < PV_W / 4; e++) v[e] = e < w ? kv4(vc[c], vrow + 4 * e, f16) : v[0];
        for (int a = 0; a < NH; a++) {
          const v128_t p = wasm_f32x4_splat(sp[a][j]);
          for (int e = 0; e < PV_W / 4; e++) if (e < w) acc[a][e] = wasm_f32x4_add(acc[a][e], wasm_f32x4_mul(p, v[e]));
        }
      }
    }
    for (int a = 0; a < NH; a++) {
      const v128_t iv = wasm_f32x4_splat(inv[a]);
      for (int e = 0; e < PV_W / 4; e++) if (e < w) wasm_v128_store(o + (size_t)a * D + d + 4 * e, wasm_f32x4_mul(acc[a][e], iv));
    }
  }
}

/*
 * Attention of n new rows over S = P + n keys (P cached, then the n new ones), computed
 * one (row, head) at a time in an order that depends on nothing but that row's query and
 * the keys it sees: dot products over D in four fixed lanes, softmax in key order, the
 * value sum in key order with lanes over D. So a row gets the same bits alone (a decode
 * step), inside a multi-row call (draft or tree verification, a prefill chunk) or beside
 * other sequences — what the tfjs attention could not promise (its reductions change order
 * with the call's shape), and what int8 activation rounding then magnified.
 *   q (n, H·D) scaled by 1/sqrt(D); the S keys and values are read where they lie, as
 *   `chunks` runs of consecutive rows in position order: chunk c has rows[c] rows at kc[c]
 *   and vc[c] (the KV cache's blocks, never gathered into one array), stored head by head
 *   (MatmulKernels.store): KV head g's D values of row r at g·rows[c]·D + r·D. So each
 *   head's keys and values are read as one sequential run per chunk, which the hardware
 *   prefetches; rows as the cache holds them (KV·D floats each, a head's D of them every
 *   KV·D) made a decode step's reads strided, and a layer's attention at ~160 keys took
 *   ~295 µs with the KV out of cache against ~60 µs in cache. vis (n, n): new row i sees new key j when vis[i·n + j] (all P cached keys are
 *   visible); scores: S floats of scratch; out (n, H·D); last: 0, or S floats that receive
 *   the mean over heads of the last row's probabilities (LazyLLM's token scores).
 *   Heads h0..h1-1 only (a share of the heads per thread; `last` needs all heads in one
 *   call). D must be a multiple of 4 and at most 512.
 * The query heads of one KV head go together (qk4, pv: each key and value row loaded once
 * for all of them), any four visible keys — cached ones, or new ones a prefill row sees —
 * take the four-key path, and a row's loops stop at the last key it sees. Measured alone
 * (SmolLM2 shapes: 9 heads over 3 KV heads, D = 64; best of 9 interleaved): one layer of
 * a decode step at 1,024 keys 0.237 → 0.205 ms, a causal prefill of 128 rows 2.56 → 1.44
 * ms, of 512 rows 42.7 → 25.6 ms (before: one head at a time, new keys one by one, every
 * row over all S keys), with the same bits.
 */
__attribute__((export_name("attention")))
void attention(const float *q, const void *const *kc, const void *const *vc, const int *rows, int chunks, int P, int n, const uint8_t *vis, int H, int KVf, int D, float *scores, float *out, float *last, int h0, int h1) {
  /* KVf: the KV head count, plus 65536 when the chunks hold f16 (store_f16). */
  const int KV = KVf & 0xffff, f16 = KVf >> 16;
  const int S = P + n, G = H / KV, qd = H * D;
  if (last) for (int j = 0; j < S; j++) last[j] = 0.f;
  for (int i = 0; i < n; i++) {
    const uint8_t *vi = vis + (size_t)i * n;
    /* Keys past the last one this row sees play no part (a causal prefill row sees only
     * the first P + i + 1): every loop below stops there. */
    int end = S;
    while (end > P && !vi[end - 1 - P]) end--;
    /* The query heads of one KV head, up to HEADS_AT_ONCE at a time, read each key and
     * value row once for all of them (GQA: G heads share it). */
    for (int hb = h0; hb < h1;) {
      const int g = hb / G;
      int nh = (g + 1) * G - hb;
      if (nh > h1 - hb) nh = h1 - hb;
      if (nh > HEADS_AT_ONCE) nh = HEADS_AT_ONCE;
      const float *qh[HEADS_AT_ONCE];
      float mx[HEADS_AT_ONCE], sum[HEADS_AT_ONCE];
      v128_t mxv[HEADS_AT_ONCE];
      for (int a = 0; a < nh; a++) {
        qh[a] = q + (size_t)i * qd + (size_t)(hb + a) * D;
        mx[a] = -3.0e38f;
        mxv[a] = wasm_f32x4_splat(-3.0e38f);
      }
      /* Keys in position order through the chunks: (c, r) is key j's chunk and row. Four
       * visible keys at a time, in one chunk or across chunk ends (decode appends a row at a
       * time, so a sequence's newest keys can sit in one-row chunks): one transpose sums all
       * four rows' lanes in hsum_f32's order ((l0 + l1) + l2) + l3, so each key's score has
       * the bits it gets alone. */
      for (int c = 0, r = 0, j = 0; j < end;) {
        while (r >= rows[c]) c++, r = 0;
        if (j + 4 <= end && seen4(vi, P, j)) {
          const void *kb[4];
          size_t ko[4];
          for (int e = 0; e < 4; e++) {
            while (r >= rows[c]) c++, r = 0;
            kb[e] = kc[c];
            ko[e] = kv_at(g, rows[c], r, D);
            r++;
          }
          switch (nh) {
            case 4: qk4(qh, kb, ko, f16, D, 4, scores + j, S, mxv); break;
            case 3: qk4(qh, kb, ko, f16, D, 3, scores + j, S, mxv); break;
            case 2: qk4(qh, kb, ko, f16, D, 2, scores + j, S, mxv); break;
            default: qk4(qh, kb, ko, f16, D, 1, scores + j, S, mxv); break;
          }
          j += 4;
          continue;
        }
        if (seen(vi, P, j)) {
          const size_t kj = kv_at(g, rows[c], r, D);
          for (int a = 0; a < nh; a++) {
            v128_t sv = wasm_f32x4_splat(0.f);
            for (int d = 0; d < D; d += 4) sv = wasm_f32x4_add(sv, wasm_f32x4_mul(wasm_v128_load(qh[a] + d), kv4(kc[c], kj + d, f16)));
            float sc = hsum_f32(sv);
            scores[(size_t)a * S + j] = sc;
            if (sc > mx[a]) mx[a] = sc;
          }
        }
        r++, j++;
      }
      for (int a = 0; a < nh; a++) {
        /* A maximum is the same whatever the order it is taken in. */
        for (int e = 0; e < 4; e++) {
          const float x = wasm_f32x4_extract_lane(mxv[a], 0);
          if (x > mx[a]) mx[a] = x;
          mxv[a] = wasm_i32x4_shuffle(mxv[a], mxv[a], 1, 2, 3, 0);
        }
        float *sa = scores + (size_t)a * S;
        const v128_t m = wasm_f32x4_splat(mx[a]);
        int j = 0;
        /* Four visible keys at a time, the same arithmetic as exp_f32. */
        while (j < end) {
          if (j + 4 <= end && seen4(vi, P, j)) {
            wasm_v128_store(sa + j, exp_f32x4(wasm_f32x4_sub(wasm_v128_load(sa + j), m)));
            j += 4;
          } else {
            sa[j] = seen(vi, P, j) ? exp_f32(sa[j] - mx[a]) : 0.f;
            j++;
          }
        }
        /* In key order, as one row alone would sum them (an invisible key adds 0). */
        float t = 0.f;
        for (j = 0; j < end; j++) t += sa[j];
        sum[a] = t;
      }
      /* The heads' outputs in blocks of 8 values over all keys, each value row loaded once
       * for every head; every lane sums its keys in key order. */
      const float *sp[HEADS_AT_ONCE];
      float inv[HEADS_AT_ONCE];
      for (int a = 0; a < nh; a++) {
        sp[a] = scores + (size_t)a * S;
        inv[a] = 1.f / sum[a];
      }
      float *o = out + (size_t)i * qd + (size_t)hb * D;
      switch (nh) {
        case 4: pv(sp, inv, vc, f16, rows, chunks, P, end, vi, g, D, 4, o); break;
        case 3: pv(sp, inv, vc, f16, rows, chunks, P, end, vi, g, D, 3, o); break;
        case 2: pv(sp, inv, vc, f16, rows, chunks, P, end, vi, g, D, 2, o); break;
        default: pv(sp, inv, vc, f16, rows, chunks, P, end, vi, g, D, 1, o); break;
      }
      if (last && i == n - 1) {
        for (int a = 0; a < nh; a++) {
          const float w = inv[a] / (float)H;
          for (int j = 0; j < end; j++) last[j] += sp[a][j] * w;
        }
      }
      hb += nh;
    }
  }
}
