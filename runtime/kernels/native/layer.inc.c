/*
 * Decoder layers on the block weights in ONE call from JavaScript (block_layers), where
 * matmul.ts made ~22 per layer — norm, quantization, the q/k/v products, placing and
 * rotating their rows, storing each sequence's new K/V rows, attention, o-proj, residual,
 * norm, gate/up, SwiGLU, down, residual — each with its own JavaScript wrapper, offsets,
 * closures and copies in and out of this memory, and forward.ts a tfjs dispatch and scope
 * per layer. SmolLM2 Q4_1, a decode step after a 128-token past (timers over 256 steps):
 * 10.2 ms call by call, 9.05 with one call per layer, 8.29 with every layer in one call
 * (forward.ts chainLayers), of which ~5.0 ms are these layers' kernels and ~1.7 the LM head.
 *
 * The same kernels run on the same inputs in the same order as matmul.ts's linearGroups,
 * store, attention and mlpBlock (the element-wise ones are float-kernels.inc.c's, which
 * the wasm build runs there), so every value has the same bits (block-layer.test.ts
 * compares the paths on five weight types). MatmulKernels.layers takes this path on the
 * native kernels, on any thread count: its products and attention split over the pool's
 * threads (pool.inc.c) with the same bits.
 *
 * The plan (int32 words at `plan` in the memory; offsets are the memory's; doubles in a
 * Float64 table at plan[P_DOUBLES]: the two norms' eps, then each q/k/v part's scale):
 */
enum {
  P_T, P_COLS, P_H, P_KVF, P_D, P_NSEQ,
  P_X, P_X_OUT, P_K_OUT, P_V_OUT, P_SCRATCH, P_DOUBLES,
  P_NORM, P_NPARTS, P_COS, P_SIN, P_ROT_DIM, P_ROT_GROUPS,
  P_BO, P_MLP_NORM,
  P_WEIGHTS /* (NPARTS + 4) weights of W_WORDS: the q/k/v parts, then o, gate, up, down; then NSEQ sequences of S_WORDS */
};
/* A weight: GGML type id, offset, rows, cols, its output group (q/k/v parts: 0 q, 1 k, 2 v), bias offset (0: none). */
enum { W_TYPE, W_AT, W_ROWS, W_COLS, W_GROUP, W_BIAS, W_WORDS };
/* A sequence: its new rows, its attention table (MatmulKernels.attention's: kc | vc | rows | key strides | value strides, the new rows' chunk last), its visibility mask, where its new K and V rows are stored. */
enum { S_N, S_CHUNKS, S_TABLE, S_VIS, S_K_DST, S_V_DST, S_WORDS };

/* GGML's id of F16 weights (T_F32 and the quantized ones are kernels.c's). */
#define T_F16 1

/* Bump allocation in the scratch space, 16-byte aligned as matmul.ts's align16 (MatmulKernels.layers sizes it the same way). */
static inline uint8_t *take16(uint8_t **at, size_t bytes) {
  uint8_t *p = *at;
  *at = p + ((bytes + 15) & ~(size_t)15);
  return p;
}

/*
 * Rows r0..r1 (a multiple of 4 for x4h groups) of y (T, rows) = x·Wᵀ as MatmulKernels.multiply
 * runs it: int8 activations (qa, da, sa: quantized once by the caller) for x4h groups, f32
 * ones (x) for F32/F16 weights. The layer's products and js_matmul_x4r / js_matmul_float's pieces.
 */
static void product_rows(int type, const uint8_t *w, int rows, int cols, const float *x, const int8_t *qa, const float *da, const float *sa, int T, float *y, int r0, int r1) {
  if (type == T_F32 || type == T_F16) matmul_float8(type, w, rows, cols, x, T, y, r0, r1);
  else if (type == T_Q8_0) (use_avx512 ? matmul_x8r_vnni : matmul_x8r_avx2)(w, rows, cols, qa, da, T, y, r0 / 4, r1 / 4);
  else (use_avx512 ? matmul_x4r_vnni : matmul_x4r_avx2)(type, w, rows, cols, qa, da, sa, T, y, r0 / 4, r1 / 4);
}

