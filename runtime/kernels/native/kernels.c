/*
 * Native x86-64 (AVX2; AVX-512 VNNI where the CPU has it) versions of the two products
 * that decide decode and verification speed — matmul.c's matmul_x4r (Q4_0/Q4_1 groups × int8 activations) and matmul_x4 for
 * Q8_0 groups (the LM head of the Q4 GGUFs, every product of a Q8_0 one) — as a Node-API
 * addon. They work in place on the wasm kernels' shared memory (activations and outputs
 * at the same offsets the wasm exports take; quantized weights in this file's x4h groups,
 * which repack_x4h makes at upload), so matmul.ts swaps a call and the repacking, nothing
 * else. Built at install time by build.mjs where a C compiler and the Node-API headers are
 * present; matmul.ts falls back to the wasm build where it is not, or when this build's
 * answers differ from the wasm ones on a check product.
 *
 * Why native: V8's code for the wasm kernels keeps too few values in registers and runs at
 * ~4–12 multiply-adds per cycle on this machine kind (AMD EPYC, Zen 3: 1536×576 Q4_1 in
 * cache, 10–12 GMAC/s single thread at 1–64 tokens), a quarter of what its two 256-bit
 * multipliers allow; the same loops compiled natively with AVX2 double the width and keep
 * every accumulator in a register.
 *
 * Same bits as the wasm build: the integer block sums are the same integers (exact in any
 * order), and every float step is the same operation in the same order per output lane
 * (acc += (float)s·(d·da); accm += m·sa block by block after; y = acc + accm), compiled
 * with -ffp-contract=off so that no multiply-add is fused. kernels.test.ts compares both
 * builds bit for bit; matmul.ts checks it again once per process before using this one.
 */
#define _GNU_SOURCE /* syscall (the pool's futex), MADV_HUGEPAGE */
#include <immintrin.h>
#include <node_api.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef __linux__
#include <sys/mman.h>
#include <unistd.h>
#endif
#include "wasm-sse.h"

/*
 * A thread's scratch buffer (*buffer, *bytes long) grown to hold at least `need` bytes and
 * kept at its largest for the next call; NULL when out of memory, the buffer left as it was.
 */
static void *grown_buffer(void **buffer, size_t *bytes, size_t need) {
  if (need > *bytes) {
    void *grown = realloc(*buffer, need);
    if (grown == NULL) return NULL;
    *buffer = grown;
    *bytes = need;
  }
  return *buffer;
}

#define QK 32
#define T_Q4_0 2
#define T_Q4_1 3
#define T_Q8_0 8
#define MAX_MEMORIES 256

/*
 * The native ("x4h") groups: matmul.c's x4 groups (4 rows × one block, quants by column
 * pairs, the same bytes) with the 4 rows' scales kept as f16, as the file has them, where
 * the wasm layout widens them to f32 (one vector op there; here one F16C instruction
 * converts them back, exactly). Q4_0's offsets (−8·d) are not stored: d·−8 in f32 is the
 * wasm layout's stored value, made at run time. Q8_0's quants are ordered for 8-bit
 * products instead (x8r_tile): 8 vectors of 4 rows × 4 columns, each row's 4 bytes
 * together, the columns in the activations' R8 order.
 *   Q4_0x4h { f16 d[4]; uint8 q[64]; }            72 bytes (wasm x4: 96; file: 4 × 18)
 *   Q4_1x4h { f16 d[4]; f16 m[4]; uint8 q[64]; }  80 bytes (wasm x4: 96; file: 4 × 20)
 *   Q8_0x4h { f16 d[4]; int8 q[128]; }            136 bytes (wasm x4: 144; file: 4 × 34)
 * A decode step streams its weights from memory (this machine reads ~7.5 GB/s on one
 * thread): SmolLM2-135M's Q4_1 layers are 17 % fewer bytes than in the wasm layout.
 */
static inline size_t x4h_group_bytes(int type) { return type == T_Q8_0 ? 136 : type == T_Q4_1 ? 80 : 72; }
static inline size_t x4h_quants_at(int type) { return type == T_Q4_1 ? 16 : 8; }
/*
 * Groups below pair_end(rows) are stored two by two with their blocks interleaved (block b
 * of group 2p, then block b of group 2p + 1), so the pair the products read together is one
 * sequential stream, which the hardware prefetcher follows; an odd last group stands alone.
 * Measured on 80 matrices of 1536×576 out of cache, one token, alternating builds: Q4_1
 * 3.04–3.14 → 2.63–2.69 ms (14.3 → 16.6 GB/s), Q8_0 4.56–4.70 → 3.82–4.18 ms; SmolLM2 Q4_1's
 * one-row forward after a 128-token past ~10.0 → ~8.0 ms. A range that starts or ends
 * inside a pair (a split over two threads) reads that group alone, a block every two.
 */
static inline int pair_end(int rows) { return (rows / 4) & ~1; }
/* Where block b of group g lies, in groups of gbytes. */
static inline size_t x4h_block_at(int g, int b, int nb, int rows) {
  return g < pair_end(rows) ? (size_t)(g & ~1) * nb + 2 * (size_t)b + (g & 1) : (size_t)g * nb + b;
}

/* Base addresses of registered wasm memories: shared ones never move (their maximum is reserved up front). */
static uint8_t *memories[MAX_MEMORIES];
static int memory_count;

#define AVX2 __attribute__((target("avx2"), always_inline)) static inline
#define AVX2_FN __attribute__((target("avx2")))

/* Two x4 groups (8 rows) side by side: the 16 bytes at a and at b as one 256-bit vector. */
AVX2 __m256i load2(const uint8_t *a, const uint8_t *b) {
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)a)), _mm_loadu_si128((const __m128i *)b), 1);
}
/* Two groups' 4 f16 scales (8 bytes at a and at b) as 8 floats: exact, as the wasm layout's f32 copies are. */
AVX2 __m256 load2h(const uint8_t *a, const uint8_t *b) {
  int64_t x, y;
  __builtin_memcpy(&x, a, 8);
  __builtin_memcpy(&y, b, 8);
  return _mm256_cvtph_ps(_mm_set_epi64x(y, x));
}
AVX2 int32_t load_i32(const int8_t *p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

/*
 * Reading two groups at once from two places made two interleaved streams of 1.7 KB each
 * (SmolLM2's rows): too short for the hardware prefetcher to pick up, so a one-token pass
 * over weights out of cache waited on memory at every block of the second group. Asking for
 * the bytes PREFETCH_AHEAD further on helped there (80 matrices of 1536×576 Q4_1, one
 * token, on a busy box: no prefetch 3.1 GB/s, 512 B 3.7, 2 KB 4.3, 4 KB 5.1, 8 KB 4.4); the
 * pairs are now stored interleaved (x4h_block_at), one stream, and the prefetch stays:
 * 2 KB 13.1, 4 KB 14.2, 8 KB 14.2, 16 KB 14.0 GB/s on a quiet box before the interleaving.
 */
#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 4096
#endif
AVX2 void prefetch_ahead(const uint8_t *p, size_t bytes) {
  for (size_t o = 0; o < bytes; o += 64) _mm_prefetch((const char *)p + PREFETCH_AHEAD + o, _MM_HINT_T0);
}

/*
 * Groups [g0, g1) of 4 rows, two at a time, TT tokens per pass: 4, then 3 (matmul.c goes
 * 2 + 1 there), then 2, then 1 — each token's sums are its own, whatever the pass. Three
 * tokens in one pass instead of two unpack the weights once: SmolLM2's forward of 3 rows
 * after a 128-token past (a 2-node tree's verification) 14.8 → 14.2 ms (one row: 9.9–10.1;
 * from 3 rows on the products are compute-bound here, ~47 GMAC/s at 4).
 */
#define TOKEN_TILES(TILE)                                                                               \
  int t = 0;                                                                                            \
  if (MAX_TT == 8)                                                                                      \
    for (; t + 8 <= T; t += 8) TILE(8);                                                                 \
  for (; t + 4 <= T; t += 4) TILE(4);                                                                   \
  if (T - t == 3) {                                                                                     \
    TILE(3);                                                                                            \
    t += 3;                                                                                             \
  }                                                                                                     \
  for (; t + 2 <= T; t += 2) TILE(2);                                                                   \
  for (; t < T; t++) TILE(1);

#define NO_QUAD(TT) (void)(TT)
/*
 * Tokens from which the VNNI build runs quads: below, a pass is bound by memory and the
 * pairs' one interleaved stream reads faster than a quad's two (one token over 80 Q4_1
 * matrices out of cache: 11–15 GB/s on pairs, 8–9 on quads; at 4 tokens pairs still
 * ahead, at 8 quads).
 */
#define QUAD_MIN_T 8
/* QUADS: whether four groups (two stored pairs) go through QUAD when they can (the VNNI build). */
#define GROUP_LOOP(GB, BYTES, TILE, QUAD, QUADS)                                                        \
  const int paired = pair_end(rows);                                                                    \
  for (int g = g0; g < g1;) {                                                                           \
    if ((QUADS) && (g & 3) == 0 && g + 3 < g1 && g + 3 < paired) {                                      \
      const uint8_t *wg = w + (size_t)g * (GB);                                                         \
      const size_t stride = 2 * (BYTES);                                                                \
      float *yg = y + 4 * (size_t)g;                                                                    \
      (void)wg, (void)stride, (void)yg;                                                                 \
      TOKEN_TILES(QUAD)                                                                                 \
      g += 4;                                                                                           \
      continue;                                                                                         \
    }                                                                                                   \
    const int one = !((g & 1) == 0 && g + 1 < g1 && g < paired);                                        \
    const size_t stride = g < paired ? 2 * (BYTES) : (BYTES);                                           \
    const uint8_t *wg = w + (size_t)(g & ~1) * (GB) + (g < paired ? (size_t)(g & 1) * (BYTES) : 0);     \
    float *yg = y + 4 * (size_t)g;                                                                      \
    TOKEN_TILES(TILE)                                                                                   \
    g += one ? 1 : 2;                                                                                   \
  }

/*
 * The quantized products (products.inc.c) twice: for AVX2, and for AVX-512 VNNI where the
 * CPU has it (Zen 4, Ice Lake and later; js_isa picks one at load, from cpuid).
 * VNNI's vpdpbusd multiplies four u8 × s8 pairs and adds them to an int32 lane in one
 * instruction, where AVX2 needs maddubs (pair sums in int16), madd (int32) and an add:
 * the same integers, since AVX2's int16 pair sums never saturate here (x8r_tile,
 * x4r_tile say why), so the same bits. The VNNI build also takes 8 tokens per pass (32
 * vector registers) and, from 8 tokens on, four groups per 512-bit vector (x4r_quad,
 * x8r_quad); the layout and every float step per lane stay the same. bench decode on
 * SmolLM2 (Zen 4, one run each, quiet box): AVX2 → VNNI on 256 bits → + quads and 8-token
 * tiles: Q8_0 prefill 512 258 → 407 → 489 tok/s; Q4_1 prefill 128 355 → 595 (with both).
 */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define PRODUCT(name) CAT(name, PRODUCTS_ISA)
#define TILE_FN __attribute__((target(PRODUCTS_TARGET), always_inline)) static inline
#define PRODUCT_FN __attribute__((target(PRODUCTS_TARGET))) static

/* 1 while the AVX-512 builds run (js_isa); set when the first thread loads the addon. */
static int use_avx512 = -1;

#define PRODUCTS_ISA avx2
#define PRODUCTS_TARGET "avx2"
#define PRODUCTS_VNNI 0
#define MAX_TT 4
#include "products.inc.c"
#undef PRODUCTS_ISA
#undef PRODUCTS_TARGET
#undef PRODUCTS_VNNI
#undef MAX_TT

#define PRODUCTS_ISA vnni
#define PRODUCTS_TARGET "avx2,avx512f,avx512vl,avx512bw,avx512vnni"
#define PRODUCTS_VNNI 1
#define MAX_TT 8
#include "products.inc.c"
#undef PRODUCTS_ISA
#undef PRODUCTS_TARGET
#undef PRODUCTS_VNNI
#undef MAX_TT


/*
 * matmul.c's activation quantization (quantize_block: per block of 32, d = max|x|/127,
 * values rounded half away from zero, sa = d·Σq) on 8 lanes: the maximum and the integer
 * sum are the same in any order, every float step the same operation, so the same bytes
 * (kernels.test.ts, matmul.ts's check). It was the last per-row step of the products
 * still on the wasm build: ~8 % of a 512-token prefill there.
 */
AVX2 float quantize_block8(const float *x, __m256i r[4], float *sa) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  __m256 v[4], mx = _mm256_setzero_ps();
  for (int k = 0; k < 4; k++) {
    v[k] = _mm256_loadu_ps(x + 8 * k);
    mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[k]));
  }
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  const float amax = _mm_cvtss_f32(m);
  const float d = amax / 127.f;
  const float id = d > 0 ? 1.f / d : 0.f;
  const __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(0.5f);
  __m256i sum = _mm256_setzero_si256();
  for (int k = 0; k < 4; k++) {
    const __m256 w = _mm256_mul_ps(v[k], vid);
    const __m256 neg = _mm256_cmp_ps(w, _mm256_setzero_ps(), _CMP_LT_OQ);
    r[k] = _mm256_cvttps_epi32(_mm256_blendv_ps(_mm256_add_ps(w, half), _mm256_sub_ps(w, half), neg));
    sum = _mm256_add_epi32(sum, r[k]);
  }
  __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
  *sa = d * (float)_mm_cvtsi128_si32(s4);
  return d;
}

