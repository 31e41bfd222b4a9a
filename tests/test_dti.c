/* Tests for the tensor fit (nidag/dti.h): gradient tables (both FSL bvecs
 * layouts, every validation error), exact recovery of noise-free tensors by
 * OLS and WLS, bitwise independence from threads and chunking, degenerate
 * voxels. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "models/dti_int.h" /* nd__dti_eigh3 */
#include "nidag.h"
#include "tests/testutil.h"

#define NDIR 30
#define NB0 2
#define NVOL (NB0 + NDIR)
#define S0 1000.0

static char tmpdir[64];

/* |a - b| <= tol, with both values in the failure message. */
#define assert_double_equal(a, b, tol)                                          \
  do {                                                                         \
    double a_ = (a), b_ = (b);                                                 \
    if (!(fabs(a_ - b_) <= (tol))) fail_msg("%s = %.17g, expected %.17g", #a, a_, b_); \
  } while (0)

static const char *write_tmp(const char *name, const char *text) {
  static char path[8][256];
  static int k;
  char *p = path[k++ % 8];
  snprintf(p, 256, "%s/%s", tmpdir, name);
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  return p;
}

/* A table of NB0 b0 volumes then NDIR directions spread on the sphere
 * (a golden-spiral), b = 1000 for the first half, 2000 for the rest. */
static void make_table(double *bvals, double *bvecs) {
  for (int i = 0; i < NVOL; i++) {
    if (i < NB0) {
      bvals[i] = 0;
      bvecs[3 * i] = bvecs[3 * i + 1] = bvecs[3 * i + 2] = 0;
      continue;
    }
    int j = i - NB0;
    double z = 1 - (j + 0.5) / NDIR, r = sqrt(1 - z * z), phi = j * 2.399963229728653;
    bvecs[3 * i] = r * cos(phi);
    bvecs[3 * i + 1] = r * sin(phi);
    bvecs[3 * i + 2] = z;
    bvals[i] = j < NDIR / 2 ? 1000 : 2000;
  }
}

static nd_gradients *table(void) {
  double bvals[NVOL], bvecs[3 * NVOL];
  make_table(bvals, bvecs);
  nd_gradients *g = NULL;
  assert_int_equal(nd_gradients_new(bvals, bvecs, NVOL, 0, &g), 0);
  return g;
}

/* Rotation from Euler angles (columns are the eigenvectors). */
static void rotation(double a, double b, double c, double *r) {
  double ca = cos(a), sa = sin(a), cb = cos(b), sb = sin(b), cc = cos(c), sc = sin(c);
  double rz1[9] = {ca, -sa, 0, sa, ca, 0, 0, 0, 1}, ry[9] = {cb, 0, sb, 0, 1, 0, -sb, 0, cb},
         rz2[9] = {cc, -sc, 0, sc, cc, 0, 0, 0, 1}, t[9];
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) {
      t[3 * i + j] = 0;
      for (int k = 0; k < 3; k++) t[3 * i + j] += rz1[3 * i + k] * ry[3 * k + j];
    }
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) {
      r[3 * i + j] = 0;
      for (int k = 0; k < 3; k++) r[3 * i + j] += t[3 * i + k] * rz2[3 * k + j];
    }
}

/* Exact signals of D = R diag(ev) R^T. */
static void signals(const nd_gradients *g, const double *ev, const double *r, double *s) {
  const double *bv = nd_gradients_bvecs(g), *b = nd_gradients_bvals(g);
  for (size_t i = 0; i < nd_gradients_count(g); i++) {
    double q = 0;
    for (int k = 0; k < 3; k++) {
      double d = 0;
      for (int m = 0; m < 3; m++) d += r[3 * m + k] * bv[3 * i + m];
      q += ev[k] * d * d;
    }
    s[i] = S0 * exp(-b[i] * q);
  }
}

/* ------------------------------------------------------------ gradients */

static void test_read_fsl_layouts(void **state) {
  (void)state;
  const char *bval = write_tmp("a.bval", "0 1000\t1000, 5 # comment\n");
  const char *rows3 = write_tmp("rows.bvec", "0 1 0 0\n0 0 1 0\n0 0 0 1\n\n");
  const char *nx3 = write_tmp("cols.bvec", "0 0 0\n1 0 0\n0,1,0\n0 0 1\n");
  nd_gradients *a = NULL, *b = NULL;
  assert_int_equal(nd_gradients_read_fsl(bval, rows3, &a), 0);
  assert_int_equal(nd_gradients_read_fsl(bval, nx3, &b), 0);
  assert_int_equal(nd_gradients_count(a), 4);
  assert_memory_equal(nd_gradients_bvecs(a), nd_gradients_bvecs(b), 12 * sizeof(double));
  assert_memory_equal(nd_gradients_bvals(a), nd_gradients_bvals(b), 4 * sizeof(double));
  const double *bv = nd_gradients_bvecs(a), *bl = nd_gradients_bvals(a);
  assert_true(bv[3] == 1 && bv[7] == 1 && bv[11] == 1);
  /* volume 3: b = 5 <= 50, a unit vector: b0 volume, keeps b and vector */
  assert_true(bl[3] == 5);
  const bool *m = nd_gradients_b0_mask(a);
  assert_true(m[0] && !m[1] && !m[2] && m[3]);
  assert_true(nd_gradients_b0_threshold(a) == 50);
  nd_gradients_free(a);
  nd_gradients_free(b);
  nd_gradients_free(NULL);
}

