/* The models layer's building blocks: metrics (hand-computed values, ties,
 * constant inputs, absent classes), the standard and robust scalers (hand
 * values, bit-exact agreement with scikit-learn, constant columns, NaN/Inf),
 * fold assignment (sklearn-exact KFold and StratifiedKFold, seeded
 * shuffles, group folds) and .npy files, with every error path and injected
 * allocation failures. Expected sklearn values were produced once with Debian 12's
 * python3-sklearn 1.2.1 (numpy 1.24.2) and are pasted as literals; seeded
 * random tests print their seed (NIDAG_TEST_SEED overrides). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nidag.h"
#include "tests/testutil.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define TOL 1e-12

static uint64_t g_seed;

/* cmocka 1.1.5's assert_float_equal works in float; this is for doubles.
 * tol 0 asks for equality (so -0.0 == 0.0, and NaN never matches). */
#define assert_near(got, want, tol) assert_near_at((got), (want), (tol), __FILE__, __LINE__)
static void assert_near_at(double got, double want, double tol, const char *file, int line) {
  if (!(fabs(got - want) <= tol)) {
    print_error("%.17g != %.17g (tolerance %g)\n", got, want, tol);
    _fail(file, line);
  }
}

static void assert_msg_has(const char *needle) {
  const char *msg = nd_models_errmsg();
  if (strstr(msg, needle) == NULL)
    fail_msg("message \"%s\" lacks \"%s\"", msg, needle);
}

/* ---------------------------------------------------------------- metrics */

static void test_metric_r2(void **state) {
  (void)state;
  const double y[] = {1, 2, 3, 4}, p[] = {1, 2, 3, 5};
  /* SSres = 1, SStot = 2.25 + 0.25 + 0.25 + 2.25 = 5. */
  assert_near(nd_metric_eval(ND_METRIC_R2, y, p, 4), 0.8, TOL);
  assert_near(nd_metric_score(ND_METRIC_R2, y, p, 4), 0.8, TOL);
  assert_near(nd_metric_eval(ND_METRIC_R2, y, y, 4), 1.0, 0);
  const double c[] = {2, 2, 2}, c2[] = {2, 2, 3};
  assert_near(nd_metric_eval(ND_METRIC_R2, c, c, 3), 1.0, 0); /* force_finite */
  assert_near(nd_metric_eval(ND_METRIC_R2, c, c2, 3), 0.0, 0);
  /* Worse than the mean goes negative: pred = reversed y, SSres = 9+1+1+9. */
  const double rev[] = {4, 3, 2, 1};
  assert_near(nd_metric_eval(ND_METRIC_R2, y, rev, 4), 1.0 - 20.0 / 5.0, TOL);
  /* A large offset does not swamp the spread (two-pass mean). */
  const double yo[] = {1e9 + 1, 1e9 + 2, 1e9 + 3, 1e9 + 4};
  const double po[] = {1e9 + 1, 1e9 + 2, 1e9 + 3, 1e9 + 5};
  assert_near(nd_metric_eval(ND_METRIC_R2, yo, po, 4), 0.8, TOL);
  assert_true(isnan(nd_metric_eval(ND_METRIC_R2, y, p, 1))); /* sklearn: < 2 samples */
  assert_true(isnan(nd_metric_eval(ND_METRIC_R2, y, p, 0)));
  const double pn[] = {1, NAN, 3, 4};
  assert_true(isnan(nd_metric_eval(ND_METRIC_R2, y, pn, 4)));
}

static void test_metric_mae(void **state) {
  (void)state;
  const double y[] = {1, 2, 3, 4}, p[] = {2, 2, 1, 8};
  assert_near(nd_metric_eval(ND_METRIC_MAE, y, p, 4), 1.75, TOL);
  assert_near(nd_metric_score(ND_METRIC_MAE, y, p, 4), -1.75, TOL);
  assert_near(nd_metric_eval(ND_METRIC_MAE, y, y, 4), 0.0, 0);
  assert_near(nd_metric_eval(ND_METRIC_MAE, y, p, 1), 1.0, 0);
  assert_true(isnan(nd_metric_eval(ND_METRIC_MAE, y, p, 0)));
  assert_true(isnan(nd_metric_score(ND_METRIC_MAE, y, p, 0)));
}

static void test_metric_pearson(void **state) {
  (void)state;
  const double y[] = {1, 2, 3, 4}, p[] = {1, 3, 2, 4};
  /* Deviations (-1.5, -.5, .5, 1.5) and (-1.5, .5, -.5, 1.5): 4 / 5. */
  assert_near(nd_metric_eval(ND_METRIC_PEARSON, y, p, 4), 0.8, TOL);
  const double lin[] = {3, 5, 7, 9}, neg[] = {-1, -2, -3, -4};
  assert_near(nd_metric_eval(ND_METRIC_PEARSON, y, lin, 4), 1.0, TOL);
  assert_near(nd_metric_eval(ND_METRIC_PEARSON, y, neg, 4), -1.0, TOL);
  assert_true(nd_metric_eval(ND_METRIC_PEARSON, y, lin, 4) <= 1.0);
  const double yo[] = {1e9 + 1, 1e9 + 2, 1e9 + 3, 1e9 + 4};
  assert_near(nd_metric_eval(ND_METRIC_PEARSON, yo, p, 4), 0.8, TOL);
  const double c[] = {5, 5, 5, 5};
  assert_true(isnan(nd_metric_eval(ND_METRIC_PEARSON, y, c, 4)));
  assert_true(isnan(nd_metric_eval(ND_METRIC_PEARSON, c, y, 4)));
  assert_true(isnan(nd_metric_eval(ND_METRIC_PEARSON, y, p, 1)));
  assert_true(isnan(nd_metric_eval(ND_METRIC_PEARSON, y, p, 0)));
  assert_near(nd_metric_score(ND_METRIC_PEARSON, y, p, 4), 0.8, TOL);
}

