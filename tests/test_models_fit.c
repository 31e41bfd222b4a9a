/* The estimators and the grid search: nd_ridge_path against direct
 * Cholesky solves (primal and kernel shapes), nd_ridge_fit, nd_ridgecv_fit
 * against brute-force leave-one-out and scikit-learn's numbers,
 * nd_logistic_fit against the optimality conditions and scikit-learn, and
 * nd_pipeline_fit_predict against the same search written out as a loop
 * over the public functions, with its ties, NaN scores and errors.
 *
 * The scikit-learn literals (sklearn 1.2.1, Debian's /usr/bin/python3) are
 * printed by scripts/models_fit_reference.py: RidgeCV, LogisticRegression
 * and GridSearchCV on the small matrices below. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nidag.h"
#include "tests/testutil.h"

static uint64_t g_seed;

/* ------------------------------------------------------------- helpers */

/* The runtime's generator (Philox) for test data, its stream keyed by seed. */
static nd_rng seeded(uint64_t seed) {
  nd_rng r;
  nd_rng_init(&r, (nd_hash128){.lo = seed, .hi = 0});
  return r;
}

/* n x p matrix (leading dimension ld) of correlated Gaussian columns with
 * column means and scales that differ, so centring and scaling matter. */
static double *rand_matrix(nd_rng *s, size_t n, size_t p, size_t ld) {
  double *X = calloc(n * ld + 1, sizeof *X);
  assert_non_null(X);
  for (size_t i = 0; i < n; i++) {
    double common = nd_rng_normal(s);
    for (size_t j = 0; j < p; j++)
      X[i * ld + j] = (1.0 + (double)(j % 3)) * (nd_rng_normal(s) + 0.5 * common) + (double)j - 2.0;
  }
  return X;
}

static double *rand_target(nd_rng *s, const double *X, size_t n, size_t p, size_t ld) {
  double *y = malloc(n * sizeof *y);
  assert_non_null(y);
  for (size_t i = 0; i < n; i++) {
    double v = 3.0 + 0.5 * nd_rng_normal(s);
    for (size_t j = 0; j < p; j++) v += X[i * ld + j] * (j % 2 ? 0.3 : -0.2);
    y[i] = v;
  }
  return y;
}

/* Reference ridge: centre, form Z'Z + aI (p x p, whatever the shape) and
 * solve it by a plain Cholesky factorisation. rows selects rows (NULL: all
 * n). */
static void ref_ridge(const double *X, size_t ld, const size_t *rows, size_t n, size_t p,
                      const double *y, double alpha, double *coef, double *icpt) {
  double *Z = calloc(n * p, sizeof *Z), *A = calloc(p * p, sizeof *A);
  double *xm = calloc(p, sizeof *xm), *b = calloc(p, sizeof *b), *yc = calloc(n, sizeof *yc);
  double ym = 0;
  for (size_t r = 0; r < n; r++) {
    size_t i = rows ? rows[r] : r;
    for (size_t j = 0; j < p; j++) xm[j] += X[i * ld + j] / (double)n;
    ym += y[i] / (double)n;
  }
  for (size_t r = 0; r < n; r++) {
    size_t i = rows ? rows[r] : r;
    for (size_t j = 0; j < p; j++) Z[r * p + j] = X[i * ld + j] - xm[j];
    yc[r] = y[i] - ym;
  }
  for (size_t j = 0; j < p; j++)
    for (size_t k = 0; k < p; k++) {
      double s = j == k ? alpha : 0.0;
      for (size_t r = 0; r < n; r++) s += Z[r * p + j] * Z[r * p + k];
      A[j * p + k] = s;
    }
  for (size_t j = 0; j < p; j++)
    for (size_t r = 0; r < n; r++) b[j] += Z[r * p + j] * yc[r];
  for (size_t j = 0; j < p; j++) { /* A = L L' in the lower triangle */
    for (size_t k = 0; k < j; k++) A[j * p + j] -= A[j * p + k] * A[j * p + k];
    A[j * p + j] = sqrt(A[j * p + j]);
    for (size_t i = j + 1; i < p; i++) {
      for (size_t k = 0; k < j; k++) A[i * p + j] -= A[i * p + k] * A[j * p + k];
      A[i * p + j] /= A[j * p + j];
    }
  }
  for (size_t i = 0; i < p; i++) { /* L z = b, then L' coef = z */
    for (size_t k = 0; k < i; k++) b[i] -= A[i * p + k] * b[k];
    b[i] /= A[i * p + i];
  }
  for (size_t i = p; i-- > 0;) {
    for (size_t k = i + 1; k < p; k++) b[i] -= A[k * p + i] * b[k];
    b[i] /= A[i * p + i];
  }
  double c = ym;
  for (size_t j = 0; j < p; j++) {
    coef[j] = b[j];
    c -= xm[j] * b[j];
  }
  *icpt = c;
  free(Z), free(A), free(xm), free(b), free(yc);
}

static double dot_row(const double *x, const double *w, size_t p) {
  double s = 0;
  for (size_t j = 0; j < p; j++) s += x[j] * w[j];
  return s;
}

static double max_abs(const double *v, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
  return m;
}

/* |a - b| <= rel * max(1, |b|) elementwise. */
static void assert_close(const double *a, const double *b, size_t n, double rel) {
  for (size_t i = 0; i < n; i++) {
    double tol = rel * fmax(1.0, fabs(b[i]));
    if (!(fabs(a[i] - b[i]) <= tol))
      fail_msg("element %zu: %.17g vs %.17g (tolerance %g)", i, a[i], b[i], tol);
  }
}

/* ---------------------------------------------------------------- ridge */

static const double path_alphas[] = {1e-3, 0.05, 1.0, 17.0, 300.0, 1e5};
#define NPATH (sizeof path_alphas / sizeof *path_alphas)

static void check_path(size_t n, size_t p, size_t m) {
  nd_rng s = seeded(g_seed + n * 1000 + p);
  size_t ld = p + 3; /* a view into a wider matrix */
  double *X = rand_matrix(&s, n, p, ld), *T = rand_matrix(&s, m, p, p);
  double *y = rand_target(&s, X, n, p, ld);
  double *pred = malloc(NPATH * m * sizeof *pred), *ref = malloc(m * sizeof *ref);
  double *coef = malloc(p * sizeof *coef), icpt;
  nd_matview Xv = {X, n, p, ld}, Tv = {T, m, p, p};
  assert_int_equal(nd_ridge_path(Xv, y, Tv, path_alphas, NPATH, pred), ND_OK);
  for (size_t a = 0; a < NPATH; a++) {
    ref_ridge(X, ld, NULL, n, p, y, path_alphas[a], coef, &icpt);
    for (size_t i = 0; i < m; i++) ref[i] = dot_row(T + i * p, coef, p) + icpt;
    double scale = fmax(1.0, max_abs(ref, m));
    for (size_t i = 0; i < m; i++)
      if (fabs(pred[a * m + i] - ref[i]) > 1e-9 * scale)
        fail_msg("n %zu p %zu alpha %g row %zu: %.17g vs %.17g", n, p, path_alphas[a], i,
                 pred[a * m + i], ref[i]);
    /* nd_ridge_fit agrees with the path too. */
    double c2[64], i2;
    assert_true(p <= 64);
    assert_int_equal(nd_ridge_fit(Xv, y, path_alphas[a], c2, &i2), ND_OK);
    for (size_t i = 0; i < m; i++)
      assert_true(fabs(dot_row(T + i * p, c2, p) + i2 - pred[a * m + i]) <= 1e-9 * scale);
    assert_close(c2, coef, p, 1e-8);
  }
  free(X), free(T), free(y), free(pred), free(ref), free(coef);
}

