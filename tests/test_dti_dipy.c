/* Agreement of the tensor fit (nidag/dti.h) with DIPY 1.6's TensorModel on
 * the reference data of scripts/dti_reference.py (tests/data/dti): DIPY's
 * own small_64D dataset (gradients read from FSL files) and a 2,000-voxel
 * synthetic set, WLS and OLS. FA, MD, AD, RD agree to <= 1e-6 absolute and
 * the eigenvalues to <= 1e-6 relative on the voxels where the fit is well
 * defined (the reference's *_well_defined mask), the eigenvectors up to
 * sign to an angle <= 1e-8 where the eigenvalues are well separated
 * (*_evec_ok); the b0 mask and the eigenvalue floor are equal. No Python is
 * needed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nidag.h"

#ifndef ND_TEST_DATA_DIR
#error "ND_TEST_DATA_DIR must point at tests/data"
#endif

#define TOL_ABS 1e-6 /* FA, MD, AD, RD */
#define TOL_REL 1e-6 /* eigenvalues */
/* Eigenvectors, where *_evec_ok (gaps > 0.001 l1), up to sign: the distance
 * |ours - sign(dot) DIPY's| between unit vectors, i.e. the angle in radians
 * (measured: <= 1.6e-10 for WLS, whose coefficients differ from DIPY's by
 * ~1e-12 relative, divided by the gap; <= 1e-12 for OLS). Much stricter
 * than |dot| >= 1 - 1e-9, which allows an angle of 4.5e-5. */
#define TOL_EVEC 1e-8

static nd_array *load(const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/dti/%s", ND_TEST_DATA_DIR, name);
  nd_array *a = NULL;
  int rc = nd_npy_load(path, &a);
  if (rc != 0) fail_msg("%s: %s", path, nd_models_errmsg());
  return a;
}

/* The data as f64 voxel-major (nvox x nvol), from an f64 or i64 array. */
static double *as_f64(const nd_array *a) {
  size_t n = nd_array_count(a);
  double *d = malloc(n * sizeof *d);
  assert_non_null(d);
  if (nd_array_dtype(a) == ND_F64) {
    memcpy(d, nd_array_data(a), n * sizeof *d);
  } else {
    assert_int_equal(nd_array_dtype(a), ND_I64);
    const int64_t *s = nd_array_data(a);
    for (size_t i = 0; i < n; i++) d[i] = (double)s[i];
  }
  return d;
}

typedef struct worst {
  double fa, md, ad, rd, ev;
  double evec;         /* max over columns of |ours - sign(dot) DIPY's| */
  size_t compared, evec_compared;
} worst;

static void compare(const char *cs, const char *method, const nd_dti_result *r, worst *w) {
  char name[128];
#define REF(what) (snprintf(name, sizeof name, "%s_%s_%s.npy", cs, method, what), load(name))
  nd_array *fa = REF("fa"), *md = REF("md"), *ad = REF("ad"), *rd = REF("rd");
  nd_array *ev = REF("evals"), *ok = REF("well_defined");
  nd_array *vec = REF("evecs"), *vec_ok = REF("evec_ok");
#undef REF
  size_t n = nd_array_count(fa);
  assert_int_equal(n, r->nvox);
  const double *rfa = nd_array_data(fa), *rmd = nd_array_data(md), *rad = nd_array_data(ad),
               *rrd = nd_array_data(rd), *rev = nd_array_data(ev);
  const int64_t *good = nd_array_data(ok), *good_vec = nd_array_data(vec_ok);
  const double *rvec = nd_array_data(vec);
  assert_int_equal(nd_array_count(vec), 9 * n);
  assert_int_equal(nd_array_count(vec_ok), n);
  memset(w, 0, sizeof *w);
  for (size_t v = 0; v < n; v++) {
    if (!good[v]) continue;
    w->compared++;
    w->fa = fmax(w->fa, fabs(r->fa[v] - rfa[v]));
    w->md = fmax(w->md, fabs(r->md[v] - rmd[v]));
    w->ad = fmax(w->ad, fabs(r->ad[v] - rad[v]));
    w->rd = fmax(w->rd, fabs(r->rd[v] - rrd[v]));
    for (int k = 0; k < 3; k++)
      w->ev = fmax(w->ev, fabs(r->evals[3 * v + k] - rev[3 * v + k]) / fabs(rev[3 * v + k]));
    if (!good_vec[v]) continue;
    /* eigenvectors where the eigenvalues are well separated, up to sign:
     * both are row-major 3 x 3 with column j the eigenvector of evals[j] */
    w->evec_compared++;
    for (int j = 0; j < 3; j++) {
      double dot = 0, dist = 0;
      for (int i = 0; i < 3; i++) dot += r->evecs[9 * v + 3 * i + j] * rvec[9 * v + 3 * i + j];
      for (int i = 0; i < 3; i++) {
        double e = r->evecs[9 * v + 3 * i + j] - copysign(1.0, dot) * rvec[9 * v + 3 * i + j];
        dist += e * e;
      }
      w->evec = fmax(w->evec, sqrt(dist));
    }
  }
  printf("# %s %s: %zu of %zu voxels compared; max |dFA| %.3g |dMD| %.3g |dAD| %.3g |dRD| %.3g, "
         "eigenvalues rel %.3g; eigenvectors (%zu voxels) max angle %.3g\n",
         cs, method, w->compared, n, w->fa, w->md, w->ad, w->rd, w->ev, w->evec_compared,
         w->evec);
  assert_true(w->compared > n / 2);
  assert_true(w->evec_compared > n / 2);
  assert_true(w->fa <= TOL_ABS && w->md <= TOL_ABS && w->ad <= TOL_ABS && w->rd <= TOL_ABS);
  assert_true(w->ev <= TOL_REL);
  assert_true(w->evec <= TOL_EVEC);
  nd_array_release(fa);
  nd_array_release(md);
  nd_array_release(ad);
  nd_array_release(rd);
  nd_array_release(ev);
  nd_array_release(ok);
  nd_array_release(vec);
  nd_array_release(vec_ok);
}