/* Rows r0..r1 of a layer's weight (its plan words at w). */
static void layer_product(uint8_t *m, const int32_t *w, const float *x, const int8_t *qa, const float *da, const float *sa, int T, float *y, int r0, int r1) {
  product_rows(w[W_TYPE], m + w[W_AT], w[W_ROWS], w[W_COLS], x, qa, da, sa, T, y, r0, r1);
}

/* Up to 64 weights on the same rows, each cut into pieces (pool.inc.c): part p is piece p − first[i] of weight i. */
typedef struct {
  uint8_t *m;
  const int32_t *const *ws;
  const float *x;
  const int8_t *qa;
  const float *da, *sa;
  float *const *ys;
  int T, n;
  int pieces[64], first[65];
} ProductsJob;

static void products_part(const void *job, int part) {
  const ProductsJob *p = job;
  int i = 0;
  while (part >= p->first[i + 1]) i++;
  const int k = part - p->first[i], rows = p->ws[i][W_ROWS];
  layer_product(p->m, p->ws[i], p->x, p->qa, p->da, p->sa, p->T, p->ys[i], piece_start(rows, p->pieces[i], k), piece_start(rows, p->pieces[i], k + 1));
}

/* Runs n (≤ 64) weights on the (T, cols) rows at x, over the pool's threads: the activations quantized once, into scratch, when any weight takes them (MatmulKernels.multiply). */
static void layer_products(uint8_t *m, uint8_t *scratch, const int32_t *const *ws, int n, const float *x, int T, float *const *ys) {
  const int cols = ws[0][W_COLS], nb = cols / QK, width = pool_width();
  ProductsJob job = {.m = m, .ws = ws, .x = x, .ys = ys, .T = T, .n = n};
  for (int i = 0; i < n; i++) {
    if (ws[i][W_TYPE] == T_F32 || ws[i][W_TYPE] == T_F16 || job.qa != NULL) continue;
    int8_t *qa = (int8_t *)take16(&scratch, (size_t)T * cols);
    float *da = (float *)take16(&scratch, 4 * (size_t)T * nb);
    float *sa = (float *)take16(&scratch, 4 * (size_t)T * nb);
    quantize_rows_r8(x, T, cols, qa, da, sa);
    job.qa = qa, job.da = da, job.sa = sa;
  }
  job.first[0] = 0;
  for (int i = 0; i < n; i++) {
    job.pieces[i] = product_pieces(T, ws[i][W_ROWS], cols, width);
    job.first[i + 1] = job.first[i] + job.pieces[i];
  }
  pool_run(products_part, &job, job.first[n]);
}

/* A thread's scratch for attention's scores (4 heads × S floats), grown as needed; NULL when out of memory. */
static _Thread_local void *thread_scores;
static _Thread_local size_t thread_scores_bytes;
static float *scores_scratch(int S) { return grown_buffer(&thread_scores, &thread_scores_bytes, 4 * sizeof(float) * (size_t)S); }

/* One sequence's attention in a layer: its chunk addresses (keys, then values), table, rows. */
typedef struct {
  const void **addresses;
  const int32_t *table;
  const uint8_t *vis;
  int chunks, n, S, r;
} SeqAttention;

/*
 * Every sequence's attention over the pool: a part per (sequence, KV head) — split KV heads
 * a sequence, 1 for all its heads in one part — and, for a lone sequence of several rows
 * (a prefill chunk, a verification), per row group too: its rows cut at `cut` into two
 * groups of about equal work (0: one group).
 */
typedef struct {
  const SeqAttention *seqs;
  const float *q;
  float *out;
  int H, KVf, D, split, cut;
  _Atomic int failed;
} AttentionJob;