static void test_ridge_path_primal(void **state) {
  (void)state;
  check_path(40, 7, 9);
  check_path(60, 60, 5); /* n == p: primal */
  check_path(35, 1, 4);
}

static void test_ridge_path_kernel(void **state) {
  (void)state;
  check_path(12, 30, 7);
  check_path(2, 5, 3);
  check_path(25, 26, 6);
}

/* One training row: the centred data are zero, so every prediction is y. */
static void test_ridge_one_row(void **state) {
  (void)state;
  const double X[] = {1.0, 2.0, 3.0}, y[] = {4.5}, T[] = {9.0, -1.0, 0.5, 2.0, 2.0, 2.0};
  double pred[2 * 2];
  const double alphas[] = {0.1, 10.0};
  nd_matview Xv = {X, 1, 3, 3}, Tv = {T, 2, 3, 3};
  assert_int_equal(nd_ridge_path(Xv, y, Tv, alphas, 2, pred), ND_OK);
  for (size_t i = 0; i < 4; i++) assert_true(pred[i] == 4.5);
}

/* x = 0, 1, 2 and y = 1, 3, 5 with alpha 2: coef = sum(zc * yc) /
 * (sum(zc^2) + alpha) = 4 / 4 = 1, intercept = 3 - 1 * 1 = 2. */
static void test_ridge_by_hand(void **state) {
  (void)state;
  const double X[] = {0.0, 1.0, 2.0}, y[] = {1.0, 3.0, 5.0}, T[] = {10.0, -1.0};
  nd_matview Xv = {X, 3, 1, 1}, Tv = {T, 2, 1, 1};
  double coef, icpt, pred[2];
  const double alpha = 2.0;
  assert_int_equal(nd_ridge_fit(Xv, y, alpha, &coef, &icpt), ND_OK);
  assert_true(fabs(coef - 1.0) < 1e-15 && fabs(icpt - 2.0) < 1e-15);
  assert_int_equal(nd_ridge_path(Xv, y, Tv, &alpha, 1, pred), ND_OK);
  assert_true(fabs(pred[0] - 12.0) < 1e-13 && fabs(pred[1] - 1.0) < 1e-13);
}

/* The intercept is unpenalised: shifting y moves only the intercept, and
 * shifting a column of X leaves the coefficients and predictions alone. */
static void test_ridge_intercept(void **state) {
  (void)state;
  nd_rng s = seeded(g_seed ^ 0x51);
  const size_t n = 30, p = 4;
  double *X = rand_matrix(&s, n, p, p), *y = rand_target(&s, X, n, p, p);
  double c0[4], i0, c1[4], i1, c2[4], i2;
  nd_matview Xv = {X, n, p, p};
  assert_int_equal(nd_ridge_fit(Xv, y, 3.0, c0, &i0), ND_OK);
  for (size_t i = 0; i < n; i++) y[i] += 100.0;
  assert_int_equal(nd_ridge_fit(Xv, y, 3.0, c1, &i1), ND_OK);
  assert_close(c1, c0, p, 1e-12);
  assert_true(fabs(i1 - i0 - 100.0) < 1e-10);
  for (size_t i = 0; i < n; i++) X[i * p + 2] += 50.0;
  assert_int_equal(nd_ridge_fit(Xv, y, 3.0, c2, &i2), ND_OK);
  assert_close(c2, c1, p, 1e-10);
  assert_true(fabs(i2 - (i1 - 50.0 * c1[2])) < 1e-9);
  free(X), free(y);
}

/* Two equal columns make Z'Z exactly singular; an alpha below its rounding
 * leaves a zero pivot, which is ND_ERANGE rather than garbage. */
static void test_ridge_singular(void **state) {
  (void)state;
  const double X[] = {1, 1, 2, 2, 4, 4, 7, 7, 8, 8}, y[] = {1, 2, 3, 5, 4};
  const double tiny = 1e-300, ok = 1e-3;
  double pred[5], coef[2], icpt;
  nd_matview Xv = {X, 5, 2, 2};
  assert_int_equal(nd_ridge_path(Xv, y, Xv, &tiny, 1, pred), ND_ERANGE);
  assert_non_null(strstr(nd_models_errmsg(), "singular"));
  assert_int_equal(nd_ridge_fit(Xv, y, tiny, coef, &icpt), ND_ERANGE);
  assert_int_equal(nd_ridge_fit(Xv, y, ok, coef, &icpt), ND_OK);
  assert_true(fabs(coef[0] - coef[1]) < 1e-12); /* the penalty splits the weight evenly */
  assert_int_equal(nd_ridge_path(Xv, y, Xv, &ok, 1, pred), ND_OK);
}

static void test_ridge_errors(void **state) {
  (void)state;
  double X[6] = {1, 2, 3, 4, 5, 7}, y[3] = {1, 2, 4}, pred[6], coef[2], icpt;
  nd_matview Xv = {X, 3, 2, 2};
  double bad[] = {1.0, 0.0};
  assert_int_equal(nd_ridge_path(Xv, y, Xv, bad, 2, pred), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "alphas[1]"));
  bad[1] = NAN;
  assert_int_equal(nd_ridge_path(Xv, y, Xv, bad, 2, pred), ND_EINVAL);
  assert_int_equal(nd_ridge_path(Xv, y, Xv, bad, 0, pred), ND_EINVAL);
  assert_int_equal(nd_ridge_fit(Xv, y, -1.0, coef, &icpt), ND_EINVAL);
  nd_matview T1 = {X, 2, 1, 2};
  assert_int_equal(nd_ridge_path(Xv, y, T1, bad, 1, pred), ND_EINVAL); /* columns differ */
  assert_int_equal(nd_ridge_path(Xv, NULL, Xv, bad, 1, pred), ND_EINVAL);
  nd_matview badld = {X, 3, 2, 1};
  assert_int_equal(nd_ridge_fit(badld, y, 1.0, coef, &icpt), ND_EINVAL);
  nd_matview none = {X, 0, 2, 2};
  assert_int_equal(nd_ridge_fit(none, y, 1.0, coef, &icpt), ND_EINVAL);
  X[3] = INFINITY;
  assert_int_equal(nd_ridge_fit(Xv, y, 1.0, coef, &icpt), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "row 1 column 1"));
  X[3] = 4;
  y[2] = NAN;
  assert_int_equal(nd_ridge_path(Xv, y, Xv, bad, 1, pred), ND_EINVAL);
  y[2] = 4;
  double T[2] = {NAN, 1};
  nd_matview Tv = {T, 1, 2, 2};
  assert_int_equal(nd_ridge_path(Xv, y, Tv, bad, 1, pred), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "Xte"));
}

/* -------------------------------------------------------------- RidgeCV */

static const double cv_alphas[] = {0.01, 0.1, 1.0, 10.0, 100.0};
#define NCV (sizeof cv_alphas / sizeof *cv_alphas)

static const double cv_x1[] = {
    1.002,  1.597,  0.452,  -0.781, 0.091,  -0.983, 1.120,  3.680,  0.016,  -0.241, 1.980,
    1.714,  1.211,  -0.861, 0.941,  2.391,  -1.688, 0.085,  -2.802, -1.579, -2.683, 0.530,
    -1.535, 1.543,  1.314,  0.626,  -4.034, -0.077, 0.903,  1.227,  -2.060, 0.044,  -0.957,
    -0.618, 3.122,  -0.615, 0.935,  2.769,  -0.167, 0.777,  1.221,  1.128,  -1.450, 1.152,
    3.718};