/* quantize_rows with q4_order 0: int16 values in column order. */
AVX2_FN static void quantize_rows_q8(const float *x, int T, int cols, int16_t *qa, float *da, float *sa) {
  const int nb = cols / QK;
  for (int t = 0; t < T; t++) {
    for (int b = 0; b < nb; b++) {
      const size_t i = (size_t)t * nb + b;
      __m256i r[4];
      da[i] = quantize_block8(x + (size_t)t * cols + (size_t)b * QK, r, sa + i);
      /* packs interleaves 128-bit lanes: 64-bit units (0, 2, 1, 3) put them back in order. */
      _mm256_storeu_si256((__m256i *)(qa + i * QK), _mm256_permute4x64_epi64(_mm256_packs_epi32(r[0], r[1]), 0xd8));
      _mm256_storeu_si256((__m256i *)(qa + i * QK + 16), _mm256_permute4x64_epi64(_mm256_packs_epi32(r[2], r[3]), 0xd8));
    }
  }
}

/* quantize_rows_r8: int8 values, each group of 8 columns in R8_ORDER (0, 4, 1, 5, 2, 6, 3, 7). */
AVX2_FN static void quantize_rows_r8(const float *x, int T, int cols, int8_t *qa, float *da, float *sa) {
  const int nb = cols / QK;
  /* After the packs and the 64-bit units (0, 2, 1, 3), a lane holds columns 0–3, 8–11, 4–7, 12–15 (of its 16). */
  const __m256i order = _mm256_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15, 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
  for (int t = 0; t < T; t++) {
    for (int b = 0; b < nb; b++) {
      const size_t i = (size_t)t * nb + b;
      __m256i r[4];
      da[i] = quantize_block8(x + (size_t)t * cols + (size_t)b * QK, r, sa + i);
      const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
      _mm256_storeu_si256((__m256i *)(qa + i * QK), _mm256_shuffle_epi8(_mm256_permute4x64_epi64(bytes, 0xd8), order));
    }
  }
}

/* ---- The float kernels (F32/F16 products, SwiGLU gate, attention): matmul.c's own source. ---- */

#define T_F32 0
#define HEADS_AT_ONCE 4
#define PV_W 8
#define KERNEL_EXPORT(name) static __attribute__((unused))
#define KV_PREFETCH(address) _mm_prefetch((const char *)(address), _MM_HINT_T0)
#define KV_PREFETCH_FAR(address) _mm_prefetch((const char *)(address), _MM_HINT_T1)
static inline float hsum_f32(v128_t v) {
  return wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1) + wasm_f32x4_extract_lane(v, 2) + wasm_f32x4_extract_lane(v, 3);
}

/*
 * attention's two inner loops on 256-bit vectors with the 128-bit lanes of the wasm ones
 * (float-kernels.inc.c leaves them out under WIDE_ATTENTION): qk4 holds two keys' four-lane
 * sums per vector where the wasm code holds one, and pv eight values of one head where it
 * holds 4 + 4 in two vectors — the same operations on the same lanes in the same order, so
 * the same bits (kernels.test.ts, matmul.ts's check). Measured: the decode step at 1,024
 * tokens of context cost 1.33× the step at 128 with the 128-bit loops (bench decode).
 *
 * Where a decode row's attention goes now (SmolLM2: 9 heads over 3 KV heads, D = 64, 1,024
 * f16 keys in cache, one thread, parts switched off one at a time): ~57 µs a layer = scores
 * (qk4) ~22 + softmax ~9 + values (pv) ~17 + the key loop ~5. llvm-mca (znver4) puts qk4's
 * inner step (4 keys × 4 values × 3 heads) at 5–6 cycles, bound by the FP pipes — 4
 * conversions, 2 inserts, 3 broadcasts, 6 multiplies, 6 adds; measured ~6.4 at 3.56 GHz —
 * so the scores run at ~4.4 multiply-adds a cycle against pv's ~12. Widening two keys' eight
 * values with one 256-bit conversion and vperm2f128 (the same lanes, the same bits)
 * measured the same. A multiply-add costs as many FP-pipe slots fused or not on Zen 4 (two
 * FMA pipes, or a multiply pipe and an add pipe), so what is left to gain is the inserts
 * and broadcasts, ~20 % of the scores: the context-growth target (≤ 1.2×) needs more than
 * that at one thread (the step there is 8.4 → 11.9 ms, ×1.41 in one bench run). On the
 * 2-vCPU Zen 3 boxes (the same row, its K/V in one chunk and 32 one-row ones, a C harness,
 * best of 7 × 3,000 calls): ~80 µs = scores ~32 + values ~24 + softmax ~10 + the rest ~14,
 * ~82 ns a key at 512, 1,024 and 2,048 keys alike (in L2 or only in L3: arithmetic, not the
 * caches); scores at eight lanes a key (d mod 8: one conversion per 8 values, no inserts or
 * broadcasts, other bits) measured the same, 87–91 µs either way.
 */
/*
 * f16 keys are stored in groups of four rows (key_offset, MatmulKernels.store): four keys'
 * pieces d..d+3 are then 16 values in a row, and qk4 widens each pair of keys with one
 * 256-bit conversion into the lanes the inserts built (the same bits). A decode row's
 * scores over 1,024 keys in cache (a C harness, three heads of one KV head): 19.0 → 13.9 k
 * TSC ticks; with the key loop's whole-group path (float-kernels.inc.c's whole_group) a
 * decode row over 1,024 keys in cache 73–79 → 55 µs. In a decode step it buys little: bare
 * SmolLM2 Q4_1 steps at 128 and 1,024 tokens of context, both layouts in one process
 * (each its own sequences, steps alternated over the four, six repetitions of 96), 1,024
 * tokens 5.58–6.33 ms by rows against 5.60–6.30 grouped, growth ×1.236 against ×1.215
 * (medians). There the step streams its K/V at about the rate it streams its weights
 * (~23 GB/s over two threads on a Zen 4 box whose plain read loop streams 27–31), so the
 * step at 1,024 tokens costs about its bytes: 98 MB of weights and 23.6 MB of f16 K/V
 * against 2.95 MB at 128, ×1.205.
 */
