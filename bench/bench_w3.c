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
 */
#include <math.h>
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

static double sum_all(const double *out) {
  double s = 0.0;
  for (long i = 0; i < W3_N * W3_COLS; i++) s += out[i];
  return s;
}

static void poison(double *out) { memset(out, 0xff, sizeof(double) * (size_t)W3_N * W3_COLS); }

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
    double t0 = nb_now();
    lsq_range(out, 0, (size_t)W3_N);
    t[r] = nb_now() - t0;
  }
  double ts = nb_median(t, NB_REPS);
  double ref = sum_all(out);
  uint64_t bits;
  memcpy(&bits, &ref, sizeof bits);
  printf("# checksum_serial %.12e (bits %016llx)\n", ref, (unsigned long long)bits);
  printf("w3_serial_time %.4f s\n", ts);
  printf("w3_serial_per_item_ns %.1f ns\n", 1e9 * ts / (double)W3_N);

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
    for (int r = 0; r < NB_REPS; r++) {
      poison(out);
      nb_stats_reset(c);
      double t0 = nb_now();
      int rc = nd_parallel_for(c->pool, 0, (size_t)W3_N, ND_DYNAMIC, chunk, lsq_range, out);
      t[r] = nb_now() - t0;
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
    printf("# w3 k=%d chunk=%zu runs %.4f %.4f %.4f checksum ok\n", k, chunk, t[0], t[1],
           t[2]);
    printf("# w3 k=%d stats (sum of %d runs) tasks %llu steals %llu failed_steals %llu "
           "sleeps %llu wakes %llu injected %llu\n",
           k, NB_REPS, (unsigned long long)sum.tasks, (unsigned long long)sum.steals,
           (unsigned long long)sum.failed_steals, (unsigned long long)sum.sleeps,
           (unsigned long long)sum.wakes, (unsigned long long)sum.injected);
    printf("w3_nidag_dynamic_k%02d_time %.4f s\n", k, m);
    printf("w3_nidag_dynamic_k%02d_speedup %.3f x\n", k, sp);
    printf("w3_nidag_dynamic_k%02d_efficiency %.3f frac\n", k, sp / (double)c->threads);
  }
  free(out);
  if (bad) return 1;
  printf("w3_nidag_min_speedup_k02_k15 %.3f x\n", min_speedup);
  return 0;
}