static const double cv_y1[] = {-0.650, 4.070, -1.436, -1.090, 11.822, 12.513, -0.248, 8.477,
                               4.662,  2.069, 1.901,  -3.489, 1.149,  5.939,  -0.715};
static const double cv_x2[] = {
    0.203,  -0.463, 0.127,  -1.187, -0.579, -0.196, 0.899,  1.145,  -1.324, -0.795,
    0.647,  -1.992, -0.463, -0.097, 1.257,  0.689,  -0.327, -0.369, -0.250, 1.524,
    -0.428, -0.304, 0.353,  -0.121, -0.197, -1.114, -0.012, -0.444, 1.166,  0.653,
    -0.024, 0.668,  -0.340, 1.052,  -0.005, 0.583,  -1.291, 0.347,  -1.688, -2.035,
    -0.304, -0.900, 0.164,  2.245,  -0.832, -0.624, 0.205,  0.493};
static const double cv_y2[] = {-0.900, -0.809, 1.843, -1.841, 3.581, 1.623};

static void test_ridgecv_sklearn(void **state) {
  (void)state;
  double coef[8], icpt;
  size_t best = 99;
  /* n > p: sklearn's "svd" mode. RidgeCV picks alpha 1.0. */
  nd_matview X1 = {cv_x1, 15, 3, 3};
  assert_int_equal(nd_ridgecv_fit(X1, cv_y1, cv_alphas, NCV, coef, &icpt, &best), ND_OK);
  assert_int_equal(best, 2);
  const double c1[] = {1.9978123179278855, -2.1616181374596, 0.21346966057746122};
  assert_close(coef, c1, 3, 1e-8);
  assert_true(fabs(icpt - 4.4723496993454628) < 1e-8 * 4.47);
  /* n <= p: "eigen" mode with the intercept trick. RidgeCV picks 0.01. */
  nd_matview X2 = {cv_x2, 6, 8, 8};
  assert_int_equal(nd_ridgecv_fit(X2, cv_y2, cv_alphas, NCV, coef, &icpt, &best), ND_OK);
  assert_int_equal(best, 0);
  const double c2[] = {-0.32908594348074804, 0.6004612421417227,  -0.21983325365354056,
                       0.57040478570307673,  -0.6157220200754131, -0.29611372908879591,
                       0.22116294660234898,  -0.83217674496629512};
  assert_close(coef, c2, 8, 1e-8);
  assert_true(fabs(icpt - 0.49113199923016448) < 1e-8);
}

/* The GCV shortcut equals refitting without each row in turn. */
static void check_ridgecv_loo(size_t n, size_t p) {
  nd_rng s = seeded(g_seed + 77 * n + p);
  double *X = rand_matrix(&s, n, p, p), *y = rand_target(&s, X, n, p, p);
  for (size_t i = 0; i < n; i++) y[i] += 2.0 * nd_rng_normal(&s); /* noisy: an interior optimum */
  const double alphas[] = {1e-3, 0.3, 3.0, 30.0, 300.0, 3000.0};
  const size_t na = sizeof alphas / sizeof *alphas;
  size_t *rows = malloc(n * sizeof *rows), ref_best = 0;
  double coef[16], icpt, rc[16], ri, best_mse = INFINITY;
  for (size_t a = 0; a < na; a++) {
    double mse = 0;
    for (size_t out = 0; out < n; out++) {
      size_t k = 0;
      for (size_t i = 0; i < n; i++)
        if (i != out) rows[k++] = i;
      ref_ridge(X, p, rows, n - 1, p, y, alphas[a], rc, &ri);
      double e = y[out] - dot_row(X + out * p, rc, p) - ri;
      mse += e * e / (double)n;
    }
    if (mse < best_mse) best_mse = mse, ref_best = a;
  }
  size_t best = 99;
  nd_matview Xv = {X, n, p, p};
  assert_int_equal(nd_ridgecv_fit(Xv, y, alphas, na, coef, &icpt, &best), ND_OK);
  assert_int_equal(best, ref_best);
  ref_ridge(X, p, NULL, n, p, y, alphas[best], rc, &ri);
  assert_close(coef, rc, p, 1e-9);
  assert_true(fabs(icpt - ri) <= 1e-9 * fmax(1, fabs(ri)));
  free(X), free(y), free(rows);
}

static void test_ridgecv_loo(void **state) {
  (void)state;
  check_ridgecv_loo(25, 4);  /* svd mode */
  check_ridgecv_loo(9, 12);  /* eigen mode */
  check_ridgecv_loo(10, 10); /* n == p: eigen mode */
}

static void test_ridgecv_ties(void **state) {
  (void)state;
  const double same[] = {2.0, 2.0, 2.0};
  double coef[3], icpt;
  size_t best = 99;
  nd_matview X1 = {cv_x1, 15, 3, 3};
  assert_int_equal(nd_ridgecv_fit(X1, cv_y1, same, 3, coef, &icpt, &best), ND_OK);
  assert_int_equal(best, 0);
  assert_int_equal(nd_ridgecv_fit(X1, cv_y1, same, 3, coef, &icpt, NULL), ND_OK);
  const double bad[] = {1.0, -2.0};
  assert_int_equal(nd_ridgecv_fit(X1, cv_y1, bad, 2, coef, &icpt, &best), ND_EINVAL);
}

/* ------------------------------------------------------------- logistic */

static const double lg_x[] = {
    -0.119, -1.998, -1.131, 0.363,  -2.129, 0.847,  -1.746, 0.757,  -0.845, 0.779,
    0.131,  -1.537, 1.249,  1.442,  -0.066, -0.274, -0.160, -0.975, 1.099,  -0.543,
    -0.051, -0.793, -0.626, -1.278, 1.257,  -0.154, 0.966,  0.013,  -0.694, -0.327,
    -0.560, 0.008,  -0.375, -0.300, -1.379, -0.807, 1.654,  -0.671, -1.054, 0.337,
    1.407,  -1.454, -0.209, -0.632, -1.761, 0.735,  -0.023, 0.071,  -0.752, 0.455,
    -0.539, -0.143, -1.108, -1.216, 1.336,  -0.507, 0.292,  -0.034, -0.441, -0.508};
static const double lg_y[] = {1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1};

/* max |gradient| of C * sum(logloss) + ||w||^2 / 2 at (w, b). */
static double logistic_grad(const double *X, const double *y, size_t n, size_t p, double C,
                            const double *w, double b) {
  double g[65] = {0};
  assert_true(p <= 64);
  for (size_t i = 0; i < n; i++) {
    double r = 1.0 / (1.0 + exp(-(dot_row(X + i * p, w, p) + b))) - y[i];
    for (size_t j = 0; j < p; j++) g[j] += C * r * X[i * p + j];
    g[p] += C * r;
  }
  for (size_t j = 0; j < p; j++) g[j] += w[j];
  return max_abs(g, p + 1);
}

static void test_logistic_sklearn(void **state) {
  (void)state;
  nd_matview X = {lg_x, 20, 3, 3};
  double coef[3], b;
  /* The optimum (sklearn's newton-cholesky solver), then the default lbfgs
   * result, which stops about 1e-7 away from it. */
  const double e05[] = {0.84494929117902928, -0.75216780496633173, 0.36051602493520435,
                        1.4951514778066748};
  const double s05[] = {0.84494911842150466, -0.75216784343253806, 0.3605162307281165,
                        1.4951516836467458};
  const double e10[] = {3.2250759622533782, -2.4548837611798198, 1.6521433176974014,
                        3.2515032583806884};
  const double s10[] = {3.2250760039529527, -2.454883846874726, 1.6521433860880619,
                        3.2515032225983429};
  assert_int_equal(nd_logistic_fit(X, lg_y, 0.5, 0, 0, coef, &b), ND_OK);
  double th[4] = {coef[0], coef[1], coef[2], b};
  assert_close(th, e05, 4, 1e-9);
  assert_close(th, s05, 4, 1e-6);
  assert_true(logistic_grad(lg_x, lg_y, 20, 3, 0.5, coef, b) < 1e-9);
  assert_int_equal(nd_logistic_fit(X, lg_y, 10.0, 1e-12, 0, coef, &b), ND_OK);
  double th2[4] = {coef[0], coef[1], coef[2], b};
  assert_close(th2, e10, 4, 1e-9);
  assert_close(th2, s10, 4, 1e-6);
}