static void attention_part(const void *job, int part) {
  AttentionJob *a = (AttentionJob *)job;
  const int groups = a->cut > 0 ? 2 : 1, per_seq = a->split * groups, within = part % per_seq;
  const SeqAttention *s = &a->seqs[part / per_seq];
  const int per = a->H / a->split, h0 = within % a->split * per, qd = a->H * a->D;
  const int second = within / a->split, i0 = second ? a->cut : 0, i1 = groups == 2 && !second ? a->cut : s->n;
  float *scores = scores_scratch(s->S);
  if (scores == NULL) {
    atomic_store(&a->failed, 1);
    return;
  }
  attention_rows(a->q + (size_t)s->r * qd, s->addresses, s->addresses + s->chunks, s->table + 2 * s->chunks, s->chunks, s->S - s->n, s->n, s->vis, a->H, a->KVf, a->D, scores, a->out + (size_t)s->r * qd, NULL, h0, h0 + per, i0, i1);
}

/* Where a lone sequence's rows split into two groups of about equal attention work (each row's visible keys), 0 below two rows. */
static int row_cut(const SeqAttention *s) {
  const int P = s->S - s->n;
  if (s->n < 2) return 0;
  double total = 0;
  for (int i = 0; i < s->n; i++) total += visible_keys(P, s->vis + (size_t)i * s->n, s->n);
  double run = 0;
  for (int i = 0; i < s->n - 1; i++) {
    run += visible_keys(P, s->vis + (size_t)i * s->n, s->n);
    if (2 * run >= total) return i + 1;
  }
  return s->n - 1;
}

/*
 * Heads h0..h1-1 of one row (qrow) over its keys from `from` to end, unnormalised, for
 * merge_parts: o (the row's H·D layout, heads h0.. only), maxima and sums by head. A
 * thread's share of a split decode row (block_layer).
 */
static void attend_part(const float *qrow, const void *const *kc, const void *const *vc, const int *rows, int chunks, int P, const uint8_t *vi, int H, int KVf, int D, float *scores, int S, KeyAt from, int end, int h0, int h1, float *o, float *mx, float *sum) {
  const int KV = KVf & 0xffff, f16 = KVf >> 16, G = H / KV;
  for (int hb = h0; hb < h1;) {
    const int nh = head_block(hb, h1, G);
    const float *qh[HEADS_AT_ONCE];
    for (int a = 0; a < nh; a++) qh[a] = qrow + (size_t)(hb + a) * D;
    attend_keys(qh, nh, hb / G, kc, vc, rows, chunks, P, vi, D, f16, S, from, end, scores, mx + hb, sum + hb, 0, o + (size_t)hb * D);
    hb += nh;
  }
}

/*
 * A lone decode row split at key `split` (key_split) of its keys up to `end` (row_end): a
 * part per (KV head, half), part 2g + h being KV head g's heads over half h, taken by the
 * pool's threads as they come free. Half 0 goes into the row's output, half 1 into o1, each
 * half's maxima and sums by head, for merge_parts. Each part calls attend_part on the same
 * heads and keys as the two halves over all heads did, so the same bits. Why 2·KV parts
 * (six for SmolLM2) and not two (each half over all the KV heads): the two threads seldom
 * finish a half together (the helper ran a half 8–12 % slower than the caller, and the
 * box's noise moves either), and the caller waited out the difference in every layer; with
 * a part per KV head, the thread that finishes first takes the next one. Measured in one
 * process (SmolLM2 Q4_1, two threads, the two ways alternated step by step at 128 and 1,024
 * tokens of context, TSC around the pool's call, 4,500–9,900 calls at ~1,024 keys each way,
 * three runs): 239 → 214, 209 → 199 and 258 → 234 k ticks a call (−5 to −10 %), and the
 * step at 1,024 tokens 9.85 → 9.50, 8.42 → 8.01 ms (−4 to −5 %).
 */
typedef struct {
  const SeqAttention *seq;
  const float *q;
  float *out, *o1, *mx, *sum;
  int H, KVf, D, split, end;
  KeyAt second; /* key `split`'s chunk and row, found once for every half-1 part */
  _Atomic int failed;
} SplitRowJob;