static void test_b0_nonunit_zeroed(void **state) {
  (void)state;
  /* b0 volumes: a non-unit (or NaN) vector is zeroed and b set to 0, as DIPY */
  double bvals[3] = {10, 1000, 20}, bvecs[9] = {0.5, 0, 0, 1, 0, 0, NAN, NAN, NAN};
  nd_gradients *g = NULL;
  assert_int_equal(nd_gradients_new(bvals, bvecs, 3, 0, &g), 0);
  assert_true(nd_gradients_bvals(g)[0] == 0 && nd_gradients_bvals(g)[2] == 0);
  assert_true(nd_gradients_bvecs(g)[0] == 0 && nd_gradients_bvecs(g)[6] == 0);
  nd_gradients_free(g);
}

static void expect_new_error(const double *bvals, const double *bvecs, size_t n, double thr,
                             int code, const char *needle) {
  nd_gradients *g = (nd_gradients *)1;
  assert_int_equal(nd_gradients_new(bvals, bvecs, n, thr, &g), code);
  assert_null(g);
  if (!strstr(nd_models_errmsg(), needle)) fail_msg("message '%s' lacks '%s'", nd_models_errmsg(), needle);
}

static void test_gradients_errors(void **state) {
  (void)state;
  double vec2[6] = {0, 0, 0, 1, 0, 0};
  expect_new_error((double[]){0, -5}, vec2, 2, 0, ND_EINVAL, "volume 1: negative b-value");
  expect_new_error((double[]){0, NAN}, vec2, 2, 0, ND_EINVAL, "volume 1: b-value nan");
  expect_new_error((double[]){0, 1000}, (double[]){0, 0, 0, 0.9, 0, 0}, 2, 0, ND_EINVAL,
                   "volume 1: b = 1000 but its b-vector");
  expect_new_error((double[]){0, 1000}, (double[]){0, 0, 0, NAN, 0, 0}, 2, 0, ND_EINVAL,
                   "volume 1");
  expect_new_error((double[]){0, 1000}, (double[]){0, 0, 0, INFINITY, 0, 0}, 2, 0, ND_EINVAL,
                   "volume 1: b-vector component 0 is infinite");
  expect_new_error((double[]){1000, 1000}, (double[]){1, 0, 0, 1, 0, 0}, 2, 0, ND_EINVAL,
                   "no b0 volume");
  expect_new_error((double[]){0, 10}, vec2, 2, 0, ND_EINVAL, "no diffusion-weighted volume");
  expect_new_error((double[]){0, 10}, vec2, 2, -1, ND_EINVAL, "threshold");
  expect_new_error((double[]){0}, vec2, 0, 0, ND_EINVAL, "no volume");
  /* within DIPY's atol 1e-2: accepted */
  nd_gradients *g = NULL;
  assert_int_equal(nd_gradients_new((double[]){0, 1000}, (double[]){0, 0, 0, 1.009, 0, 0}, 2, 0, &g), 0);
  nd_gradients_free(g);
}

static void expect_read_error(const char *bval, const char *bvec, int code, const char *needle) {
  nd_gradients *g = (nd_gradients *)1;
  assert_int_equal(nd_gradients_read_fsl(bval, bvec, &g), code);
  assert_null(g);
  if (!strstr(nd_models_errmsg(), needle)) fail_msg("message '%s' lacks '%s'", nd_models_errmsg(), needle);
}

