/*
 * The wasm SIMD128 intrinsics that float-kernels.inc.c uses, on x86 SSE4.1, each the same
 * operation lane for lane, so that the native build of those kernels gives the wasm build's
 * bits (kernels.test.ts compares them). Where wasm and x86 differ, only on inputs the
 * kernels never produce, it says so:
 * - f32x4.min/max: wasm orders −0 below +0 and returns NaN for a NaN lane; minps/maxps
 *   return their second operand then. The kernels clamp finite values against ±87 only.
 * - i32x4.trunc_sat_f32x4 saturates; cvttps gives 0x80000000 out of range. The kernels
 *   truncate values within ±126.
 * - f32x4.pmax(a, b) is (a < b ? b : a) exactly: maxps(b, a).
 */
#ifndef SKEIN_WASM_SSE_H
#define SKEIN_WASM_SSE_H
#include <immintrin.h>
#include <stdint.h>

typedef __m128i v128_t;
typedef float f32x4_v __attribute__((vector_size(16)));
typedef int32_t i32x4_v __attribute__((vector_size(16)));
typedef int64_t i64x2_v __attribute__((vector_size(16)));

#define SSE static inline __attribute__((always_inline, target("sse4.1")))
#define F(v) _mm_castsi128_ps(v)
#define I(v) _mm_castps_si128(v)

SSE v128_t wasm_v128_load(const void *p) { return _mm_loadu_si128((const __m128i *)p); }
SSE void wasm_v128_store(void *p, v128_t v) { _mm_storeu_si128((__m128i *)p, v); }
SSE v128_t wasm_v128_load64_zero(const void *p) { return _mm_loadl_epi64((const __m128i *)p); }
SSE v128_t wasm_f32x4_splat(float x) { return I(_mm_set1_ps(x)); }
SSE v128_t wasm_i32x4_splat(int32_t x) { return _mm_set1_epi32(x); }
SSE v128_t wasm_f32x4_add(v128_t a, v128_t b) { return I(_mm_add_ps(F(a), F(b))); }
SSE v128_t wasm_f32x4_sub(v128_t a, v128_t b) { return I(_mm_sub_ps(F(a), F(b))); }
SSE v128_t wasm_f32x4_mul(v128_t a, v128_t b) { return I(_mm_mul_ps(F(a), F(b))); }
SSE v128_t wasm_f32x4_div(v128_t a, v128_t b) { return I(_mm_div_ps(F(a), F(b))); }
/* The sign bit flipped, as a scalar negation does (−(+0) is −0). */
SSE v128_t wasm_f32x4_neg(v128_t a) { return _mm_xor_si128(a, _mm_set1_epi32((int)0x80000000u)); }
SSE v128_t wasm_f32x4_min(v128_t a, v128_t b) { return I(_mm_min_ps(F(a), F(b))); }
SSE v128_t wasm_f32x4_max(v128_t a, v128_t b) { return I(_mm_max_ps(F(a), F(b))); }
SSE v128_t wasm_f32x4_pmax(v128_t a, v128_t b) { return I(_mm_max_ps(F(b), F(a))); }
SSE v128_t wasm_f32x4_lt(v128_t a, v128_t b) { return I(_mm_cmplt_ps(F(a), F(b))); }
SSE v128_t wasm_f32x4_convert_i32x4(v128_t a) { return I(_mm_cvtepi32_ps(a)); }
SSE v128_t wasm_i32x4_trunc_sat_f32x4(v128_t a) { return _mm_cvttps_epi32(F(a)); }
SSE v128_t wasm_i32x4_add(v128_t a, v128_t b) { return _mm_add_epi32(a, b); }
SSE v128_t wasm_i32x4_shl(v128_t a, int n) { return _mm_sll_epi32(a, _mm_cvtsi32_si128(n)); }
SSE v128_t wasm_v128_and(v128_t a, v128_t b) { return _mm_and_si128(a, b); }
SSE v128_t wasm_v128_or(v128_t a, v128_t b) { return _mm_or_si128(a, b); }
/* (a & c) | (b & ~c) */
SSE v128_t wasm_v128_bitselect(v128_t a, v128_t b, v128_t c) { return _mm_or_si128(_mm_and_si128(a, c), _mm_andnot_si128(c, b)); }
SSE v128_t wasm_u32x4_extend_low_u16x8(v128_t a) { return _mm_cvtepu16_epi32(a); }
SSE v128_t wasm_u32x4_extend_high_u16x8(v128_t a) { return _mm_cvtepu16_epi32(_mm_srli_si128(a, 8)); }
/* Integer steps of the q8 KV attention: exact, so any order gives the same sums. */
SSE v128_t wasm_v128_load32_zero(const void *p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm_cvtsi32_si128(v);
}
SSE v128_t wasm_f32x4_make(float a, float b, float c, float d) { return I(_mm_setr_ps(a, b, c, d)); }
SSE v128_t wasm_i16x8_extend_low_i8x16(v128_t a) { return _mm_cvtepi8_epi16(a); }
SSE v128_t wasm_i16x8_extend_high_i8x16(v128_t a) { return _mm_cvtepi8_epi16(_mm_srli_si128(a, 8)); }
SSE v128_t wasm_i32x4_extend_low_i16x8(v128_t a) { return _mm_cvtepi16_epi32(a); }
SSE v128_t wasm_i32x4_extend_high_i16x8(v128_t a) { return _mm_cvtepi16_epi32(_mm_srli_si128(a, 8)); }
SSE v128_t wasm_i32x4_dot_i16x8(v128_t a, v128_t b) { return _mm_madd_epi16(a, b); }
SSE float wasm_f32x4_extract_lane_(v128_t a, int k) { return ((f32x4_v)F(a))[k]; }
#define wasm_f32x4_extract_lane(a, k) wasm_f32x4_extract_lane_((a), (k))
#define wasm_i32x4_shuffle(a, b, c0, c1, c2, c3) ((v128_t)__builtin_shuffle((i32x4_v)(a), (i32x4_v)(b), (i32x4_v){c0, c1, c2, c3}))
#define wasm_i64x2_shuffle(a, b, c0, c1) ((v128_t)__builtin_shuffle((i64x2_v)(a), (i64x2_v)(b), (i64x2_v){c0, c1}))

#undef F
#undef I
#undef SSE
#endif