static void check_gradients(const nd_gradients *g, const char *cs) {
  char name[128];
  snprintf(name, sizeof name, "%s_gtab_b0s_mask.npy", cs);
  nd_array *m = load(name);
  size_t n = nd_array_count(m);
  assert_int_equal(n, nd_gradients_count(g));
  const int64_t *ref = nd_array_data(m);
  const bool *b0 = nd_gradients_b0_mask(g);
  for (size_t i = 0; i < n; i++) assert_int_equal(b0[i], ref[i] != 0);
  nd_array_release(m);
}

static void fit_case(const char *cs, const nd_gradients *g, const double *data, size_t nvox) {
  char name[128];
  snprintf(name, sizeof name, "%s_min_diffusivity.npy", cs);
  nd_array *floor_ref = load(name);
  const char *methods[2] = {"wls", "ols"};
  for (int m = 0; m < 2; m++) {
    nd_dti_opts o = {.method = m == 0 ? ND_DTI_WLS : ND_DTI_OLS};
    nd_dti_result r = {0};
    assert_int_equal(nd_dti_fit(g, data, nvox, nd_gradients_count(g), &o, &r), ND_OK);
    double want = ((const double *)nd_array_data(floor_ref))[0];
    assert_true(fabs(r.min_diffusivity - want) <= 1e-15 * want);
    worst w;
    compare(cs, methods[m], &r, &w);
    nd_dti_result_free(&r);
  }
  nd_array_release(floor_ref);
}

/* DIPY's small_64D: 10x10x10 voxels x 65 volumes, gradients from the FSL
 * text files (bvecs with a NaN column for the b0, as DIPY's file has). */
static void test_small64(void **state) {
  (void)state;
  char bval[512], bvec[512];
  snprintf(bval, sizeof bval, "%s/dti/small64.bval", ND_TEST_DATA_DIR);
  snprintf(bvec, sizeof bvec, "%s/dti/small64.bvec", ND_TEST_DATA_DIR);
  nd_gradients *g = NULL;
  if (nd_gradients_read_fsl(bval, bvec, &g) != ND_OK) fail_msg("%s", nd_models_errmsg());
  check_gradients(g, "small64");
  nd_array *d = load("small64_data.npy");
  assert_int_equal(nd_array_ndim(d), 4);
  size_t nvox = nd_array_count(d) / nd_array_dim(d, 3);
  double *data = as_f64(d);
  fit_case("small64", g, data, nvox);
  free(data);
  nd_array_release(d);
  nd_gradients_free(g);
}

/* 2,000 synthetic voxels, 5 b0 + 65 directions at b = 1000, SNR 50. */
static void test_synthetic(void **state) {
  (void)state;
  nd_array *bv = load("syn_bvals.npy"), *bvec = load("syn_bvecs.npy"), *d = load("syn_data.npy");
  nd_gradients *g = NULL;
  if (nd_gradients_new(nd_array_data(bv), nd_array_data(bvec), nd_array_count(bv), 0, &g) != ND_OK)
    fail_msg("%s", nd_models_errmsg());
  check_gradients(g, "syn");
  double *data = as_f64(d);
  fit_case("syn", g, data, nd_array_dim(d, 0));
  free(data);
  nd_gradients_free(g);
  nd_array_release(bv);
  nd_array_release(bvec);
  nd_array_release(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_small64),
      cmocka_unit_test(test_synthetic),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