#define WIDE_ATTENTION
#define WIDE static inline __attribute__((always_inline, target("avx2,f16c")))
WIDE __m128 kv4_wide(const void *base, size_t i, int f16) {
  return f16 ? _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)((const uint16_t *)base + i))) : _mm_loadu_ps((const float *)base + i);
}

/*
 * Head A's 8-lane sums of keys 0, 1 (sA0) and 2, 3 (sA1) times q's values d..d+3, heads
 * written out rather than looped over: inlined into attention_rows the compiler left a
 * loop over the heads rolled, their sums in memory (a decode row over 1,024 grouped keys
 * in cache 94 against 78 µs by rows).
 */
#define QK4_HEAD(A, k01, k23)                                                   \
  if (NH > A) {                                                                 \
    const __m256 qv = _mm256_broadcast_ps((const __m128 *)(qh[A] + d));         \
    s##A##0 = _mm256_add_ps(s##A##0, _mm256_mul_ps(qv, k01));                   \
    s##A##1 = _mm256_add_ps(s##A##1, _mm256_mul_ps(qv, k23));                   \
  }
#define QK4_STEP(k01, k23) QK4_HEAD(0, k01, k23) QK4_HEAD(1, k01, k23) QK4_HEAD(2, k01, k23) QK4_HEAD(3, k01, k23)

WIDE void qk4_keys(const float *const *qh, const void *const *kp, const int *km, int f16, int D, int NH, float *scores, int S, v128_t *mxv) {
  __m256 s00 = _mm256_setzero_ps(), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00, s30 = s00, s31 = s00;
  const uint16_t *group = (const uint16_t *)kp[0];
  if (f16 && km[0] == 4 && km[1] == 4 && km[2] == 4 && km[3] == 4 && kp[1] == group + 4 && kp[2] == group + 8 && kp[3] == group + 12) {
    /* One group of grouped keys (key_offset): each pair's pieces are eight values in a row, widened in one conversion into the lanes below. */
    for (int d = 0; d < D; d += 4) {
      const __m256 k01 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(group + 4 * d)));
      const __m256 k23 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(group + 4 * d + 8)));
      QK4_STEP(k01, k23)
    }
  } else {
    for (int d = 0; d < D; d += 4) {
      const __m256 k01 = _mm256_set_m128(kv4_wide(kp[1], (size_t)d * km[1], f16), kv4_wide(kp[0], (size_t)d * km[0], f16));
      const __m256 k23 = _mm256_set_m128(kv4_wide(kp[3], (size_t)d * km[3], f16), kv4_wide(kp[2], (size_t)d * km[2], f16));
      QK4_STEP(k01, k23)
    }
  }
#undef QK4_STEP
#undef QK4_HEAD
  const __m256 s[HEADS_AT_ONCE][2] = {{s00, s01}, {s10, s11}, {s20, s21}, {s30, s31}};
  for (int a = 0; a < NH; a++) {
    const v128_t s0 = _mm_castps_si128(_mm256_castps256_ps128(s[a][0])), s1 = _mm_castps_si128(_mm256_extractf128_ps(s[a][0], 1));
    const v128_t s2 = _mm_castps_si128(_mm256_castps256_ps128(s[a][1])), s3 = _mm_castps_si128(_mm256_extractf128_ps(s[a][1], 1));
    const v128_t t01l = wasm_i32x4_shuffle(s0, s1, 0, 4, 1, 5), t23l = wasm_i32x4_shuffle(s2, s3, 0, 4, 1, 5);
    const v128_t t01h = wasm_i32x4_shuffle(s0, s1, 2, 6, 3, 7), t23h = wasm_i32x4_shuffle(s2, s3, 2, 6, 3, 7);
    const v128_t l0 = wasm_i64x2_shuffle(t01l, t23l, 0, 2), l1 = wasm_i64x2_shuffle(t01l, t23l, 1, 3);
    const v128_t l2 = wasm_i64x2_shuffle(t01h, t23h, 0, 2), l3 = wasm_i64x2_shuffle(t01h, t23h, 1, 3);
    const v128_t sc = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_add(l0, l1), l2), l3);
    wasm_v128_store(scores + (size_t)a * S, sc);
    mxv[a] = wasm_f32x4_pmax(mxv[a], sc);
  }
}

/* f16 a constant in each copy of the loop (the compiler left the test inside it). */
WIDE void qk4(const float *const *qh, const void *const *kp, const int *km, int f16, int D, int NH, float *scores, int S, v128_t *mxv) {
  if (f16) qk4_keys(qh, kp, km, 1, D, NH, scores, S, mxv);
  else qk4_keys(qh, kp, km, 0, D, NH, scores, S, mxv);
}

/*
 * One pass of pv over NV·8 values (d .. d + 8·NV) of NH heads, NV·NH accumulators held in
 * registers (NV: 4, 3, 2 for 1–2, 3, 4 heads: sixteen ymm registers), each value row loaded
 * once for every head. Each lane sums its keys in key order, as the wasm pv does; keys of
 * chunks that lie wholly in the cache skip the visibility test. Measured alone (SmolLM2's
 * 3 heads per KV head, D = 64, a decode row over 1,024 f16 keys in 16-row chunks, in
 * cache, median of 7 × 300 calls): one layer's attention 125 µs with 8 values a pass (8
 * passes over the keys, three add chains each: bound by the adds' latency) → 89 µs with
 * this, softmax_heads below and f16 fixed per copy of the loops; of those 89, ~36 go to
 * the scores (qk4), ~16 to this, ~13 to softmax_heads. Tried and not kept: two keys' f16
 * values widened by one 256-bit conversion in qk4 (94 → 104 µs).
 */
WIDE void pv_pass(const float *const *sp, const float *inv, const void *const *vc, int f16, const int *rows, int chunks, int P, int c0, int r0, int j0, int end, const uint8_t *vi, int g, int D, int d, int NH, int NV, float *o) {
  __m256 acc[HEADS_AT_ONCE][4];
  for (int a = 0; a < NH; a++) for (int e = 0; e < NV; e++) acc[a][e] = _mm256_setzero_ps();
  for (int c = c0, first = r0, j = j0; c < chunks && j < end; c++, first = 0) {
    const int n = rows[c] - first < end - j ? rows[c] - first : end - j, cached = j + n <= P;
    const uint16_t *vh = (const uint16_t *)vc[c] + ((size_t)g * rows[2 * chunks + c] + first) * D + d;
    const float *vf = (const float *)vc[c] + ((size_t)g * rows[2 * chunks + c] + first) * D + d;
#define PV_KEY(R)                                                                                                                      \
  {                                                                                                                                    \
    __m256 v[4];                                                                                                                       \
    for (int e = 0; e < NV; e++) v[e] = f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vh + (size_t)(R) * D + 8 * e))) : _mm256_loadu_ps(vf + (size_t)(R) * D + 8 * e); \
    for (int a = 0; a < NH; a++) {                                                                                                     \
      const __m256 p = _mm256_set1_ps(sp[a][j + (R)]);                                                                                 \
      for (int e = 0; e < NV; e++) acc[a][e] = _mm256_add_ps(acc[a][e], _mm256_mul_ps(p, v[e]));                                       \
    }                                                                                                                                  \
  }
    if (cached) {
      for (int r = 0; r < n; r++) PV_KEY(r)
    } else {
      for (int r = 0; r < n; r++) {
        if (j + r >= P && !vi[j + r - P]) continue;
        PV_KEY(r)
      }
    }
#undef PV_KEY
    j += n;
  }
  for (int a = 0; a < NH; a++) {
    const __m256 iv = _mm256_set1_ps(inv[a]);
    for (int e = 0; e < NV; e++) _mm256_storeu_ps(o + (size_t)a * D + d + 8 * e, _mm256_mul_ps(acc[a][e], iv));
  }
}

/* The last four values when D is not a multiple of 8: the wasm code's 128-bit step. */
WIDE void pv_tail4(const float *const *sp, const float *inv, const void *const *vc, int f16, const int *rows, int chunks, int P, int c0, int r0, int j0, int end, const uint8_t *vi, int g, int D, int d, int NH, float *o) {
  __m128 acc[HEADS_AT_ONCE];
  for (int a = 0; a < NH; a++) acc[a] = _mm_setzero_ps();
  for (int c = c0, first = r0, j = j0; c < chunks && j < end; c++, first = 0) {
    size_t vrow = ((size_t)g * rows[2 * chunks + c] + first) * D + d;
    for (int r = first; r < rows[c] && j < end; r++, j++, vrow += D) {
      if (j >= P && !vi[j - P]) continue;
      const __m128 v = kv4_wide(vc[c], vrow, f16);
      for (int a = 0; a < NH; a++) acc[a] = _mm_add_ps(acc[a], _mm_mul_ps(_mm_set1_ps(sp[a][j]), v));
    }
  }
  for (int a = 0; a < NH; a++) _mm_storeu_ps(o + (size_t)a * D + d, _mm_mul_ps(acc[a], _mm_set1_ps(inv[a])));
}