static void split_row_part(const void *job, int part) {
  SplitRowJob *a = (SplitRowJob *)job;
  const SeqAttention *s = a->seq;
  const int *rows = s->table + 2 * s->chunks;
  float *scores = scores_scratch(s->S);
  if (scores == NULL) {
    atomic_store(&a->failed, 1);
    return;
  }
  const int half = part & 1, G = a->H / (a->KVf & 0xffff), h0 = (part >> 1) * G;
  const KeyAt from = half == 0 ? (KeyAt){0, 0, 0} : a->second;
  attend_part(a->q, s->addresses, s->addresses + s->chunks, rows, s->chunks, s->S - 1, s->vis, a->H, a->KVf, a->D, scores, s->S, from, half == 0 ? a->split : a->end, h0, h0 + G,
              half == 0 ? a->out : a->o1, a->mx + half * a->H, a->sum + half * a->H);
}

/* The owner's scratch for a split row's second part and the parts' maxima, sums and weights (H·D + 6·H floats), grown as needed; NULL when out of memory. */
static _Thread_local void *split_row_scratch;
static _Thread_local size_t split_row_scratch_bytes;
static float *split_scratch(size_t n) { return grown_buffer(&split_row_scratch, &split_row_scratch_bytes, n * sizeof(float)); }

/* The owner's per-layer tables for the pooled attention: the sequences and their chunk addresses. */
static _Thread_local void *seq_attention_memory, *seq_addresses_memory;
static _Thread_local size_t seq_attention_bytes, seq_addresses_bytes;

/* Rows (n, KV·D) stored head by head (MatmulKernels.store), narrowed to f16 or q8 through f32 scratch as store does (type: 0 f32, 1 f16, KV_Q8); f16 keys in groups of four rows. */
static void layer_store(const float *rows, int n, int KV, int D, int type, int keys, uint8_t *dst, uint8_t *scratch) {
  float *at = type ? (float *)scratch : (float *)dst;
  for (int g = 0; g < KV; g++)
    for (int r = 0; r < n; r++) {
      const float *src = rows + (size_t)r * KV * D + (size_t)g * D;
      if (keys && type == 1) {
        /* f16 keys in groups of four rows (key_offset), as MatmulKernels.reserveChunk marks them. */
        int m;
        float *row = at + key_offset(g, n, 0, r, D, &m);
        for (int d = 0; d < D; d += 4) __builtin_memcpy(row + (size_t)d * m, src + d, 16);
      } else __builtin_memcpy(at + ((size_t)g * n + r) * D, src, 4 * (size_t)D);
    }
  if (type == KV_Q8) store_q8(at, n * KV, D, dst);
  else if (type) store_f16(at, n * KV * D, (uint16_t *)dst);
}