static void test_metric_auc(void **state) {
  (void)state;
  const double y[] = {0, 0, 1, 1}, s[] = {0.1, 0.4, 0.35, 0.8};
  assert_near(nd_metric_eval(ND_METRIC_ROC_AUC, y, s, 4), 0.75, 0);
  /* Ties count 1/2: the 0.5 positive ties the 0.5 negative. (3 + 1/2) / 4. */
  const double yt[] = {0, 1, 0, 1}, st[] = {0.5, 0.5, 0.2, 0.9};
  assert_near(nd_metric_eval(ND_METRIC_ROC_AUC, yt, st, 4), 0.875, 0);
  const double same[] = {0.3, 0.3, 0.3, 0.3};
  assert_near(nd_metric_eval(ND_METRIC_ROC_AUC, yt, same, 4), 0.5, 0);
  const double perfect[] = {-3, 7, -2, 8}; /* scores need not be probabilities */
  assert_near(nd_metric_eval(ND_METRIC_ROC_AUC, yt, perfect, 4), 1.0, 0);
  const double inverted[] = {9, 1, 8, 2};
  assert_near(nd_metric_eval(ND_METRIC_ROC_AUC, yt, inverted, 4), 0.0, 0);
  const double one[] = {1, 1, 1, 1}, zero[] = {0, 0, 0, 0};
  assert_true(isnan(nd_metric_eval(ND_METRIC_ROC_AUC, one, s, 4)));
  assert_true(isnan(nd_metric_eval(ND_METRIC_ROC_AUC, zero, s, 4)));
  const double bad[] = {0, 2, 0, 1}, sn[] = {0.1, NAN, 0.3, 0.4};
  assert_true(isnan(nd_metric_eval(ND_METRIC_ROC_AUC, bad, s, 4)));
  assert_true(isnan(nd_metric_eval(ND_METRIC_ROC_AUC, y, sn, 4)));
  assert_true(isnan(nd_metric_eval(ND_METRIC_ROC_AUC, y, s, 0)));
}

/* AUC against the O(n^2) pair count, on seeded data full of ties. */
static void test_metric_auc_random(void **state) {
  (void)state;
  uint64_t rng = g_seed;
  enum { N = 200 };
  double y[N], s[N];
  for (int trial = 0; trial < 50; trial++) {
    size_t n = 2 + splitmix64(&rng) % (N - 1);
    unsigned levels = 1 + (unsigned)(splitmix64(&rng) % 12);
    for (size_t i = 0; i < n; i++) {
      y[i] = (double)(splitmix64(&rng) & 1);
      s[i] = (double)(splitmix64(&rng) % levels) / 4.0;
    }
    y[0] = 0;
    y[1] = 1;
    double wins = 0, pairs = 0;
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < n; j++)
        if (y[i] == 1 && y[j] == 0) {
          pairs += 1;
          wins += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0;
        }
    assert_near(nd_metric_eval(ND_METRIC_ROC_AUC, y, s, n), wins / pairs, TOL);
  }
}

static void test_metric_balanced_acc(void **state) {
  (void)state;
  const double y[] = {0, 0, 0, 1}, s[] = {0.2, 0.7, 0.4, 0.9};
  /* Recall 2/3 for class 0, 1 for class 1. */
  assert_near(nd_metric_eval(ND_METRIC_BALANCED_ACC, y, s, 4), 5.0 / 6.0, TOL);
  /* 0.5 itself predicts class 0 (score > 0.5). */
  const double yb[] = {0, 1}, half[] = {0.5, 0.5};
  assert_near(nd_metric_eval(ND_METRIC_BALANCED_ACC, yb, half, 2), 0.5, 0);
  /* A class absent from y is left out of the mean, as sklearn does. */
  const double y0[] = {0, 0, 0}, s0[] = {0.1, 0.9, 0.2};
  assert_near(nd_metric_eval(ND_METRIC_BALANCED_ACC, y0, s0, 3), 2.0 / 3.0, TOL);
  const double y1[] = {1, 1, 1, 1}, s1[] = {0.6, 0.5, 0.2, 0.9};
  assert_near(nd_metric_eval(ND_METRIC_BALANCED_ACC, y1, s1, 4), 0.5, 0);
  assert_near(nd_metric_score(ND_METRIC_BALANCED_ACC, y1, s1, 4), 0.5, 0);
  const double bad[] = {0, 0.5, 1, 1}, sn[] = {0.2, NAN, 0.4, 0.9};
  assert_true(isnan(nd_metric_eval(ND_METRIC_BALANCED_ACC, bad, s, 4)));
  assert_true(isnan(nd_metric_eval(ND_METRIC_BALANCED_ACC, y, sn, 4)));
  assert_true(isnan(nd_metric_eval(ND_METRIC_BALANCED_ACC, y, s, 0)));
}

static void test_metric_names(void **state) {
  (void)state;
  const char *names[] = {"r2", "mae", "pearson", "roc_auc", "balanced_accuracy"};
  for (int m = 0; m < (int)NELEM(names); m++) {
    assert_string_equal(nd_metric_name((nd_metric)m), names[m]);
    nd_metric got = ND_METRIC_R2;
    assert_int_equal(nd_metric_parse(names[m], &got), ND_OK);
    assert_int_equal(got, m);
  }
  assert_string_equal(nd_metric_name((nd_metric)99), "unknown");
  nd_metric got = ND_METRIC_MAE;
  assert_int_equal(nd_metric_parse("accuracy", &got), ND_EINVAL);
  assert_int_equal(got, ND_METRIC_MAE);
  assert_msg_has("unknown metric 'accuracy'");
  assert_int_equal(nd_metric_parse("R2", &got), ND_EINVAL);
  assert_int_equal(nd_metric_parse(NULL, &got), ND_EINVAL);
  assert_int_equal(nd_metric_parse("r2", NULL), ND_EINVAL);
  const double y[] = {1, 2};
  assert_true(isnan(nd_metric_eval((nd_metric)99, y, y, 2)));
  assert_true(isnan(nd_metric_eval(ND_METRIC_MAE, NULL, y, 2)));
}

/* ---------------------------------------------------------------- scaling */

static nd_matview view(const double *d, size_t rows, size_t cols, size_t ld) {
  return (nd_matview){d, rows, cols, ld};
}