#define PV_PASS(NHC, NVC) (f16 ? pv_pass(sp, inv, vc, 1, rows, chunks, P, c0, r0, j0, end, vi, g, D, d, NHC, NVC, o) : pv_pass(sp, inv, vc, 0, rows, chunks, P, c0, r0, j0, end, vi, g, D, d, NHC, NVC, o))
WIDE void pv(const float *const *sp, const float *inv, const void *const *vc, int f16, const int *rows, int chunks, int P, int c0, int r0, int j0, int end, const uint8_t *vi, int g, int D, int NH, float *o) {
  const int most = NH <= 2 ? 4 : NH == 3 ? 3 : 2;
  int d = 0;
  while (D - d >= 8) {
    const int nv = (D - d) / 8 < most ? (D - d) / 8 : most;
    switch (nv) {
      case 4: PV_PASS(NH, 4); break;
      case 3: PV_PASS(NH, 3); break;
      case 2: PV_PASS(NH, 2); break;
      default: PV_PASS(NH, 1); break;
    }
    d += 8 * nv;
  }
  if (d < D) pv_tail4(sp, inv, vc, f16, rows, chunks, P, c0, r0, j0, end, vi, g, D, d, NH, o);
}
#undef PV_PASS

/*
 * exp_f32x4's operations on eight lanes (each lane's bits equal exp_f32's: wasm-sse.h's
 * mapping, 256 bits wide), on `ways` (≤ EXP_WAYS) vectors at once, step by step across them
 * — each lane's operations and their order are the same however many, so the same bits
 * (native.test.ts). One exp is a chain of ~20 dependent steps (the polynomial alone
 * twelve), and a CPU profile of decode steps at 1,024 tokens of context put most of
 * softmax_heads' samples on that chain's adds, one vector a loop pass; softmax_heads now
 * takes EXP_WAYS at a time. Measured: a decode row over 1,024 f16 keys in cache, one thread
 * (scratch/attmicro.ts, the builds alternated seven times, each the least of 7 × 2,000
 * calls), median 73.6 → 71.5 µs; softmax_heads was ~16 % of the split row's samples.
 */
#define EXP_WAYS 4
WIDE void exp_f32x8_ways(__m256 *x, int ways) {
  __m256 r[EXP_WAYS], p[EXP_WAYS];
  __m256i n[EXP_WAYS];
  for (int e = 0; e < ways; e++) {
    x[e] = _mm256_max_ps(_mm256_min_ps(x[e], _mm256_set1_ps(87.f)), _mm256_set1_ps(-87.f));
    const __m256 fn = _mm256_mul_ps(x[e], _mm256_set1_ps(1.44269504089f));
    const __m256 half = _mm256_blendv_ps(_mm256_set1_ps(0.5f), _mm256_set1_ps(-0.5f), _mm256_cmp_ps(fn, _mm256_setzero_ps(), _CMP_LT_OQ));
    n[e] = _mm256_cvttps_epi32(_mm256_add_ps(fn, half));
  }
  for (int e = 0; e < ways; e++) {
    const __m256 nf = _mm256_cvtepi32_ps(n[e]);
    r[e] = _mm256_sub_ps(_mm256_sub_ps(x[e], _mm256_mul_ps(nf, _mm256_set1_ps(0.693145751953125f))), _mm256_mul_ps(nf, _mm256_set1_ps(1.428606765330187e-06f)));
    p[e] = _mm256_add_ps(_mm256_set1_ps(1.f / 120), _mm256_mul_ps(r[e], _mm256_set1_ps(1.f / 720)));
  }
  for (int e = 0; e < ways; e++) p[e] = _mm256_add_ps(_mm256_set1_ps(1.f / 24), _mm256_mul_ps(r[e], p[e]));
  for (int e = 0; e < ways; e++) p[e] = _mm256_add_ps(_mm256_set1_ps(1.f / 6), _mm256_mul_ps(r[e], p[e]));
  for (int e = 0; e < ways; e++) p[e] = _mm256_add_ps(_mm256_set1_ps(0.5f), _mm256_mul_ps(r[e], p[e]));
  for (int e = 0; e < ways; e++) p[e] = _mm256_add_ps(_mm256_set1_ps(1.f), _mm256_mul_ps(r[e], p[e]));
  for (int e = 0; e < ways; e++) p[e] = _mm256_add_ps(_mm256_set1_ps(1.f), _mm256_mul_ps(r[e], p[e]));
  for (int e = 0; e < ways; e++) x[e] = _mm256_mul_ps(p[e], _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n[e], _mm256_set1_epi32(127)), 23)));
}

WIDE __m256 exp_f32x8(__m256 x) {
  exp_f32x8_ways(&x, 1);
  return x;
}

/*
 * The q8 KV cache's two inner loops (float-kernels.inc.c leaves its 128-bit ones out under
 * WIDE_ATTENTION). qk4_q8: each key's integer dot product with the int8 query as 32 bytes
 * a step — |q| (unsigned) times k with q's sign (vpsignb), byte pairs summed by vpmaddubsw
 * (at most 2·127·127, no saturation), then into 32-bit lanes — exact, so the sums equal the
 * wasm build's whatever their order; the float steps after them are the same ones. pv_q8:
 * eight values of a head a vector, widened from int8 (vpmovsxbd, vcvtdq2ps), each lane
 * summing (p·scale)·v in key order as the wasm loop does.
 */
#define QK4_Q8_NATIVE
WIDE float q8_scale_at(const int8_t *row, int D) {
  float s;
  __builtin_memcpy(&s, row + D, 4);
  return s;
}

/* The int8 query of a head as the products take it: |q| and q (for the signs), D ≤ 512. */
typedef struct {
  uint8_t abs[512];
  int8_t q[512];
} QueryQ8;

WIDE __m256i q8_dot32(__m256i k, const QueryQ8 *qa, int d) {
  const __m256i q = _mm256_loadu_si256((const __m256i *)(qa->q + d)), a = _mm256_loadu_si256((const __m256i *)(qa->abs + d));
  return _mm256_madd_epi16(_mm256_maddubs_epi16(a, _mm256_sign_epi8(k, q)), _mm256_set1_epi16(1));
}

WIDE void qk4_q8(const QueryQ8 *qq, const float *qs, const int8_t *const *kr, int D, int NH, float *scores, int S, v128_t *mxv) {
  __m256i acc[HEADS_AT_ONCE][4];
  const int d32 = D & ~31;
  /* Two keys at a time, so that their NH·2 sums stay in registers. */
  for (int e = 0; e < 4; e += 2) {
    __m256i s0[HEADS_AT_ONCE], s1[HEADS_AT_ONCE];
    for (int a = 0; a < NH; a++) s0[a] = s1[a] = _mm256_setzero_si256();
    for (int d = 0; d < d32; d += 32) {
      const __m256i k0 = _mm256_loadu_si256((const __m256i *)(kr[e] + d)), k1 = _mm256_loadu_si256((const __m256i *)(kr[e + 1] + d));
      for (int a = 0; a < NH; a++) {
        s0[a] = _mm256_add_epi32(s0[a], q8_dot32(k0, &qq[a], d));
        s1[a] = _mm256_add_epi32(s1[a], q8_dot32(k1, &qq[a], d));
      }
    }
    for (int a = 0; a < NH; a++) acc[a][e] = s0[a], acc[a][e + 1] = s1[a];
  }
  const int d = d32;
  const __m128 ks = _mm_setr_ps(q8_scale_at(kr[0], D), q8_scale_at(kr[1], D), q8_scale_at(kr[2], D), q8_scale_at(kr[3], D));
  for (int a = 0; a < NH; a++) {
    /* Each key's eight lanes summed: two horizontal adds, then the two halves. */
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(acc[a][0], acc[a][1]), _mm256_hadd_epi32(acc[a][2], acc[a][3]));
    __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    if (d < D) {
      int32_t tail[4];
      for (int e = 0; e < 4; e++) {
        int32_t t = 0;
        for (int i = d; i < D; i++) t += (int32_t)kr[e][i] * qq[a].q[i];
        tail[e] = t;
      }
      sum = _mm_add_epi32(sum, _mm_loadu_si128((const __m128i *)tail));
    }
    const __m128 sc = _mm_mul_ps(_mm_cvtepi32_ps(sum), _mm_mul_ps(_mm_set1_ps(qs[a]), ks));
    _mm_storeu_ps(scores + (size_t)a * S, sc);
    mxv[a] = _mm_castps_si128(_mm_max_ps(sc, _mm_castsi128_ps(mxv[a])));
  }
}

WIDE void pv_q8_pass(const float *const *sp, const float *inv, const void *const *vc, const int *rows, int chunks, int P, int c0, int r0, int j0, int end, const uint8_t *vi, int g, int D, int d, int NH, int NV, float *o) {
  __m256 acc[HEADS_AT_ONCE][4];
  for (int a = 0; a < NH; a++) for (int e = 0; e < NV; e++) acc[a][e] = _mm256_setzero_ps();
  for (int c = c0, first = r0, j = j0; c < chunks && j < end; c++, first = 0) {
    const int n = rows[c] - first < end - j ? rows[c] - first : end - j, cached = j + n <= P;
    const size_t row_bytes = (size_t)D + 4;
    const int8_t *base = (const int8_t *)vc[c] + ((size_t)g * rows[2 * chunks + c] + first) * row_bytes;
    for (int r = 0; r < n; r++) {
      if (!cached && j + r >= P && !vi[j + r - P]) continue;
      const int8_t *row = base + (size_t)r * row_bytes;
      __m256 v[4];
      for (int e = 0; e < NV; e++) v[e] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(row + d + 8 * e))));
      const float vs = q8_scale_at(row, D);
      for (int a = 0; a < NH; a++) {
        const __m256 p = _mm256_set1_ps(sp[a][j + r] * vs);
        for (int e = 0; e < NV; e++) acc[a][e] = _mm256_add_ps(acc[a][e], _mm256_mul_ps(p, v[e]));
      }
    }
    j += n;
  }
  for (int a = 0; a < NH; a++) {
    const __m256 iv = _mm256_set1_ps(inv[a]);
    for (int e = 0; e < NV; e++) _mm256_storeu_ps(o + (size_t)a * D + d + 8 * e, _mm256_mul_ps(acc[a][e], iv));
  }
}

