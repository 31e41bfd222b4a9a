/* W3: parallel-for chunk sweep over 2^20 small least-squares problems.
 *
 * Item i: a 16x7 matrix A and a 16-vector b drawn from a splitmix64 stream
 * seeded with i (row by row: the 7 entries of A's row, then b's entry, each
 * uniform in [-1, 1) from the top 53 bits), 4 added to A's leading diagonal,
 * then x = argmin |Ax - b| through the normal equations: G = A'A, h = A'b,
 * Cholesky G = LL', forward and back substitution. x goes to out[7i..7i+6].
 *
 * The serial loop is timed first; then, for k = 0..15, nd_parallel_for with
 * ND_DYNAMIC and chunk = N >> k (2^k chunks), called from the main thread.
 * The output is poisoned (NaN) before every run, and after each k the sum of
 * all outputs must equal the serial sum bit for bit.
 *
 * A control runs before and after the sweep: the same loop split into equal
 * contiguous parts over plain pthreads, no runtime involved. Its speedup is
 * what this machine gives at that moment ("#" lines only).
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define W3_N (1L << 20)
#define W3_ROWS 16
#define W3_COLS 7
#define W3_KMAX 15

static inline uint64_t sm64_next(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/* Uniform in [-1, 1) with 53 random bits. */
static inline double sm64_sym(uint64_t *state) {
  return 2.0 * ((double)(sm64_next(state) >> 11) * 0x1.0p-53) - 1.0;
}

static void lsq_item(uint64_t item, double *x) {
  double a[W3_COLS][W3_ROWS]; /* column-major: a[col][row] */
  double rhs[W3_ROWS];
  uint64_t st = item;
  for (int r = 0; r < W3_ROWS; r++) {
    for (int c = 0; c < W3_COLS; c++) a[c][r] = sm64_sym(&st);
    rhs[r] = sm64_sym(&st);
  }
  for (int c = 0; c < W3_COLS; c++) a[c][c] += 4.0;

  /* Normal equations, lower triangle of L[i][j] (i >= j), G overwritten by L. */
  double L[W3_COLS][W3_COLS], h[W3_COLS];
  for (int i = 0; i < W3_COLS; i++) {
    for (int j = 0; j <= i; j++) {
      double dot = 0.0;
      for (int r = 0; r < W3_ROWS; r++) dot += a[i][r] * a[j][r];
      L[i][j] = dot;
    }
    double dot = 0.0;
    for (int r = 0; r < W3_ROWS; r++) dot += a[i][r] * rhs[r];
    h[i] = dot;
  }
  for (int j = 0; j < W3_COLS; j++) {
    double diag = L[j][j];
    for (int k = 0; k < j; k++) diag -= L[j][k] * L[j][k];
    diag = sqrt(diag);
    L[j][j] = diag;
    for (int i = j + 1; i < W3_COLS; i++) {
      double s = L[i][j];
      for (int k = 0; k < j; k++) s -= L[i][k] * L[j][k];
      L[i][j] = s / diag;
    }
  }
  double y[W3_COLS];
  for (int i = 0; i < W3_COLS; i++) {
    double s = h[i];
    for (int k = 0; k < i; k++) s -= L[i][k] * y[k];
    y[i] = s / L[i][i];
  }
  for (int i = W3_COLS - 1; i >= 0; i--) {
    double s = y[i];
    for (int k = i + 1; k < W3_COLS; k++) s -= L[k][i] * x[k];
    x[i] = s / L[i][i];
  }
}

static int lsq_range(void *ctx, size_t lo, size_t hi) {
  double *out = ctx;
  for (size_t i = lo; i < hi; i++) lsq_item((uint64_t)i, out + i * W3_COLS);
  return 0;
}

/* The parallel loop's body also notes, per worker, when it started its
 * first chunk and how many items it ran: a worker that joins late or a
 * lopsided share shows up on the "#" line of each k. */
#define W3_TRACK 64
typedef struct w3_loop {
  double *out;
  double t0;
  double first[W3_TRACK]; /* seconds after t0; 0: no chunk yet */
  size_t items[W3_TRACK];
} w3_loop;