static void test_scale_standard(void **state) {
  (void)state;
  /* Padded rows (ld 3 > 2 columns); the pad is never read as data. */
  const double X[] = {1, 10, NAN, 2, 20, NAN, 3, 30, NAN, 4, 40, NAN};
  nd_matview v = view(X, 4, 2, 3);
  const size_t all[] = {0, 1, 2, 3};
  double c[2], s[2];
  size_t nc = 99;
  assert_int_equal(nd_scaler_fit(ND_SCALE_STANDARD, v, all, 4, ND_CONSTANT_ERROR, c, s, &nc),
                   ND_OK);
  assert_int_equal(nc, 0);
  assert_near(c[0], 2.5, TOL);
  assert_near(c[1], 25.0, TOL);
  assert_near(s[0], sqrt(1.25), TOL); /* population sd */
  assert_near(s[1], sqrt(125.0), TOL);
  /* Only the given rows count: rows 0 and 2 have mean (2, 20), sd (1, 10). */
  const size_t some[] = {2, 0};
  assert_int_equal(nd_scaler_fit(ND_SCALE_STANDARD, v, some, 2, ND_CONSTANT_ERROR, c, s, NULL),
                   ND_OK);
  assert_near(c[0], 2.0, TOL);
  assert_near(c[1], 20.0, TOL);
  assert_near(s[0], 1.0, TOL);
  assert_near(s[1], 10.0, TOL);
  double out[3 * 2];
  const size_t apply_rows[] = {3, 0, 1};
  nd_scaler_apply(v, apply_rows, 3, c, s, out);
  const double want[] = {2, 2, -1, -1, 0, 0};
  for (size_t i = 0; i < NELEM(want); i++) assert_near(out[i], want[i], TOL);
}

static void test_scale_none(void **state) {
  (void)state;
  const double X[] = {1, 7, 2, 7, 3, 7};
  const size_t all[] = {0, 1, 2};
  double c[2] = {9, 9}, s[2] = {9, 9};
  size_t nc = 99;
  /* No division, so a constant column is no concern of NONE. */
  assert_int_equal(
      nd_scaler_fit(ND_SCALE_NONE, view(X, 3, 2, 2), all, 3, ND_CONSTANT_ERROR, c, s, &nc),
      ND_OK);
  assert_int_equal(nc, 0);
  assert_near(c[0], 0, 0);
  assert_near(c[1], 0, 0);
  assert_near(s[0], 1, 0);
  assert_near(s[1], 1, 0);
  const double bad[] = {1, 7, INFINITY, 7};
  assert_int_equal(
      nd_scaler_fit(ND_SCALE_NONE, view(bad, 2, 2, 2), all, 2, ND_CONSTANT_ERROR, c, s, NULL),
      ND_EINVAL);
  assert_msg_has("row 1, column 0 is infinite");
}

static void test_scale_robust(void **state) {
  (void)state;
  /* Column 0 (5 rows, odd): sorted 1..5, median 3; q5 at index 0.2 is 1.2,
   * q95 at 3.8 is 4.8. Column 1 over rows 0..3 (even): sorted 10..40, median
   * 25; q5 at 0.15 is 11.5, q95 at 2.85 is 38.5. */
  const double X[] = {5, 10, 1, 40, 4, 20, 2, 30, 3, 1000};
  nd_matview v = view(X, 5, 2, 2);
  const size_t five[] = {0, 1, 2, 3, 4}, four[] = {0, 1, 2, 3};
  double c[2], s[2];
  assert_int_equal(nd_scaler_fit(ND_SCALE_ROBUST, v, five, 5, ND_CONSTANT_ERROR, c, s, NULL),
                   ND_OK);
  assert_near(c[0], 3.0, 0);
  assert_near(s[0], 4.8 - 1.2, TOL);
  assert_int_equal(nd_scaler_fit(ND_SCALE_ROBUST, v, four, 4, ND_CONSTANT_ERROR, c, s, NULL),
                   ND_OK);
  assert_near(c[0], 3.0, 0); /* 5, 1, 4, 2: mean of 2 and 4 */
  assert_near(c[1], 25.0, 0);
  assert_near(s[1], 38.5 - 11.5, TOL);
  /* One row: the median is the value, the range 0. */
  size_t nc = 0;
  assert_int_equal(nd_scaler_fit(ND_SCALE_ROBUST, v, five + 4, 1, ND_CONSTANT_KEEP, c, s, &nc),
                   ND_OK);
  assert_int_equal(nc, 2);
  assert_near(c[0], 3.0, 0);
  assert_near(c[1], 1000.0, 0);
  assert_near(s[0], 1.0, 0);
}

/* A 7 x 3 matrix and sklearn 1.2.1's fitted StandardScaler and
 * RobustScaler(quantile_range=(5, 95)) on all rows and on the first six:
 * the row-major passes and numpy's percentile must agree to the bit. */
static const double sk_X[7][3] = {
    {0x1.426fe718a86d7p-10, 0x1.396eff162ae4bp+13, -0x1.8059d12cadddfp+1},
    {-0x1.c7fbacb428912p-1, 0x1.3714436c15d2dp+13, -0x1.8144ed6fda837p+1},
    {0x1.ecb31c219eb64p-5, 0x1.3cb02c154c986p+13, -0x1.80a148ba83f4fp+1},
    {-0x1.3daee631f8a09p-1, 0x1.3a07dfa6defc8p+13, -0x1.7f8b0d0edc3bdp+1},
    {0x1.afc69728a6117p-4, 0x1.3597a02539757p+13, -0x1.800999dcb5782p+1},
    {0x1.63fec13b9f128p-1, 0x1.344ca0dc33722p+13, -0x1.8095f2452c5a0p+1},
    {-0x1.e6b68cef672b9p+0, 0x1.34785eabbcb1dp+13, -0x1.825b7cfe58601p+1},
};
static const double sk_std_mean[3] = {-0x1.750ec4442ab39p-2, 0x1.37a7fd6acc457p+13,
                                      -0x1.80ae9680e0652p+1};
static const double sk_std_scale[3] = {0x1.942a3673b6245p-1, 0x1.7726f8f4585cfp+6,
                                       0x1.b0196e7cd804ap-8};
static const double sk_rob_center[3] = {0x1.426fe718a86d7p-10, 0x1.3714436c15d2dp+13,
                                        -0x1.8095f2452c5a0p+1};