static void test_logistic_gradient_random(void **state) {
  (void)state;
  nd_rng s = seeded(g_seed ^ 0x10917);
  const size_t n = 80, p = 12;
  double *X = rand_matrix(&s, n, p, p), y[80], coef[12], b;
  /* Labels from two columns (their means are -2 and 1) plus noise. */
  for (size_t i = 0; i < n; i++)
    y[i] = X[i * p] - 0.5 * X[i * p + 3] + 2.5 + nd_rng_normal(&s) > 0 ? 1.0 : 0.0;
  nd_matview Xv = {X, n, p, p};
  const double Cs[] = {1e-4, 0.1, 1.0, 100.0};
  for (size_t c = 0; c < 4; c++) {
    assert_int_equal(nd_logistic_fit(Xv, y, Cs[c], 0, 0, coef, &b), ND_OK);
    double g = logistic_grad(X, y, n, p, Cs[c], coef, b);
    if (!(g <= 1e-8 * fmax(1, Cs[c] * (double)n)))
      fail_msg("C %g: gradient %g", Cs[c], g);
  }
  /* Separable data still has a finite optimum under the penalty. */
  for (size_t i = 0; i < n; i++) y[i] = X[i * p + 1] > -1.0 ? 1.0 : 0.0; /* mean -1 */
  assert_int_equal(nd_logistic_fit(Xv, y, 10.0, 0, 0, coef, &b), ND_OK);
  assert_true(logistic_grad(X, y, n, p, 10.0, coef, b) <= 1e-8 * 10 * n);
  free(X);
}

/* n < p: the Newton steps come from the n x n Gram (Woodbury). The data
 * are separable, so large C means large weights and many steps. */
static void test_logistic_dual(void **state) {
  (void)state;
  nd_rng s = seeded(g_seed ^ 0xd0a1);
  const size_t n = 30, p = 50;
  double *X = rand_matrix(&s, n, p, p), y[30], coef[50], b;
  /* Labels from two columns (their means are 2 and 7) plus noise. */
  for (size_t i = 0; i < n; i++)
    y[i] = X[i * p + 4] + 0.7 * X[i * p + 9] - 2.0 + nd_rng_normal(&s) > 0 ? 1.0 : 0.0;
  y[0] = 1.0, y[1] = 0.0;
  nd_matview Xv = {X, n, p, p};
  const double Cs[] = {1e-4, 0.1, 1.0, 100.0, 1e4};
  for (size_t c = 0; c < 5; c++) {
    assert_int_equal(nd_logistic_fit(Xv, y, Cs[c], 0, 0, coef, &b), ND_OK);
    double g = logistic_grad(X, y, n, p, Cs[c], coef, b);
    if (!(g <= 1e-8 * fmax(1, Cs[c] * (double)n)))
      fail_msg("C %g: gradient %g", Cs[c], g);
  }
  free(X);
}

static void test_logistic_errors(void **state) {
  (void)state;
  nd_matview X = {lg_x, 20, 3, 3};
  double coef[3], b, y[20];
  for (size_t i = 0; i < 20; i++) y[i] = 1.0;
  assert_int_equal(nd_logistic_fit(X, y, 1.0, 0, 0, coef, &b), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "a single class (all 1) in the training rows"));
  y[3] = 2.0;
  assert_int_equal(nd_logistic_fit(X, y, 1.0, 0, 0, coef, &b), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "0/1"));
  assert_int_equal(nd_logistic_fit(X, lg_y, 0.0, 0, 0, coef, &b), ND_EINVAL);
  assert_int_equal(nd_logistic_fit(X, lg_y, 1.0, -1.0, 0, coef, &b), ND_EINVAL);
  assert_int_equal(nd_logistic_fit(X, lg_y, 1.0, 0, 1, coef, &b), ND_ERANGE);
  assert_non_null(strstr(nd_models_errmsg(), "did not converge"));
  double Xn[3] = {1, NAN, 0};
  nd_matview Xv = {Xn, 1, 3, 3};
  assert_int_equal(nd_logistic_fit(Xv, lg_y, 1.0, 0, 0, coef, &b), ND_EINVAL);
  /* BLAS takes the leading dimension as an int: a larger one is refused
   * before any row past the first is touched. */
  const double y01[2] = {0, 1};
  nd_matview far = {lg_x, 2, 3, (size_t)INT32_MAX + 1};
  assert_int_equal(nd_logistic_fit(far, y01, 1.0, 0, 0, coef, &b), ND_EOVERFLOW);
  assert_non_null(strstr(nd_models_errmsg(), "leading dimension"));
}

static void test_logistic_proba(void **state) {
  (void)state;
  const double X[] = {0.0, 1000.0, -1000.0, 2.0};
  const double w = 1.0;
  double p[4];
  nd_matview Xv = {X, 4, 1, 1};
  nd_logistic_proba(Xv, &w, 0.0, p);
  assert_true(p[0] == 0.5 && p[1] == 1.0 && p[2] == 0.0);
  assert_true(fabs(p[3] - 1.0 / (1.0 + exp(-2.0))) < 1e-16);
  nd_logistic_proba(Xv, &w, -2.0, p);
  assert_true(fabs(p[3] - 0.5) < 1e-16);
}

/* ---------------------------------------------------------- grid search */

/* The search written out over the public functions: mean inner scores,
 * the winner (NaN last, first on ties) and the refit predictions. ROC AUC
 * ranks logistic regression's decision values (as sklearn's scorer does)
 * when `decision` is set, else P(y=1). */
