/*
 * Helper threads for the native kernels (SKEIN_THREADS ≥ 2): a call splits its work into
 * parts — a product's rows, attention's (sequence, KV head) pairs — and the calling thread
 * and the helpers take parts until none is left. Each part writes its own outputs with the
 * same arithmetic as the whole call, so the bits never depend on the split or on who ran
 * which part (block-layer.test.ts compares threads 1, 2 and 3).
 *
 * Why here and not through threads.ts's worker: that one meets the caller once per product
 * through Atomics in JavaScript, so a decode step's ~210 small layer products stayed on one
 * thread (a handover cost more than half of one), and a chained forward (block_layers) never
 * returns to JavaScript between its layers at all. Here a handover is a cache line: the
 * helpers spin while a forward's layers run (`hot`), so a part is taken within ~a
 * microsecond, and sleep on a futex between forwards.
 *
 * A busy machine cannot stall the caller on a helper that is not running: parts are claimed
 * one at a time with a compare-and-swap on one ticket (job number << 32 | next part), so the
 * caller runs every part nobody has claimed and waits only for parts a helper already holds.
 * A helper reads the job's fields before it claims; the claim succeeds only while the
 * ticket still carries that job's number, and the caller first moves the ticket to an odd
 * number (a job being written), then writes the next job's fields, then opens it with the
 * next even number — so a claim always gets the fields of the job whose number it carries.
 *
 * One thread owns the pool (the one that last set its size: the model's thread); calls from
 * any other thread (threads.ts's worker, a second model's) run their parts in order
 * themselves, and so does any call made while another thread's job holds the pool.
 *
 * Measured on SmolLM2 Q4_1 (2-vCPU Zen 4 VM, threads 1 and 2 alternated in one process): a
 * decode step 8.6–9.3 → 6.8–7.3 ms, a 128-token prefill 208–216 → 114–142 ms; this VM's two
 * vCPUs run 8-bit dot products only 1.3–1.6× faster together than one alone.
 */
/* Multiply-adds a product's piece gets at least (~1–2 µs of a decode product here; pool_set_threads: tests lower it to split tiny products). */
#define POOL_PIECE_WORK 32768
static int pool_piece_work = POOL_PIECE_WORK;

#ifdef __linux__
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <x86intrin.h>

typedef void (*PartFn)(const void *job, int part);

#define POOL_MAX_HELPERS 63
/* TSC ticks a helper keeps spinning after a job outside a chained forward before it sleeps (~40 µs at 2.5 GHz): the LM head follows the layers within that. */
#define POOL_IDLE_SPIN 100000ull

static struct {
  _Atomic uint64_t ticket;
  _Atomic int done;
  _Atomic(PartFn) fn;
  _Atomic(const void *) job;
  _Atomic int parts;
  _Atomic uint32_t wake; /* futex word: bumped when a job is posted */
  _Atomic int sleepers;
  _Atomic int hot;     /* a chained forward runs: helpers spin instead of sleeping */
  _Atomic int active;  /* helpers that take parts (threads − 1) */
  _Atomic unsigned long owner;
  /* Held through a job: a second thread that calls in meanwhile runs its parts alone instead of posting over it. */
  pthread_mutex_t busy;
  int started;
  _Atomic uint64_t posted, helped; /* parts posted to the helpers, and how many of them they ran (pool_counts) */
} pool = {.busy = PTHREAD_MUTEX_INITIALIZER};