static const double sk_rob_scale[3] = {0x1.0ee536501e258p+1, 0x1.e2953cd3c5e40p+7,
                                       0x1.2b73b6b101980p-6};
static const double sk_rob6_center[3] = {0x1.f6c69b5a63f9bp-6, 0x1.3841a141205bcp+13,
                                         -0x1.8077e1b8ed1c0p+1};
static const double sk_rob6_scale[3] = {0x1.5ef2e05ccc89cp+0, 0x1.d9ae12cf0f9c0p+7,
                                        0x1.7154003254f00p-7};

static void test_scale_matches_sklearn(void **state) {
  (void)state;
  nd_matview v = view(&sk_X[0][0], 7, 3, 3);
  const size_t all[] = {0, 1, 2, 3, 4, 5, 6};
  double c[3], s[3];
  assert_int_equal(nd_scaler_fit(ND_SCALE_STANDARD, v, all, 7, ND_CONSTANT_ERROR, c, s, NULL),
                   ND_OK);
  assert_memory_equal(c, sk_std_mean, sizeof c);
  assert_memory_equal(s, sk_std_scale, sizeof s);
  assert_int_equal(nd_scaler_fit(ND_SCALE_ROBUST, v, all, 7, ND_CONSTANT_ERROR, c, s, NULL),
                   ND_OK);
  assert_memory_equal(c, sk_rob_center, sizeof c);
  assert_memory_equal(s, sk_rob_scale, sizeof s);
  assert_int_equal(nd_scaler_fit(ND_SCALE_ROBUST, v, all, 6, ND_CONSTANT_ERROR, c, s, NULL),
                   ND_OK);
  assert_memory_equal(c, sk_rob6_center, sizeof c);
  assert_memory_equal(s, sk_rob6_scale, sizeof s);
  /* Row order must not matter for the robust statistics. */
  const size_t shuffled[] = {4, 0, 5, 2, 1, 3};
  assert_int_equal(
      nd_scaler_fit(ND_SCALE_ROBUST, v, shuffled, 6, ND_CONSTANT_ERROR, c, s, NULL), ND_OK);
  assert_memory_equal(c, sk_rob6_center, sizeof c);
  assert_memory_equal(s, sk_rob6_scale, sizeof s);
}

/* The robust scaler against a sort-based reference on seeded columns with
 * many ties, every length from 1 to 60. */
static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double ref_percentile(const double *sorted, size_t n, double q) {
  double v = (double)(n - 1) * q;
  if (v >= (double)(n - 1))
    return sorted[n - 1];
  size_t lo = (size_t)floor(v);
  double t = v - floor(v), a = sorted[lo], b = sorted[lo + 1];
  return t >= 0.5 ? b - (b - a) * (1 - t) : a + (b - a) * t;
}

static void test_scale_robust_random(void **state) {
  (void)state;
  uint64_t rng = g_seed ^ 0x5ca1e;
  enum { N = 60 };
  double col[N], sorted[N];
  size_t rows[N];
  for (size_t n = 1; n <= N; n++) {
    unsigned levels = 2 + (unsigned)(splitmix64(&rng) % 40);
    for (size_t i = 0; i < n; i++) {
      col[i] = (double)(splitmix64(&rng) % levels) * 0.37 - 3.0;
      sorted[i] = col[i];
      rows[i] = i;
    }
    qsort(sorted, n, sizeof *sorted, cmp_double);
    double med = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0;
    double range = ref_percentile(sorted, n, 0.95) - ref_percentile(sorted, n, 0.05);
    double c, s;
    size_t nc;
    assert_int_equal(nd_scaler_fit(ND_SCALE_ROBUST, view(col, n, 1, 1), rows, n,
                                   ND_CONSTANT_KEEP, &c, &s, &nc),
                     ND_OK);
    assert_memory_equal(&c, &med, sizeof c);
    if (range < 10 * 2.220446049250313e-16) {
      assert_int_equal(nc, 1);
      assert_near(s, 1.0, 0);
    } else {
      assert_int_equal(nc, 0);
      assert_memory_equal(&s, &range, sizeof s);
    }
  }
}

static void test_scale_constant(void **state) {
  (void)state;
  /* Column 1 is exactly constant, column 2 is 0.1 three times (its mean is
   * off by rounding, so only sklearn's tolerance calls it constant). */
  const double X[] = {1, 5, 0.1, 2, 5, 0.1, 4, 5, 0.1, 8, 6, 0.1};
  nd_matview v = view(X, 4, 3, 3);
  const size_t three[] = {0, 1, 2};
  double c[3], s[3];
  size_t nc = 99;
  assert_int_equal(nd_scaler_fit(ND_SCALE_STANDARD, v, three, 3, ND_CONSTANT_ERROR, c, s, &nc),
                   ND_EINVAL);
  assert_int_equal(nc, 0);
  assert_msg_has("feature column 1 is constant on the 3 training rows");
  assert_int_equal(nd_scaler_fit(ND_SCALE_ROBUST, v, three, 3, ND_CONSTANT_ERROR, c, s, NULL),
                   ND_EINVAL);
  assert_msg_has("feature column 1 is constant on the 3 training rows");
  assert_int_equal(nd_scaler_fit(ND_SCALE_STANDARD, v, three, 3, ND_CONSTANT_KEEP, c, s, &nc),
                   ND_OK);
  assert_int_equal(nc, 2);
  assert_near(c[1], 5.0, 0);
  assert_near(s[1], 1.0, 0);
  assert_near(s[2], 1.0, 0);
  assert_near(s[0], sqrt(14.0 / 9.0), TOL);
  double out[3 * 3];
  nd_scaler_apply(v, three, 3, c, s, out);
  for (size_t r = 0; r < 3; r++) {
    assert_near(out[r * 3 + 1], 0.0, 0); /* the column becomes 0 */
    assert_true(fabs(out[r * 3 + 2]) < 1e-15);
  }
  /* With row 3 the column varies, so it is not constant any more. */
  const size_t all[] = {0, 1, 2, 3};
  assert_int_equal(nd_scaler_fit(ND_SCALE_STANDARD, v, all, 4, ND_CONSTANT_KEEP, c, s, &nc),
                   ND_OK);
  assert_int_equal(nc, 1);
  assert_near(s[1], sqrt(3.0 / 16.0), TOL);
  /* A robust range can vanish while the column varies: 21 rows 0, 1 x 19,
   * 2 have q5 = q95 = 1 (sklearn scales by 1); the standard scaler does not. */
  double col[21];
  size_t rows[21];
  for (size_t i = 0; i < 21; i++) {
    col[i] = i == 0 ? 0 : i == 20 ? 2 : 1;
    rows[i] = i;
  }
  double c1, s1;
  assert_int_equal(nd_scaler_fit(ND_SCALE_ROBUST, view(col, 21, 1, 1), rows, 21,
                                 ND_CONSTANT_ERROR, &c1, &s1, NULL),
                   ND_EINVAL);
  assert_msg_has("feature column 0 is constant on the 21 training rows");
  assert_int_equal(nd_scaler_fit(ND_SCALE_STANDARD, view(col, 21, 1, 1), rows, 21,
                                 ND_CONSTANT_ERROR, &c1, &s1, NULL),
                   ND_OK);
}

