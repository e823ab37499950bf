/*
 * TT tokens (1–4, constant once inlined) over a pair of Q4 groups (rows 4g..4g+7; gb is
 * the second group's offset from the first, block by block, and stride the bytes from one
 * block to the next: interleaved pairs, x4h_block_at) or, with one = 1, a single group in
 * the low half, in x4h groups (type: Q4_0 or Q4_1). The wasm x4r_pass's products, blocks and
 * float steps, 8 rows per vector.
 */
TILE_FN void PRODUCT(x4r_tile)(int type, const uint8_t *wg, size_t gb, size_t stride, int nb, const int8_t *qa, size_t qs, const float *da, const float *sa, int TT, float *y, size_t ys, int one) {
  const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
  (void)ones;
  const size_t quants = x4h_quants_at(type);
  __m256 acc[MAX_TT], accm[MAX_TT];
  for (int t = 0; t < TT; t++) acc[t] = accm[t] = _mm256_setzero_ps();
  const uint8_t *p = wg;
  for (int b = 0; b < nb; b++, p += stride) {
    prefetch_ahead(p, stride);
    __m256i s[MAX_TT];
    for (int t = 0; t < TT; t++) s[t] = _mm256_setzero_si256();
    _Pragma("GCC unroll 4") for (int u = 0; u < 4; u++) {
      const __m256i v = load2(p + quants + 16 * u, p + (one ? 0 : gb) + quants + 16 * u);
      const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      for (int t = 0; t < TT; t++) {
        const int8_t *a = qa + (size_t)t * qs + (size_t)b * QK + 8 * u;
#if PRODUCTS_VNNI
        s[t] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(s[t], lo, _mm256_set1_epi32(load_i32(a))), hi, _mm256_set1_epi32(load_i32(a + 4)));
#else
        /* int16 sums: ≤ 4 × 2 × 2 × 15 × 127 = 30,480 per lane over the block, no wrap. */
        const __m256i x0 = _mm256_maddubs_epi16(lo, _mm256_set1_epi32(load_i32(a)));
        const __m256i x1 = _mm256_maddubs_epi16(hi, _mm256_set1_epi32(load_i32(a + 4)));
        s[t] = _mm256_add_epi16(s[t], _mm256_add_epi16(x0, x1));
#endif
      }
    }
    const __m256 d = load2h(p, p + (one ? 0 : gb));
    for (int t = 0; t < TT; t++) {
#if PRODUCTS_VNNI
      const __m256 f = _mm256_cvtepi32_ps(s[t]);
#else
      const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(s[t], ones));
#endif
      acc[t] = _mm256_add_ps(acc[t], _mm256_mul_ps(f, _mm256_mul_ps(d, _mm256_set1_ps(da[(size_t)t * nb + b]))));
    }
  }
  p = wg;
  for (int b = 0; b < nb; b++, p += stride) {
    const __m256 m = type == T_Q4_1 ? load2h(p + 8, p + (one ? 0 : gb) + 8) : _mm256_mul_ps(load2h(p, p + (one ? 0 : gb)), _mm256_set1_ps(-8.f));
    for (int t = 0; t < TT; t++) accm[t] = _mm256_add_ps(accm[t], _mm256_mul_ps(m, _mm256_set1_ps(sa[(size_t)t * nb + b])));
  }
  for (int t = 0; t < TT; t++) {
    const __m256 r = _mm256_add_ps(acc[t], accm[t]);
    if (one) _mm_storeu_ps(y + (size_t)t * ys, _mm256_castps256_ps128(r));
    else _mm256_storeu_ps(y + (size_t)t * ys, r);
  }
}

/*
 * TT tokens over a pair of Q8_0 groups (or one), int8 activations in R8 order
 * (quantize_rows_r8, as the Q4 products take them): the x4h Q8_0 group's vector u holds
 * rows 0–3 × the four columns at activation positions 4u..4u+3, each row's four bytes
 * together, so one broadcast of those four activation bytes meets all rows. 8-bit
 * products on the signs moved to the activations (|w| unsigned, a·sign(w) signed: pair
 * sums ≤ 2·128·127, never saturated), widened to int32 per row: the same integers as the
 * wasm x4_pass's block sums, then its float steps. Against the 16-bit products it
 * replaced (int16 activations widened against weights widened to int16, 16 multiply-adds
 * an instruction), bench decode on SmolLM2 rewritten to Q8_0, one run each on a quiet box:
 * prefill of 128 tokens 280 → 360 tok/s (0.96× → 1.24× llama.cpp), of 512 243 → 294
 * (0.93× → 1.13×); decode unchanged (75 tok/s: it streams the weights from memory).
 */