/* The last four values when D is not a multiple of 8, on four lanes. */
WIDE void pv_q8_tail4(const float *const *sp, const float *inv, const void *const *vc, const int *rows, int chunks, int P, int c0, int r0, int j0, int end, const uint8_t *vi, int g, int D, int d, int NH, float *o) {
  __m128 acc[HEADS_AT_ONCE];
  for (int a = 0; a < NH; a++) acc[a] = _mm_setzero_ps();
  for (int c = c0, first = r0, j = j0; c < chunks && j < end; c++, first = 0) {
    const int8_t *base = (const int8_t *)vc[c] + ((size_t)g * rows[2 * chunks + c] + first) * ((size_t)D + 4);
    for (int r = first; r < rows[c] && j < end; r++, j++, base += D + 4) {
      if (j >= P && !vi[j - P]) continue;
      int32_t four;
      __builtin_memcpy(&four, base + d, 4);
      const __m128 v = _mm_cvtepi32_ps(_mm_cvtepi8_epi32(_mm_cvtsi32_si128(four)));
      const float vs = q8_scale_at(base, D);
      for (int a = 0; a < NH; a++) acc[a] = _mm_add_ps(acc[a], _mm_mul_ps(_mm_set1_ps(sp[a][j] * vs), v));
    }
  }
  for (int a = 0; a < NH; a++) _mm_storeu_ps(o + (size_t)a * D + d, _mm_mul_ps(acc[a], _mm_set1_ps(inv[a])));
}

#define PV_Q8_PASS(NHC, NVC) pv_q8_pass(sp, inv, vc, rows, chunks, P, c0, r0, j0, end, vi, g, D, d, NHC, NVC, o)
WIDE void pv_q8(const float *const *sp, const float *inv, const void *const *vc, const int *rows, int chunks, int P, int c0, int r0, int j0, int end, const uint8_t *vi, int g, int D, int NH, float *o) {
  const int most = NH <= 2 ? 4 : NH == 3 ? 3 : 2;
  int d = 0;
  while (D - d >= 8) {
    const int nv = (D - d) / 8 < most ? (D - d) / 8 : most;
    switch (nv) {
      case 4: PV_Q8_PASS(NH, 4); break;
      case 3: PV_Q8_PASS(NH, 3); break;
      case 2: PV_Q8_PASS(NH, 2); break;
      default: PV_Q8_PASS(NH, 1); break;
    }
    d += 8 * nv;
  }
  if (d < D) pv_q8_tail4(sp, inv, vc, rows, chunks, P, c0, r0, j0, end, vi, g, D, d, NH, o);
}
#undef PV_Q8_PASS
#undef WIDE

/*
 * Scores of a prompt's rows from its keys transposed (KT_TILE; float-kernels.inc.c's
 * attention_rows builds the tile for calls of KT_ROWS rows or more, attend_keys reads it):
 * kv head g's f16 key j, value d at kt_tile[(g·D + d)·kt_keys + j], over the first kt_keys
 * cached keys (a multiple of 8), so that 8 keys' values at one d load as one vector and a
 * head's 8 scores need no transpose. Each score keeps the bits qk4 gives it: four sums over
 * d ≡ 0, 1, 2, 3 (mod 4) in increasing d, added ((s0 + s1) + s2) + s3. qk4 spends 4
 * conversions, 2 inserts and 3 broadcasts per 4 keys × 4 values × 3 heads, and a transpose
 * per 4 keys; here a conversion serves 8 keys × 3 heads. Measured (SmolLM2 shapes, f16,
 * one thread, the attention of one call, builds alternated, best of 7–9): 128 rows after
 * 1,920 keys 17.1–21.0 → 12.6–14.2 ms (the tile's build included), 16 rows 3.0 → 1.7–2.3,
 * 8 rows after 500 keys 0.28–0.38 → 0.21; at 4 rows after 1,920 keys the same within noise,
 * hence KT_ROWS. The tile in blocks of 8 keys (each group's 64 values × 8 keys one
 * contiguous run) measured the same within noise (3,968 keys: 26.7–30.2 → 25.5–27.5 ms).
 * A 2,048-token SmolLM2 prefill in 128-token chunks, one thread, three
 * alternated pairs: 8.1–9.4 → 6.7–7.6 s. The tile is one layer's K of the call's KV heads
 * (a scratch per thread, kept at its largest like the scores'). Decode rows do not use it:
 * a copy of every cached key chunk's keys kept transposed (in blocks of 8 keys, 1 KB per
 * KV head, written when a chunk is stored or joined) took a decode row over 1,024 keys
 * in cache from 83 to 54 µs, same bits, but not in a real step, where a layer's K and V
 * (786 KB at 1,024 tokens) come from memory after the weights' stream evicted them: rows
 * 104 vs transposed 126 µs with 30 layers' KV rotating (87 vs 85 once the copy's blocks
 * were asked for two ahead), and SmolLM2's decode step at 1,024 tokens spent ~100 µs a
 * layer in attention either way (TSC over 1,920 layers, builds alternated). At one thread
 * the row is bound by memory there (~8 GB/s against ~15–25 for a plain stream), and the
 * copy only added the keys' bytes again. Measured too and not kept: the software
 * prefetch 32 keys ahead, and a second prefetch into L2 128 or 256 keys ahead (slower).
 * The int8 K/V cache (q8 below: one f32 scale a row and KV head, scores as exact integer
 * dot products on the query quantized alike, so both builds' bits still agree) halves the
 * bytes, but widening the values from int8 costs what the integer scores save — a row over
 * 1,024 keys 80 → 74 µs on one thread — so it is an opt-in (SKEIN_KV_CACHE=q8, --kv-cache
 * q8), not the default: `bench kv` (SmolLM2 Q4_1, two threads, 5 repetitions alternating
 * the caches) read decode 1.06× f16's speed at 1,024 tokens of context and 1.15× at 4,096,
 * growth ×1.25 against ×1.23 (no gain), NLL over 4,116 positions of passage text +0.0003
 * nats a token, top-1 tokens equal at 96.5 % of them.
 *
 * Why the context growth (step at 1,024 tokens ÷ at 128) stays near ×1.2 on the 2-vCPU
 * boxes: a decode step at 128 tokens reads ~101 MB (98 MB of weights) in ~6 ms on a quiet
 * box, ~17 GB/s, and a plain two-thread read loop on the same box streams 16–21 GB/s
 * (a C loop of 256-bit loads, alternated with the step's measurement), so it is bound by memory
 * and 1,024 tokens' 20.6 MB more of f16 K/V cost ≥ 1.0–1.3 ms whatever attention does:
 * ×1.17–1.21 at best. Measured and not kept: asking for the next layer's K/V rows (its
 * lone decode row's chunks) from this layer's o/gate/up/down products, a line or two per
 * weight block, so that attention finds them in L2/L3 — attention at 1,024 keys 184–274 →
 * 161–214 k TSC ticks a layer, but the products 227–335 → 301–366, the step's growth
 * ×1.18–1.31 → ×1.24–1.35 (three alternations): the products stream at the box's rate
 * already and pay for every byte moved into their time.
 */
#define KT_TILE
#define KT_ROWS 8
static _Thread_local void *kt_tile;
static _Thread_local size_t kt_tile_bytes;
static _Thread_local int kt_keys;

static inline ptrdiff_t key_offset(int g, int stride, int kf, int r, int D, int *m);

/* The tile of KV heads g0..g1-1 (of KV) over keys 0..keys-1; kt_keys = keys, or 0 when out of memory (the scores then come the usual way). */
static void kt_build(const void *const *kc, const int *rows, int chunks, int keys, int KV, int g0, int g1, int D) {
  kt_keys = 0;
  uint16_t *tile = grown_buffer(&kt_tile, &kt_tile_bytes, sizeof *tile * KV * D * keys);
  if (tile == NULL) return;
  for (int g = g0; g < g1; g++) {
    uint16_t *t = tile + (size_t)g * D * keys;
    for (int c = 0, j = 0; c < chunks && j < keys; c++) {
      for (int r = 0; r < rows[c] && j < keys; r++, j++) {
        int m;
        const uint16_t *src = (const uint16_t *)kc[c] + key_offset(g, rows[chunks + c], rows[3 * chunks + c], r, D, &m);
        for (int d = 0; d < D; d += 4)
          for (int e = 0; e < 4; e++) t[(size_t)(d + e) * keys + j] = src[(size_t)d * m + e];
      }
    }
  }
  kt_keys = keys;
}

