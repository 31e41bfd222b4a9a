/* Feature scaling fitted on training rows: scikit-learn 1.2's StandardScaler
 * and RobustScaler(quantile_range=(5, 95)), with its constant-feature tests.
 *
 * The standard scaler runs thousands of times per experiment (every fold of
 * every parcellation), so its statistics are computed in row-major passes:
 * each row adds into per-column accumulators, never a strided walk down a
 * column. The passes reproduce sklearn's _incremental_mean_and_var on a
 * C-ordered copy of X[rows] (numpy reduces axis 0 row by row): mean =
 * sum / n, then var = (sum d^2 - (sum d)^2 / n) / n with d = x - mean, the
 * second term cancelling the rounding error of the mean.
 *
 * The robust scaler reproduces numpy's median (mean of the two middle values
 * for an even count) and its default 'linear' percentile, including the
 * b - (b - a) * (1 - t) form numpy uses when t >= 0.5; order statistics come
 * from a quickselect on a per-column scratch copy.
 *
 * ND_SCALE_NONE divides by nothing, so it does not look for constant columns
 * (it still refuses NaN/Inf). rows == NULL means the first nrows rows. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/models_int.h"

/* RobustScaler's quantile_range, as fractions (numpy divides q by 100). */
#define ND__Q_LOW (5.0 / 100.0)
#define ND__Q_HIGH (95.0 / 100.0)
/* sklearn's _handle_zeros_in_scale: a range below this is constant. */
#define ND__ZERO_SCALE (10.0 * DBL_EPSILON)
/* Quickselect gets this many times log2(n) partitioning rounds, then sorts
 * what is left (introselect), so adversarial input stays O(n log n). */
#define ND__SELECT_DEPTH_FACTOR 2

static inline const double *nd__row(nd_matview X, const size_t *rows, size_t r) {
  return X.data + (rows ? rows[r] : r) * X.ld;
}

/* Row kernels. Each column's sum runs over the rows in order, so the
 * compiler may vectorise across columns without changing any result. */
static void nd__add_row(double *restrict acc, const double *restrict x, size_t p) {
  for (size_t j = 0; j < p; j++) acc[j] += x[j];
}

static void nd__dev_row(double *restrict corr, double *restrict ssq, const double *restrict mean,
                        const double *restrict x, size_t p) {
  for (size_t j = 0; j < p; j++) {
    double d = x[j] - mean[j];
    corr[j] += d;
    ssq[j] += d * d;
  }
}

static void nd__scale_row(double *restrict out, const double *restrict x,
                          const double *restrict center, const double *restrict scale, size_t p) {
  for (size_t j = 0; j < p; j++) out[j] = (x[j] - center[j]) / scale[j];
}

static int nd__check_args(nd_scaling kind, nd_matview X, const size_t *rows, size_t nrows,
                          nd_constant_policy policy, const double *center,
                          const double *scale) {
  if (kind != ND_SCALE_NONE && kind != ND_SCALE_STANDARD && kind != ND_SCALE_ROBUST)
    return nd__merr(ND_EINVAL, "unknown scaling %d", (int)kind);
  if (policy != ND_CONSTANT_ERROR && policy != ND_CONSTANT_KEEP)
    return nd__merr(ND_EINVAL, "unknown constant-feature policy %d", (int)policy);
  if (nrows == 0)
    return nd__merr(ND_EINVAL, "cannot fit a scaler on 0 training rows");
  if (X.cols > 0 && (X.data == NULL || center == NULL || scale == NULL))
    return nd__merr(ND_EINVAL, "scaler: NULL matrix or output");
  if (X.ld < X.cols)
    return nd__merr(ND_EINVAL, "scaler: leading dimension %zu < %zu columns", X.ld, X.cols);
  if (rows == NULL && nrows > X.rows)
    return nd__merr(ND_EINVAL, "scaler: %zu rows requested of a %zu-row matrix", nrows,
                    X.rows);
  for (size_t r = 0; rows != NULL && r < nrows; r++)
    if (rows[r] >= X.rows)
      return nd__merr(ND_EINVAL, "scaler: row index %zu out of range (%zu rows)", rows[r],
                      X.rows);
  return ND_OK;
}