/* The layer; 0 on success, else a message for the caller to throw. */
static const char *block_layer(uint8_t *m, const int32_t *p) {
  const int T = p[P_T], cols = p[P_COLS], H = p[P_H], KVf = p[P_KVF], D = p[P_D], nseq = p[P_NSEQ], nparts = p[P_NPARTS];
  const int KV = KVf & 0xffff, f16 = KVf >> 16, qd = H * D, kvd = KV * D;
  const double *dbl = (const double *)(m + p[P_DOUBLES]);
  const int32_t *parts = p + P_WEIGHTS, *wo = parts + nparts * W_WORDS, *wgate = wo + W_WORDS, *wup = wgate + W_WORDS, *wdown = wup + W_WORDS;
  const int32_t *seqs = wdown + W_WORDS;
  const int hidden = wo[W_ROWS], inter = wgate[W_ROWS];
  uint8_t *scratch = m + p[P_SCRATCH];
  const float *x = (const float *)(m + p[P_X]);

  /* linearGroups: the rows normalised, every part multiplied, placed into its group's columns (scaled, bias added), q and k rotated. */
  const float *in = x;
  if (p[P_NORM]) {
    float *normed = (float *)take16(&scratch, 4 * (size_t)T * cols);
    rms_norm_rows(x, T, cols, (const float *)(m + p[P_NORM]), dbl[0], normed);
    in = normed;
  }
  float *q = (float *)take16(&scratch, 4 * (size_t)T * qd);
  float *groups[3] = {q, (float *)(m + p[P_K_OUT]), (float *)(m + p[P_V_OUT])};
  const int widths[3] = {qd, kvd, kvd};
  {
    const int32_t *ws[64];
    float *ys[64];
    if (nparts > 64) return "block_layer: more than 64 q/k/v parts";
    for (int i = 0; i < nparts; i++) {
      ws[i] = parts + i * W_WORDS;
      ys[i] = (float *)take16(&scratch, 4 * (size_t)T * ws[i][W_ROWS]);
    }
    layer_products(m, scratch, ws, nparts, in, T, ys);
    int col[3] = {0, 0, 0};
    for (int i = 0; i < nparts; i++) {
      const int g = ws[i][W_GROUP];
      place_rows(ys[i], T, ws[i][W_ROWS], dbl[2 + i], ws[i][W_BIAS] ? (const float *)(m + ws[i][W_BIAS]) : NULL, groups[g], widths[g], col[g]);
      col[g] += ws[i][W_ROWS];
    }
    for (int g = 0; g < 3; g++)
      if (p[P_ROT_GROUPS] >> g & 1) rotate_rows(groups[g], T, widths[g], p[P_ROT_DIM], (const float *)(m + p[P_COS]), (const float *)(m + p[P_SIN]));
  }

  /* Every sequence's new K/V rows stored where attention reads them, then all their
   * attention in one job (pool.inc.c): a part per (sequence, KV head) over the pool's
   * threads, a part per sequence on one — the same calls on the same heads either way. A
   * lone sequence's rows (a prefill chunk) go in two groups of about equal work as well, so
   * that its 3 KV heads' 6 parts share two threads 3 + 3 instead of 2 + 1 (a 2,048-token
   * SmolLM2 prefill in 128-token chunks on two threads, builds alternated four times:
   * 5.3–6.9 → 4.3–5.7 s, medians ~5.6 → ~5.0). A lone decode row over SPLIT_KEYS keys or
   * more runs its two key halves (key_split) on two threads, now as a part per (KV head,
   * half) (SplitRowJob), instead of its 3 KV heads as 2 + 1 parts (1,024 keys: 53.1 → 43.6
   * µs in cache; a SmolLM2 Q4_1 decode step at 1,024 tokens of context over the step at
   * 128, two threads, builds alternated eight times: ×1.29 → ×1.25 (medians); at 3,072
   * tokens ×1.95 → ×1.70–1.80). The 2 + 1 parts had been 89 → 58–67 µs. Measured and not
   * kept (same bits): three jobs — scores by runs of keys, softmax per head, values by runs
   * of values — 67 → 78 µs in cache and 70 → 108 out of it (each values part read V rows
   * the other thread's scores pass had fetched); a part per head 91–105 (each head re-reads
   * its KV head's rows); the third KV head's heads split 2 + 1 between the threads, ~5 %,
   * within the noise. Asking for the next products' weights (o, gate, up: 0.5–4 MB) during
   * a lone row's attention, so that memory streams while the attention computes, made the
   * step at 1,024 tokens of context slower (×1.36 → ×1.40–1.58 over the step at 128): it
   * competes with the KV rows for L2. */
  float *attn = (float *)take16(&scratch, 4 * (size_t)T * qd);
  {
    uint8_t *tmp = take16(&scratch, 4 * (size_t)T * kvd);
    size_t addresses = 0;
    for (int s = 0; s < nseq; s++) addresses += 2 * (size_t)seqs[s * S_WORDS + S_CHUNKS];
    SeqAttention *seq_attention = grown_buffer(&seq_attention_memory, &seq_attention_bytes, (size_t)nseq * sizeof *seq_attention);
    if (seq_attention == NULL) return "block_layer: out of memory for the attention's sequence table";
    const void **at = grown_buffer(&seq_addresses_memory, &seq_addresses_bytes, addresses * sizeof *at);
    if (at == NULL) return "block_layer: out of memory for the attention's chunk table";
    for (int s = 0, r = 0; s < nseq; s++) {
      const int32_t *sq = seqs + s * S_WORDS;
      const int n = sq[S_N], chunks = sq[S_CHUNKS];
      const int32_t *table = (const int32_t *)(m + sq[S_TABLE]);
      layer_store(groups[1] + (size_t)r * kvd, n, KV, D, f16, 1, m + sq[S_K_DST], tmp);
      layer_store(groups[2] + (size_t)r * kvd, n, KV, D, f16, 0, m + sq[S_V_DST], tmp);
      int S = 0;
      for (int c = 0; c < chunks; c++) {
        S += table[2 * chunks + c];
        at[c] = m + (uint32_t)table[c];
        at[chunks + c] = m + (uint32_t)table[chunks + c];
      }
      seq_attention[s] = (SeqAttention){.addresses = at, .table = table, .vis = m + sq[S_VIS], .chunks = chunks, .n = n, .S = S, .r = r};
      at += 2 * (size_t)chunks;
      r += n;
    }
    /* A lone decode row whose keys split (key_split) runs a part per thread; otherwise a
     * part per (sequence, KV head) on two or more threads, a part per sequence on one. */
    const SeqAttention *lone = nseq == 1 ? seq_attention : NULL;
    const int lone_end = lone != NULL && lone->n == 1 ? row_end(lone->S - 1, lone->vis, lone->S) : 0;
    const int keys_split = pool_width() > 1 && lone_end > 0 ? key_split(lone->S - 1, lone->vis, lone_end) : 0;
    if (keys_split > 0) {
      float *o1 = split_scratch((size_t)qd + 6 * (size_t)H);
      if (o1 == NULL) return "block_layer: out of memory for the attention's split row";
      float *mx = o1 + qd, *sum = mx + 2 * H, *w = sum + 2 * H;
      SplitRowJob job = {.seq = seq_attention, .q = q, .out = attn, .o1 = o1, .mx = mx, .sum = sum, .H = H, .KVf = KVf, .D = D, .split = keys_split, .end = lone_end,
                         .second = key_at(lone->table + 2 * lone->chunks, lone->chunks, keys_split)};
      pool_run(split_row_part, &job, 2 * KV);
      if (atomic_load(&job.failed)) return "block_layer: out of memory for the attention's scores";
      merge_parts(H, D, attn, mx, sum, o1, mx + H, sum + H, attn, w, w + H);
    } else {
      const int split = pool_width() > 1 ? KV : 1, cut = pool_width() > 1 && lone != NULL ? row_cut(lone) : 0;
      AttentionJob job = {.seqs = seq_attention, .q = q, .out = attn, .H = H, .KVf = KVf, .D = D, .split = split, .cut = cut};
      pool_run(attention_part, &job, nseq * split * (cut > 0 ? 2 : 1));
      if (atomic_load(&job.failed)) return "block_layer: out of memory for the attention's scores";
    }
  }

  /* mlpBlock: x1 = x + attn·oᵀ + bo, out = x1 + down(silu(n·gateᵀ) ⊙ n·upᵀ), n = RMSNorm(x1). */
  float *yo = (float *)take16(&scratch, 4 * (size_t)T * hidden);
  float *x1 = (float *)take16(&scratch, 4 * (size_t)T * hidden);
  float *nrm = (float *)take16(&scratch, 4 * (size_t)T * hidden);
  float *gate = (float *)take16(&scratch, 4 * (size_t)T * inter);
  float *up = (float *)take16(&scratch, 4 * (size_t)T * inter);
  float *yd = (float *)take16(&scratch, 4 * (size_t)T * hidden);
  {
    const int32_t *ws[2] = {wo, NULL};
    float *ys[2] = {yo, NULL};
    layer_products(m, scratch, ws, 1, attn, T, ys);
  }
  add_rows(x, yo, (const float *)(m + p[P_BO]), T, hidden, x1);
  rms_norm_rows(x1, T, hidden, (const float *)(m + p[P_MLP_NORM]), dbl[1], nrm);
  {
    const int32_t *ws[2] = {wgate, wup};
    float *ys[2] = {gate, up};
    layer_products(m, scratch, ws, 2, nrm, T, ys);
  }
  silu_mul(gate, up, T * inter);
  {
    const int32_t *ws[1] = {wdown};
    float *ys[1] = {yd};
    layer_products(m, scratch, ws, 1, gate, T, ys);
  }
  add_rows(x1, yd, NULL, T, hidden, (float *)(m + p[P_X_OUT]));
  return NULL;
}