static void explicit_search_as(const nd_pipeline *pl, nd_matview X, const double *y,
                               const int64_t *groups, const size_t *train, size_t ntrain,
                               const size_t *eval, size_t neval, bool decision, double *mean,
                               size_t *best, double *pred) {
  size_t p = X.cols, k = pl->inner.k, ng = pl->ngrid;
  double *ytr = malloc(ntrain * sizeof *ytr), *ya = malloc(ntrain * sizeof *ya);
  double *yb = malloc(ntrain * sizeof *yb), *ctr = malloc(p * sizeof *ctr);
  double *sc = malloc(p * sizeof *sc), *Za = malloc(ntrain * p * sizeof *Za);
  double *Zb = malloc((ntrain + neval) * p * sizeof *Zb), *pr = malloc(ng * ntrain * sizeof *pr);
  double *coef = malloc(p * sizeof *coef), b;
  size_t *ra = malloc(ntrain * sizeof *ra), *rb = malloc(ntrain * sizeof *rb);
  int32_t *fold = malloc(ntrain * sizeof *fold);
  int64_t *gtr = malloc(ntrain * sizeof *gtr);
  for (size_t r = 0; r < ntrain; r++) ytr[r] = y[train[r]], gtr[r] = groups ? groups[train[r]] : 0;
  for (size_t c = 0; c < ng; c++) mean[c] = 0;
  assert_int_equal(nd_cv_assign(&pl->inner, ntrain, ytr, groups ? gtr : NULL, fold), ND_OK);
  for (size_t f = 0; f < k; f++) {
    size_t na = 0, nb = 0;
    for (size_t r = 0; r < ntrain; r++) {
      if (fold[r] == (int32_t)f) rb[nb] = train[r], yb[nb++] = ytr[r];
      else ra[na] = train[r], ya[na++] = ytr[r];
    }
    assert_int_equal(nd_scaler_fit(pl->scaling, X, ra, na, pl->constant, ctr, sc, NULL), 0);
    nd_scaler_apply(X, ra, na, ctr, sc, Za);
    nd_scaler_apply(X, rb, nb, ctr, sc, Zb);
    nd_matview A = {Za, na, p, p}, B = {Zb, nb, p, p};
    if (pl->model == ND_MODEL_RIDGE) {
      assert_int_equal(nd_ridge_path(A, ya, B, pl->grid, ng, pr), ND_OK);
    } else {
      for (size_t c = 0; c < ng; c++) {
        assert_int_equal(nd_logistic_fit(A, ya, pl->grid[c], pl->tol, pl->max_iter, coef, &b),
                         ND_OK);
        nd_logistic_proba(B, coef, b, pr + c * nb);
        if (decision && pl->scoring == ND_METRIC_ROC_AUC)
          for (size_t i = 0; i < nb; i++) pr[c * nb + i] = dot_row(Zb + i * p, coef, p) + b;
      }
    }
    for (size_t c = 0; c < ng; c++)
      mean[c] += nd_metric_score(pl->scoring, yb, pr + c * nb, nb);
  }
  *best = 0;
  bool found = false;
  for (size_t c = 0; c < ng; c++) {
    mean[c] /= (double)k;
    if (!isnan(mean[c]) && (!found || mean[c] > mean[*best])) *best = c, found = true;
  }
  assert_int_equal(nd_scaler_fit(pl->scaling, X, train, ntrain, pl->constant, ctr, sc, NULL),
                   0);
  nd_scaler_apply(X, train, ntrain, ctr, sc, Za);
  nd_scaler_apply(X, eval, neval, ctr, sc, Zb);
  nd_matview A = {Za, ntrain, p, p}, B = {Zb, neval, p, p};
  if (pl->model == ND_MODEL_RIDGE) {
    assert_int_equal(nd_ridge_fit(A, ytr, pl->grid[*best], coef, &b), ND_OK);
    for (size_t i = 0; i < neval; i++) pred[i] = dot_row(Zb + i * p, coef, p) + b;
  } else {
    assert_int_equal(nd_logistic_fit(A, ytr, pl->grid[*best], pl->tol, pl->max_iter, coef, &b),
                     ND_OK);
    nd_logistic_proba(B, coef, b, pred);
  }
  free(ytr), free(ya), free(yb), free(ctr), free(sc), free(Za), free(Zb), free(pr);
  free(coef), free(ra), free(rb), free(fold), free(gtr);
}

static void explicit_search(const nd_pipeline *pl, nd_matview X, const double *y,
                            const size_t *train, size_t ntrain, const size_t *eval,
                            size_t neval, double *mean, size_t *best, double *pred) {
  explicit_search_as(pl, X, y, NULL, train, ntrain, eval, neval, true, mean, best, pred);
}

/* A problem: n rows of X (p columns), training rows in a shuffled order,
 * the rest evaluated. */
typedef struct problem {
  size_t n, p, ntrain, neval;
  double *X, *y;
  size_t *train, *eval;
} problem;

static problem make_problem(uint64_t seed, size_t n, size_t p, size_t ntrain, bool binary) {
  nd_rng s = seeded(seed);
  problem pb = {n, p, ntrain, n - ntrain, NULL, NULL, NULL, NULL};
  pb.X = rand_matrix(&s, n, p, p);
  pb.y = rand_target(&s, pb.X, n, p, p);
  for (size_t i = 0; i < n; i++) pb.y[i] += 1.5 * nd_rng_normal(&s);
  if (binary) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m += pb.y[i] / (double)n;
    for (size_t i = 0; i < n; i++) pb.y[i] = pb.y[i] > m ? 1.0 : 0.0;
  }
  pb.train = malloc(n * sizeof *pb.train);
  pb.eval = malloc(n * sizeof *pb.eval);
  for (size_t i = 0; i < n; i++) pb.train[i] = i;
  for (size_t i = n; i-- > 1;) { /* Fisher-Yates */
    size_t j = (size_t)nd_rng_below(&s, i + 1), t = pb.train[i];
    pb.train[i] = pb.train[j], pb.train[j] = t;
  }
  memcpy(pb.eval, pb.train + ntrain, pb.neval * sizeof *pb.eval);
  return pb;
}

static void free_problem(problem *pb) { free(pb->X), free(pb->y), free(pb->train), free(pb->eval); }

static void check_search(const nd_pipeline *pl, const problem *pb) {
  nd_matview X = {pb->X, pb->n, pb->p, pb->p};
  double mean[32], rmean[32], *pred = malloc(pb->neval * sizeof *pred);
  double *rpred = malloc(pb->neval * sizeof *rpred);
  size_t rbest;
  nd_search_result res;
  assert_true(pl->ngrid <= 32);
  int rc = nd_pipeline_fit_predict(pl, X, pb->y, NULL, pb->train, pb->ntrain, pb->eval,
                                   pb->neval, pred, &res, mean);
  if (rc) fail_msg("nd_pipeline_fit_predict: %d %s", rc, nd_models_errmsg());
  explicit_search(pl, X, pb->y, pb->train, pb->ntrain, pb->eval, pb->neval, rmean, &rbest,
                  rpred);
  assert_int_equal(res.best, rbest);
  assert_close(mean, rmean, pl->ngrid, 1e-9);
  assert_true(fabs(res.best_score - rmean[rbest]) <= 1e-9);
  assert_close(pred, rpred, pb->neval, 1e-8);
  free(pred), free(rpred);
}

static const double grid_alphas[] = {1e-3, 0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5};
#define NGA (sizeof grid_alphas / sizeof *grid_alphas)

/* Standardised model over grid, searched on 3 unshuffled folds of the
 * given kind (constant columns are errors). */
static nd_pipeline search_pipeline(nd_model model, const double *grid, size_t ngrid,
                                   nd_metric scoring, nd_cv_kind inner) {
  nd_pipeline pl = {0};
  pl.scaling = ND_SCALE_STANDARD;
  pl.model = model;
  pl.grid = grid;
  pl.ngrid = ngrid;
  pl.scoring = scoring;
  pl.inner = (nd_cv){.kind = inner, .k = 3};
  return pl;
}

static nd_pipeline ridge_pipeline(void) {
  nd_pipeline pl = search_pipeline(ND_MODEL_RIDGE, grid_alphas, NGA, ND_METRIC_R2, ND_CV_KFOLD);
  pl.constant = ND_CONSTANT_KEEP;
  return pl;
}

static void test_search_ridge_shapes(void **state) {
  (void)state;
  nd_pipeline pl = ridge_pipeline();
  problem a = make_problem(g_seed + 1, 90, 8, 70, false);   /* n > p everywhere */
  problem b = make_problem(g_seed + 2, 50, 60, 40, false);  /* p > n everywhere */
  problem c = make_problem(g_seed + 3, 80, 45, 60, false);  /* inner p > n, refit n > p */
  check_search(&pl, &a);
  check_search(&pl, &b);
  check_search(&pl, &c);
  pl.scaling = ND_SCALE_ROBUST;
  pl.scoring = ND_METRIC_MAE;
  pl.inner.k = 4;
  check_search(&pl, &a);
  check_search(&pl, &c);
  pl.scaling = ND_SCALE_NONE;
  pl.scoring = ND_METRIC_PEARSON;
  pl.inner = (nd_cv){.kind = ND_CV_KFOLD, .k = 3, .shuffle = true, .seed = 9};
  check_search(&pl, &b);
  free_problem(&a), free_problem(&b), free_problem(&c);
}