/* ND_EINVAL naming the first non-finite entry (in rows order), or ND_OK. */
static int nd__check_finite(nd_matview X, const size_t *rows, size_t nrows) {
  for (size_t r = 0; r < nrows; r++) {
    const double *x = nd__row(X, rows, r);
    for (size_t j = 0; j < X.cols; j++)
      if (!isfinite(x[j]))
        return nd__merr(ND_EINVAL, "feature matrix row %zu, column %zu is %s",
                        rows ? rows[r] : r, j, isnan(x[j]) ? "NaN" : "infinite");
  }
  return ND_OK;
}

/* A constant column under the policy: an error, or scale 1 and counted. */
static int nd__constant(nd_constant_policy policy, size_t j, size_t nrows, double *scale,
                        size_t *count) {
  if (policy == ND_CONSTANT_ERROR)
    return nd__merr(ND_EINVAL, "feature column %zu is constant on the %zu training rows", j,
                    nrows);
  scale[j] = 1.0;
  (*count)++;
  return ND_OK;
}

static int nd__fit_standard(nd_matview X, const size_t *rows, size_t nrows,
                            nd_constant_policy policy, double *mean, double *scale,
                            size_t *count) {
  size_t p = X.cols;
  double *corr = nd_calloc(p, sizeof *corr);
  if (corr == NULL)
    return nd__merr(ND_ENOMEM, "standard scaler: no memory for %zu columns", p);
  memset(mean, 0, p * sizeof *mean);
  for (size_t r = 0; r < nrows; r++) nd__add_row(mean, nd__row(X, rows, r), p);
  for (size_t j = 0; j < p; j++) {
    if (!isfinite(mean[j])) {
      /* A NaN/Inf entry, or finite values whose sum overflows. */
      nd_free(corr);
      int rc = nd__check_finite(X, rows, nrows);
      if (rc != ND_OK)
        return rc;
      return nd__merr(ND_ERANGE, "feature column %zu overflows: its sum exceeds the double range",
                      j);
    }
  }
  double n = (double)nrows;
  for (size_t j = 0; j < p; j++) {
    mean[j] /= n;
    scale[j] = 0.0; /* accumulates sum d^2 */
  }
  for (size_t r = 0; r < nrows; r++) nd__dev_row(corr, scale, mean, nd__row(X, rows, r), p);
  int rc = ND_OK;
  for (size_t j = 0; j < p && rc == ND_OK; j++) {
    double var = (scale[j] - corr[j] * corr[j] / n) / n;
    /* Finite values whose squared deviations overflow: Inf would pass the
     * constant test below and NaN would become the scale. */
    if (!isfinite(var)) {
      rc = nd__merr(ND_ERANGE,
                    "feature column %zu overflows: its variance exceeds the double range", j);
      break;
    }
    /* sklearn's _is_constant_feature: var within the error bound of the
     * two-pass algorithm (Chan, Golub and LeVeque). */
    double mean_err = n * mean[j] * DBL_EPSILON;
    if (var <= n * DBL_EPSILON * var + mean_err * mean_err)
      rc = nd__constant(policy, j, nrows, scale, count);
    else
      scale[j] = sqrt(var);
  }
  nd_free(corr);
  return rc;
}

static inline void nd__swap(double *a, double *b) {
  double t = *a;
  *a = *b;
  *b = t;
}

static int nd__cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Rearrange a[0..n) so a[k] is the k-th smallest, smaller values before it
 * and larger after (Hoare partition around a median of three; a full sort
 * once the depth budget runs out). */
static void nd__select(double *a, size_t n, size_t k) {
  size_t lo = 0, hi = n - 1, budget = ND__SELECT_DEPTH_FACTOR;
  for (size_t m = n; m > 1; m >>= 1) budget += ND__SELECT_DEPTH_FACTOR;
  while (hi > lo) {
    if (budget-- == 0) {
      qsort(a + lo, hi - lo + 1, sizeof *a, nd__cmp_double);
      return;
    }
    size_t mid = lo + (hi - lo) / 2;
    if (a[mid] < a[lo]) nd__swap(&a[mid], &a[lo]);
    if (a[hi] < a[lo]) nd__swap(&a[hi], &a[lo]);
    if (a[hi] < a[mid]) nd__swap(&a[hi], &a[mid]);
    double pivot = a[mid];
    size_t i = lo, j = hi;
    for (;;) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i >= j)
        break;
      nd__swap(&a[i], &a[j]);
      i++;
      j--;
    }
    /* Now a[lo..j] <= pivot <= a[j+1..hi]. */
    if (k <= j)
      hi = j;
    else
      lo = j + 1;
  }
}