static void test_read_fsl_errors(void **state) {
  (void)state;
  const char *bval = write_tmp("e.bval", "0 1000 1000\n");
  const char *bvec4 = write_tmp("e4.bvec", "0 1 0 0\n0 0 1 0\n0 0 0 1\n");
  expect_read_error(bval, bvec4, ND_EFORMAT, "has 3 b-values but");
  expect_read_error(bval, bvec4, ND_EFORMAT, "e4.bvec has 4 b-vectors");
  const char *bad = write_tmp("bad.bvec", "0 1 0\n0 0 x\n0 0 1\n");
  expect_read_error(bval, bad, ND_EFORMAT, "bad.bvec: line 2: 'x' is not a number");
  const char *ragged = write_tmp("rag.bvec", "0 1 0\n0 0\n0 0 1\n");
  expect_read_error(bval, ragged, ND_EFORMAT, "rag.bvec: line 2 has 2 values");
  const char *four = write_tmp("four.bvec", "0 1 0 0\n0 0 1 0\n");
  expect_read_error(bval, four, ND_EFORMAT, "3 rows or 3 columns");
  const char *bval2 = write_tmp("two.bval", "0 1000\n0 1000\n");
  expect_read_error(bval2, four, ND_EFORMAT, "two.bval: a bvals file has one row");
  expect_read_error("/nonexistent/x.bval", four, ND_EIO, "/nonexistent/x.bval: cannot read");
  const char *nonunit = write_tmp("nu.bvec", "0 0.5 0\n0 0 1\n0 0 0\n");
  /* a 3 x 3 file is read as one vector per row (DIPY): volume 2 is (0, 0, 0) */
  expect_read_error(bval, nonunit, ND_EINVAL, "nu.bvec: volume 2: b = 1000 but its b-vector (0, 0, 0)");
  const char *empty = write_tmp("empty.bval", "# nothing\n\n");
  expect_read_error(empty, nonunit, ND_EFORMAT, "empty.bval: no values");
}

/* ------------------------------------------------------------------ fit */

static void check_recovered(const nd_dti_result *r, size_t v, const double *ev, const double *rot) {
  for (int k = 0; k < 3; k++) assert_double_equal(r->evals[3 * v + k], ev[k], 1e-12);
  double md = (ev[0] + ev[1] + ev[2]) / 3;
  double num = (ev[0] - ev[1]) * (ev[0] - ev[1]) + (ev[1] - ev[2]) * (ev[1] - ev[2]) +
               (ev[2] - ev[0]) * (ev[2] - ev[0]);
  double fa = sqrt(0.5 * num / (ev[0] * ev[0] + ev[1] * ev[1] + ev[2] * ev[2]));
  assert_double_equal(r->fa[v], fa, 1e-9);
  assert_double_equal(r->md[v], md, 1e-12);
  assert_double_equal(r->ad[v], ev[0], 1e-12);
  assert_double_equal(r->rd[v], (ev[1] + ev[2]) / 2, 1e-12);
  for (int k = 0; k < 3; k++) { /* column k against the true eigenvector, up to sign */
    double dot = 0;
    for (int i = 0; i < 3; i++) dot += r->evecs[9 * v + 3 * i + k] * rot[3 * i + k];
    assert_double_equal(fabs(dot), 1.0, 1e-9);
  }
}

static void test_fit_noise_free(void **state) {
  (void)state;
  nd_gradients *g = table();
  enum { NV = 4 };
  double ev[NV][3] = {{1.7e-3, 0.3e-3, 0.2e-3}, {0.9e-3, 0.8e-3, 0.7e-3},
                      {2.0e-3, 1.0e-3, 0.1e-3}, {3.0e-3, 0.5e-3, 0.4e-3}};
  double rot[NV][9], s[NV * NVOL];
  for (int v = 0; v < NV; v++) {
    rotation(0.3 + v, 0.7 * v + 0.2, 1.1 - 0.4 * v, rot[v]);
    signals(g, ev[v], rot[v], s + v * NVOL);
  }
  nd_dti_result ols, wls;
  nd_dti_opts o = {0};
  o.method = ND_DTI_OLS;
  assert_int_equal(nd_dti_fit(g, s, NV, NVOL, &o, &ols), 0);
  o.method = ND_DTI_WLS;
  assert_int_equal(nd_dti_fit(g, s, NV, NVOL, &o, &wls), 0);
  assert_int_equal(ols.n_failed, 0);
  /* DIPY's floor: 1e-6 / max(B), B's entries b g_i g_j (times 2 off the diagonal) */
  double bmax = 1;
  const double *bv = nd_gradients_bvecs(g), *bl = nd_gradients_bvals(g);
  for (int i = 0; i < NVOL; i++)
    for (int j = 0; j < 3; j++)
      for (int k = j; k < 3; k++) {
        double e = bv[3 * i + j] * bv[3 * i + k] * (j == k ? 1. : 2.) * bl[i];
        if (e > bmax) bmax = e;
      }
  assert_true(ols.min_diffusivity == 1e-6 / bmax);
  for (int v = 0; v < NV; v++) {
    check_recovered(&ols, v, ev[v], rot[v]);
    check_recovered(&wls, v, ev[v], rot[v]);
    assert_double_equal(ols.fa[v], wls.fa[v], 1e-9);
    assert_double_equal(ols.md[v], wls.md[v], 1e-13);
  }
  nd_dti_result_free(&ols);
  nd_dti_result_free(&wls);
  nd_dti_result_free(NULL);
  nd_gradients_free(g);
}