static void test_search_logistic(void **state) {
  (void)state;
  const double Cs[] = {1e-3, 0.01, 0.1, 1.0, 10.0};
  nd_pipeline pl =
      search_pipeline(ND_MODEL_LOGISTIC, Cs, 5, ND_METRIC_ROC_AUC, ND_CV_STRATIFIED);
  problem a = make_problem(g_seed + 4, 90, 6, 70, true);
  problem b = make_problem(g_seed + 5, 50, 40, 40, true);
  check_search(&pl, &a);
  check_search(&pl, &b);
  pl.scoring = ND_METRIC_BALANCED_ACC;
  check_search(&pl, &a);
  free_problem(&a), free_problem(&b);
}

/* scikit-learn's own GridSearchCV(Pipeline([StandardScaler(), Ridge() |
 * LogisticRegression(tol=1e-12, solver="newton-cholesky")]), cv=3) on
 * X[train], the training rows in this (shuffled) order, predicting X[eval]. */
static const double gs_x[] = {
    0.034,  3.719,  -1.388, 3.469,  -0.298, -0.055, -1.715, 4.832,  0.747,  -2.695, -1.217,
    4.711,  0.680,  0.727,  -2.190, 6.389,  0.825,  0.595,  -2.076, 7.057,  -0.870, -2.029,
    -1.803, 2.988,  -1.920, -0.628, -2.234, 1.420,  -1.492, 1.073,  -1.551, 4.301,  -0.744,
    1.770,  -1.641, 4.100,  0.545,  3.086,  -2.103, 2.559,  0.348,  1.495,  -1.451, 1.146,
    -0.662, -0.676, -2.867, 5.379,  0.528,  -0.478, -1.307, 7.466,  0.627,  1.803,  -1.522,
    1.004,  0.614,  2.206,  -2.884, 6.041,  -0.250, 2.563,  -2.220, 4.945,  0.343,  -0.753,
    -1.701, 4.685,  0.492,  -0.044, -1.457, 6.816,  -0.178, 2.264,  -1.370, 10.374, -1.574,
    2.766,  -1.767, 4.718,  -1.007, 3.514,  -2.631, 6.701,  1.302,  -2.199, -2.151, 1.072,
    0.244,  4.029,  -0.988, -0.334, -0.575, 2.407,  -1.210, 6.264,  -0.746, 1.594,  -2.008,
    4.389,  -0.734, 1.775,  -1.846, 4.721,  -0.222, -1.570, -2.243, 8.619,  -0.191, -1.879,
    -1.333, 6.591,  2.108,  1.125,  -2.231, 0.657,  1.324,  6.139,  -2.410, 3.059,  0.596,
    -0.661, -2.135, 3.950,  0.192,  3.190,  -1.989, 7.757,  -0.420, 1.656,  -3.069, 0.650,
    0.796,  -0.180, -1.710, 6.627,  1.322,  2.624,  -1.492, 4.665,  -0.698, -0.463, -2.244,
    1.611};
static const double gs_y[] = {
    -2.340, -0.974, 1.159,  -1.129, -2.354, -1.104, -2.496, -0.674, -1.146, -2.888, -2.220, 0.091,
    1.350,  0.283,  0.099,  -2.943, 0.019,  0.624,  0.496,  -1.898, -2.646, -0.452, -3.644, -1.132,
    -2.729, -1.675, -0.627, 1.072,  -0.564, -2.669, -0.533, -1.206, -4.094, -0.097, -1.181, -1.744};
static const double gs_yb[] = {0, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1, 0, 1, 1,
                               1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0, 1, 0, 0};
static const size_t gs_train[] = {30, 9,  11, 7,  15, 26, 1,  24, 34, 0,  31, 8,  28, 19, 35,
                                  32, 5,  6,  12, 33, 18, 25, 29, 4,  27, 23, 3,  22, 21, 13};
static const size_t gs_eval[] = {2, 10, 14, 16, 17, 20};

static void test_search_sklearn(void **state) {
  (void)state;
  nd_matview X = {gs_x, 36, 4, 4};
  double pred[6], mean[5];
  nd_search_result res;
  const double alphas[] = {0.01, 0.1, 1.0, 10.0, 100.0};
  nd_pipeline pl = ridge_pipeline();
  pl.grid = alphas;
  pl.ngrid = 5;
  assert_int_equal(nd_pipeline_fit_predict(&pl, X, gs_y, NULL, gs_train, 30, gs_eval, 6, pred,
                                           &res, mean),
                   ND_OK);
  const double rmean[] = {0.48420700984354537, 0.48381085356088499, 0.47886940018911317,
                          0.40079181146790122, 0.11108950705529012};
  const double rpred[] = {1.1909959581407434,   -1.4687835057389664, -2.101405736669407,
                          -0.18675486117957973, 0.22504164910782132, -2.887133056687289};
  assert_int_equal(res.best, 0);
  assert_close(mean, rmean, 5, 1e-10);
  assert_close(pred, rpred, 6, 1e-10);

  /* Classification: StratifiedKFold(3), ROC AUC (C = 0.01 and 0.1 tie). */
  const double Cs[] = {0.01, 0.1, 1.0, 10.0};
  pl.model = ND_MODEL_LOGISTIC;
  pl.grid = Cs;
  pl.ngrid = 4;
  pl.scoring = ND_METRIC_ROC_AUC;
  pl.inner.kind = ND_CV_STRATIFIED;
  assert_int_equal(nd_pipeline_fit_predict(&pl, X, gs_yb, NULL, gs_train, 30, gs_eval, 6, pred,
                                           &res, mean),
                   ND_OK);
  const double amean[] = {0.81055555555555558, 0.81055555555555558, 0.82388888888888889,
                          0.81111111111111123};
  const double proba[] = {0.98596705854889821, 0.41614543073792482, 0.22491900210349605,
                          0.86980106629657794, 0.87120850157497043, 0.040130098065527066};
  assert_int_equal(res.best, 2);
  assert_close(mean, amean, 4, 1e-12);
  assert_close(pred, proba, 6, 1e-9);
  /* Balanced accuracy: C = 1 and C = 10 tie, the first wins. */
  pl.scoring = ND_METRIC_BALANCED_ACC;
  assert_int_equal(nd_pipeline_fit_predict(&pl, X, gs_yb, NULL, gs_train, 30, gs_eval, 6, pred,
                                           &res, mean),
                   ND_OK);
  const double bmean[] = {0.59722222222222221, 0.6972222222222223, 0.76388888888888895,
                          0.76388888888888895};
  assert_int_equal(res.best, 2);
  assert_close(mean, bmean, 4, 1e-12);
  assert_close(pred, proba, 6, 1e-9);
}

/* Inner fold 0 trains on rows where the second feature is almost constant,
 * so scaling blows that feature up on its test rows and their P(y=1)
 * saturate to exactly 0 or 1 together, tying a negative with a positive that
 * the decision values order. ROC AUC follows the decision values. */