/* NH (≤ 3) heads' scores of keys j0..j1-1 (j1 - j0 a multiple of 8, within the tile) into scores[a·S + j], their maxima into mx. */
__attribute__((target("avx2,f16c"), always_inline)) static inline void kt_scores_heads(const float *const *qh, int NH, int g, int D, int j0, int j1, float *scores, int S, float *mx) {
  const uint16_t *t = (const uint16_t *)kt_tile + (size_t)g * D * kt_keys;
  __m256 m[3];
  for (int a = 0; a < NH; a++) m[a] = _mm256_set1_ps(-3.0e38f);
  for (int j = j0; j < j1; j += 8) {
    __m256 acc[3][4];
    for (int a = 0; a < NH; a++) for (int p = 0; p < 4; p++) acc[a][p] = _mm256_setzero_ps();
    for (int d = 0; d < D; d += 4) {
      for (int p = 0; p < 4; p++) {
        const __m256 k = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(t + (size_t)(d + p) * kt_keys + j)));
        for (int a = 0; a < NH; a++) acc[a][p] = _mm256_add_ps(acc[a][p], _mm256_mul_ps(_mm256_set1_ps(qh[a][d + p]), k));
      }
    }
    for (int a = 0; a < NH; a++) {
      const __m256 sc = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(acc[a][0], acc[a][1]), acc[a][2]), acc[a][3]);
      _mm256_storeu_ps(scores + (size_t)a * S + j, sc);
      m[a] = _mm256_max_ps(m[a], sc);
    }
  }
  for (int a = 0; a < NH; a++) {
    float lanes[8];
    _mm256_storeu_ps(lanes, m[a]);
    for (int e = 0; e < 8; e++) if (lanes[e] > mx[a]) mx[a] = lanes[e];
  }
}

__attribute__((target("avx2,f16c"))) static void kt_scores(const float *const *qh, int nh, int g, int D, int j0, int j1, float *scores, int S, float *mx) {
  for (int a0 = 0; a0 < nh; a0 += 3) {
    const int k = nh - a0 < 3 ? nh - a0 : 3;
    if (k == 3) kt_scores_heads(qh + a0, 3, g, D, j0, j1, scores + (size_t)a0 * S, S, mx + a0);
    else if (k == 2) kt_scores_heads(qh + a0, 2, g, D, j0, j1, scores + (size_t)a0 * S, S, mx + a0);
    else kt_scores_heads(qh + a0, 1, g, D, j0, j1, scores + (size_t)a0 * S, S, mx + a0);
  }
}

#include "../float-kernels.inc.c"

/*
 * float-kernels.inc.c's softmax_heads on eight lanes (exp_f32x8; four or one where a key
 * is not seen, through the same lanes), and the heads' sums in key order side by side —
 * four independent add chains where one head after another waited on each add's latency:
 * the same sums. Was ~20 % of a decode row's attention at 1,024 keys.
 */
__attribute__((target("avx2,f16c"))) static void softmax_heads(float *scores, int S, int nh, const float *mx, int j0, int end, const uint8_t *vi, int P, float *sum) {
  for (int a = 0; a < nh; a++) {
    float *sa = scores + (size_t)a * S;
    const __m256 m = _mm256_set1_ps(mx[a]);
    int j = j0;
    /* Keys every row sees (the cached ones), EXP_WAYS vectors at a time. */
    for (const int cached = end < P ? end : P; j + 8 * EXP_WAYS <= cached; j += 8 * EXP_WAYS) {
      __m256 x[EXP_WAYS];
      for (int e = 0; e < EXP_WAYS; e++) x[e] = _mm256_sub_ps(_mm256_loadu_ps(sa + j + 8 * e), m);
      exp_f32x8_ways(x, EXP_WAYS);
      for (int e = 0; e < EXP_WAYS; e++) _mm256_storeu_ps(sa + j + 8 * e, x[e]);
    }
    while (j < end) {
      if (j + 8 <= end && seen4(vi, P, j) && seen4(vi, P, j + 4)) {
        _mm256_storeu_ps(sa + j, exp_f32x8(_mm256_sub_ps(_mm256_loadu_ps(sa + j), m)));
        j += 8;
      } else if (j + 4 <= end && seen4(vi, P, j)) {
        _mm_storeu_ps(sa + j, _mm256_castps256_ps128(exp_f32x8(_mm256_castps128_ps256(_mm_sub_ps(_mm_loadu_ps(sa + j), _mm256_castps256_ps128(m))))));
        j += 4;
      } else {
        sa[j] = seen(vi, P, j) ? exp_f32(sa[j] - mx[a]) : 0.f;
        j++;
      }
    }
  }
  /* Missing heads read head 0's scores again: sums nobody keeps. */
  const float *s0 = scores, *s1 = scores + (size_t)(nh > 1) * S, *s2 = scores + (size_t)(nh > 2 ? 2 : 0) * S, *s3 = scores + (size_t)(nh > 3 ? 3 : 0) * S;
  float t0 = 0.f, t1 = 0.f, t2 = 0.f, t3 = 0.f;
  for (int j = j0; j < end; j++) t0 += s0[j], t1 += s1[j], t2 += s2[j], t3 += s3[j];
  const float t[4] = {t0, t1, t2, t3};
  for (int a = 0; a < nh; a++) sum[a] = t[a];
}

/*
 * F32/F16 products 8 columns per step (matmul_float does 4 + 4 in two accumulators, a
 * for columns i..i+3 of every 8 and b for i+4..i+7; one 8-lane accumulator holds exactly
 * those sums, lane for lane), NR rows (1 or 2) × TT tokens per pass (NR·TT ≤ 8), then a + b
 * and hsum_f32's order: the same bits whatever the tile. F16 weights widen exactly (F16C),
 * as f16x8_to_f32 does for finite values. Two rows × 4 tokens load each token's
 * activations once for both rows (22 instructions per 64 multiply-adds against 25 for one
 * row × 8 tokens): SmolLM2 F32, a 128-token prefill, builds alternated (medians of 5,
 * three pairs): ~790 → ~745 ms.
 */
__attribute__((target("avx2,f16c"), always_inline)) static inline void float_rows_tile(int type, const uint8_t *w, int r, int NR, int cols, const float *x, int TT, float *y, size_t rows) {
  __m256 acc[2][8];
  for (int k = 0; k < NR; k++) for (int t = 0; t < TT; t++) acc[k][t] = _mm256_setzero_ps();
  for (int i = 0; i < cols; i += 8) {
    __m256 wv[2];
    for (int k = 0; k < NR; k++) {
      const size_t at = (size_t)(r + k) * cols + i;
      wv[k] = type == T_F32 ? _mm256_loadu_ps((const float *)w + at) : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + at)));
    }
    for (int t = 0; t < TT; t++) {
      const __m256 xv = _mm256_loadu_ps(x + (size_t)t * cols + i);
      for (int k = 0; k < NR; k++) acc[k][t] = _mm256_add_ps(acc[k][t], _mm256_mul_ps(wv[k], xv));
    }
  }
  for (int k = 0; k < NR; k++) {
    for (int t = 0; t < TT; t++) {
      const __m128 ab = _mm_add_ps(_mm256_castps256_ps128(acc[k][t]), _mm256_extractf128_ps(acc[k][t], 1));
      y[(size_t)t * rows + r + k] = hsum_f32(_mm_castps_si128(ab));
    }
  }
}

__attribute__((target("avx2,f16c"))) static void matmul_float8(int type, const uint8_t *w, int rows, int cols, const float *x, int T, float *y, int r0, int r1) {
  /* Several tokens (prefill, verification): row pairs; one token streams row by row. */
  if (T >= 2) {
    for (; r0 + 2 <= r1; r0 += 2) {
      int t = 0;
      for (; t + 4 <= T; t += 4) float_rows_tile(type, w, r0, 2, cols, x + (size_t)t * cols, 4, y + (size_t)t * rows, rows);
      for (; t + 2 <= T; t += 2) float_rows_tile(type, w, r0, 2, cols, x + (size_t)t * cols, 2, y + (size_t)t * rows, rows);
      for (; t < T; t++) float_rows_tile(type, w, r0, 2, cols, x + (size_t)t * cols, 1, y + (size_t)t * rows, rows);
    }
  }
  for (int r = r0; r < r1; r++) {
    int t = 0;
    for (; t + 8 <= T; t += 8) float_rows_tile(type, w, r, 1, cols, x + (size_t)t * cols, 8, y + (size_t)t * rows, rows);
    for (; t + 4 <= T; t += 4) float_rows_tile(type, w, r, 1, cols, x + (size_t)t * cols, 4, y + (size_t)t * rows, rows);
    for (; t < T; t++) float_rows_tile(type, w, r, 1, cols, x + (size_t)t * cols, 1, y + (size_t)t * rows, rows);
  }
}

/*
 * The attention kernel takes chunk addresses; its callers hold the chunks' offsets in the
 * memory (wasm pointers): kc[c] and vc[c] as addresses, keys then values, in a table of this
 * thread's own (grown as needed). NULL when out of memory.
 */
static _Thread_local void *chunk_table_memory;
static _Thread_local size_t chunk_table_bytes;

static const void **chunk_addresses(uint8_t *m, const uint32_t *kc, const uint32_t *vc, int chunks) {
  const void **chunk_table = grown_buffer(&chunk_table_memory, &chunk_table_bytes, 2 * (size_t)chunks * sizeof *chunk_table);
  if (chunk_table == NULL) return NULL;
  for (int c = 0; c < chunks; c++) {
    chunk_table[c] = m + kc[c];
    chunk_table[chunks + c] = m + vc[c];
  }
  return chunk_table;
}

#include "pool.inc.c"
#include "layer.inc.c"

/* ---- Node-API glue: (memory id, the wasm export's arguments) → the kernel on that memory. ---- */

/* The first n arguments as uint32 (more are ignored, as a wasm export ignores them: the kernel thread passes a fixed count). */
static int read_args(napi_env env, napi_callback_info info, uint32_t *out, size_t n) {
  napi_value argv[17];
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < n) {
    napi_throw_type_error(env, NULL, "native kernels: wrong argument count");
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    if (napi_get_value_uint32(env, argv[i], &out[i]) != napi_ok) {
      napi_throw_type_error(env, NULL, "native kernels: arguments must be numbers");
      return 0;
    }
  }
  if (out[0] >= (uint32_t)memory_count) {
    napi_throw_range_error(env, NULL, "native kernels: unknown memory id");
    return 0;
  }
  return 1;
}