static int lsq_tracked(void *ctx, size_t lo, size_t hi) {
  w3_loop *l = ctx;
  int w = nd_worker_index();
  if (w >= 0 && w < W3_TRACK) {
    if (l->items[w] == 0) l->first[w] = nb_now() - l->t0;
    l->items[w] += hi - lo;
  }
  return lsq_range(l->out, lo, hi);
}

/* " w0 start 0.1 ms 52.0%, w1 start 0.3 ms 48.0%" */
static void describe_workers(const w3_loop *l, unsigned threads, char *buf, size_t len) {
  size_t used = 0;
  buf[0] = 0;
  for (unsigned w = 0; w < threads && w < W3_TRACK && used < len; w++) {
    int n = l->items[w]
                ? snprintf(buf + used, len - used, "%s w%u start %.1f ms %.1f%%", w ? "," : "",
                           w, 1e3 * l->first[w], 100.0 * (double)l->items[w] / (double)W3_N)
                : snprintf(buf + used, len - used, "%s w%u none", w ? "," : "", w);
    if (n < 0) break;
    used += (size_t)n;
  }
}

static double sum_all(const double *out) {
  double s = 0.0;
  for (long i = 0; i < W3_N * W3_COLS; i++) s += out[i];
  return s;
}

static void poison(double *out) { memset(out, 0xff, sizeof(double) * (size_t)W3_N * W3_COLS); }

typedef struct raw_part {
  double *out;
  size_t lo, hi;
} raw_part;

static void *raw_thread(void *arg) {
  raw_part *rp = arg;
  lsq_range(rp->out, rp->lo, rp->hi);
  return NULL;
}

/* The control: `threads` pthreads over equal contiguous parts. 0 or -1. */
static int raw_control(double *out, unsigned threads, double serial, double ref,
                       const char *when) {
  enum { MAXT = 64 };
  pthread_t th[MAXT];
  raw_part part[MAXT];
  double t[NB_REPS];
  if (threads > MAXT) threads = MAXT;
  for (int r = 0; r < NB_REPS; r++) {
    poison(out);
    unsigned started = 0;
    double t0 = nb_now();
    for (unsigned j = 0; j < threads; j++) {
      part[j].out = out;
      part[j].lo = (size_t)W3_N * j / threads;
      part[j].hi = (size_t)W3_N * (j + 1) / threads;
      if (j == 0 || pthread_create(&th[j], NULL, raw_thread, &part[j]) == 0) started = j + 1;
      if (started != j + 1) break;
    }
    raw_thread(&part[0]);
    for (unsigned j = 1; j < started; j++) pthread_join(th[j], NULL);
    t[r] = nb_now() - t0;
    double cs = sum_all(out);
    if (started != threads || memcmp(&cs, &ref, sizeof cs) != 0) {
      fprintf(stderr, "nidag-bench: w3 control: %u of %u threads, checksum %.17g\n", started,
              threads, cs);
      return -1;
    }
  }
  double m = nb_median(t, NB_REPS);
  printf("# w3_control_raw_pthreads %s: %u threads, equal parts, no runtime: runs %.4f %.4f "
         "%.4f s, speedup %.3f\n",
         when, threads, t[0], t[1], t[2], serial / m);
  return 0;
}

