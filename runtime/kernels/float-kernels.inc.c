/*
 * The float kernels of matmul.c — F32/F16 products, the SwiGLU gate, f16 narrowing and
 * attention — in a file of their own, because they are compiled twice: into the wasm
 * builds (matmul.c includes this file where these kernels always stood, so the .wasm is
 * unchanged) and into the native addon (native/kernels.c includes it after a header that
 * implements the wasm SIMD intrinsics used here with the same x86 operations lane for
 * lane: native/wasm-sse.h). One source, so both builds give the same bits; natively the
 * code gets real register allocation and the memory prefetches below.
 *
 * The includer defines: v128_t and the wasm_* intrinsics, QK, HEADS_AT_ONCE, PV_W, T_F32,
 * hsum_f32, f16_to_f32, KERNEL_EXPORT(name), and KV_PREFETCH(address) and
 * KV_PREFETCH_FAR(address) (into L1, into L2) where the target has prefetch instructions
 * (wasm has none).
 */

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
KERNEL_EXPORT("matmul_float")
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

/*
 * g[i] ← silu(g[i])·u[i] = g/(1 + e^−g)·u, the SwiGLU of one MLP, in place. Four values at
 * a time through exp_f32x4, whose lanes have exp_f32's bits, and the same negation,
 * division and product per lane: the values the one-at-a-time loop gives (it does the
 * tail). One at a time it was ~2.7 % of an engine decode step on the native build.
 */
KERNEL_EXPORT("silu_mul")
void silu_mul(float *g, const float *u, int n) {
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    const v128_t x = wasm_v128_load(g + i);
    const v128_t e = exp_f32x4(wasm_f32x4_neg(x));
    wasm_v128_store(g + i, wasm_f32x4_mul(wasm_f32x4_div(x, wasm_f32x4_add(wasm_f32x4_splat(1.f), e)), wasm_v128_load(u + i)));
  }
  for (; i < n; i++) g[i] = g[i] / (1.f + exp_f32(-g[i])) * u[i];
}

/*
 * The element-wise steps around a layer's products, so that its activations stay in this
 * memory between them (block-linear.ts did them in JavaScript on copies taken out and put
 * back: ~20 % of a 512-token prefill). Each is block-linear.ts's JavaScript arithmetic
 * operation for operation — in double, rounded to f32 once per value — so the same bits.
 */

/* RMSNorm of T rows: out = x·(1/sqrt(mean(x²) + eps))·w, the mean summed in double in column order. */
KERNEL_EXPORT("rms_norm_rows")
void rms_norm_rows(const float *x, int T, int cols, const float *w, double eps, float *out) {
  for (int t = 0; t < T; t++, x += cols, out += cols) {
    double ss = 0;
    for (int i = 0; i < cols; i++) ss += (double)x[i] * (double)x[i];
    const double s = 1 / __builtin_sqrt(ss / cols + eps);
    for (int i = 0; i < cols; i++) out[i] = (float)((double)x[i] * s * (double)w[i]);
  }
}

/* out = a + b, or (a + b) + bias with a bias (cols long, per row), for T rows; out may be a. */
KERNEL_EXPORT("add_rows")
void add_rows(const float *a, const float *b, const float *bias, int T, int cols, float *out) {
  for (int t = 0; t < T; t++)
    for (int i = 0; i < cols; i++, a++, b++, out++) *out = bias ? (float)((double)*a + (double)*b + (double)bias[i]) : (float)((double)*a + (double)*b);
}

/*
 * A product's rows into columns col .. col + n of out (T rows of width): scaled when scale
 * is not 1, then the bias (n long) added when there is one — the fused [q·scale | k] rows.
 */
KERNEL_EXPORT("place_rows")
void place_rows(const float *y, int T, int n, double scale, const float *bias, float *out, int width, int col) {
  for (int t = 0; t < T; t++, y += n) {
    float *o = out + (size_t)t * width + col;
    for (int i = 0; i < n; i++) {
      float v = scale == 1 ? y[i] : (float)((double)y[i] * scale);
      if (bias) v = (float)((double)v + (double)bias[i]);
      o[i] = v;
    }
  }
}

/*
 * Rotary embedding in place on T rows of width (a whole number of heads of dim): per row t
 * and head, [x1, x2] → [x1·cos − x2·sin, x2·cos + x1·sin] with cos/sin (T, dim/2), in double.
 */
KERNEL_EXPORT("rotate_rows")
void rotate_rows(float *out, int T, int width, int dim, const float *cos, const float *sin) {
  const int half = dim / 2;
  for (int t = 0; t < T; t++) {
    const float *c = cos + (size_t)t * half, *s = sin + (size_t)t * half;
    for (int h = 0; h < width; h += dim) {
      float *r = out + (size_t)t * width + h;
      for (int i = 0; i < half; i++) {
        const double x1 = r[i], x2 = r[half + i];
        r[i] = (float)(x1 * (double)c[i] - x2 * (double)s[i]);
        r[half + i] = (float)(x2 * (double)c[i] + x1 * (double)s[i]);
      }
    }
  }
}

/*
 * The q8 KV cache (MatmulKernels.store's 'q8'; the f16 one's half): each row of a KV head
 * is its D values as int8 and then one f32 scale, value ≈ q·scale with scale = max|x|/127,
 * as llama.cpp's q8_0 cache rounds 32 values at a time. A row of D + 4 bytes instead of
 * 2·D: a decode step at 1,024 tokens of context reads 418 KB of K and V a layer instead of
 * 786 KB (SmolLM2), and the scores come from exact integer dot products with the query
 * quantized the same way (attend_keys_q8).
 */
#define KV_Q8 2

/* Bytes of one stored row of a KV head: f32, f16 or q8 (D values and a scale). */
static inline size_t kv_row_bytes(int D, int type) { return type == KV_Q8 ? (size_t)D + 4 : (size_t)D * (type ? 2 : 4); }