static void test_scale_nonfinite(void **state) {
  (void)state;
  double X[] = {1, 2, 3, 4, 5, NAN, 7, 8, 9};
  nd_matview v = view(X, 3, 3, 3);
  const size_t all[] = {0, 1, 2}, ok[] = {2, 0};
  double c[3], s[3];
  for (int kind = ND_SCALE_NONE; kind <= ND_SCALE_ROBUST; kind++) {
    assert_int_equal(
        nd_scaler_fit((nd_scaling)kind, v, all, 3, ND_CONSTANT_KEEP, c, s, NULL), ND_EINVAL);
    assert_msg_has("row 1, column 2 is NaN");
    assert_int_equal(nd_scaler_fit((nd_scaling)kind, v, ok, 2, ND_CONSTANT_KEEP, c, s, NULL),
                     ND_OK);
  }
  X[5] = 5;
  X[7] = -INFINITY;
  assert_int_equal(nd_scaler_fit(ND_SCALE_STANDARD, v, all, 3, ND_CONSTANT_KEEP, c, s, NULL),
                   ND_EINVAL);
  assert_msg_has("row 2, column 1 is infinite");
  /* Finite values whose sum overflows. */
  const double big[] = {1.5e308, 1.5e308};
  assert_int_equal(nd_scaler_fit(ND_SCALE_STANDARD, view(big, 2, 1, 1), all, 2,
                                 ND_CONSTANT_KEEP, c, s, NULL),
                   ND_ERANGE);
  assert_msg_has("column 0 overflows");
  /* A finite sum but squared deviations that overflow: the variance is Inf
   * (which the constant test would pass) or Inf - Inf = NaN (a NaN scale). */
  const double wide[] = {1e200, -1e200}, skew[] = {1.7e308, -1.7e308, -1.7e308};
  for (int policy = ND_CONSTANT_ERROR; policy <= ND_CONSTANT_KEEP; policy++) {
    assert_int_equal(nd_scaler_fit(ND_SCALE_STANDARD, view(wide, 2, 1, 1), all, 2,
                                   (nd_constant_policy)policy, c, s, NULL),
                     ND_ERANGE);
    assert_msg_has("column 0 overflows: its variance");
    assert_int_equal(nd_scaler_fit(ND_SCALE_STANDARD, view(skew, 3, 1, 1), all, 3,
                                   (nd_constant_policy)policy, c, s, NULL),
                     ND_ERANGE);
  }
}

static void test_scale_bad_args(void **state) {
  (void)state;
  const double X[] = {1, 2, 3, 4};
  nd_matview v = view(X, 2, 2, 2);
  const size_t rows[] = {0, 1}, out_of_range[] = {0, 2};
  double c[2], s[2];
  size_t nc = 7;
  assert_int_equal(nd_scaler_fit(ND_SCALE_STANDARD, v, rows, 0, ND_CONSTANT_KEEP, c, s, &nc),
                   ND_EINVAL);
  assert_int_equal(nc, 0);
  assert_msg_has("0 training rows");
  assert_int_equal(
      nd_scaler_fit(ND_SCALE_STANDARD, v, out_of_range, 2, ND_CONSTANT_KEEP, c, s, NULL),
      ND_EINVAL);
  assert_msg_has("row index 2 out of range");
  assert_int_equal(nd_scaler_fit((nd_scaling)7, v, rows, 2, ND_CONSTANT_KEEP, c, s, NULL),
                   ND_EINVAL);
  assert_int_equal(
      nd_scaler_fit(ND_SCALE_STANDARD, v, rows, 2, (nd_constant_policy)5, c, s, NULL),
      ND_EINVAL);
  assert_int_equal(nd_scaler_fit(ND_SCALE_STANDARD, v, rows, 2, ND_CONSTANT_KEEP, NULL, s, NULL),
                   ND_EINVAL);
  assert_int_equal(
      nd_scaler_fit(ND_SCALE_STANDARD, view(X, 2, 2, 1), rows, 2, ND_CONSTANT_KEEP, c, s, NULL),
      ND_EINVAL);
  assert_msg_has("leading dimension");
  /* rows == NULL: the first nrows rows. */
  assert_int_equal(nd_scaler_fit(ND_SCALE_STANDARD, v, NULL, 2, ND_CONSTANT_KEEP, c, s, NULL),
                   ND_OK);
  assert_near(c[0], 2.0, 0);
  assert_int_equal(nd_scaler_fit(ND_SCALE_STANDARD, v, NULL, 3, ND_CONSTANT_KEEP, c, s, NULL),
                   ND_EINVAL);
}

/* ------------------------------------------------------- cross-validation */

static void assign_ok(nd_cv_kind kind, uint32_t k, bool shuffle, uint64_t seed, size_t n,
                      const double *y, const int64_t *groups, int32_t *fold) {
  nd_cv cv = {kind, k, shuffle, seed};
  int rc = nd_cv_assign(&cv, n, y, groups, fold);
  if (rc != ND_OK)
    fail_msg("nd_cv_assign: %s", nd_models_errmsg());
  for (size_t i = 0; i < n; i++) assert_in_range(fold[i], 0, k - 1);
}