static void test_fit_degenerate(void **state) {
  (void)state;
  nd_gradients *g = table();
  double s[3 * NVOL], ev[3] = {1.5e-3, 0.4e-3, 0.3e-3}, rot[9];
  memset(s, 0, sizeof s); /* voxel 0: all zero */
  rotation(0.1, 0.2, 0.3, rot);
  signals(g, ev, rot, s + NVOL); /* voxel 1: fine */
  signals(g, ev, rot, s + 2 * NVOL);
  s[2 * NVOL + 5] = NAN; /* voxel 2: one NaN */
  for (int m = 0; m < 2; m++) {
    nd_dti_result r;
    nd_dti_opts o = {.method = m ? ND_DTI_OLS : ND_DTI_WLS};
    assert_int_equal(nd_dti_fit(g, s, 3, NVOL, &o, &r), 0);
    assert_int_equal(r.n_failed, 1);
    /* all zero: floored at min_signal, D = 0, every eigenvalue floored */
    assert_true(r.fa[0] == 0);
    assert_double_equal(r.md[0], r.min_diffusivity, 1e-20);
    assert_double_equal(r.evals[2], r.min_diffusivity, 1e-20);
    check_recovered(&r, 1, ev, rot);
    assert_true(isnan(r.fa[2]) && isnan(r.md[2]) && isnan(r.evals[6]) && isnan(r.evecs[18]));
    nd_dti_result_free(&r);
  }
  nd_gradients_free(g);
}

static void test_fit_errors(void **state) {
  (void)state;
  nd_gradients *g = table();
  double s[NVOL] = {0};
  nd_dti_result r;
  assert_int_equal(nd_dti_fit(g, s, 1, NVOL - 1, NULL, &r), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "31 volumes but the gradient table has 32"));
  assert_null(r.fa);
  nd_dti_opts o = {.min_signal = -1};
  assert_int_equal(nd_dti_fit(g, s, 1, NVOL, &o, &r), ND_EINVAL);
  o = (nd_dti_opts){.method = (nd_dti_method)7};
  assert_int_equal(nd_dti_fit(g, s, 1, NVOL, &o, &r), ND_EINVAL);
  o = (nd_dti_opts){.chunking = (nd_chunking)9};
  assert_int_equal(nd_dti_fit(g, s, 1, NVOL, &o, &r), ND_EINVAL);
  assert_int_equal(nd_dti_fit(g, NULL, 1, NVOL, NULL, &r), ND_EINVAL);
  assert_int_equal(nd_dti_fit(NULL, s, 1, NVOL, NULL, &r), ND_EINVAL);
  /* no voxel: an empty result */
  assert_int_equal(nd_dti_fit(g, NULL, 0, NVOL, NULL, &r), 0);
  assert_int_equal(r.nvox, 0);
  nd_dti_result_free(&r);
  nd_gradients_free(g);
}

static int same(const nd_dti_result *a, const nd_dti_result *b) {
  size_t n = a->nvox;
  return a->nvox == b->nvox && a->n_failed == b->n_failed &&
         !memcmp(a->fa, b->fa, n * sizeof(double)) && !memcmp(a->md, b->md, n * sizeof(double)) &&
         !memcmp(a->ad, b->ad, n * sizeof(double)) && !memcmp(a->rd, b->rd, n * sizeof(double)) &&
         !memcmp(a->evals, b->evals, 3 * n * sizeof(double)) &&
         !memcmp(a->evecs, b->evecs, 9 * n * sizeof(double));
}