static void test_search_roc_auc_saturated(void **state) {
  (void)state;
  const double Cs[] = {1e4, 1e6};
  nd_pipeline pl = search_pipeline(ND_MODEL_LOGISTIC, Cs, 2, ND_METRIC_ROC_AUC, ND_CV_KFOLD);
  const double X[] = {-1.0, 1.0,    1.0,  1.0,    0.5,  -1.0,   -2.0, 1e-3,
                      2.0,  -1e-3,  -1.5, -2e-3,  1.5,  0.5e-3, -0.7, 1.5e-3,
                      0.8,  -1e-3,  0.0,  0.0,    0.0,  0.0,    0.0,  0.0};
  const double y[12] = {0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0};
  const size_t train[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8}, eval[1] = {9};
  nd_matview Xv = {X, 12, 2, 2};
  double pred[1], mean[2], rmean[2], pmean[2], rpred[1];
  size_t rbest;
  nd_search_result res;
  assert_int_equal(nd_pipeline_fit_predict(&pl, Xv, y, NULL, train, 9, eval, 1, pred, &res,
                                           mean),
                   ND_OK);
  explicit_search_as(&pl, Xv, y, NULL, train, 9, eval, 1, true, rmean, &rbest, rpred);
  assert_close(mean, rmean, 2, 1e-12);
  explicit_search_as(&pl, Xv, y, NULL, train, 9, eval, 1, false, pmean, &rbest, rpred);
  assert_true(pmean[0] != rmean[0] || pmean[1] != rmean[1]); /* the ties were real */
}

/* A GROUP inner split sees the training rows' groups. */
static void test_search_groups(void **state) {
  (void)state;
  nd_pipeline pl = ridge_pipeline();
  pl.inner = (nd_cv){.kind = ND_CV_GROUP, .k = 3, .shuffle = true, .seed = 5};
  problem a = make_problem(g_seed + 11, 60, 7, 48, false);
  int64_t groups[60];
  for (size_t i = 0; i < 60; i++) groups[i] = (int64_t)(i % 9) * 10;
  nd_matview X = {a.X, a.n, a.p, a.p};
  double pred[12], mean[NGA], rpred[12], rmean[NGA];
  size_t rbest;
  nd_search_result res;
  assert_int_equal(nd_pipeline_fit_predict(&pl, X, a.y, groups, a.train, a.ntrain, a.eval,
                                           a.neval, pred, &res, mean),
                   ND_OK);
  explicit_search_as(&pl, X, a.y, groups, a.train, a.ntrain, a.eval, a.neval, true, rmean,
                     &rbest, rpred);
  assert_int_equal(res.best, rbest);
  assert_close(mean, rmean, NGA, 1e-9);
  assert_close(pred, rpred, a.neval, 1e-8);
  free_problem(&a);
}

/* Identical candidates tie: the first wins. */
static void test_search_ties(void **state) {
  (void)state;
  const double same[] = {5.0, 0.5, 0.5, 5.0};
  nd_pipeline pl = ridge_pipeline();
  pl.grid = same;
  pl.ngrid = 4;
  problem a = make_problem(g_seed + 6, 60, 5, 45, false);
  nd_matview X = {a.X, a.n, a.p, a.p};
  double pred[15], mean[4];
  nd_search_result res;
  assert_int_equal(nd_pipeline_fit_predict(&pl, X, a.y, NULL, a.train, a.ntrain, a.eval,
                                           a.neval, pred, &res, mean),
                   ND_OK);
  assert_true(mean[0] == mean[3] && mean[1] == mean[2]);
  assert_true(res.best == (mean[1] > mean[0] ? 1u : 0u));
  free_problem(&a);
}

/* alpha = 1e300 shrinks every coefficient to nothing: the predictions are
 * the constant training mean and Pearson r is NaN. NaN ranks last; with
 * nothing else the first candidate stands. */
static void test_search_nan_scores(void **state) {
  (void)state;
  const double grid[] = {1e300, 2.0, 1e300};
  nd_pipeline pl = ridge_pipeline();
  pl.grid = grid;
  pl.ngrid = 3;
  pl.scoring = ND_METRIC_PEARSON;
  problem a = make_problem(g_seed + 7, 60, 5, 45, false);
  for (size_t i = 0; i < a.n; i++) a.y[i] += 10.0; /* away from 0: exact constants */
  nd_matview X = {a.X, a.n, a.p, a.p};
  double pred[15], mean[3];
  nd_search_result res;
  assert_int_equal(nd_pipeline_fit_predict(&pl, X, a.y, NULL, a.train, a.ntrain, a.eval,
                                           a.neval, pred, &res, mean),
                   ND_OK);
  assert_true(isnan(mean[0]) && isnan(mean[2]) && !isnan(mean[1]));
  assert_int_equal(res.best, 1);
  assert_true(res.best_score == mean[1]);
  const double all_nan[] = {1e300, 2e300};
  pl.grid = all_nan;
  pl.ngrid = 2;
  assert_int_equal(nd_pipeline_fit_predict(&pl, X, a.y, NULL, a.train, a.ntrain, a.eval,
                                           a.neval, pred, &res, mean),
                   ND_OK);
  assert_int_equal(res.best, 0);
  assert_true(isnan(res.best_score));
  free_problem(&a);
}

static void test_search_single_candidate(void **state) {
  (void)state;
  const double one[] = {3.0};
  nd_pipeline pl = ridge_pipeline();
  pl.grid = one;
  pl.ngrid = 1;
  problem a = make_problem(g_seed + 8, 40, 6, 30, false);
  nd_matview X = {a.X, a.n, a.p, a.p};
  double pred[10], mean[1] = {0}, coef[6], b, Zt[30 * 6], Ze[10 * 6], ctr[6], sc[6], ytr[30];
  nd_search_result res;
  assert_int_equal(nd_pipeline_fit_predict(&pl, X, a.y, NULL, a.train, a.ntrain, a.eval,
                                           a.neval, pred, &res, mean),
                   ND_OK);
  assert_int_equal(res.best, 0);
  assert_true(isnan(res.best_score) && isnan(mean[0]));
  assert_int_equal(nd_scaler_fit(pl.scaling, X, a.train, 30, pl.constant, ctr, sc, NULL), 0);
  nd_scaler_apply(X, a.train, 30, ctr, sc, Zt);
  nd_scaler_apply(X, a.eval, 10, ctr, sc, Ze);
  for (size_t i = 0; i < 30; i++) ytr[i] = a.y[a.train[i]];
  nd_matview Zv = {Zt, 30, 6, 6};
  assert_int_equal(nd_ridge_fit(Zv, ytr, 3.0, coef, &b), ND_OK);
  for (size_t i = 0; i < 10; i++)
    assert_true(fabs(pred[i] - dot_row(Ze + i * 6, coef, 6) - b) < 1e-10);
  /* Fewer training rows than folds is fine without a search. */
  assert_int_equal(nd_pipeline_fit_predict(&pl, X, a.y, NULL, a.train, 2, a.eval, a.neval,
                                           pred, &res, NULL),
                   ND_OK);
  free_problem(&a);
}

typedef struct thread_job {
  const nd_pipeline *pl;
  const problem *pb;
  double pred[40];
  int rc;
} thread_job;

static void *run_job(void *arg) {
  thread_job *j = arg;
  nd_matview X = {j->pb->X, j->pb->n, j->pb->p, j->pb->p};
  nd_search_result res;
  for (int rep = 0; rep < 5 && j->rc == 0; rep++)
    j->rc = nd_pipeline_fit_predict(j->pl, X, j->pb->y, NULL, j->pb->train, j->pb->ntrain,
                                    j->pb->eval, j->pb->neval, j->pred, &res, NULL);
  return NULL;
}

/* Concurrent calls share nothing: each thread gets the serial answer. */
static void test_search_threads(void **state) {
  (void)state;
  nd_pipeline pl = ridge_pipeline();
  problem a = make_problem(g_seed + 9, 100, 30, 60, false);
  thread_job jobs[3] = {{&pl, &a, {0}, 0}, {&pl, &a, {0}, 0}, {&pl, &a, {0}, 0}};
  pthread_t t[2];
  run_job(&jobs[2]);
  assert_int_equal(jobs[2].rc, 0);
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, run_job, &jobs[i]), 0);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(jobs[i].rc, 0);
    assert_memory_equal(jobs[i].pred, jobs[2].pred, 40 * sizeof(double));
  }
  free_problem(&a);
}