/* The k-th smallest value and, when k + 1 < n, the (k+1)-th. */
static void nd__order_pair(double *a, size_t n, size_t k, double *vk, double *vnext) {
  nd__select(a, n, k);
  *vk = a[k];
  double next = *vk;
  if (k + 1 < n) {
    next = a[k + 1];
    for (size_t i = k + 2; i < n; i++)
      if (a[i] < next)
        next = a[i];
  }
  *vnext = next;
}

/* numpy.percentile(method='linear') at fraction q of the n values in a. */
static double nd__percentile(double *a, size_t n, double q) {
  double v = (double)(n - 1) * q;
  if (v >= (double)(n - 1)) {
    double lo, hi;
    nd__order_pair(a, n, n - 1, &lo, &hi);
    return lo;
  }
  double below = floor(v), t = v - below;
  double lo, hi;
  nd__order_pair(a, n, (size_t)below, &lo, &hi);
  double diff = hi - lo;
  return t >= 0.5 ? hi - diff * (1.0 - t) : lo + diff * t;
}

static double nd__median(double *a, size_t n) {
  double lo, hi;
  nd__order_pair(a, n, (n - 1) / 2, &lo, &hi);
  return n % 2 ? lo : (lo + hi) / 2.0;
}

static int nd__fit_robust(nd_matview X, const size_t *rows, size_t nrows,
                          nd_constant_policy policy, double *center, double *scale,
                          size_t *count) {
  int rc = nd__check_finite(X, rows, nrows);
  if (rc != ND_OK)
    return rc;
  double *col = nd_calloc(nrows, sizeof *col);
  if (col == NULL)
    return nd__merr(ND_ENOMEM, "robust scaler: no memory for %zu rows", nrows);
  for (size_t j = 0; j < X.cols && rc == ND_OK; j++) {
    for (size_t r = 0; r < nrows; r++) col[r] = nd__row(X, rows, r)[j];
    center[j] = nd__median(col, nrows);
    double range = nd__percentile(col, nrows, ND__Q_HIGH) - nd__percentile(col, nrows, ND__Q_LOW);
    if (range < ND__ZERO_SCALE)
      rc = nd__constant(policy, j, nrows, scale, count);
    else
      scale[j] = range;
  }
  nd_free(col);
  return rc;
}

int nd_scaler_fit(nd_scaling kind, nd_matview X, const size_t *rows, size_t nrows,
                  nd_constant_policy policy, double *center, double *scale,
                  size_t *nconstant) {
  size_t count = 0;
  if (nconstant != NULL)
    *nconstant = 0;
  int rc = nd__check_args(kind, X, rows, nrows, policy, center, scale);
  if (rc != ND_OK || X.cols == 0)
    return rc;
  switch (kind) {
  case ND_SCALE_NONE:
    rc = nd__check_finite(X, rows, nrows);
    for (size_t j = 0; j < X.cols && rc == ND_OK; j++) {
      center[j] = 0.0;
      scale[j] = 1.0;
    }
    break;
  case ND_SCALE_STANDARD:
    rc = nd__fit_standard(X, rows, nrows, policy, center, scale, &count);
    break;
  case ND_SCALE_ROBUST:
    rc = nd__fit_robust(X, rows, nrows, policy, center, scale, &count);
    break;
  }
  if (rc == ND_OK && nconstant != NULL)
    *nconstant = count;
  return rc;
}

void nd_scaler_apply(nd_matview X, const size_t *rows, size_t nrows, const double *center,
                     const double *scale, double *out) {
  for (size_t r = 0; r < nrows; r++)
    nd__scale_row(out + r * X.cols, nd__row(X, rows, r), center, scale, X.cols);
}