/* register(view over the whole shared memory) → id for the calls below. */
static napi_value js_register(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  size_t argc = 1, length, offset;
  napi_typedarray_type type;
  void *data;
  napi_value buffer;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 ||
      napi_get_typedarray_info(env, argv[0], &type, &length, &data, &buffer, &offset) != napi_ok || type != napi_uint8_array || offset != 0) {
    napi_throw_type_error(env, NULL, "native kernels: register takes a Uint8Array over a whole shared memory");
    return NULL;
  }
  if (memory_count == MAX_MEMORIES) {
    napi_throw_range_error(env, NULL, "native kernels: too many memories");
    return NULL;
  }
  memories[memory_count] = (uint8_t *)data;
  napi_create_uint32(env, (uint32_t)memory_count++, &result);
  return result;
}

/*
 * huge_pages(id, bytes) → whether the first `bytes` of registered memory `id` are now marked
 * for transparent huge pages (madvise MADV_HUGEPAGE; false where the kernel lacks them or
 * refuses). A decode step streams ~100 MB of weights and, at 1,024 tokens of context,
 * 24 MB of K/V through 4 KB pages — ~30,000 pages a step against a few thousand TLB
 * entries, each miss a page walk, nested under a VM's own. MatmulKernels grows its memory
 * in 2 MB steps from a 2 MB start and marks it after each growth, so every page is faulted
 * in whole. Measured (SmolLM2 Q4_1, two threads, bare decode steps at 128 and 1,024 tokens
 * of context alternating, three processes each way alternated, three repetitions each,
 * medians): 6.89 → 6.39 ms at 128, 8.53 → 7.77 ms at 1,024.
 */
static napi_value js_huge_pages(napi_env env, napi_callback_info info) {
  napi_value argv[2], result;
  size_t argc = 2;
  uint32_t id;
  double bytes;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 || napi_get_value_uint32(env, argv[0], &id) != napi_ok ||
      napi_get_value_double(env, argv[1], &bytes) != napi_ok || id >= (uint32_t)memory_count || !(bytes >= 0)) {
    napi_throw_type_error(env, NULL, "native kernels: huge_pages takes a registered memory's id and a byte count");
    return NULL;
  }
  int ok = 0;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), base = (uintptr_t)memories[id], start = base & ~(page - 1);
  ok = bytes > 0 && madvise((void *)start, (size_t)bytes + (base - start), MADV_HUGEPAGE) == 0;
#endif
  napi_get_boolean(env, ok, &result);
  return result;
}

/* A product's rows [lo, hi) (matmul_x4r and matmul_float both pass rows), in pieces over the pool. */
typedef struct {
  int type, rows, cols, T, lo, hi, pieces;
  const uint8_t *w;
  const int8_t *qa;
  const float *x, *da, *sa;
  float *y;
} ProductJob;

static void product_part(const void *job, int k) {
  const ProductJob *p = job;
  product_rows(p->type, p->w, p->rows, p->cols, p->x, p->qa, p->da, p->sa, p->T, p->y, p->lo + piece_start(p->hi - p->lo, p->pieces, k), p->lo + piece_start(p->hi - p->lo, p->pieces, k + 1));
}

/* matmul_x4r(id, type, w, rows, cols, qa, da, sa, T, y, g0, g1): Q4 groups, and Q8_0 ones on the same int8 activations (sa unused). */
static napi_value js_matmul_x4r(napi_env env, napi_callback_info info) {
  uint32_t a[12];
  if (!read_args(env, info, a, 12)) return NULL;
  uint8_t *m = memories[a[0]];
  if (a[1] != T_Q4_0 && a[1] != T_Q4_1 && a[1] != T_Q8_0) {
    napi_throw_range_error(env, NULL, "native kernels: matmul_x4r is for Q4_0, Q4_1 and Q8_0 groups");
    return NULL;
  }
  const int lo = 4 * (int)a[10], hi = 4 * (int)a[11];
  ProductJob job = {.type = (int)a[1], .w = m + a[2], .rows = (int)a[3], .cols = (int)a[4], .qa = (const int8_t *)(m + a[5]), .da = (const float *)(m + a[6]), .sa = (const float *)(m + a[7]), .T = (int)a[8], .y = (float *)(m + a[9]), .lo = lo, .hi = hi};
  job.pieces = hi > lo ? product_pieces(job.T, hi - lo, job.cols, pool_width()) : 0;
  pool_run(product_part, &job, job.pieces);
  return NULL;
}

static int cpu_has_avx512(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
}

/*
 * isa() → "avx512" or "avx2": which build of the quantized products runs (AVX-512 with
 * VNNI where the CPU has it, chosen at load); isa(name) switches, for tests and benches
 * that compare the two (the same bits), and throws for one this CPU lacks. The attention
 * stays on 256-bit vectors: 512-bit versions of its loops (four keys' scores a vector,
 * 16 values of a head, 16 keys' softmax; the same bits) measured no faster on Zen 4,
 * whose 512-bit arithmetic runs as two 256-bit halves: a decode row at 1,024 keys 65 µs
 * a layer in cache on 256 bits, 68–80 on 512.
 */
static napi_value js_isa(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  size_t argc = 1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc >= 1) {
    char name[16];
    size_t len;
    if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len) != napi_ok) {
      napi_throw_type_error(env, NULL, "native kernels: isa takes \"avx2\" or \"avx512\"");
      return NULL;
    }
    if (__builtin_strcmp(name, "avx2") == 0) use_avx512 = 0;
    else if (__builtin_strcmp(name, "avx512") == 0 && cpu_has_avx512()) use_avx512 = 1;
    else {
      napi_throw_range_error(env, NULL, __builtin_strcmp(name, "avx512") == 0 ? "native kernels: this CPU has no AVX-512 (F, BW, VL and VNNI)" : "native kernels: isa takes \"avx2\" or \"avx512\"");
      return NULL;
    }
  }
  napi_create_string_utf8(env, use_avx512 ? "avx512" : "avx2", NAPI_AUTO_LENGTH, &result);
  return result;
}

/*
 * repack_x4h(id, type, src, rows, cols, dst): a file's Q4_0 / Q4_1 / Q8_0 rows (rows a
 * multiple of 4) into x4h groups (above); the quants go exactly where matmul.c's
 * repack_x4 puts them.
 */