/*
 * D values into int8 (round to nearest even, within ±127) and their scale max|x|/127.
 * Values are clamped to ±65504 first, as store_f16 does, so the scale stays finite.
 */
static void quantize_row_q8(const float *x, int D, int8_t *q, float *scale) {
  float amax = 0.f;
  for (int d = 0; d < D; d++) {
    const float a = x[d] < 0.f ? -x[d] : x[d];
    if (a > amax) amax = a;
  }
  if (amax > 65504.f) amax = 65504.f;
  const float inv = amax > 0.f ? 127.f / amax : 0.f;
  for (int d = 0; d < D; d++) {
    const float v = __builtin_rintf(x[d] * inv);
    q[d] = (int8_t)(v > 127.f ? 127.f : v < -127.f ? -127.f : v);
  }
  *scale = amax / 127.f;
}

/* rows rows of D f32 values from src as q8 rows at dst (D + 4 bytes each). */
KERNEL_EXPORT("store_q8")
void store_q8(const float *src, int rows, int D, uint8_t *dst) {
  for (int r = 0; r < rows; r++) {
    uint8_t *row = dst + (size_t)r * ((size_t)D + 4);
    float scale;
    quantize_row_q8(src + (size_t)r * D, D, (int8_t *)row, &scale);
    __builtin_memcpy(row + D, &scale, 4);
  }
}

/* Whether a row sees key j: every cached key (j < P), new key j − P where its mask says. */
/*
 * f32 → f16, round to nearest even, clamped to ±65504 (the attention kernel widens finite
 * values only; llama.cpp's f16 KV cache rounds the same way). n values from src to dst.
 */
KERNEL_EXPORT("store_f16")
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

/*
 * Where key r of a run lies (element offset from the run's start, kc[c]; negative when the
 * run starts inside a group) and `*m`, the elements from one of its four-value pieces to
 * the next. Keys stored by rows (kf < 0: values, f32 and q8 keys) keep a KV head's D values
 * of a row side by side (m = 1). Grouped keys (kf ≥ 0: the run's first row in its stored
 * chunk; MatmulKernels.store's f16 keys) lie in groups of four rows from the stored chunk's
 * first, the rows' pieces side by side — values d..d+3 of rows R..R+3, then d+4..d+7 of
 * them — and a last group of fewer rows the same way (m = its rows; one row: as by rows).
 * Two keys' pieces are then eight values in a row, widened in one conversion (native qk4).
 */
static inline ptrdiff_t key_offset(int g, int stride, int kf, int r, int D, int *m) {
  if (kf < 0) {
    *m = 1;
    return ((ptrdiff_t)g * stride + r) * D;
  }
  const int R = kf + r, g0 = R & ~3, left = stride - g0;
  *m = left < 4 ? left : 4;
  return ((ptrdiff_t)g * stride + g0 - kf) * D + (ptrdiff_t)(R - g0) * 4;
}

static inline const void *key_piece0(const void *base, int f16, ptrdiff_t at) { return f16 ? (const void *)((const uint16_t *)base + at) : (const void *)((const float *)base + at); }

static inline int seen(const uint8_t *vi, int P, int j) { return j < P || vi[j - P]; }

/* Key j's place in the chunks: chunk c, row r (c = chunks when j is the key count). */
typedef struct {
  int c, r, j;
} KeyAt;

static inline KeyAt key_at(const int *rows, int chunks, int j) {
  KeyAt k = {0, j, j};
  while (k.c < chunks && k.r >= rows[k.c]) k.r -= rows[k.c++];
  return k;
}

/*
 * Asks for the KV rows ahead of their use (KV_PREFETCH; nothing in wasm). The paged cache's
 * chunks lie apart in memory and decode appends one-row ones, so the hardware prefetcher,
 * which follows sequential runs, cannot see them coming: the engine's decode step at ~190
 * keys spent 13 % of its time in attention waiting on memory (the weights streamed through
 * the caches between two layers evict it).
 */
#ifdef KV_PREFETCH
/*
 * A cursor runs KEYS_AHEAD keys ahead of the key loop through the chunks and asks for each
 * key's row of KV head g, key and value, as the loop passes: a steady few requests per key
 * whatever the chunk sizes, and the values are in L2 when pv reads them. It replaced asking
 * for the next two chunks (up to 4 KB of each) as the loop entered a chunk: over the
 * engine's 16-row blocks that queued 64 requests per block at once and each block's 2 KB
 * run of a head still waited on memory. A decode row at 1,024 f16 keys with 30 layers' KV
 * out of cache (SmolLM2 shapes, builds interleaved, medians of 21): 16-row blocks 162 →
 * 119 µs a layer, one 1,023-row chunk 85 → 76; a SmolLM2 Q4_1 decode step at 1,024 tokens
 * of context (bench decode's alternating steps, 9 repetitions) 12.3 → 10.9 ms, at 128
 * 9.4 → 8.7. Asking for every KV head's rows on the first head's pass was slower (235 µs
 * over blocks); 8 to 64 keys ahead measured the same.
 */
#define KEYS_AHEAD 16
/*
 * A second cursor KEYS_FAR keys ahead asks for the same lines into L2 (KV_PREFETCH_FAR),
 * so that the first finds more of them there: L1's few miss buffers alone kept the row
 * waiting on memory (a CPU profile put a tenth of its samples on the instruction after a
 * prefetch). Bare SmolLM2 Q4_1 decode steps at 128 and 1,024 tokens of context, with and
 * without it alternated step by step in one process (eight repetitions of 128): the step
 * at 1,024 tokens shorter in 7 of 8 (median 7.82 → 7.54 ms), at 128 in 7 of 8, growth
 * ×1.175 → ×1.157 (medians); 128 keys ahead measured the same as 64. Asking for the V rows
 * into L2 instead of L1 (Stop 36) was slower.
 */
#define KEYS_FAR 64
typedef struct {
  int c, r;
} KvCursor;