int nb_w3(const nb_ctx *c) {
  double *out = malloc(sizeof(double) * (size_t)W3_N * W3_COLS);
  if (!out) {
    fprintf(stderr, "nidag-bench: w3: out of memory\n");
    return 1;
  }
  double t[NB_REPS];
  lsq_range(out, 0, (size_t)W3_N); /* warm-up and first touch */
  for (int r = 0; r < NB_REPS; r++) {
    poison(out);
    nb_load ld;
    double own, others;
    nb_load_begin(&ld);
    double t0 = nb_now();
    lsq_range(out, 0, (size_t)W3_N);
    t[r] = nb_now() - t0;
    nb_load_end(&ld, &own, &others);
    printf("# w3 serial run %d %.4f s; cores used by others %.2f\n", r, t[r], others);
  }
  double ts = nb_median(t, NB_REPS);
  double ref = sum_all(out);
  uint64_t bits;
  memcpy(&bits, &ref, sizeof bits);
  printf("# checksum_serial %.12e (bits %016llx)\n", ref, (unsigned long long)bits);
  printf("w3_serial_time %.4f s\n", ts);
  printf("w3_serial_per_item_ns %.1f ns\n", 1e9 * ts / (double)W3_N);

  if (raw_control(out, c->threads, ts, ref, "before the sweep") != 0) {
    free(out);
    return 1;
  }
  /* one untimed warm-up of the parallel loop */
  if (nd_parallel_for(c->pool, 0, (size_t)W3_N, ND_DYNAMIC, 0, lsq_range, out) != 0) {
    fprintf(stderr, "nidag-bench: w3: warm-up parallel_for failed\n");
    free(out);
    return 1;
  }
  double min_speedup = 1e300;
  int bad = 0;
  for (int k = 0; k <= W3_KMAX && !bad; k++) {
    size_t chunk = (size_t)(W3_N >> k);
    nd_pool_stats sum;
    memset(&sum, 0, sizeof sum);
    double own[NB_REPS], others[NB_REPS];
    char workers[NB_REPS][256];
    for (int r = 0; r < NB_REPS; r++) {
      poison(out);
      nb_stats_reset(c);
      w3_loop loop;
      memset(&loop, 0, sizeof loop);
      loop.out = out;
      nb_load ld;
      nb_load_begin(&ld);
      double t0 = nb_now();
      loop.t0 = t0;
      int rc = nd_parallel_for(c->pool, 0, (size_t)W3_N, ND_DYNAMIC, chunk, lsq_tracked, &loop);
      t[r] = nb_now() - t0;
      nb_load_end(&ld, &own[r], &others[r]);
      describe_workers(&loop, c->threads, workers[r], sizeof workers[r]);
      nd_pool_stats s;
      nd_pool_stats_get(c->pool, &s);
      sum.tasks += s.tasks;
      sum.steals += s.steals;
      sum.failed_steals += s.failed_steals;
      sum.sleeps += s.sleeps;
      sum.wakes += s.wakes;
      sum.injected += s.injected;
      if (rc != 0) {
        fprintf(stderr, "nidag-bench: w3 k=%d: nd_parallel_for returned %d\n", k, rc);
        bad = 1;
        break;
      }
      double cs = sum_all(out);
      if (memcmp(&cs, &ref, sizeof cs) != 0) {
        fprintf(stderr, "nidag-bench: w3 k=%d run %d: checksum %.17g != serial %.17g\n", k, r,
                cs, ref);
        bad = 1;
        break;
      }
    }
    if (bad) break;
    double m = nb_median(t, NB_REPS);
    double sp = ts / m;
    if (k >= 2 && sp < min_speedup) min_speedup = sp;
    printf("# w3 k=%d chunk=%zu runs %.4f %.4f %.4f s; cores used by nidag %.2f %.2f %.2f, "
           "by others %.2f %.2f %.2f; checksum ok\n",
           k, chunk, t[0], t[1], t[2], own[0], own[1], own[2], others[0], others[1], others[2]);
    for (int r = 0; r < NB_REPS; r++) printf("# w3 k=%d run %d:%s\n", k, r, workers[r]);
    printf("# w3 k=%d stats (sum of %d runs) tasks %llu steals %llu failed_steals %llu "
           "sleeps %llu wakes %llu injected %llu\n",
           k, NB_REPS, (unsigned long long)sum.tasks, (unsigned long long)sum.steals,
           (unsigned long long)sum.failed_steals, (unsigned long long)sum.sleeps,
           (unsigned long long)sum.wakes, (unsigned long long)sum.injected);
    printf("w3_nidag_dynamic_k%02d_time %.4f s\n", k, m);
    printf("w3_nidag_dynamic_k%02d_speedup %.3f x\n", k, sp);
    printf("w3_nidag_dynamic_k%02d_efficiency %.3f frac\n", k, sp / (double)c->threads);
  }
  if (!bad && raw_control(out, c->threads, ts, ref, "after the sweep") != 0) bad = 1;
  free(out);
  if (bad) return 1;
  printf("w3_nidag_min_speedup_k02_k15 %.3f x\n", min_speedup);
  return 0;
}