static void pool_sleep(uint32_t seen) {
  syscall(SYS_futex, (uint32_t *)&pool.wake, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
}

/* The next unclaimed part of job `gen` (its function and job in fn, job), or −1 when none is left or another job is posted. */
static int pool_claim(uint64_t gen, PartFn *fn, const void **job) {
  uint64_t t = atomic_load(&pool.ticket);
  for (;;) {
    if (t >> 32 != gen) return -1;
    const PartFn f = atomic_load(&pool.fn);
    const void *j = atomic_load(&pool.job);
    const int i = (int)(uint32_t)t;
    if (i >= atomic_load(&pool.parts)) return -1;
    if (atomic_compare_exchange_weak(&pool.ticket, &t, t + 1)) {
      *fn = f;
      *job = j;
      return i;
    }
  }
}

static void *pool_helper(void *arg) {
  const int index = (int)(intptr_t)arg;
  uint64_t seen = atomic_load(&pool.ticket) >> 32;
  for (;;) {
    const uint32_t w = atomic_load(&pool.wake);
    const uint64_t gen = atomic_load(&pool.ticket) >> 32;
    if (index >= atomic_load(&pool.active)) {
      /* Not one of the threads in use (the pool was shrunk): sleep until the next post. */
      seen = gen;
      atomic_fetch_add(&pool.sleepers, 1);
      pool_sleep(w);
      atomic_fetch_sub(&pool.sleepers, 1);
      continue;
    }
    /* Odd numbers: a job being written (pool_run), not to be taken yet. */
    if (gen == seen || (gen & 1)) {
      const uint64_t until = __rdtsc() + POOL_IDLE_SPIN;
      for (uint64_t now = gen; now == seen || (now & 1); now = atomic_load(&pool.ticket) >> 32) {
        _mm_pause();
        if (!atomic_load(&pool.hot) && __rdtsc() > until) {
          atomic_fetch_add(&pool.sleepers, 1);
          pool_sleep(w);
          atomic_fetch_sub(&pool.sleepers, 1);
          break;
        }
      }
      continue;
    }
    seen = gen;
    PartFn fn;
    const void *job;
    int i;
    while ((i = pool_claim(gen, &fn, &job)) >= 0) {
      fn(job, i);
      atomic_fetch_add(&pool.helped, 1);
      atomic_fetch_add(&pool.done, 1);
    }
  }
  return NULL;
}

/* Threads that run this thread's parts: 1 + the active helpers where this thread owns the pool, else 1. */
static int pool_width(void) {
  const int active = atomic_load(&pool.active);
  return active > 0 && atomic_load(&pool.owner) == (unsigned long)pthread_self() ? active + 1 : 1;
}

/* Runs fn(job, 0 .. parts − 1), on the helpers too where this thread owns the pool; returns when every part is done. */
static void pool_run(PartFn fn, const void *job, int parts) {
  if (parts <= 1 || pool_width() == 1 || pthread_mutex_trylock(&pool.busy) != 0) {
    for (int i = 0; i < parts; i++) fn(job, i);
    return;
  }
  /* The ticket moves to an odd number before the fields change, so a helper that read the
   * last job's ticket and is only now claiming (it was descheduled in between) fails its
   * compare-and-swap instead of taking a part of this job as one of that one; then to the
   * next even number, which opens the job. */
  const uint64_t last = atomic_load(&pool.ticket) >> 32, gen = last + 2;
  atomic_store(&pool.ticket, (last + 1) << 32);
  atomic_store(&pool.fn, fn);
  atomic_store(&pool.job, job);
  atomic_store(&pool.parts, parts);
  atomic_store(&pool.done, 0);
  atomic_fetch_add(&pool.posted, (uint64_t)parts);
  atomic_store(&pool.ticket, gen << 32);
  atomic_fetch_add(&pool.wake, 1);
  if (atomic_load(&pool.sleepers) > 0) syscall(SYS_futex, (uint32_t *)&pool.wake, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
  PartFn f;
  const void *j;
  int i, mine = 0;
  while ((i = pool_claim(gen, &f, &j)) >= 0) {
    f(j, i);
    mine++;
  }
  atomic_fetch_add(&pool.done, mine);
  while (atomic_load(&pool.done) < parts) _mm_pause();
  pthread_mutex_unlock(&pool.busy);
}

/* Helpers spin between jobs while on (a chained forward's layers), else sleep soon after one. */
static void pool_hot(int on) {
  if (pool_width() > 1) atomic_store(&pool.hot, on);
}

/* Sets the threads this thread's calls use (helpers + 1, the calling thread becoming the owner) and the least work of a product's piece (0: the default); returns how many threads it got. */
static int pool_set_threads(int threads, int piece_work) {
  pool_piece_work = piece_work > 0 ? piece_work : POOL_PIECE_WORK;
  int want = threads - 1;
  if (want < 0) want = 0;
  if (want > POOL_MAX_HELPERS) want = POOL_MAX_HELPERS;
  if (want > 0) atomic_store(&pool.owner, (unsigned long)pthread_self());
  while (pool.started < want) {
    pthread_attr_t attr;
    pthread_t t;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    const int failed = pthread_create(&t, &attr, pool_helper, (void *)(intptr_t)pool.started);
    pthread_attr_destroy(&attr);
    if (failed) break;
    pool.started++;
  }
  atomic_store(&pool.active, want < pool.started ? want : pool.started);
  return atomic_load(&pool.active) + 1;
}
/* Parts posted to the helpers so far, and how many of them the helpers ran. */
static void pool_counts(uint64_t *posted, uint64_t *helped) {
  *posted = atomic_load(&pool.posted);
  *helped = atomic_load(&pool.helped);
}
#else
/* No futex elsewhere: one thread. */
typedef void (*PartFn)(const void *job, int part);
static int pool_width(void) { return 1; }
static void pool_run(PartFn fn, const void *job, int parts) {
  for (int i = 0; i < parts; i++) fn(job, i);
}
static void pool_hot(int on) { (void)on; }
static int pool_set_threads(int threads, int piece_work) {
  (void)threads;
  pool_piece_work = piece_work > 0 ? piece_work : POOL_PIECE_WORK;
  return 1;
}
static void pool_counts(uint64_t *posted, uint64_t *helped) {
  *posted = *helped = 0;
}
#endif

/*
 * Where piece k of `pieces` of a rows-long product starts: an even share, rounded down to 16
 * rows (four x4h groups, the 512-bit tiles' step), the last ending at rows.
 */
static int piece_start(int rows, int pieces, int k) {
  if (k >= pieces) return rows;
  return (int)((int64_t)rows * k / pieces) & ~15;
}

/*
 * Pieces a product is cut into, per thread: claimed one at a time, so a late or slow thread
 * leaves its share to the others. Two, at pieces of at least POOL_PIECE_WORK: of 1, 2, 4
 * and 8 per thread at 16k–64k multiply-adds, more pieces of ~1 µs lost to their claims and
 * cold starts (the layers of a decode step 3.9–4.6 ms at 1–2 per thread, 4.2–5.6 at 8).
 */
#define POOL_PIECES_PER_THREAD 2

/* How many pieces a T × rows × cols product is cut into on `width` threads. */
static int product_pieces(int T, int rows, int cols, int width) {
  if (width <= 1) return 1;
  const int64_t work = (int64_t)T * rows * cols;
  int64_t n = work / pool_piece_work;
  if (n > (int64_t)width * POOL_PIECES_PER_THREAD) n = (int64_t)width * POOL_PIECES_PER_THREAD;
  if (n > rows / 16) n = rows / 16;
  return n < 1 ? 1 : (int)n;
}