static void fold_sizes(const int32_t *fold, size_t n, size_t *size, uint32_t k) {
  memset(size, 0, k * sizeof *size);
  for (size_t i = 0; i < n; i++) size[fold[i]]++;
}

static void test_cv_kfold(void **state) {
  (void)state;
  int32_t fold[11];
  assign_ok(ND_CV_KFOLD, 3, false, 0, 10, NULL, NULL, fold);
  const int32_t want10[] = {0, 0, 0, 0, 1, 1, 1, 2, 2, 2}; /* sizes 4, 3, 3 */
  assert_memory_equal(fold, want10, sizeof want10);
  assign_ok(ND_CV_KFOLD, 4, false, 0, 11, NULL, NULL, fold);
  const int32_t want11[] = {0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3};
  assert_memory_equal(fold, want11, sizeof want11);
  assign_ok(ND_CV_KFOLD, 5, false, 0, 5, NULL, NULL, fold); /* leave-one-out */
  for (int32_t i = 0; i < 5; i++) assert_int_equal(fold[i], i);
}

/* Shuffled KFold: a permutation with KFold's sizes, fixed by the seed. */
static void test_cv_kfold_shuffled(void **state) {
  (void)state;
  enum { N = 103, K = 5 };
  int32_t a[N], b[N], c[N], plain[N];
  assign_ok(ND_CV_KFOLD, K, true, 42, N, NULL, NULL, a);
  assign_ok(ND_CV_KFOLD, K, true, 42, N, NULL, NULL, b);
  assign_ok(ND_CV_KFOLD, K, true, 43, N, NULL, NULL, c);
  assign_ok(ND_CV_KFOLD, K, false, 42, N, NULL, NULL, plain);
  assert_memory_equal(a, b, sizeof a);
  assert_memory_not_equal(a, c, sizeof a);
  assert_memory_not_equal(a, plain, sizeof a);
  size_t sa[K], sp[K];
  fold_sizes(a, N, sa, K);
  fold_sizes(plain, N, sp, K);
  assert_memory_equal(sa, sp, sizeof sa);
  const size_t want[K] = {21, 21, 21, 20, 20};
  assert_memory_equal(sa, want, sizeof sa);
  /* Seeded runs over many sizes keep the sizes within one of each other. */
  uint64_t rng = g_seed;
  for (int trial = 0; trial < 40; trial++) {
    uint32_t k = 2 + (uint32_t)(splitmix64(&rng) % 9);
    size_t n = k + splitmix64(&rng) % 90;
    int32_t f[N];
    size_t sz[K + 6];
    assign_ok(ND_CV_KFOLD, k, true, splitmix64(&rng), n, NULL, NULL, f);
    fold_sizes(f, n, sz, k);
    for (uint32_t j = 0; j < k; j++) assert_int_equal(sz[j], n / k + (j < n % k));
  }
}

typedef struct strat_case {
  uint32_t k;
  size_t n;
  double y[16];
  int32_t want[16];
} strat_case;

/* sklearn.model_selection.StratifiedKFold(n_splits=k).split(X, y), test
 * fold of each row; the fourth has a minority class of 3 < k (sklearn only
 * warns). */
static const strat_case strat_cases[] = {
    {3, 10, {0, 0, 0, 0, 1, 1, 1, 1, 1, 1}, {0, 0, 1, 2, 0, 0, 1, 1, 2, 2}},
    {4, 12, {1, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0, 1}, {0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3}},
    {3, 13, {2, 2, 0, 1, 1, 0, 2, 0, 1, 2, 2, 0, 1}, {0, 0, 0, 0, 0, 1, 1, 2, 1, 1, 2, 2, 2}},
    {5,
     16,
     {0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0},
     {0, 0, 0, 0, 1, 3, 1, 1, 2, 2, 2, 4, 3, 3, 4, 4}},
    {2, 11, {3, -1, 3, 7, -1, -1, 7, 3, 3, -1, 7}, {0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1}},
    {3, 12, {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4}, {0, 1, 0, 2, 1, 2, 0, 1, 0, 1, 2, 2}},
};

static void test_cv_stratified_sklearn(void **state) {
  (void)state;
  int32_t fold[16];
  for (size_t c = 0; c < NELEM(strat_cases); c++) {
    const strat_case *t = &strat_cases[c];
    assign_ok(ND_CV_STRATIFIED, t->k, false, 0, t->n, t->y, NULL, fold);
    assert_memory_equal(fold, t->want, t->n * sizeof *fold);
  }
  /* Only the order of first appearance matters, not the label values:
   * relabel case 5 with non-integers in another sort order. */
  const double relabeled[] = {0.5, 9.25, 0.5, -2, 9.25, 9.25, -2, 0.5, 0.5, 9.25, -2};
  assign_ok(ND_CV_STRATIFIED, 2, false, 0, 11, relabeled, NULL, fold);
  assert_memory_equal(fold, strat_cases[4].want, 11 * sizeof *fold);
}

/* Shuffled stratified: reproducible, and each class gives each fold as many
 * rows as the unshuffled allocation does. */
static void test_cv_stratified_shuffled(void **state) {
  (void)state;
  enum { N = 60, K = 4, NCLS = 3 };
  double y[N];
  uint64_t rng = g_seed ^ 0x57a7;
  for (size_t i = 0; i < N; i++) y[i] = (double)(splitmix64(&rng) % 7 < 4 ? 0 : i % 2 + 1);
  y[0] = 0;
  y[1] = 1;
  y[2] = 2;
  for (size_t i = 3; i < 3 + K; i++) y[i] = 2; /* at least K of class 2 */
  int32_t plain[N], a[N], b[N], c[N];
  assign_ok(ND_CV_STRATIFIED, K, false, 0, N, y, NULL, plain);
  assign_ok(ND_CV_STRATIFIED, K, true, 7, N, y, NULL, a);
  assign_ok(ND_CV_STRATIFIED, K, true, 7, N, y, NULL, b);
  assign_ok(ND_CV_STRATIFIED, K, true, 8, N, y, NULL, c);
  assert_memory_equal(a, b, sizeof a);
  assert_memory_not_equal(a, c, sizeof a);
  assert_memory_not_equal(a, plain, sizeof a);
  size_t cp[NCLS][K] = {{0}}, ca[NCLS][K] = {{0}};
  for (size_t i = 0; i < N; i++) {
    cp[(int)y[i]][plain[i]]++;
    ca[(int)y[i]][a[i]]++;
  }
  assert_memory_equal(cp, ca, sizeof cp);
  for (int cl = 0; cl < NCLS; cl++) {
    size_t lo = SIZE_MAX, hi = 0;
    for (int f = 0; f < K; f++) {
      lo = cp[cl][f] < lo ? cp[cl][f] : lo;
      hi = cp[cl][f] > hi ? cp[cl][f] : hi;
    }
    assert_true(hi - lo <= 1); /* round-robin over the sorted labels */
  }
}