static void test_fit_deterministic(void **state) {
  (void)state;
  uint64_t seed = nd_test_seed("dti", 20240611), st = seed;
  nd_gradients *g = table();
  enum { NV = 1001 };
  double *s = malloc(NV * NVOL * sizeof *s);
  assert_non_null(s);
  for (size_t v = 0; v < NV; v++) {
    double ev[3], rot[9];
    for (int k = 0; k < 3; k++) ev[k] = (0.1 + 2.5 * (double)(splitmix64(&st) >> 11) * 0x1p-53) * 1e-3;
    rotation((double)(splitmix64(&st) >> 11) * 0x1p-50, 1.0, (double)v, rot);
    signals(g, ev, rot, s + v * NVOL);
    for (int i = 0; i < NVOL; i++) /* noise, so WLS differs from OLS */
      s[v * NVOL + i] += 20.0 * ((double)(splitmix64(&st) >> 11) * 0x1p-53 - 0.5);
  }
  s[17 * NVOL + 3] = NAN;
  nd_pool *pools[2];
  const unsigned threads[2] = {1, 2};
  assert_int_equal(nd_test_open_pools(pools, threads, 2), 0);
  const nd_chunking how[4] = {ND_STATIC, ND_STATIC_CYCLIC, ND_DYNAMIC, ND_GUIDED};
  const size_t chunks[4] = {0, 1, 7, NV};
  for (int m = 0; m < 2; m++) {
    nd_dti_result ref;
    nd_dti_opts o = {.method = m ? ND_DTI_OLS : ND_DTI_WLS, .pool = pools[0]};
    assert_int_equal(nd_dti_fit(g, s, NV, NVOL, &o, &ref), 0);
    assert_int_equal(ref.n_failed, 1);
    for (int p = 0; p < 2; p++)
      for (int h = 0; h < 4; h++)
        for (int c = 0; c < 4; c++) {
          nd_dti_result r;
          o.pool = pools[p];
          o.chunking = how[h];
          o.chunks = chunks[c];
          assert_int_equal(nd_dti_fit(g, s, NV, NVOL, &o, &r), 0);
          if (!same(&ref, &r)) fail_msg("differs: threads %u chunking %d chunks %zu", threads[p], h, chunks[c]);
          nd_dti_result_free(&r);
        }
    nd_dti_result_free(&ref);
  }
  nd_pool_close(pools[0]);
  nd_pool_close(pools[1]);
  free(s);
  nd_gradients_free(g);
}

/* ------------------------------------------------------- eigensolver */

/* a = r diag(ev) r^T, row-major */
static void compose(const double *ev, const double *r, double *a) {
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) {
      a[3 * i + j] = 0;
      for (int k = 0; k < 3; k++) a[3 * i + j] += r[3 * i + k] * ev[k] * r[3 * j + k];
    }
}

/* nd__dti_eigh3 on m: descending eigenvalues (within tol * |m| of want when
 * given), |m v - l v| <= tol |m| per column (|m| = 3 max |m_ij|), V^T V
 * = I within tol, and each column's first component of largest magnitude
 * positive. Returns the largest residual seen, relative to |m|. */
static double check_eigh3(const double *m, const double *want, double tol, double *evals,
                          double *evecs) {
  double nrm = 0, worst = 0; /* 3 max |m_ij| >= the Frobenius norm, without underflow */
  for (int k = 0; k < 9; k++) nrm = fmax(nrm, 3 * fabs(m[k]));
  assert_int_equal(nd__dti_eigh3(m, evals, evecs), 0);
  assert_true(evals[0] >= evals[1] && evals[1] >= evals[2]);
  for (int j = 0; j < 3; j++) {
    if (want && !(fabs(evals[j] - want[j]) <= tol * nrm))
      fail_msg("eigenvalue %d = %.17g, expected %.17g", j, evals[j], want[j]);
    for (int i = 0; i < 3; i++) {
      double av = 0;
      for (int k = 0; k < 3; k++) av += m[3 * i + k] * evecs[3 * k + j];
      double res = fabs(av - evals[j] * evecs[3 * i + j]);
      if (!(res <= tol * nrm)) fail_msg("column %d: residual %.3g of |A| %.3g", j, res, nrm);
      if (nrm > 0) worst = fmax(worst, res / nrm);
    }
    for (int k = 0; k < 3; k++) {
      double dot = 0;
      for (int i = 0; i < 3; i++) dot += evecs[3 * i + j] * evecs[3 * i + k];
      if (!(fabs(dot - (j == k)) <= tol)) fail_msg("columns %d, %d: dot %.17g", j, k, dot);
      worst = fmax(worst, fabs(dot - (j == k)));
    }
    int big = 0;
    for (int i = 1; i < 3; i++)
      if (fabs(evecs[3 * i + j]) > fabs(evecs[3 * big + j])) big = i;
    assert_true(evecs[3 * big + j] > 0);
  }
  return worst;
}

/* |dot| of column j of evecs with column k of r */
static double col_dot(const double *evecs, int j, const double *r, int k) {
  double d = 0;
  for (int i = 0; i < 3; i++) d += evecs[3 * i + j] * r[3 * i + k];
  return fabs(d);
}

#define EIG_TOL 1e-13