/* One line asked for: into L1, or into L2 for the far cursor (KEYS_FAR); `far` is a constant once inlined. */
static inline __attribute__((always_inline)) void ask_line(const char *line, int far) {
  if (far) KV_PREFETCH_FAR(line);
  else KV_PREFETCH(line);
}

static inline __attribute__((always_inline)) void prefetch_key(KvCursor *at, const void *const *kc, const void *const *vc, const int *rows, int chunks, int g, int D, int f16, int far) {
  if (at->c >= chunks) return;
  const size_t elt = f16 ? 2 : 4, bytes = (size_t)D * elt;
  const size_t ko = kv_at(g, rows[chunks + at->c], at->r, D) * elt, vo = kv_at(g, rows[2 * chunks + at->c], at->r, D) * elt;
  for (size_t b = 0; b < bytes; b += 64) {
    ask_line((const char *)kc[at->c] + ko + b, far);
    ask_line((const char *)vc[at->c] + vo + b, far);
  }
  if (++at->r >= rows[at->c]) at->c++, at->r = 0;
}
#endif

/* Whether keys r..r+3 of chunk c are one whole group of grouped keys (key_offset), in that chunk. */
static inline int whole_group(const int *rows, int chunks, int c, int r) {
  const int kf = rows[3 * chunks + c];
  return kf >= 0 && ((kf + r) & 3) == 0 && r + 4 <= rows[c] && rows[chunks + c] - (kf + r) >= 4;
}

#ifdef KV_PREFETCH
/*
 * The cursor's next four keys at once where they are one whole group (whole_group): its
 * keys' 4·D values lie in one run, and so do their values' rows — the same lines asked for
 * as prefetch_key's four calls ask for, without a cursor step and two offsets a key. 0 (and
 * nothing asked for) elsewhere. With the key loop taking a whole group's place the same
 * way (whole_group), a decode row over 1,024 grouped f16 keys in cache (scratch/attmicro.ts,
 * one thread, three processes each) 66.6–67.6 → 54.6–55.6 µs; kept by rows 73–79 µs.
 */
static inline __attribute__((always_inline)) int prefetch_group(KvCursor *at, const void *const *kc, const void *const *vc, const int *rows, int chunks, int g, int D, int f16, int far) {
  if (at->c >= chunks || !whole_group(rows, chunks, at->c, at->r)) return 0;
  const size_t elt = f16 ? 2 : 4, bytes = 4 * (size_t)D * elt;
  int m;
  const char *k = (const char *)kc[at->c] + key_offset(g, rows[chunks + at->c], rows[3 * chunks + at->c], at->r, D, &m) * (ptrdiff_t)elt;
  const char *v = (const char *)vc[at->c] + kv_at(g, rows[2 * chunks + at->c], at->r, D) * elt;
  for (size_t b = 0; b < bytes; b += 64) {
    ask_line(k + b, far);
    ask_line(v + b, far);
  }
  if ((at->r += 4) >= rows[at->c]) at->c++, at->r = 0;
  return 1;
}

/* The cursor past the next four keys: a whole group at once, else key by key. */
static inline __attribute__((always_inline)) void prefetch_four(KvCursor *at, const void *const *kc, const void *const *vc, const int *rows, int chunks, int g, int D, int f16, int far) {
  for (int e = 0; e < 4;) {
    if (prefetch_group(at, kc, vc, rows, chunks, g, D, f16, far)) e += 4;
    else prefetch_key(at, kc, vc, rows, chunks, g, D, f16, far), e++;
  }
}
#endif

/* Whether it sees keys j..j+3. */
static inline int seen4(const uint8_t *vi, int P, int j) {
  if (j + 4 <= P) return 1;
  return seen(vi, P, j) && seen(vi, P, j + 1) && seen(vi, P, j + 2) && seen(vi, P, j + 3);
}

/*
 * Softmax numerators of nh heads' scores over keys j0..end-1 (head a's at scores + a·S) in
 * place — exp(s − mx[a]) for the keys the row sees, 0 for the others — and their sums in key
 * order into sum[a], as one row alone would sum them (an invisible key adds 0).
 */
#ifdef WIDE_ATTENTION
static void softmax_heads(float *scores, int S, int nh, const float *mx, int j0, int end, const uint8_t *vi, int P, float *sum);
#else
static inline __attribute__((always_inline)) void softmax_heads(float *scores, int S, int nh, const float *mx, int j0, int end, const uint8_t *vi, int P, float *sum) {
  for (int a = 0; a < nh; a++) {
    float *sa = scores + (size_t)a * S;
    const v128_t m = wasm_f32x4_splat(mx[a]);
    int j = j0;
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
    float t = 0.f;
    for (j = j0; j < end; j++) t += sa[j];
    sum[a] = t;
  }
}
#endif

#ifndef WIDE_ATTENTION
/* (The native build brings 256-bit versions of qk4, pv and softmax_heads with the same lanes: native/kernels.c.) */
/*
 * Scores of NH query heads (a constant once inlined) against four consecutive keys whose
 * first pieces are at kp[0..3], each next piece km[e] elements on (key_offset; in one chunk or across chunks): head a's four scores go to scores[a·S ..], and their maximum
 * into mxv[a]. Each key's dot product runs in four lanes over D and one transpose sums
 * the lanes in hsum_f32's order ((l0 + l1) + l2) + l3 — the bits a key gets alone. The
 * key rows are loaded once for all heads.
 */