static void test_cv_group(void **state) {
  (void)state;
  /* Unique ids sorted: -4, 2, 9, 30, 31 -> KFold(3) over them: {-4, 2},
   * {9, 30}, {31}. */
  const int64_t g[] = {9, 2, 31, -4, 2, 30, 9, 9, -4, 31};
  const int32_t want[] = {1, 0, 2, 0, 0, 1, 1, 1, 0, 2};
  int32_t fold[10];
  assign_ok(ND_CV_GROUP, 3, false, 0, 10, NULL, g, fold);
  assert_memory_equal(fold, want, sizeof want);
  /* Shuffled: reproducible, groups stay together, KFold's group counts. */
  enum { N = 90, K = 4 };
  int64_t groups[N];
  uint64_t rng = g_seed ^ 0x6a0;
  for (size_t i = 0; i < N; i++) groups[i] = (int64_t)(splitmix64(&rng) % 23) * 1000 - 7000;
  int32_t a[N], b[N];
  assign_ok(ND_CV_GROUP, K, true, 99, N, NULL, groups, a);
  assign_ok(ND_CV_GROUP, K, true, 99, N, NULL, groups, b);
  assert_memory_equal(a, b, sizeof a);
  size_t ngroups = 0, per_fold[K] = {0};
  for (size_t i = 0; i < N; i++) {
    bool first = true;
    for (size_t j = 0; j < i; j++) {
      if (groups[j] == groups[i]) {
        assert_int_equal(a[j], a[i]);
        first = false;
      }
    }
    if (first) {
      ngroups++;
      per_fold[a[i]]++;
    }
  }
  for (uint32_t f = 0; f < K; f++) assert_int_equal(per_fold[f], ngroups / K + (f < ngroups % K));
}

static void cv_fails(nd_cv_kind kind, uint32_t k, size_t n, const double *y,
                     const int64_t *groups, const char *msg) {
  nd_cv cv = {kind, k, false, 0};
  int32_t fold[32];
  assert_int_equal(nd_cv_assign(&cv, n, y, groups, fold), ND_EINVAL);
  assert_msg_has(msg);
}

static void test_cv_errors(void **state) {
  (void)state;
  double y[32] = {0};
  int64_t g[32] = {0};
  cv_fails(ND_CV_KFOLD, 1, 10, NULL, NULL, "at least 2");
  cv_fails(ND_CV_KFOLD, 0, 10, NULL, NULL, "at least 2");
  cv_fails(ND_CV_KFOLD, 10, 5, NULL, NULL, "5 rows cannot make 10 folds");
  cv_fails(ND_CV_STRATIFIED, 3, 2, y, NULL, "2 rows cannot make 3 folds");
  cv_fails(ND_CV_GROUP, 2, 0, NULL, g, "0 rows cannot make 2 folds");
  cv_fails(ND_CV_STRATIFIED, 3, 10, NULL, NULL, "y is NULL");
  cv_fails(ND_CV_GROUP, 3, 10, NULL, NULL, "groups is NULL");
  cv_fails((nd_cv_kind)9, 3, 10, NULL, NULL, "unknown cross-validation kind");
  for (size_t i = 0; i < 10; i++) g[i] = (int64_t)(i % 4);
  cv_fails(ND_CV_GROUP, 5, 10, NULL, g, "4 groups cannot make 5 folds");
  y[4] = NAN;
  cv_fails(ND_CV_STRATIFIED, 2, 10, y, NULL, "label of row 4 is NaN");
  y[4] = INFINITY;
  cv_fails(ND_CV_STRATIFIED, 2, 10, y, NULL, "label of row 4 is infinite");
  /* sklearn refuses k above every class count (it only warns when just the
   * smallest class is short, which test_cv_stratified_sklearn covers). */
  const double y3[] = {0, 0, 1, 1, 2, 2};
  cv_fails(ND_CV_STRATIFIED, 3, 6, y3, NULL, "no class has 3 rows (the largest has 2)");
  nd_cv cv = {ND_CV_KFOLD, 3, false, 0};
  assert_int_equal(nd_cv_assign(NULL, 10, NULL, NULL, (int32_t[10]){0}), ND_EINVAL);
  assert_int_equal(nd_cv_assign(&cv, 10, NULL, NULL, NULL), ND_EINVAL);
  cv.k = (uint32_t)INT32_MAX + 1;
  assert_int_equal(nd_cv_assign(&cv, 10, NULL, NULL, (int32_t[10]){0}), ND_EINVAL);
}

/* ------------------------------------------------------------------ .npy */