static void test_eigh3_exact(void **state) {
  (void)state;
  double ev[3], vec[9];
  /* all zero: zero eigenvalues, the identity */
  const double zero[9] = {0};
  check_eigh3(zero, (double[]){0, 0, 0}, 0, ev, vec);
  const double id[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
  assert_memory_equal(vec, id, sizeof id);
  /* exactly isotropic: no rotation at all */
  const double iso[9] = {1e-3, 0, 0, 0, 1e-3, 0, 0, 0, 1e-3};
  check_eigh3(iso, (double[]){1e-3, 1e-3, 1e-3}, 0, ev, vec);
  assert_memory_equal(vec, id, sizeof id);
  /* diagonal: sorted, unit vectors (the column of 3e-3 is y, and so on) */
  const double dg[9] = {1e-3, 0, 0, 0, 3e-3, 0, 0, 0, 2e-3};
  check_eigh3(dg, (double[]){3e-3, 2e-3, 1e-3}, 0, ev, vec);
  const double perm[9] = {0, 0, 1, 1, 0, 0, 0, 1, 0};
  assert_memory_equal(vec, perm, sizeof perm);
  /* diagonal with negative entries: still descending */
  const double neg[9] = {-2, 0, 0, 0, 0, 0, 0, 0, 5};
  check_eigh3(neg, (double[]){5, 0, -2}, 0, ev, vec);
  /* a 2 x 2 block with equal diagonal (a 45 degree rotation) */
  const double blk[9] = {1, 2, 0, 2, 1, 0, 0, 0, 0};
  check_eigh3(blk, (double[]){3, 0, -1}, EIG_TOL, ev, vec);
  /* non-finite entries (read from the upper triangle) */
  double bad[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
  bad[5] = NAN;
  assert_int_equal(nd__dti_eigh3(bad, ev, vec), -1);
  bad[5] = 0;
  bad[2] = -INFINITY;
  assert_int_equal(nd__dti_eigh3(bad, ev, vec), -1);
}

static void test_eigh3_hard(void **state) {
  (void)state;
  double r[9], m[9], ev[3], vec[9], worst = 0;
  rotation(0.4, 1.1, -0.7, r);
  /* isotropic after rounding: the off-diagonal entries are rounding noise */
  const double iso[3] = {1e-3, 1e-3, 1e-3};
  compose(iso, r, m);
  worst = fmax(worst, check_eigh3(m, iso, EIG_TOL, ev, vec));
  /* two equal eigenvalues, the larger or the smaller pair: the distinct
   * eigenvector is determined */
  const double prolate[3] = {2e-3, 1e-3, 1e-3}, oblate[3] = {1e-3, 1e-3, 0.2e-3};
  compose(prolate, r, m);
  worst = fmax(worst, check_eigh3(m, prolate, EIG_TOL, ev, vec));
  assert_double_equal(col_dot(vec, 0, r, 0), 1.0, 1e-12);
  compose(oblate, r, m);
  worst = fmax(worst, check_eigh3(m, oblate, EIG_TOL, ev, vec));
  assert_double_equal(col_dot(vec, 2, r, 2), 1.0, 1e-12);
  /* nearly equal, and very different magnitudes (the small ones are only
   * determined to within rounding of the largest) */
  const double sets[][3] = {{1e-3 * (1 + 1e-12), 1e-3, 1e-3 * (1 - 1e-13)},
                            {1.0, 1e-8, 1e-16},
                            {1e-3, 1e-9, -1e-15},
                            {1e-3, -1e-12, -0.5},
                            {3e-200, 2e-200, 1e-200}, /* scaled internally */
                            {3e200, 2e200, -1e200}};
  for (size_t k = 0; k < sizeof sets / sizeof *sets; k++) {
    compose(sets[k], r, m);
    worst = fmax(worst, check_eigh3(m, NULL, EIG_TOL, ev, vec));
    double big = fmax(fabs(sets[k][0]), fabs(sets[k][2])); /* each set is descending */
    for (int j = 0; j < 3; j++) assert_true(fabs(ev[j] - sets[k][j]) <= 4 * EIG_TOL * big);
  }
  /* the same on a diagonal with one tiny off-diagonal pair */
  const double tiny[9] = {1, 1e-30, 0, 1e-30, 1e-20, 1e-25, 0, 1e-25, 1e-20};
  worst = fmax(worst, check_eigh3(tiny, NULL, EIG_TOL, ev, vec));
  /* random symmetric matrices, and random spectra with repeated values */
  uint64_t st = nd_test_seed("dti_eigh3", 7);
  for (int t = 0; t < 20000; t++) {
    double u[6];
    for (int k = 0; k < 6; k++) u[k] = (double)(splitmix64(&st) >> 11) * 0x1p-52 - 1.0;
    if (t % 2 == 0) {
      double sym[9] = {u[0], u[1], u[2], u[1], u[3], u[4], u[2], u[4], u[5]};
      memcpy(m, sym, sizeof m);
    } else {
      double e[3] = {u[0], t % 3 ? u[0] : u[1], t % 5 ? u[2] : u[0]};
      rotation(3 * u[3], 3 * u[4], 3 * u[5], r);
      compose(e, r, m);
    }
    worst = fmax(worst, check_eigh3(m, NULL, EIG_TOL, ev, vec));
  }
  printf("# eigh3: worst residual / orthonormality %.3g\n", worst);
}

/* Noise-free isotropic and prolate tensors through the fit: FA ~ 0, the
 * eigenvalues, and V diag(l) V^T back to the tensor. */
static void test_fit_equal_eigenvalues(void **state) {
  (void)state;
  nd_gradients *g = table();
  enum { NV = 3 };
  double ev[NV][3] = {{0.8e-3, 0.8e-3, 0.8e-3}, {1.7e-3, 0.3e-3, 0.3e-3}, {1.1e-3, 1.1e-3, 0.2e-3}};
  double rot[9], s[NV * NVOL];
  rotation(0.9, 0.5, 2.0, rot);
  for (int v = 0; v < NV; v++) signals(g, ev[v], rot, s + v * NVOL);
  for (int meth = 0; meth < 2; meth++) {
    nd_dti_result r;
    nd_dti_opts o = {.method = meth ? ND_DTI_OLS : ND_DTI_WLS};
    assert_int_equal(nd_dti_fit(g, s, NV, NVOL, &o, &r), 0);
    assert_int_equal(r.n_failed, 0);
    assert_true(r.fa[0] <= 1e-9);
    for (int v = 0; v < NV; v++) {
      double want[9], got[9];
      compose(ev[v], rot, want);
      compose(r.evals + 3 * v, r.evecs + 9 * v, got);
      /* the fit itself recovers D to ~1e-12 relative */
      for (int k = 0; k < 9; k++) assert_double_equal(got[k], want[k], 1e-10 * ev[v][0]);
      for (int k = 0; k < 3; k++) assert_double_equal(r.evals[3 * v + k], ev[v][k], 1e-10 * ev[v][0]);
    }
    assert_double_equal(col_dot(r.evecs + 9, 0, rot, 0), 1.0, 1e-9);
    assert_double_equal(col_dot(r.evecs + 18, 2, rot, 2), 1.0, 1e-9);
    nd_dti_result_free(&r);
  }
  nd_gradients_free(g);
}

static int setup_dir(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/nd_test_dti_XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

/* Tables of fewer than 7 volumes are underdetermined: numpy's pinv gives
 * the minimum-norm solution, and with diag(w) X of full row rank the WLS
 * solution pinv(diag(w) X)(w y) = X^T (X X^T)^-1 y is the OLS one, so WLS
 * must equal OLS. The fit must also be the same bits for any pool and any
 * earlier heap contents (it once read singular values LAPACK never wrote). */
static void test_fit_few_volumes(void **state) {
  (void)state;
  for (size_t nvol = 2; nvol <= 6; nvol++) {
    double bvals[6], bvecs[18];
    for (size_t i = 0; i < nvol; i++) {
      if (i == 0) {
        bvals[0] = 0;
        bvecs[0] = bvecs[1] = bvecs[2] = 0;
        continue;
      }
      double z = 1 - (i - 0.5) / 5.0, r = sqrt(1 - z * z), phi = (double)i * 2.399963229728653;
      bvecs[3 * i] = r * cos(phi);
      bvecs[3 * i + 1] = r * sin(phi);
      bvecs[3 * i + 2] = z;
      bvals[i] = 1000;
    }
    nd_gradients *g = NULL;
    assert_int_equal(nd_gradients_new(bvals, bvecs, nvol, 0, &g), ND_OK);
    enum { NV = 40 };
    double sig[NV * 6];
    uint64_t seed = 99;
    for (size_t k = 0; k < NV * nvol; k++)
      sig[k] = k % nvol == 0 ? 1000.0 : 200.0 + 600.0 * (double)(splitmix64(&seed) >> 11) * 0x1p-53;
    nd_pool *pools[2];
    const unsigned threads[2] = {1, 2};
    assert_int_equal(nd_test_open_pools(pools, threads, 2), 0);
    nd_dti_result ref[2];
    for (int m = 0; m < 2; m++) {
      /* dirty the heap the scratch comes from */
      void *junk = malloc(1 << 16);
      assert_non_null(junk);
      memset(junk, 0x5a, 1 << 16);
      free(junk);
      nd_dti_opts o = {.method = m ? ND_DTI_OLS : ND_DTI_WLS, .pool = pools[0]};
      assert_int_equal(nd_dti_fit(g, sig, NV, nvol, &o, &ref[m]), ND_OK);
      assert_int_equal(ref[m].n_failed, 0);
      for (int p = 0; p < 2; p++) {
        nd_dti_result again;
        o.pool = pools[p];
        o.chunks = 7;
        assert_int_equal(nd_dti_fit(g, sig, NV, nvol, &o, &again), ND_OK);
        assert_memory_equal(again.evals, ref[m].evals, NV * 3 * sizeof(double));
        assert_memory_equal(again.fa, ref[m].fa, NV * sizeof(double));
        nd_dti_result_free(&again);
      }
    }
    for (size_t v = 0; v < NV; v++) {
      assert_true(isfinite(ref[0].fa[v]) && isfinite(ref[0].md[v]));
      for (int k = 0; k < 3; k++)
        assert_double_equal(ref[0].evals[3 * v + (size_t)k], ref[1].evals[3 * v + (size_t)k],
                            1e-9 * fabs(ref[1].evals[3 * v]) + 1e-18);
    }
    nd_dti_result_free(&ref[0]);
    nd_dti_result_free(&ref[1]);
    nd_test_close_pools(pools, 2);
    nd_gradients_free(g);
  }
}

/* The fit's own log and exp are within 1 ulp of libm's (glibc's are
 * correctly rounded in practice), over wide log-uniform ranges, near 1 and
 * near 0 where cancellation would show, and at the edges where they hand
 * over to libm. */
static bool within_ulp(double ours, double ref) {
  return ours == ref || ours == nextafter(ref, INFINITY) || ours == nextafter(ref, -INFINITY);
}

static void test_log_exp_accuracy(void **state) {
  (void)state;
  uint64_t seed = 12345;
  size_t bad_log = 0, bad_exp = 0;
  for (int i = 0; i < 2000000; i++) {
    double u = (double)(splitmix64(&seed) >> 11) * 0x1p-53;
    double x = i % 4 == 0 ? exp((u - 0.5) * 1400.0)          /* 1e-304 .. 1e304 */
               : i % 4 == 1 ? 1.0 + (u - 0.5) * 1e-3          /* near 1 */
               : i % 4 == 2 ? 1e-4 + u * 5000.0               /* signals */
                            : ldexp(1.0 + u, (int)(u * 2000) - 1000);
    if (!within_ulp(nd__dti_log(x), log(x))) bad_log++;
    double e = i % 3 == 0 ? (u - 0.5) * 1400.0 : i % 3 == 1 ? (u - 0.5) * 1e-6 : -u * 20.0;
    if (!within_ulp(nd__dti_exp(e), exp(e))) bad_exp++;
  }
  const double edges[] = {DBL_MIN, 0x1p-1022 * 1.5, DBL_MAX, 0x1.6a09e667f3bccp-1,
                          0x1.6a09e667f3bcdp-1, 1.0, 2.0, 0.5};
  for (size_t k = 0; k < sizeof edges / sizeof *edges; k++)
    if (!within_ulp(nd__dti_log(edges[k]), log(edges[k]))) bad_log++;
  const double eedges[] = {0.0, -0.0, 511.999, -511.999, 512.0, -512.0, 700.0, -745.0, 1e-300};
  for (size_t k = 0; k < sizeof eedges / sizeof *eedges; k++)
    if (!within_ulp(nd__dti_exp(eedges[k]), exp(eedges[k]))) bad_exp++;
  assert_true(nd__dti_log(1.0) == 0.0);
  assert_true(nd__dti_exp(0.0) == 1.0);
  assert_true(isnan(nd__dti_log(NAN)) && isnan(nd__dti_exp(NAN)));
  assert_true(nd__dti_log(0.0) == -INFINITY && nd__dti_exp(-INFINITY) == 0.0);
  printf("# log/exp: %zu / %zu values more than 1 ulp from libm\n", bad_log, bad_exp);
  assert_int_equal(bad_log, 0);
  assert_int_equal(bad_exp, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_log_exp_accuracy),
      cmocka_unit_test(test_fit_few_volumes),
      cmocka_unit_test(test_read_fsl_layouts), cmocka_unit_test(test_b0_nonunit_zeroed),
      cmocka_unit_test(test_gradients_errors), cmocka_unit_test(test_read_fsl_errors),
      cmocka_unit_test(test_fit_noise_free),   cmocka_unit_test(test_fit_degenerate),
      cmocka_unit_test(test_fit_errors),       cmocka_unit_test(test_fit_deterministic),
      cmocka_unit_test(test_eigh3_exact),      cmocka_unit_test(test_eigh3_hard),
      cmocka_unit_test(test_fit_equal_eigenvalues),
  };
  return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