TILE_FN void PRODUCT(x8r_tile)(const uint8_t *wg, size_t gb, size_t stride, int nb, const int8_t *qa, size_t qs, const float *da, int TT, float *y, size_t ys, int one) {
  const __m256i ones = _mm256_set1_epi16(1);
  (void)ones;
  __m256 acc[MAX_TT];
  for (int t = 0; t < TT; t++) acc[t] = _mm256_setzero_ps();
  const uint8_t *p = wg;
  for (int b = 0; b < nb; b++, p += stride) {
    prefetch_ahead(p, stride);
    __m256i s[MAX_TT];
    for (int t = 0; t < TT; t++) s[t] = _mm256_setzero_si256();
    _Pragma("GCC unroll 8") for (int u = 0; u < 8; u++) {
      const __m256i w = load2(p + 8 + 16 * u, p + (one ? 0 : gb) + 8 + 16 * u);
      const __m256i aw = _mm256_abs_epi8(w);
      for (int t = 0; t < TT; t++) {
        const __m256i a = _mm256_set1_epi32(load_i32(qa + (size_t)t * qs + (size_t)b * QK + 4 * u));
#if PRODUCTS_VNNI
        s[t] = _mm256_dpbusd_epi32(s[t], aw, _mm256_sign_epi8(a, w));
#else
        s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(a, w)), ones));
#endif
      }
    }
    const __m256 d = load2h(p, p + (one ? 0 : gb));
    for (int t = 0; t < TT; t++) acc[t] = _mm256_add_ps(acc[t], _mm256_mul_ps(_mm256_cvtepi32_ps(s[t]), _mm256_mul_ps(d, _mm256_set1_ps(da[(size_t)t * nb + b]))));
  }
  for (int t = 0; t < TT; t++) {
    /* The wasm pass adds its (zero) offset sums too: the same + 0.0f, so −0 becomes +0 alike. */
    const __m256 r = _mm256_add_ps(acc[t], _mm256_setzero_ps());
    if (one) _mm_storeu_ps(y + (size_t)t * ys, _mm256_castps256_ps128(r));
    else _mm256_storeu_ps(y + (size_t)t * ys, r);
  }
}

#if PRODUCTS_VNNI
/*
 * Four groups (16 rows: the stored pairs g, g + 1 and g + 2, g + 3, gp bytes apart) in
 * 512-bit vectors, for the VNNI build: each lane does what a pair tile's lane does, so the
 * same bits; half the instructions per multiply-add, which is what bounds a compute-bound
 * (prefill) product here — ~3.5 instructions a cycle sustained on Zen 4, each 256-bit
 * vpdpbusd needing ~3 around it.
 */
TILE_FN __m512i load4(const uint8_t *p1, const uint8_t *p2, size_t gb, size_t at) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(load2(p1 + at, p1 + gb + at)), load2(p2 + at, p2 + gb + at), 1);
}
TILE_FN __m512 load4h(const uint8_t *p1, const uint8_t *p2, size_t gb, size_t at) {
  const __m512d lo = _mm512_castpd256_pd512(_mm256_castps_pd(load2h(p1 + at, p1 + gb + at)));
  return _mm512_castpd_ps(_mm512_insertf64x4(lo, _mm256_castps_pd(load2h(p2 + at, p2 + gb + at)), 1));
}

/* x4r_tile on four groups. */
TILE_FN void x4r_quad(int type, const uint8_t *wg, size_t gb, size_t gp, size_t stride, int nb, const int8_t *qa, size_t qs, const float *da, const float *sa, int TT, float *y, size_t ys) {
  const __m512i m4 = _mm512_set1_epi8(15);
  const size_t quants = x4h_quants_at(type);
  __m512 acc[MAX_TT], accm[MAX_TT];
  for (int t = 0; t < TT; t++) acc[t] = accm[t] = _mm512_setzero_ps();
  const uint8_t *p = wg;
  for (int b = 0; b < nb; b++, p += stride) {
    prefetch_ahead(p, stride);
    prefetch_ahead(p + gp, stride);
    __m512i s[MAX_TT];
    for (int t = 0; t < TT; t++) s[t] = _mm512_setzero_si512();
    _Pragma("GCC unroll 4") for (int u = 0; u < 4; u++) {
      const __m512i v = load4(p, p + gp, gb, quants + 16 * u);
      const __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
      for (int t = 0; t < TT; t++) {
        const int8_t *a = qa + (size_t)t * qs + (size_t)b * QK + 8 * u;
        s[t] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(s[t], lo, _mm512_set1_epi32(load_i32(a))), hi, _mm512_set1_epi32(load_i32(a + 4)));
      }
    }
    const __m512 d = load4h(p, p + gp, gb, 0);
    for (int t = 0; t < TT; t++) acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(_mm512_cvtepi32_ps(s[t]), _mm512_mul_ps(d, _mm512_set1_ps(da[(size_t)t * nb + b]))));
  }
  p = wg;
  for (int b = 0; b < nb; b++, p += stride) {
    const __m512 m = type == T_Q4_1 ? load4h(p, p + gp, gb, 8) : _mm512_mul_ps(load4h(p, p + gp, gb, 0), _mm512_set1_ps(-8.f));
    for (int t = 0; t < TT; t++) accm[t] = _mm512_add_ps(accm[t], _mm512_mul_ps(m, _mm512_set1_ps(sa[(size_t)t * nb + b])));
  }
  for (int t = 0; t < TT; t++) _mm512_storeu_ps(y + (size_t)t * ys, _mm512_add_ps(acc[t], accm[t]));
}