static inline __attribute__((always_inline)) void qk4(const float *const *qh, const void *const *kp, const int *km, int f16, int D, int NH, float *scores, int S, v128_t *mxv) {
  v128_t s[HEADS_AT_ONCE][4];
  for (int a = 0; a < NH; a++) s[a][0] = s[a][1] = s[a][2] = s[a][3] = wasm_f32x4_splat(0.f);
  for (int d = 0; d < D; d += 4) {
    const v128_t k0v = kv4(kp[0], (size_t)d * km[0], f16), k1v = kv4(kp[1], (size_t)d * km[1], f16);
    const v128_t k2v = kv4(kp[2], (size_t)d * km[2], f16), k3v = kv4(kp[3], (size_t)d * km[3], f16);
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
 * o[a·D + d] = inv[a]·Σ_{j0 ≤ j < end} sp[a][j]·V_j[d] (key j0: chunk c0, row r0) for NH heads (a constant once inlined) sharing
 * KV head g (chunk c's rows of it at vc[c] + g·rows[2·chunks + c]·D, D floats apart), in blocks of 8 values so that
 * each value row is loaded once for every head. Keys a row does not see are skipped (their
 * probability is 0; adding ±0 would not change a sum either), the rest summed in key order.
 */
static inline __attribute__((always_inline)) void pv(const float *const *sp, const float *inv, const void *const *vc, int f16, const int *rows, int chunks, int P, int c0, int r0, int j0, int end, const uint8_t *vi, int g, int D, int NH, float *o) {
  for (int d = 0; d < D; d += PV_W) {
    const int w = D - d < PV_W ? (D - d) / 4 : PV_W / 4;
    v128_t acc[HEADS_AT_ONCE][PV_W / 4];
    for (int a = 0; a < NH; a++) for (int e = 0; e < PV_W / 4; e++) acc[a][e] = wasm_f32x4_splat(0.f);
    for (int c = c0, first = r0, j = j0; c < chunks && j < end; c++, first = 0) {
      size_t vrow = kv_at(g, rows[2 * chunks + c], first, D) + d;
      for (int r = first; r < rows[c] && j < end; r++, j++, vrow += D) {
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
#endif

/* A row's heads go HEADS_AT_ONCE at a time, never across a KV head: how many from hb (of h1) go together. */
static inline int head_block(int hb, int h1, int G) {
  int nh = (hb / G + 1) * G - hb;
  if (nh > h1 - hb) nh = h1 - hb;
  return nh > HEADS_AT_ONCE ? HEADS_AT_ONCE : nh;
}

/*
 * A row's keys split in two parts from this many visible keys on, each part with its own
 * softmax maximum and sum, merged at the end (merge_parts) — flash-decoding's split, so
 * that a decode row's attention runs on two threads over half the keys each
 * (block_layer), both threads streaming their own K/V rows. The split is part of what a
 * row computes whatever the thread count: one thread runs both parts one after the other,
 * so the bits do not depend on it. Measured (SmolLM2 shapes, a decode row over f16 keys,
 * two threads, scratch harness, means of 9 × 3,000 calls): against the KV heads split
 * 2 + 1 over the threads, 1,024 keys 53.1 → 43.6 µs in cache and 59.8 → 52.4 out of it
 * (30 layers' KV), 256 keys 12.8 → 10.8, 2,048 keys 104.7 → 84.2.
 */
#define SPLIT_KEYS 256

/* Keys past the last one a row sees play no part (a causal prefill row sees only the first P + i + 1): its loops stop at this end. */
static inline int row_end(int P, const uint8_t *vi, int S) {
  int end = S;
  while (end > P && !vi[end - 1 - P]) end--;
  return end;
}

/* The keys a row sees: the P cached ones and those of its first n new keys vi marks. */
static inline int visible_keys(int P, const uint8_t *vi, int n) {
  int visible = P;
  for (int j = 0; j < n; j++) visible += vi[j] != 0;
  return visible;
}

/*
 * Where a row's second part starts (a key index), or 0 when it attends in one part: at its
 * visible keys' half (a multiple of 4), counted in key order. A tree row's visible keys are
 * the ones its token's plain decode step sees, in the same order (its ancestors, then
 * itself), so both split at the same key and get the same bits.
 */
static int key_split(int P, const uint8_t *vi, int end) {
  const int visible = visible_keys(P, vi, end - P);
  if (visible < SPLIT_KEYS) return 0;
  const int half = visible / 2 & ~3;
  if (half <= P) return half;
  for (int j = P, ordinal = P; j < end; j++) {
    if (!vi[j - P]) continue;
    if (ordinal == half) return j;
    ordinal++;
  }
  return 0;
}

/*
 * The end of a part's scores, for attend_keys and attend_keys_q8 alike: the four-key
 * passes' maxima (mxv) folded into mx (a maximum is the same whatever the order it is
 * taken in), softmax numerators and sums (softmax_heads), and what pv takes: each head's
 * numerators and 1/sum when `normalise`, else 1.
 */
static inline __attribute__((always_inline)) void key_probabilities(float *scores, int S, int nh, v128_t *mxv, float *mx, int j0, int end, const uint8_t *vi, int P, float *sum, int normalise, const float **sp, float *inv) {
  for (int a = 0; a < nh; a++) {
    for (int e = 0; e < 4; e++) {
      const float x = wasm_f32x4_extract_lane(mxv[a], 0);
      if (x > mx[a]) mx[a] = x;
      mxv[a] = wasm_i32x4_shuffle(mxv[a], mxv[a], 1, 2, 3, 0);
    }
  }
  softmax_heads(scores, S, nh, mx, j0, end, vi, P, sum);
  for (int a = 0; a < nh; a++) {
    sp[a] = scores + (size_t)a * S;
    inv[a] = normalise ? 1.f / sum[a] : 1.f;
  }
}

/* Row r of KV head g in a q8 chunk of `stride` rows a head, and its scale. */
static inline const int8_t *q8_row(const void *base, int g, int stride, int r, int D) { return (const int8_t *)base + ((size_t)g * stride + r) * ((size_t)D + 4); }
static inline float q8_scale(const int8_t *row, int D) {
  float s;
  __builtin_memcpy(&s, row + D, 4);
  return s;
}

#ifndef QK4_Q8_NATIVE
/* A head's query quantized (quantize_row_q8), widened to int16 for i32x4.dot_i16x8. (The native build keeps int8 and |q|: native/kernels.c.) */
typedef struct {
  int16_t q[512];
} QueryQ8;
#endif

/* A head's query row as the q8 scores take it, and its scale. */
static inline void query_q8(const float *x, int D, QueryQ8 *out, float *scale) {
  int8_t q8[512];
  quantize_row_q8(x, D, q8, scale);
  for (int d = 0; d < D; d++) {
    out->q[d] = q8[d];
#ifdef QK4_Q8_NATIVE
    out->abs[d] = (uint8_t)(q8[d] < 0 ? -q8[d] : q8[d]);
#endif
  }
}

/* A key row's integer dot product with a quantized query, values d0..D-1: exact. */
static inline int32_t q8_dot(const int8_t *k, const QueryQ8 *q, int d0, int D) {
  int32_t s = 0;
  for (int d = d0; d < D; d++) s += (int32_t)k[d] * q->q[d];
  return s;
}

#ifndef QK4_Q8_NATIVE
/*
 * Scores of NH query heads (int16 copies of their int8 quantization, qq; scales qs)
 * against four q8 key rows kr[0..3]: score = (float)Σ q·k · (qs·ks), each key's integer sum
 * exact whatever the order it is added in, so the single-key path (q8_dot) and any wider
 * build get the same bits. Into scores[a·S ..], their maximum into mxv[a].
 */
static inline __attribute__((always_inline)) void qk4_q8(const QueryQ8 *qq, const float *qs, const int8_t *const *kr, int D, int NH, float *scores, int S, v128_t *mxv) {
  v128_t acc[HEADS_AT_ONCE][4];
  for (int a = 0; a < NH; a++) acc[a][0] = acc[a][1] = acc[a][2] = acc[a][3] = wasm_i32x4_splat(0);
  int d = 0;
  for (; d + 16 <= D; d += 16) {
    for (int e = 0; e < 4; e++) {
      const v128_t kv = wasm_v128_load(kr[e] + d);
      const v128_t lo = wasm_i16x8_extend_low_i8x16(kv), hi = wasm_i16x8_extend_high_i8x16(kv);
      for (int a = 0; a < NH; a++)
        acc[a][e] = wasm_i32x4_add(acc[a][e], wasm_i32x4_add(wasm_i32x4_dot_i16x8(lo, wasm_v128_load(qq[a].q + d)), wasm_i32x4_dot_i16x8(hi, wasm_v128_load(qq[a].q + d + 8))));
    }
  }
  const v128_t ks = wasm_f32x4_make(q8_scale(kr[0], D), q8_scale(kr[1], D), q8_scale(kr[2], D), q8_scale(kr[3], D));
  for (int a = 0; a < NH; a++) {
    const v128_t t01l = wasm_i32x4_shuffle(acc[a][0], acc[a][1], 0, 4, 1, 5), t23l = wasm_i32x4_shuffle(acc[a][2], acc[a][3], 0, 4, 1, 5);
    const v128_t t01h = wasm_i32x4_shuffle(acc[a][0], acc[a][1], 2, 6, 3, 7), t23h = wasm_i32x4_shuffle(acc[a][2], acc[a][3], 2, 6, 3, 7);
    v128_t sum = wasm_i32x4_add(wasm_i32x4_add(wasm_i64x2_shuffle(t01l, t23l, 0, 2), wasm_i64x2_shuffle(t01l, t23l, 1, 3)),
                                wasm_i32x4_add(wasm_i64x2_shuffle(t01h, t23h, 0, 2), wasm_i64x2_shuffle(t01h, t23h, 1, 3)));
    if (d < D) {
      int32_t tail[4];
      for (int e = 0; e < 4; e++) tail[e] = q8_dot(kr[e], &qq[a], d, D);
      sum = wasm_i32x4_add(sum, wasm_v128_load(tail));
    }
    const v128_t sc = wasm_f32x4_mul(wasm_f32x4_convert_i32x4(sum), wasm_f32x4_mul(wasm_f32x4_splat(qs[a]), ks));
    wasm_v128_store(scores + (size_t)a * S, sc);
    mxv[a] = wasm_f32x4_pmax(mxv[a], sc);
  }
}

/*
 * o[a·D + d] = inv[a]·Σ_j (sp[a][j]·vs_j)·v_j[d] over q8 value rows (vs_j: row j's scale),
 * keys j0..end-1 in key order, 16 values a pass, each value row widened once for every
 * head; keys a row does not see are skipped, as pv does.
 */
static inline __attribute__((always_inline)) void pv_q8(const float *const *sp, const float *inv, const void *const *vc, const int *rows, int chunks, int P, int c0, int r0, int j0, int end, const uint8_t *vi, int g, int D, int NH, float *o) {
  for (int d = 0; d < D; d += 16) {
    const int w = D - d < 16 ? (D - d) / 4 : 4;
    v128_t acc[HEADS_AT_ONCE][4];
    for (int a = 0; a < NH; a++) for (int e = 0; e < 4; e++) acc[a][e] = wasm_f32x4_splat(0.f);
    for (int c = c0, first = r0, j = j0; c < chunks && j < end; c++, first = 0) {
      const int stride = rows[2 * chunks + c];
      for (int r = first; r < rows[c] && j < end; r++, j++) {
        if (j >= P && !vi[j - P]) continue;
        const int8_t *row = q8_row(vc[c], g, stride, r, D);
        v128_t v[4];
        if (w == 4) {
          const v128_t b = wasm_v128_load(row + d);
          const v128_t lo = wasm_i16x8_extend_low_i8x16(b), hi = wasm_i16x8_extend_high_i8x16(b);
          v[0] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(lo));
          v[1] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(lo));
          v[2] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(hi));
          v[3] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(hi));
        } else {
          for (int e = 0; e < 4; e++) v[e] = e < w ? wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(wasm_i16x8_extend_low_i8x16(wasm_v128_load32_zero(row + d + 4 * e)))) : wasm_f32x4_splat(0.f);
        }
        const float vs = q8_scale(row, D);
        for (int a = 0; a < NH; a++) {
          const v128_t p = wasm_f32x4_splat(sp[a][j] * vs);
          for (int e = 0; e < 4; e++) if (e < w) acc[a][e] = wasm_f32x4_add(acc[a][e], wasm_f32x4_mul(p, v[e]));
        }
      }
    }
    for (int a = 0; a < NH; a++) {
      const v128_t iv = wasm_f32x4_splat(inv[a]);
      for (int e = 0; e < w; e++) wasm_v128_store(o + (size_t)a * D + d + 4 * e, wasm_f32x4_mul(acc[a][e], iv));
    }
  }
}

#endif

#ifdef KV_PREFETCH
/* prefetch_key for q8 rows (D + 4 bytes each). */
static inline __attribute__((always_inline)) void prefetch_key_q8(KvCursor *at, const void *const *kc, const void *const *vc, const int *rows, int chunks, int g, int D) {
  if (at->c >= chunks) return;
  const int8_t *k = q8_row(kc[at->c], g, rows[chunks + at->c], at->r, D), *v = q8_row(vc[at->c], g, rows[2 * chunks + at->c], at->r, D);
  for (int b = 0; b < D + 4; b += 64) {
    KV_PREFETCH(k + b);
    KV_PREFETCH(v + b);
  }
  /* The row's last byte: a row of D + 4 bytes may reach into one more line. */
  KV_PREFETCH(k + D + 3);
  KV_PREFETCH(v + D + 3);
  if (++at->r >= rows[at->c]) at->c++, at->r = 0;
}
#endif

/*
 * attend_keys over q8 chunks: the nh query rows quantized as the keys are (quantize_row_q8,
 * one scale per head), scores from integer dot products (qk4_q8), then the same softmax,
 * and the values (pv_q8). The query's rounding is the q8 cache's second error (llama.cpp's
 * q8_0 K cache quantizes the query the same way).
 */
static void attend_keys_q8(const float *const *qh, int nh, int g, const void *const *kc, const void *const *vc, const int *rows, int chunks, int P, const uint8_t *vi, int D, int S, KeyAt from, int end, float *scores, float *mx, float *sum, int normalise, float *o) {
  QueryQ8 qq[HEADS_AT_ONCE];
  float qs[HEADS_AT_ONCE];
  v128_t mxv[HEADS_AT_ONCE];
  for (int a = 0; a < nh; a++) {
    query_q8(qh[a], D, &qq[a], &qs[a]);
    mx[a] = -3.0e38f;
    mxv[a] = wasm_f32x4_splat(-3.0e38f);
  }
#ifdef KV_PREFETCH
  KvCursor ahead = {from.c, from.r};
  for (int e = 0; e < KEYS_AHEAD; e++) prefetch_key_q8(&ahead, kc, vc, rows, chunks, g, D);
#endif
  for (int c = from.c, r = from.r, j = from.j; j < end;) {
    while (r >= rows[c]) c++, r = 0;
    if (j + 4 <= end && seen4(vi, P, j)) {
#ifdef KV_PREFETCH
      for (int e = 0; e < 4; e++) prefetch_key_q8(&ahead, kc, vc, rows, chunks, g, D);
#endif
      const int8_t *kr[4];
      for (int e = 0; e < 4; e++) {
        while (r >= rows[c]) c++, r = 0;
        kr[e] = q8_row(kc[c], g, rows[chunks + c], r, D);
        r++;
      }
      switch (nh) {
        case 4: qk4_q8(qq, qs, kr, D, 4, scores + j, S, mxv); break;
        case 3: qk4_q8(qq, qs, kr, D, 3, scores + j, S, mxv); break;
        case 2: qk4_q8(qq, qs, kr, D, 2, scores + j, S, mxv); break;
        default: qk4_q8(qq, qs, kr, D, 1, scores + j, S, mxv); break;
      }
      j += 4;
      continue;
    }
#ifdef KV_PREFETCH
    prefetch_key_q8(&ahead, kc, vc, rows, chunks, g, D);
#endif
    if (seen(vi, P, j)) {
      const int8_t *kr = q8_row(kc[c], g, rows[chunks + c], r, D);
      const float ks = q8_scale(kr, D);
      for (int a = 0; a < nh; a++) {
        const float sc = (float)q8_dot(kr, &qq[a], 0, D) * (qs[a] * ks);
        scores[(size_t)a * S + j] = sc;
        if (sc > mx[a]) mx[a] = sc;
      }
    }
    r++, j++;
  }
  const float *sp[HEADS_AT_ONCE];
  float inv[HEADS_AT_ONCE];
  key_probabilities(scores, S, nh, mxv, mx, from.j, end, vi, P, sum, normalise, sp, inv);
  switch (nh) {
    case 4: pv_q8(sp, inv, vc, rows, chunks, P, from.c, from.r, from.j, end, vi, g, D, 4, o); break;
    case 3: pv_q8(sp, inv, vc, rows, chunks, P, from.c, from.r, from.j, end, vi, g, D, 3, o); break;
    case 2: pv_q8(sp, inv, vc, rows, chunks, P, from.c, from.r, from.j, end, vi, g, D, 2, o); break;
    default: pv_q8(sp, inv, vc, rows, chunks, P, from.c, from.r, from.j, end, vi, g, D, 1, o); break;
  }
}

/*
 * nh query heads (qh; one KV head g) of a row over the keys from `from` to end: their
 * scores into scores[a·S + j], softmax numerators against this part's maxima (mx, sum out)
 * and Σ p·V into o (nh·D), times 1/sum when `normalise` (the row in one part), else times 1
 * (a part for merge_parts).
 */
static inline __attribute__((always_inline)) void attend_keys(const float *const *qh, int nh, int g, const void *const *kc, const void *const *vc, const int *rows, int chunks, int P, const uint8_t *vi, int D, int f16, int S, KeyAt from, int end, float *scores, float *mx, float *sum, int normalise, float *o) {
  if (f16 == KV_Q8) {
    attend_keys_q8(qh, nh, g, kc, vc, rows, chunks, P, vi, D, S, from, end, scores, mx, sum, normalise, o);
    return;
  }
  v128_t mxv[HEADS_AT_ONCE];
  for (int a = 0; a < nh; a++) {
    mx[a] = -3.0e38f;
    mxv[a] = wasm_f32x4_splat(-3.0e38f);
  }
  /* Keys in position order through the chunks: (c, r) is key j's chunk and row. Four
   * visible keys at a time, in one chunk or across chunk ends (decode appends a row at a
   * time, so a sequence's newest keys can sit in one-row chunks): one transpose sums all
   * four rows' lanes in hsum_f32's order ((l0 + l1) + l2) + l3, so each key's score has
   * the bits it gets alone. */
  KeyAt at = from;
#ifdef KT_TILE
  /* A prompt's cached keys, 8 at a time, from their transposed tile (native/kernels.c). */
  if (kt_keys > from.j) {
    const int n8 = ((end < kt_keys ? end : kt_keys) - from.j) & ~7;
    if (n8 > 0) {
      kt_scores(qh, nh, g, D, from.j, from.j + n8, scores, S, mx);
      at = key_at(rows, chunks, from.j + n8);
    }
  }
#endif
#ifdef KV_PREFETCH
  KvCursor ahead = {at.c, at.r}, far = {at.c, at.r};
  for (int e = 0; e < KEYS_AHEAD; e++) prefetch_key(&ahead, kc, vc, rows, chunks, g, D, f16, 0);
  for (int e = 0; e < KEYS_FAR; e++) prefetch_key(&far, kc, vc, rows, chunks, g, D, f16, 1);
#endif
  for (int c = at.c, r = at.r, j = at.j; j < end;) {
    while (r >= rows[c]) c++, r = 0;
    /* Grouped keys: one at a time up to a group's first row, so that four keys at a time are one group (native qk4 reads its pieces in pairs). */
    const int kf = rows[3 * chunks + c], lead = kf < 0 ? 0 : -(kf + r) & 3;
    if (j + 4 <= end && (lead == 0 || r + lead >= rows[c]) && seen4(vi, P, j)) {
#ifdef KV_PREFETCH
      prefetch_four(&ahead, kc, vc, rows, chunks, g, D, f16, 0);
      prefetch_four(&far, kc, vc, rows, chunks, g, D, f16, 1);
#endif
      const void *kp[4];
      int km[4];
      if (whole_group(rows, chunks, c, r)) {
        /* One group: its keys' pieces four values apart. */
        const ptrdiff_t at = key_offset(g, rows[chunks + c], kf, r, D, km);
        for (int e = 0; e < 4; e++) kp[e] = key_piece0(kc[c], f16, at + 4 * e), km[e] = 4;
        r += 4;
      } else {
        for (int e = 0; e < 4; e++) {
          while (r >= rows[c]) c++, r = 0;
          kp[e] = key_piece0(kc[c], f16, key_offset(g, rows[chunks + c], rows[3 * chunks + c], r, D, km + e));
          r++;
        }
      }
      switch (nh) {
        case 4: qk4(qh, kp, km, f16, D, 4, scores + j, S, mxv); break;
        case 3: qk4(qh, kp, km, f16, D, 3, scores + j, S, mxv); break;
        case 2: qk4(qh, kp, km, f16, D, 2, scores + j, S, mxv); break;
        default: qk4(qh, kp, km, f16, D, 1, scores + j, S, mxv); break;
      }
      j += 4;
      continue;
    }
#ifdef KV_PREFETCH
    prefetch_key(&ahead, kc, vc, rows, chunks, g, D, f16, 0);
    prefetch_key(&far, kc, vc, rows, chunks, g, D, f16, 1);
#endif
    if (seen(vi, P, j)) {
      int m;
      const void *kj = key_piece0(kc[c], f16, key_offset(g, rows[chunks + c], kf, r, D, &m));
      for (int a = 0; a < nh; a++) {
        v128_t sv = wasm_f32x4_splat(0.f);
        for (int d = 0; d < D; d += 4) sv = wasm_f32x4_add(sv, wasm_f32x4_mul(wasm_v128_load(qh[a] + d), kv4(kj, (size_t)d * m, f16)));
        float sc = hsum_f32(sv);
        scores[(size_t)a * S + j] = sc;
        if (sc > mx[a]) mx[a] = sc;
      }
    }
    r++, j++;
  }
  const float *sp[HEADS_AT_ONCE];
  float inv[HEADS_AT_ONCE];
  key_probabilities(scores, S, nh, mxv, mx, from.j, end, vi, P, sum, normalise, sp, inv);
  /* The heads' outputs in blocks of 8 values over the part's keys, each value row loaded
   * once for every head; every lane sums its keys in key order. */
  switch (nh) {
    case 4: pv(sp, inv, vc, f16, rows, chunks, P, from.c, from.r, from.j, end, vi, g, D, 4, o); break;
    case 3: pv(sp, inv, vc, f16, rows, chunks, P, from.c, from.r, from.j, end, vi, g, D, 3, o); break;
    case 2: pv(sp, inv, vc, f16, rows, chunks, P, from.c, from.r, from.j, end, vi, g, D, 2, o); break;
    default: pv(sp, inv, vc, f16, rows, chunks, P, from.c, from.r, from.j, end, vi, g, D, 1, o); break;
  }
}

/*
 * Two parts' unnormalised outputs of nh heads (o0, o1: nh·D each; maxima m, sums l) merged
 * into out (which may be o0): out = (o0·e0 + o1·e1) / (l0·e0 + l1·e1), e = exp(m − max(m0,
 * m1)); w0[a], w1[a] receive the weights e·(1/l) that turn each part's numerators into
 * probabilities (`last`).
 */
static void merge_parts(int nh, int D, const float *o0, const float *m0, const float *l0, const float *o1, const float *m1, const float *l1, float *out, float *w0, float *w1) {
  for (int a = 0; a < nh; a++) {
    const float m = m0[a] > m1[a] ? m0[a] : m1[a];
    const float e0 = exp_f32(m0[a] - m), e1 = exp_f32(m1[a] - m);
    const float inv = 1.f / (l0[a] * e0 + l1[a] * e1);
    const float a0 = e0 * inv, a1 = e1 * inv;
    for (int d = 0; d < D; d++) out[(size_t)a * D + d] = o0[(size_t)a * D + d] * a0 + o1[(size_t)a * D + d] * a1;
    w0[a] = a0, w1[a] = a1;
  }
}

/*
 * attention's rows i0..i1-1 (`last` only when i1 = n, zeroed by the caller), each row's
 * heads in turn. Every row inside each KV head instead (a KV head's rows kept in cache from
 * row to row) measured slower: a 128-row chunk after 1,920 keys 17–19 → 22–26 ms.
 */
static void attention_rows(const float *q, const void *const *kc, const void *const *vc, const int *rows, int chunks, int P, int n, const uint8_t *vis, int H, int KVf, int D, float *scores, float *out, float *last, int h0, int h1, int i0, int i1) {
  /* KVf: the KV head count, plus 65536 when the chunks hold f16 (store_f16), 2·65536 when q8 (store_q8). */
  const int KV = KVf & 0xffff, f16 = KVf >> 16;
  const int S = P + n, G = H / KV, qd = H * D;
#ifdef KT_TILE
  if (f16 == 1 && i1 - i0 >= KT_ROWS && P >= 8) kt_build(kc, rows, chunks, P & ~7, KV, h0 / G, (h1 - 1) / G + 1, D);
#endif
  for (int i = i0; i < i1; i++) {
    const uint8_t *vi = vis + (size_t)i * n;
    const int end = row_end(P, vi, S);
    const int split = key_split(P, vi, end);
    const KeyAt first = {0, 0, 0}, second = key_at(rows, chunks, split);
    /* The query heads of one KV head, up to HEADS_AT_ONCE at a time, read each key and
     * value row once for all of them (GQA: G heads share it). */
    for (int hb = h0; hb < h1;) {
      const int g = hb / G, nh = head_block(hb, h1, G);
      const float *qh[HEADS_AT_ONCE];
      for (int a = 0; a < nh; a++) qh[a] = q + (size_t)i * qd + (size_t)(hb + a) * D;
      float *o = out + (size_t)i * qd + (size_t)hb * D;
      float mx[HEADS_AT_ONCE], sum[HEADS_AT_ONCE], w0[HEADS_AT_ONCE], w1[HEADS_AT_ONCE];
      if (split == 0) {
        attend_keys(qh, nh, g, kc, vc, rows, chunks, P, vi, D, f16, S, first, end, scores, mx, sum, 1, o);
        for (int a = 0; a < nh; a++) w0[a] = w1[a] = 1.f / sum[a];
      } else {
        float o1[HEADS_AT_ONCE * 512], mx1[HEADS_AT_ONCE], sum1[HEADS_AT_ONCE];
        attend_keys(qh, nh, g, kc, vc, rows, chunks, P, vi, D, f16, S, first, split, scores, mx, sum, 0, o);
        attend_keys(qh, nh, g, kc, vc, rows, chunks, P, vi, D, f16, S, second, end, scores, mx1, sum1, 0, o1);
        merge_parts(nh, D, o, mx, sum, o1, mx1, sum1, o, w0, w1);
      }
      if (last && i == n - 1) {
        /* Each key's probability: its part's numerator times that part's weight. */
        const int cut = split ? split : end;
        for (int a = 0; a < nh; a++) {
          const float *sa = scores + (size_t)a * S, u0 = w0[a] / (float)H, u1 = w1[a] / (float)H;
          for (int j = 0; j < cut; j++) last[j] += sa[j] * u0;
          for (int j = cut; j < end; j++) last[j] += sa[j] * u1;
        }
      }
      hb += nh;
    }
  }
#ifdef KT_TILE
  kt_keys = 0;
#endif
}

/*
 * Attention of n new rows over S = P + n keys (P cached, then the n new ones), computed
 * one (row, head) at a time in an order that depends on nothing but that row's query and
 * the keys it sees: dot products over D in four fixed lanes, softmax in key order, the
 * value sum in key order with lanes over D — over all its keys, or from SPLIT_KEYS visible
 * keys on over two halves merged at the end (key_split). So a row gets the same bits alone (a decode
 * step), inside a multi-row call (draft or tree verification, a prefill chunk) or beside
 * other sequences — what the tfjs attention could not promise (its reductions change order
 * with the call's shape), and what int8 activation rounding then magnified.
 *   q (n, H·D) scaled by 1/sqrt(D); the S keys and values are read where they lie, as
 *   `chunks` runs of consecutive rows in position order: chunk c has rows[c] rows at kc[c]
 *   and vc[c] (the KV cache's blocks, never gathered into one array), stored head by head
 *   (MatmulKernels.store): KV head g's D values of row r at g·stride·D + r·D, the strides of
 *   the keys and of the values following the row counts in the same table (rows[chunks + c]
 *   and rows[2·chunks + c]): a chunk's own row count, or a longer stored chunk's when it is a
 *   view of some of its rows (MatmulKernels.view: a prompt's KV cut into the cache's
 *   blocks); then rows[3·chunks + c]: −1, or for keys stored in groups of four rows the
 *   run's first row in its stored chunk (key_offset). So each
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
KERNEL_EXPORT("attention")
void attention(const float *q, const void *const *kc, const void *const *vc, const int *rows, int chunks, int P, int n, const uint8_t *vis, int H, int KVf, int D, float *scores, float *out, float *last, int h0, int h1) {
  if (last) for (int j = 0; j < P + n; j++) last[j] = 0.f;
  attention_rows(q, kc, vc, rows, chunks, P, n, vis, H, KVf, D, scores, out, last, h0, h1, 0, n);
}
