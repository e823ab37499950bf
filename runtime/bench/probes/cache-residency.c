/*
 * Can a decode step's K/V stay in this machine's L3 while the weights stream past it?
 *
 * A batch-1 decode step reads every weight once (~96 MB for SmolLM2-135M Q4_1) and then,
 * layer by layer, the K/V rows (~21 MB more at 1,024 tokens of context than at 128). The
 * step's growth with context can only beat the bytes' ratio (bench decode prints it as
 * growth's floor) if the K/V is found in cache at the next step. This probe streams a
 * "weights" buffer and then re-reads a smaller "K/V" buffer, over and over, and prints the
 * K/V's read rate for three ways of streaming the weights: plain loads, loads behind
 * prefetchnta, and loads with each line flushed (clflushopt) right after its use. Where
 * the K/V rate stays at DRAM's (~20-25 GB/s here) rather than L3's (~75), nothing a step
 * can hint keeps it cached. Stop 40's figures: runtime/bench/HISTORY.md.
 *
 *   gcc -O2 -march=native runtime/bench/probes/cache-residency.c -o /tmp/residency && /tmp/residency
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <x86intrin.h>

enum { PLAIN, NTA, FLUSH };

static float read_all(const float *p, size_t n, int mode) {
  __m256 a = _mm256_setzero_ps(), b = a;
  for (size_t i = 0; i < n; i += 16) {
    if (mode == NTA) _mm_prefetch((const char *)(p + i) + 2048, _MM_HINT_NTA);
    a = _mm256_add_ps(a, _mm256_loadu_ps(p + i));
    b = _mm256_add_ps(b, _mm256_loadu_ps(p + i + 8));
    if (mode == FLUSH && i >= 256) _mm_clflushopt((void *)(p + i - 256));
  }
  float t[8];
  _mm256_storeu_ps(t, _mm256_add_ps(a, b));
  return t[0];
}

/* Rates in GB/s from TSC ticks; the ratio between modes does not depend on the TSC's rate. */
static double gbps(size_t bytes, uint64_t ticks, double tsc_hz) { return bytes / (ticks / tsc_hz) / 1e9; }

int main(int argc, char **argv) {
  double tsc_hz = argc > 1 ? atof(argv[1]) * 1e9 : 2.6e9; /* pass the TSC's GHz (lscpu) for absolute rates */
  const size_t weights_mb = 100, kv_mbs[] = {2, 4, 12, 20};
  size_t wn = weights_mb << 18;
  float *w = aligned_alloc(4096, wn * 4);
  memset(w, 1, wn * 4);
  const char *names[] = {"plain", "prefetchnta", "clflushopt"};
  volatile float sink = 0;
  printf("K/V MB  weights read as   weights GB/s  K/V GB/s   (K/V alone, cached: ");
  {
    size_t n = 12 << 18;
    float *kv = aligned_alloc(4096, n * 4);
    memset(kv, 1, n * 4);
    uint64_t best = ~0ull;
    for (int i = 0; i < 20; i++) {
      uint64_t t0 = __rdtsc();
      sink += read_all(kv, n, PLAIN);
      uint64_t t = __rdtsc() - t0;
      if (t < best) best = t;
    }
    printf("%.0f GB/s at 12 MB)\n", gbps(n * 4, best, tsc_hz));
    free(kv);
  }
  for (size_t k = 0; k < sizeof kv_mbs / sizeof *kv_mbs; k++) {
    size_t kn = kv_mbs[k] << 18;
    float *kv = aligned_alloc(4096, kn * 4);
    memset(kv, 1, kn * 4);
    for (int mode = PLAIN; mode <= FLUSH; mode++) {
      uint64_t tw = 0, tk = 0;
      for (int it = 0; it < 10; it++) {
        uint64_t t0 = __rdtsc();
        sink += read_all(w, wn, mode);
        uint64_t t1 = __rdtsc();
        sink += read_all(kv, kn, PLAIN);
        uint64_t t2 = __rdtsc();
        if (it > 0) tw += t1 - t0, tk += t2 - t1;
      }
      printf("%6zu  %-16s  %12.1f  %8.1f\n", kv_mbs[k], names[mode], gbps(wn * 4 * 9, tw, tsc_hz), gbps(kn * 4 * 9, tk, tsc_hz));
    }
    free(kv);
  }
  return sink == 12345.0f;
}