static void repack_x4h(int type, const uint8_t *src, int rows, int cols, uint8_t *dst) {
  const int nb = cols / QK;
  const size_t bs = type == T_Q8_0 ? 34 : type == T_Q4_1 ? 20 : 18, gb = x4h_group_bytes(type);
  const int head = type == T_Q4_1 ? 4 : 2;
  for (int g = 0; g < rows / 4; g++) {
    for (int b = 0; b < nb; b++) {
      uint8_t *o = dst + x4h_block_at(g, b, nb, rows) * gb;
      uint8_t *q = o + (type == T_Q8_0 ? 8 : x4h_quants_at(type));
      if (type != T_Q8_0) __builtin_memset(q, 0, 64);
      for (int k = 0; k < 4; k++) {
        const uint8_t *blk = src + ((size_t)(4 * g + k) * nb + b) * bs;
        __builtin_memcpy(o + 2 * k, blk, 2);
        if (type == T_Q4_1) __builtin_memcpy(o + 8 + 2 * k, blk + 2, 2);
        for (int c = 0; c < QK; c++) {
          const int pair = c >> 1, lane = 2 * k + (c & 1);
          if (type == T_Q8_0) {
            /* Column c sits at R8 position p of the activations (quantize_rows_r8); row k's byte of it at 16·(p/4) + 4k + p%4. */
            static const int R8_POSITION[8] = {0, 2, 4, 6, 1, 3, 5, 7};
            const int p = (c & ~7) + R8_POSITION[c & 7];
            q[16 * (p >> 2) + 4 * k + (p & 3)] = blk[head + c];
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

static napi_value js_repack_x4h(napi_env env, napi_callback_info info) {
  uint32_t a[6];
  if (!read_args(env, info, a, 6)) return NULL;
  if ((a[1] != T_Q4_0 && a[1] != T_Q4_1 && a[1] != T_Q8_0) || a[3] % 4 != 0 || a[4] % QK != 0) {
    napi_throw_range_error(env, NULL, "native kernels: repack_x4h takes Q4_0, Q4_1 or Q8_0 rows, a multiple of 4 of them, of whole blocks");
    return NULL;
  }
  uint8_t *m = memories[a[0]];
  repack_x4h((int)a[1], m + a[2], (int)a[3], (int)a[4], m + a[5]);
  return NULL;
}

/* matmul_float(id, type, w, rows, cols, x, T, y, r0, r1) */
static napi_value js_matmul_float(napi_env env, napi_callback_info info) {
  uint32_t a[10];
  if (!read_args(env, info, a, 10)) return NULL;
  uint8_t *m = memories[a[0]];
  const int lo = (int)a[8], hi = (int)a[9];
  ProductJob job = {.type = (int)a[1], .w = m + a[2], .rows = (int)a[3], .cols = (int)a[4], .x = (const float *)(m + a[5]), .T = (int)a[6], .y = (float *)(m + a[7]), .lo = lo, .hi = hi};
  job.pieces = hi > lo ? product_pieces(job.T, hi - lo, job.cols, pool_width()) : 0;
  pool_run(product_part, &job, job.pieces);
  return NULL;
}

/* store_f16(id, src, n, dst) */
static napi_value js_store_f16(napi_env env, napi_callback_info info) {
  uint32_t a[4];
  if (!read_args(env, info, a, 4)) return NULL;
  uint8_t *m = memories[a[0]];
  store_f16((const float *)(m + a[1]), (int)a[2], (uint16_t *)(m + a[3]));
  return NULL;
}

/* store_q8(id, src, rows, D, dst) */
static napi_value js_store_q8(napi_env env, napi_callback_info info) {
  uint32_t a[5];
  if (!read_args(env, info, a, 5)) return NULL;
  uint8_t *m = memories[a[0]];
  store_q8((const float *)(m + a[1]), (int)a[2], (int)a[3], m + a[4]);
  return NULL;
}

/* quantize_rows(id, x, T, cols, qa, da, sa, q4_order): q4_order 0 only (the Q4 products here take quantize_rows_r8's). */
static napi_value js_quantize_rows(napi_env env, napi_callback_info info) {
  uint32_t a[8];
  if (!read_args(env, info, a, 8)) return NULL;
  if (a[7] != 0) {
    napi_throw_range_error(env, NULL, "native kernels: quantize_rows here is for q4_order 0 only");
    return NULL;
  }
  uint8_t *m = memories[a[0]];
  quantize_rows_q8((const float *)(m + a[1]), (int)a[2], (int)a[3], (int16_t *)(m + a[4]), (float *)(m + a[5]), (float *)(m + a[6]));
  return NULL;
}

/* quantize_rows_r8(id, x, T, cols, qa, da, sa) */
static napi_value js_quantize_rows_r8(napi_env env, napi_callback_info info) {
  uint32_t a[7];
  if (!read_args(env, info, a, 7)) return NULL;
  uint8_t *m = memories[a[0]];
  quantize_rows_r8((const float *)(m + a[1]), (int)a[2], (int)a[3], (int8_t *)(m + a[4]), (float *)(m + a[5]), (float *)(m + a[6]));
  return NULL;
}

/* silu_mul(id, g, u, n) */
static napi_value js_silu_mul(napi_env env, napi_callback_info info) {
  uint32_t a[4];
  if (!read_args(env, info, a, 4)) return NULL;
  uint8_t *m = memories[a[0]];
  silu_mul((float *)(m + a[1]), (const float *)(m + a[2]), (int)a[3]);
  return NULL;
}

/* Attention's heads h0..h1 over the pool, a part per KV head (its query heads together, as one call takes them). */
typedef struct {
  const float *q;
  const void **addresses;
  const int *rows;
  const uint8_t *vis;
  float *out;
  int chunks, P, n, H, KVf, D, h0, h1, G;
  _Atomic int failed;
} HeadsJob;

static void heads_part(const void *job, int k) {
  HeadsJob *a = (HeadsJob *)job;
  int lo = (a->h0 / a->G + k) * a->G, hi = lo + a->G;
  if (lo < a->h0) lo = a->h0;
  if (hi > a->h1) hi = a->h1;
  float *scores = scores_scratch(a->P + a->n);
  if (scores == NULL) {
    atomic_store(&a->failed, 1);
    return;
  }
  attention(a->q, a->addresses, a->addresses + a->chunks, a->rows, a->chunks, a->P, a->n, a->vis, a->H, a->KVf, a->D, scores, a->out, NULL, lo, hi);
}

/*
 * attention(id, q, kc, vc, rows, chunks, P, n, vis, H, KVf, D, scores, out, last, h0, h1):
 * kc and vc are tables of chunk offsets in the memory (wasm pointers), turned into
 * addresses by chunk_addresses. last 0 is none.
 */
static napi_value js_attention(napi_env env, napi_callback_info info) {
  uint32_t a[17];
  if (!read_args(env, info, a, 17)) return NULL;
  uint8_t *m = memories[a[0]];
  const int chunks = (int)a[5];
  const void **addresses = chunk_addresses(m, (const uint32_t *)(m + a[2]), (const uint32_t *)(m + a[3]), chunks);
  if (addresses == NULL) {
    napi_throw_error(env, NULL, "native kernels: out of memory for the attention's chunk table");
    return NULL;
  }
  const int H = (int)a[9], KV = (int)(a[10] & 0xffff), h0 = (int)a[15], h1 = (int)a[16];
  /* `last` (the mean over heads of the last row's probabilities) needs every head in one call. */
  if (a[14] == 0 && pool_width() > 1 && KV > 0 && H % KV == 0 && h1 > h0) {
    const int G = H / KV;
    HeadsJob job = {.q = (const float *)(m + a[1]), .addresses = addresses, .rows = (const int *)(m + a[4]), .vis = m + a[8], .out = (float *)(m + a[13]),
                    .chunks = chunks, .P = (int)a[6], .n = (int)a[7], .H = H, .KVf = (int)a[10], .D = (int)a[11], .h0 = h0, .h1 = h1, .G = G};
    pool_run(heads_part, &job, (h1 - 1) / G - h0 / G + 1);
    if (atomic_load(&job.failed)) napi_throw_error(env, NULL, "native kernels: out of memory for the attention's scores");
    return NULL;
  }
  attention((const float *)(m + a[1]), addresses, addresses + chunks, (const int *)(m + a[4]), chunks, (int)a[6], (int)a[7], m + a[8], H, (int)a[10], (int)a[11],
            (float *)(m + a[12]), (float *)(m + a[13]), a[14] ? (float *)(m + a[14]) : NULL, h0, h1);
  return NULL;
}

static napi_value js_block_layers(napi_env env, napi_callback_info info) {
  uint32_t a[3];
  if (!read_args(env, info, a, 3)) return NULL;
  uint8_t *m = memories[a[0]];
  const uint32_t *plans = (const uint32_t *)(m + a[1]);
  for (uint32_t i = 0; i < a[2]; i++) {
    if (plans[i] % 8 != 0) {
      napi_throw_range_error(env, NULL, "native kernels: block_layers' plans must be 8-byte aligned");
      return NULL;
    }
  }
  /* The helpers spin from one product to the next while the layers run. */
  pool_hot(1);
  for (uint32_t i = 0; i < a[2]; i++) {
    const char *failed = block_layer(m, (const int32_t *)(m + plans[i]));
    if (failed != NULL) {
      pool_hot(0);
      napi_throw_error(env, NULL, failed);
      return NULL;
    }
  }
  pool_hot(0);
  return NULL;
}

/* pool(threads, pieceWork?) → the threads this thread's products and attention now run on (pool.inc.c: helpers + 1; 1 where there is no pool); pieceWork: the least multiply-adds of a product's piece (tests lower it). */
static napi_value js_pool(napi_env env, napi_callback_info info) {
  napi_value argv[2], r;
  size_t argc = 2;
  uint32_t threads, piece_work = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_uint32(env, argv[0], &threads) != napi_ok ||
      (argc >= 2 && napi_get_value_uint32(env, argv[1], &piece_work) != napi_ok)) {
    napi_throw_type_error(env, NULL, "native kernels: pool takes a number of threads (and a piece's least work)");
    return NULL;
  }
  napi_create_int32(env, pool_set_threads(threads > 64 ? 64 : (int)threads, piece_work > 1u << 30 ? 1 << 30 : (int)piece_work), &r);
  return r;
}

/* pool_counts() → [parts posted to the pool's helpers so far, parts they ran]: tests and benches check that work was shared. */
static napi_value js_pool_counts(napi_env env, napi_callback_info info) {
  (void)info;
  uint64_t posted, helped;
  pool_counts(&posted, &helped);
  napi_value r, a, b;
  napi_create_array_with_length(env, 2, &r);
  napi_create_double(env, (double)posted, &a);
  napi_create_double(env, (double)helped, &b);
  napi_set_element(env, r, 0, a);
  napi_set_element(env, r, 1, b);
  return r;
}

/* Whether this CPU runs the AVX2 and F16C code above (checked before anything calls it). */
static napi_value js_supported(napi_env env, napi_callback_info info) {
  (void)info;
  __builtin_cpu_init();
  napi_value r;
  napi_get_boolean(env, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c"), &r);
  return r;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"supported", NULL, js_supported, NULL, NULL, NULL, napi_default, NULL},
      {"register", NULL, js_register, NULL, NULL, NULL, napi_default, NULL},
      {"huge_pages", NULL, js_huge_pages, NULL, NULL, NULL, napi_default, NULL},
      {"repack_x4h", NULL, js_repack_x4h, NULL, NULL, NULL, napi_default, NULL},
      {"matmul_x4r", NULL, js_matmul_x4r, NULL, NULL, NULL, napi_default, NULL},
      {"matmul_float", NULL, js_matmul_float, NULL, NULL, NULL, napi_default, NULL},
      {"silu_mul", NULL, js_silu_mul, NULL, NULL, NULL, napi_default, NULL},
      {"quantize_rows", NULL, js_quantize_rows, NULL, NULL, NULL, napi_default, NULL},
      {"quantize_rows_r8", NULL, js_quantize_rows_r8, NULL, NULL, NULL, napi_default, NULL},
      {"store_f16", NULL, js_store_f16, NULL, NULL, NULL, napi_default, NULL},
      {"store_q8", NULL, js_store_q8, NULL, NULL, NULL, napi_default, NULL},
      {"attention", NULL, js_attention, NULL, NULL, NULL, napi_default, NULL},
      {"block_layers", NULL, js_block_layers, NULL, NULL, NULL, napi_default, NULL},
      {"isa", NULL, js_isa, NULL, NULL, NULL, napi_default, NULL},
      {"pool", NULL, js_pool, NULL, NULL, NULL, napi_default, NULL},
      {"pool_counts", NULL, js_pool_counts, NULL, NULL, NULL, napi_default, NULL},
  };
  if (use_avx512 < 0) use_avx512 = cpu_has_avx512();
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