static void test_search_errors(void **state) {
  (void)state;
  nd_pipeline pl = ridge_pipeline();
  problem a = make_problem(g_seed + 10, 30, 4, 24, false);
  nd_matview X = {a.X, a.n, a.p, a.p};
  double pred[6];
  nd_search_result res;
#define FIT(n) nd_pipeline_fit_predict(&pl, X, a.y, NULL, a.train, n, a.eval, 6, pred, &res, NULL)
  assert_int_equal(FIT(2), ND_EINVAL); /* fewer rows than inner folds */
  assert_non_null(strstr(nd_models_errmsg(), "fewer than the 3 inner folds"));
  assert_int_equal(FIT(0), ND_EINVAL);
  pl.ngrid = 0;
  assert_int_equal(FIT(24), ND_EINVAL);
  pl.ngrid = ND_MAX_GRID + 1;
  assert_int_equal(FIT(24), ND_EINVAL);
  const double bad[] = {1.0, 0.0}, nan_grid[] = {NAN, 1.0};
  pl.grid = bad, pl.ngrid = 2;
  assert_int_equal(FIT(24), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "grid[1]"));
  pl.grid = nan_grid;
  assert_int_equal(FIT(24), ND_EINVAL);
  pl = ridge_pipeline();
  assert_int_equal(nd_pipeline_fit_predict(NULL, X, a.y, NULL, a.train, 24, a.eval, 6, pred,
                                           &res, NULL),
                   ND_EINVAL);
  assert_int_equal(nd_pipeline_fit_predict(&pl, X, a.y, NULL, a.train, 24, a.eval, 6, NULL,
                                           &res, NULL),
                   ND_EINVAL);
  assert_int_equal(nd_pipeline_fit_predict(&pl, X, a.y, NULL, a.train, 24, a.eval, 6, pred,
                                           NULL, NULL),
                   ND_EINVAL);
  a.eval[5] = 30; /* not a row */
  assert_int_equal(FIT(24), ND_EINVAL);
  a.eval[5] = a.train[24];
  /* NaN in a training row, an evaluated row, a training target. */
  double keep = a.X[a.train[3] * a.p + 1];
  a.X[a.train[3] * a.p + 1] = NAN;
  assert_int_equal(FIT(24), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "not finite"));
  a.X[a.train[3] * a.p + 1] = keep;
  keep = a.X[a.eval[2] * a.p];
  a.X[a.eval[2] * a.p] = INFINITY;
  assert_int_equal(FIT(24), ND_EINVAL);
  a.X[a.eval[2] * a.p] = keep;
  keep = a.y[a.train[7]];
  a.y[a.train[7]] = NAN;
  assert_int_equal(FIT(24), ND_EINVAL);
  a.y[a.train[7]] = keep;
  pl.inner.kind = ND_CV_GROUP;
  assert_int_equal(FIT(24), ND_EINVAL);
  pl = ridge_pipeline();
  pl.scoring = (nd_metric)42; /* not silently NaN scores for every candidate */
  assert_int_equal(FIT(24), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "unknown scoring metric 42"));
  pl = ridge_pipeline();
  pl.constant = ND_CONSTANT_ERROR; /* a constant column fails in the scaler */
  for (size_t i = 0; i < a.n; i++) a.X[i * a.p + 2] = 1.0;
  assert_int_equal(FIT(24), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "inner fold 0"));
  const double one[] = {1.0};
  pl.grid = one, pl.ngrid = 1; /* no search: the refit's scaler fails */
  assert_int_equal(FIT(24), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "training rows"));
#undef FIT
  free_problem(&a);
}

static void test_search_logistic_classes(void **state) {
  (void)state;
  const double Cs[] = {0.1, 1.0};
  nd_pipeline pl = search_pipeline(ND_MODEL_LOGISTIC, Cs, 2, ND_METRIC_ROC_AUC, ND_CV_KFOLD);
  double X[12] = {0.1, 0.4, -0.3, 0.8, 1.2, -1.1, 0.5, 0.2, -0.7, 0.9, 0.05, 0.3};
  double y[12] = {1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  const size_t train[6] = {0, 1, 2, 3, 4, 5}, eval[1] = {6};
  nd_matview Xv = {X, 12, 1, 1};
  double pred[1];
  nd_search_result res;
  /* Unshuffled KFold(3) over 6 rows: fold 0 is rows 0-1, so inner fold 0
   * trains on rows 2-5, all class 0. */
  assert_int_equal(nd_pipeline_fit_predict(&pl, Xv, y, NULL, train, 6, eval, 1, pred, &res,
                                           NULL),
                   ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "inner fold 0 training rows hold a single class"));
  const size_t zeros[4] = {2, 3, 4, 5};
  assert_int_equal(nd_pipeline_fit_predict(&pl, Xv, y, NULL, zeros, 4, eval, 1, pred, &res,
                                           NULL),
                   ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "single class"));
  y[3] = 0.5;
  assert_int_equal(nd_pipeline_fit_predict(&pl, Xv, y, NULL, train, 6, eval, 1, pred, &res,
                                           NULL),
                   ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "0/1"));
  y[3] = 0.0;
  /* The same rows interleaved give every inner training set both classes;
   * a Newton solver stopped after one step then fails the search. */
  const size_t mixed[6] = {0, 2, 3, 1, 4, 5};
  pl.max_iter = 1;
  assert_int_equal(nd_pipeline_fit_predict(&pl, Xv, y, NULL, mixed, 6, eval, 1, pred, &res,
                                           NULL),
                   ND_ERANGE);
  assert_non_null(strstr(nd_models_errmsg(), "inner fold 0, C = 0.1"));
  pl.max_iter = 0;
  assert_int_equal(nd_pipeline_fit_predict(&pl, Xv, y, NULL, mixed, 6, eval, 1, pred, &res,
                                           NULL),
                   ND_OK);
  assert_true(pred[0] > 0 && pred[0] < 1);
}

int main(void) {
  g_seed = nd_test_seed("models_fit", 20240611);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ridge_path_primal),
      cmocka_unit_test(test_ridge_path_kernel),
      cmocka_unit_test(test_ridge_one_row),
      cmocka_unit_test(test_ridge_by_hand),
      cmocka_unit_test(test_ridge_intercept),
      cmocka_unit_test(test_ridge_singular),
      cmocka_unit_test(test_ridge_errors),
      cmocka_unit_test(test_ridgecv_sklearn),
      cmocka_unit_test(test_ridgecv_loo),
      cmocka_unit_test(test_ridgecv_ties),
      cmocka_unit_test(test_logistic_sklearn),
      cmocka_unit_test(test_logistic_gradient_random),
      cmocka_unit_test(test_logistic_dual),
      cmocka_unit_test(test_logistic_errors),
      cmocka_unit_test(test_logistic_proba),
      cmocka_unit_test(test_search_ridge_shapes),
      cmocka_unit_test(test_search_logistic),
      cmocka_unit_test(test_search_sklearn),
      cmocka_unit_test(test_search_roc_auc_saturated),
      cmocka_unit_test(test_search_groups),
      cmocka_unit_test(test_search_ties),
      cmocka_unit_test(test_search_nan_scores),
      cmocka_unit_test(test_search_single_candidate),
      cmocka_unit_test(test_search_threads),
      cmocka_unit_test(test_search_errors),
      cmocka_unit_test(test_search_logistic_classes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