/* A temporary file holding the given bytes; its path in path[]. */
static void write_temp(char *path, size_t cap, const void *bytes, size_t len) {
  snprintf(path, cap, "/tmp/nd_models_basic_XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(bytes, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

/* Every dtype nd_npy_save writes comes back from nd_npy_load bit for bit. */
static void test_npy_round_trip(void **state) {
  (void)state;
  const nd_dtype types[] = {ND_F64, ND_F32, ND_I64, ND_I32, ND_I16,
                            ND_I8,  ND_U64, ND_U32, ND_U16, ND_U8};
  const size_t shape[2] = {3, 5};
  uint8_t bytes[3 * 5 * 8];
  for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = (uint8_t)(i * 37 + 11);
  char path[64];
  write_temp(path, sizeof path, "", 0);
  for (size_t t = 0; t < NELEM(types); t++) {
    nd_array *a, *b = NULL;
    size_t nbytes = 3 * 5 * nd_dtype_size(types[t]);
    assert_int_equal(nd_array_from(&a, types[t], 2, shape, bytes, nbytes), ND_OK);
    assert_int_equal(nd_npy_save(path, a), ND_OK);
    if (nd_npy_load(path, &b) != ND_OK) fail_msg("%s", nd_models_errmsg());
    assert_true(nd_array_equal(a, b));
    nd_array_release(a);
    nd_array_release(b);
  }
  remove(path);
}

/* A header that ends right after the opening quote of 'descr' has no byte
 * order and no type code: malformed, and nothing past the header is read. */
static void test_npy_descr_at_end(void **state) {
  (void)state;
  static const char dict[] = "{'descr': '";
  uint8_t file[10 + sizeof dict - 1] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                         (uint8_t)(sizeof dict - 1), 0};
  memcpy(file + 10, dict, sizeof dict - 1);
  char path[64];
  write_temp(path, sizeof path, file, sizeof file);
  nd_array *a = (nd_array *)1;
  assert_int_equal(nd_npy_load(path, &a), ND_EFORMAT);
  assert_null(a);
  assert_msg_has("malformed 'descr'");
  assert_msg_has(path);
  remove(path);
}

/* --------------------------------------------------- allocation failures */

static long g_allocs_left; /* < 0: no limit */

static void *fail_malloc(void *ud, size_t size) {
  (void)ud;
  if (g_allocs_left == 0)
    return NULL;
  if (g_allocs_left > 0)
    g_allocs_left--;
  return malloc(size);
}
static void *fail_realloc(void *ud, void *p, size_t size) {
  (void)ud;
  if (g_allocs_left == 0)
    return NULL;
  if (g_allocs_left > 0)
    g_allocs_left--;
  return realloc(p, size);
}
static void fail_free(void *ud, void *p) {
  (void)ud;
  free(p);
}

/* Run op with the first 0, 1, 2, ... allocations succeeding until it
 * succeeds; every failure before that must be ND_ENOMEM (ASan checks that
 * nothing leaks on the way out). */
static void check_oom(int (*op)(void)) {
  const nd_allocator a = {fail_malloc, fail_realloc, fail_free, NULL};
  assert_int_equal(nd_set_allocator(&a), ND_OK);
  int rc = ND_ENOMEM;
  long budget = 0;
  for (; rc == ND_ENOMEM && budget < 64; budget++) {
    g_allocs_left = budget;
    rc = op();
    if (rc == ND_ENOMEM)
      assert_true(strstr(nd_models_errmsg(), "no memory") != NULL);
  }
  nd_set_allocator(NULL);
  assert_int_equal(rc, ND_OK);
  assert_true(budget > 1); /* at least one failure was injected */
}

static const double oom_X[] = {1, 2, 3, 5, 4, 1, 0, 7, 2, 2, 9, 4};
static const size_t oom_rows[] = {0, 1, 2, 3};

static int oom_standard(void) {
  double c[3], s[3];
  return nd_scaler_fit(ND_SCALE_STANDARD, view(oom_X, 4, 3, 3), oom_rows, 4,
                       ND_CONSTANT_ERROR, c, s, NULL);
}
static int oom_robust(void) {
  double c[3], s[3];
  return nd_scaler_fit(ND_SCALE_ROBUST, view(oom_X, 4, 3, 3), oom_rows, 4, ND_CONSTANT_ERROR,
                       c, s, NULL);
}
static int oom_cv(nd_cv_kind kind, bool shuffle) {
  const double y[] = {0, 1, 0, 1, 1, 0, 2, 2, 0};
  const int64_t g[] = {5, 5, 1, 2, 3, 3, 4, 1, 2};
  nd_cv cv = {kind, 3, shuffle, 1};
  int32_t fold[9];
  return nd_cv_assign(&cv, 9, y, g, fold);
}
static int oom_kfold(void) { return oom_cv(ND_CV_KFOLD, true); }
static int oom_stratified(void) { return oom_cv(ND_CV_STRATIFIED, true); }
static int oom_group(void) { return oom_cv(ND_CV_GROUP, false); }
static int oom_auc(void) {
  const double y[] = {0, 1, 0, 1}, s[] = {0.1, 0.8, 0.3, 0.2};
  double v = nd_metric_eval(ND_METRIC_ROC_AUC, y, s, 4);
  return isnan(v) ? ND_ENOMEM : (v == 0.75 ? ND_OK : ND_EINVAL);
}

static void test_alloc_failures(void **state) {
  (void)state;
  check_oom(oom_standard);
  check_oom(oom_robust);
  check_oom(oom_kfold);
  check_oom(oom_stratified);
  check_oom(oom_group);
  check_oom(oom_auc);
}

int main(void) {
  g_seed = nd_test_seed("models_basic", 20240611);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_metric_r2),
      cmocka_unit_test(test_metric_mae),
      cmocka_unit_test(test_metric_pearson),
      cmocka_unit_test(test_metric_auc),
      cmocka_unit_test(test_metric_auc_random),
      cmocka_unit_test(test_metric_balanced_acc),
      cmocka_unit_test(test_metric_names),
      cmocka_unit_test(test_scale_standard),
      cmocka_unit_test(test_scale_none),
      cmocka_unit_test(test_scale_robust),
      cmocka_unit_test(test_scale_matches_sklearn),
      cmocka_unit_test(test_scale_robust_random),
      cmocka_unit_test(test_scale_constant),
      cmocka_unit_test(test_scale_nonfinite),
      cmocka_unit_test(test_scale_bad_args),
      cmocka_unit_test(test_cv_kfold),
      cmocka_unit_test(test_cv_kfold_shuffled),
      cmocka_unit_test(test_cv_stratified_sklearn),
      cmocka_unit_test(test_cv_stratified_shuffled),
      cmocka_unit_test(test_cv_group),
      cmocka_unit_test(test_cv_errors),
      cmocka_unit_test(test_npy_round_trip),
      cmocka_unit_test(test_npy_descr_at_end),
      cmocka_unit_test(test_alloc_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