/*
 * x8r_tile on four groups, with the weights' signs handled the other way (AVX-512 has no
 * vpsignb): w + 128 (w ^ 0x80) unsigned against the activations as they are, and 128·Σa
 * of the block (asum, integers) taken off up front — Σ(w + 128)·a − 128·Σa = Σw·a, the
 * same integers, in one instruction per token and vector instead of two.
 */
TILE_FN void x8r_quad(const uint8_t *wg, size_t gb, size_t gp, size_t stride, int nb, const int8_t *qa, size_t qs, const int32_t *asum, const float *da, int TT, float *y, size_t ys) {
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  __m512 acc[MAX_TT];
  for (int t = 0; t < TT; t++) acc[t] = _mm512_setzero_ps();
  const uint8_t *p = wg;
  for (int b = 0; b < nb; b++, p += stride) {
    prefetch_ahead(p, stride);
    prefetch_ahead(p + gp, stride);
    __m512i s[MAX_TT];
    for (int t = 0; t < TT; t++) s[t] = _mm512_set1_epi32(-128 * asum[(size_t)t * nb + b]);
    _Pragma("GCC unroll 8") for (int u = 0; u < 8; u++) {
      const __m512i w = _mm512_xor_si512(load4(p, p + gp, gb, 8 + 16 * u), flip);
      for (int t = 0; t < TT; t++) s[t] = _mm512_dpbusd_epi32(s[t], w, _mm512_set1_epi32(load_i32(qa + (size_t)t * qs + (size_t)b * QK + 4 * u)));
    }
    const __m512 d = load4h(p, p + gp, gb, 0);
    for (int t = 0; t < TT; t++) acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(_mm512_cvtepi32_ps(s[t]), _mm512_mul_ps(d, _mm512_set1_ps(da[(size_t)t * nb + b]))));
  }
  for (int t = 0; t < TT; t++) _mm512_storeu_ps(y + (size_t)t * ys, _mm512_add_ps(acc[t], _mm512_setzero_ps()));
}

/* Each token's activation block sums (int8 values of quantize_rows_r8), for x8r_quad. */
static _Thread_local void *block_sums_memory;
static _Thread_local size_t block_sums_bytes;
PRODUCT_FN const int32_t *activation_block_sums(const int8_t *qa, int T, int nb) {
  const size_t n = (size_t)T * nb;
  int32_t *block_sums = grown_buffer(&block_sums_memory, &block_sums_bytes, n * sizeof *block_sums);
  if (block_sums == NULL) return NULL;
  const __m256i ones = _mm256_set1_epi8(1);
  for (size_t i = 0; i < n; i++) {
    const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, _mm256_loadu_si256((const __m256i *)(qa + i * QK)));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    block_sums[i] = _mm_cvtsi128_si32(s4);
  }
  return block_sums;
}
#endif

PRODUCT_FN void PRODUCT(matmul_x4r)(int type, const uint8_t *w, int rows, int cols, const int8_t *qa, const float *da, const float *sa, int T, float *y, int g0, int g1) {
  const int nb = cols / QK;
  const size_t qs = (size_t)nb * QK, gb = (size_t)nb * x4h_group_bytes(type);
#define TILE(TT) PRODUCT(x4r_tile)(type, wg, x4h_group_bytes(type), stride, nb, qa + t * qs, qs, da + (size_t)t * nb, sa + (size_t)t * nb, TT, yg + (size_t)t * rows, rows, one)
#if PRODUCTS_VNNI
#define QUAD(TT) x4r_quad(type, wg, x4h_group_bytes(type), 2 * gb, stride, nb, qa + t * qs, qs, da + (size_t)t * nb, sa + (size_t)t * nb, TT, yg + (size_t)t * rows, rows)
#else
#define QUAD NO_QUAD
#endif
  GROUP_LOOP(gb, x4h_group_bytes(type), TILE, QUAD, PRODUCTS_VNNI && T >= QUAD_MIN_T)
#undef TILE
#undef QUAD
}

PRODUCT_FN void PRODUCT(matmul_x8r)(const uint8_t *w, int rows, int cols, const int8_t *qa, const float *da, int T, float *y, int g0, int g1) {
  const int nb = cols / QK;
  const size_t qs = (size_t)nb * QK, gb = (size_t)nb * 136;
#define TILE(TT) PRODUCT(x8r_tile)(wg, 136, stride, nb, qa + t * qs, qs, da + (size_t)t * nb, TT, yg + (size_t)t * rows, rows, one)
#if PRODUCTS_VNNI
  const int32_t *asum = g1 - g0 >= 4 && T >= QUAD_MIN_T ? activation_block_sums(qa, T, nb) : NULL;
#define QUAD(TT) x8r_quad(wg, 136, 2 * gb, stride, nb, qa + t * qs, qs, asum + (size_t)t * nb, da + (size_t)t * nb, TT, yg + (size_t)t * rows, rows)
  GROUP_LOOP(gb, 136, TILE, QUAD, asum != NULL)
#else
  GROUP_LOOP(gb, 136, TILE, NO_QUAD, 0)
#endif
#undef TILE
#undef QUAD
}
