/* cmocka suite: the models layer against scikit-learn 1.2.1. The reference
 * inputs and outputs are .npy files in tests/data/models, written by
 * scripts/models_reference.py (its README.md there lists every file).
 *
 * Only the public API of nidag/models.h is used:
 *  - nd_ridge_path / nd_ridge_fit / nd_ridgecv_fit with rows > cols and
 *    cols > rows, nd_scaler_fit (standard and robust), nd_logistic_fit /
 *    nd_logistic_proba at several C, nd_cv_assign (KFold, StratifiedKFold with
 *    classes in different orders of appearance), nd_metric_eval.
 *  - nd_pipeline_fit_predict as GridSearchCV(StandardScaler + Ridge or
 *    LogisticRegression, cv=3): mean inner scores, best index, predictions.
 *  - Whole nested experiments (W5: 500 x 589, four ridge feature sets, outer
 *    KFold(5); and a 240-row classification case, three logistic feature sets,
 *    outer StratifiedKFold(5)): each set's outer predictions and chosen grid
 *    index, then voting, stacking and grid ensembles through
 *    nd_ensemble_predict. The members' out-of-fold predictions are built here
 *    the way sklearn's Stacking* cross_val_predict builds them: the pipeline
 *    fitted on the outer training rows outside each of the 3 inner folds
 *    (nd_cv_assign over the outer training rows), predicting that fold.
 *
 * ROC AUC in searches: sklearn's 'roc_auc' scorer ranks the decision function
 * (the logit), which differs from ranking P(y=1) where the sigmoid rounds to
 * exactly 1.0 (ties). The mean inner scores are checked against sklearn's
 * scorer; the distance from the ROC AUC of P(y=1) (*_mean_scores_proba) is
 * printed for information. The GRID ensemble only sees the members'
 * P(y=1), so the script refuses data on which the two would choose
 * differently.
 *
 * Agreement: values within REL_TOL relative (|a - b| <= REL_TOL * max(1, |b|)),
 * chosen indices and folds exactly. Each comparison prints its largest
 * relative error, and the first few mismatches with their position. */
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nidag/core.h"
#include "nidag/models.h"

#ifndef ND_TEST_DATA_DIR
#error "ND_TEST_DATA_DIR must name tests/data (set by tests/CMakeLists.txt)"
#endif
#define REF_DIR ND_TEST_DATA_DIR "/models"

/* Predictions, coefficients and scores agree within this relative error. */
#define REL_TOL 1e-6
/* Closed-form quantities (scalers, metrics) agree much more tightly. */
#define EXACT_TOL 1e-12
/* Mismatches printed per comparison before the rest are only counted. */
#define MAX_REPORTED 5
/* sklearn's cv=3 inside every search and ensemble. */
#define NINNER 3

#define CHECK_OK(call)                                                          \
  do {                                                                          \
    int rc_ = (call);                                                           \
    if (rc_ != 0) {                                                             \
      print_error("%s failed: %s: %s\n", #call, nd_errname(rc_), nd_models_errmsg()); \
      fail();                                                                   \
    }                                                                           \
  } while (0)

/* ------------------------------------------------------------ .npy files */

/* A loaded array (nd_npy_load): float64 in f or int64 in i, C order. */
typedef struct npy {
  char kind; /* 'f' or 'i' */
  int ndim;
  size_t shape[ND_MAX_DIMS];
  size_t n; /* number of elements */
  const double *f;
  const int64_t *i;
  nd_array *arr; /* owns the data */
} npy;

/* Load tests/data/models/<name>.npy; fails the test when it is missing or
 * neither float64 nor int64. */
static void npy_load(const char *name, npy *a) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s.npy", REF_DIR, name);
  memset(a, 0, sizeof *a);
  if (nd_npy_load(path, &a->arr) != 0) {
    print_error("%s (regenerate with OPENBLAS_NUM_THREADS=1 "
                "/usr/bin/python3 scripts/models_reference.py)\n", nd_models_errmsg());
    fail();
  }
  nd_dtype dt = nd_array_dtype(a->arr);
  if (dt != ND_F64 && dt != ND_I64) {
    print_error("%s: dtype %s, not f64 or i64\n", path, nd_dtype_name(dt));
    nd_array_release(a->arr);
    fail();
  }
  a->kind = dt == ND_F64 ? 'f' : 'i';
  a->ndim = nd_array_ndim(a->arr);
  for (int d = 0; d < a->ndim; d++) a->shape[d] = nd_array_dim(a->arr, d);
  a->n = nd_array_count(a->arr);
  if (dt == ND_F64)
    a->f = nd_array_data(a->arr);
  else
    a->i = nd_array_data(a->arr);
}

static void npy_free(npy *a) {
  nd_array_release(a->arr);
  memset(a, 0, sizeof *a);
}

/* Load and check the element type and shape (-1 in shape: any extent). */
static void npy_expect(const char *name, npy *a, char kind, int ndim, ...) {
  npy_load(name, a);
  if (a->kind != kind || a->ndim != ndim) {
    print_error("%s.npy: kind %c ndim %d, expected %c %d\n", name, a->kind, a->ndim,
                kind, ndim);
    fail();
  }
  va_list ap;
  va_start(ap, ndim);
  for (int d = 0; d < ndim; d++) {
    long want = va_arg(ap, long);
    if (want >= 0 && (size_t)want != a->shape[d]) {
      va_end(ap);
      print_error("%s.npy: dimension %d is %zu, expected %ld\n", name, d, a->shape[d], want);
      fail();
    }
  }
  va_end(ap);
}

#define ANY (-1L)

static nd_matview mat_of(const npy *a) {
  assert_int_equal(a->ndim, 2);
  return (nd_matview){.data = a->f, .rows = a->shape[0], .cols = a->shape[1],
                      .ld = a->shape[1]};
}

/* --------------------------------------------------------- comparisons */

/* Running agreement record of one named case. */
typedef struct agree {
  const char *name;
  double max_rel;
  size_t n, bad;
} agree;

static double rel_err(double got, double want) {
  if (isnan(want) || isnan(got)) return isnan(want) && isnan(got) ? 0.0 : INFINITY;
  return fabs(got - want) / fmax(1.0, fabs(want));
}

static void agree_vals(agree *c, const char *what, const double *got, const double *want,
                       size_t n, double tol) {
  size_t reported = 0;
  for (size_t k = 0; k < n; k++) {
    double e = rel_err(got[k], want[k]);
    c->n++;
    if (e > c->max_rel) c->max_rel = e;
    if (!(e <= tol)) {
      c->bad++;
      if (reported++ < MAX_REPORTED)
        print_message("  MISMATCH %s: %s[%zu] = %.17g, sklearn %.17g (rel %.3g)\n",
                      c->name, what, k, got[k], want[k], e);
    }
  }
}

static void agree_val(agree *c, const char *what, double got, double want, double tol) {
  agree_vals(c, what, &got, &want, 1, tol);
}

static void agree_index(agree *c, const char *what, int64_t got, int64_t want) {
  c->n++;
  if (got != want) {
    c->bad++;
    print_message("  MISMATCH %s: %s = %" PRId64 ", sklearn %" PRId64 "\n", c->name, what,
                  got, want);
  }
}

static void agree_end(const agree *c) {
  print_message("%s: %zu values, max rel err %.3g, %zu mismatches\n", c->name, c->n,
                c->max_rel, c->bad);
  assert_int_equal(c->bad, 0);
}

/* ---------------------------------------------------------- small cases */

static void ridge_case(const char *tag) {
  char nm[64];
  npy Xtr, ytr, Xte, alphas, pred, coef, icpt, cvalphas, cvbest, cvcoef, cvicpt;
  snprintf(nm, sizeof nm, "ridge_%s_Xtr", tag);
  npy_expect(nm, &Xtr, 'f', 2, ANY, ANY);
  size_t n = Xtr.shape[0], p = Xtr.shape[1];
  snprintf(nm, sizeof nm, "ridge_%s_ytr", tag);
  npy_expect(nm, &ytr, 'f', 1, (long)n);
  snprintf(nm, sizeof nm, "ridge_%s_Xte", tag);
  npy_expect(nm, &Xte, 'f', 2, ANY, (long)p);
  npy_expect("ridge_alphas", &alphas, 'f', 1, ANY);
  size_t na = alphas.n, nte = Xte.shape[0];
  snprintf(nm, sizeof nm, "ridge_%s_pred", tag);
  npy_expect(nm, &pred, 'f', 2, (long)na, (long)nte);
  snprintf(nm, sizeof nm, "ridge_%s_coef", tag);
  npy_expect(nm, &coef, 'f', 2, (long)na, (long)p);
  snprintf(nm, sizeof nm, "ridge_%s_intercept", tag);
  npy_expect(nm, &icpt, 'f', 1, (long)na);
  npy_expect("ridgecv_alphas", &cvalphas, 'f', 1, ANY);
  snprintf(nm, sizeof nm, "ridgecv_%s_best", tag);
  npy_expect(nm, &cvbest, 'i', 1, 1L);
  snprintf(nm, sizeof nm, "ridgecv_%s_coef", tag);
  npy_expect(nm, &cvcoef, 'f', 1, (long)p);
  snprintf(nm, sizeof nm, "ridgecv_%s_intercept", tag);
  npy_expect(nm, &cvicpt, 'f', 1, 1L);

  char name[64];
  snprintf(name, sizeof name, "ridge %zux%zu", n, p);
  agree c = {.name = name};
  double *got = malloc(na * nte * sizeof *got);
  double *b = malloc(p * sizeof *b);
  assert_non_null(got);
  assert_non_null(b);
  CHECK_OK(nd_ridge_path(mat_of(&Xtr), ytr.f, mat_of(&Xte), alphas.f, na, got));
  agree_vals(&c, "path pred", got, pred.f, na * nte, REL_TOL);
  for (size_t a = 0; a < na; a++) {
    double b0;
    CHECK_OK(nd_ridge_fit(mat_of(&Xtr), ytr.f, alphas.f[a], b, &b0));
    agree_vals(&c, "coef", b, coef.f + a * p, p, REL_TOL);
    agree_val(&c, "intercept", b0, icpt.f[a], REL_TOL);
  }
  agree_end(&c);

  snprintf(name, sizeof name, "ridgecv %zux%zu", n, p);
  agree cv = {.name = name};
  size_t best = SIZE_MAX;
  double b0;
  CHECK_OK(nd_ridgecv_fit(mat_of(&Xtr), ytr.f, cvalphas.f, cvalphas.n, b, &b0, &best));
  agree_index(&cv, "best alpha", (int64_t)best, cvbest.i[0]);
  agree_vals(&cv, "coef", b, cvcoef.f, p, REL_TOL);
  agree_val(&cv, "intercept", b0, cvicpt.f[0], REL_TOL);
  agree_end(&cv);

  free(got);
  free(b);
  npy *all[] = {&Xtr, &ytr, &Xte, &alphas, &pred, &coef, &icpt, &cvalphas, &cvbest, &cvcoef, &cvicpt};
  for (size_t k = 0; k < sizeof all / sizeof *all; k++) npy_free(all[k]);
}

static void test_ridge_rows_gt_cols(void **state) { ridge_case("np"); }
static void test_ridge_cols_gt_rows(void **state) { ridge_case("pn"); }

/* Scaler row cases of the script: all rows, then all but the last. */
#define SCALE_CASES 2

static void test_scalers(void **state) {
  npy X, std, rob;
  npy_expect("scale_X", &X, 'f', 2, ANY, ANY);
  size_t n = X.shape[0], p = X.shape[1];
  npy_expect("scale_standard", &std, 'f', 3, (long)SCALE_CASES, 2L, (long)p);
  npy_expect("scale_robust", &rob, 'f', 3, (long)SCALE_CASES, 2L, (long)p);
  size_t *rows = malloc(n * sizeof *rows);
  double *center = malloc(p * sizeof *center), *scale = malloc(p * sizeof *scale);
  assert_true(rows && center && scale);
  for (size_t i = 0; i < n; i++) rows[i] = i;
  agree c = {.name = "scalers"};
  for (size_t k = 0; k < SCALE_CASES; k++) {
    size_t nrows = k == 0 ? n : n - 1;
    size_t ncon = 0;
    CHECK_OK(nd_scaler_fit(ND_SCALE_STANDARD, mat_of(&X), rows, nrows, ND_CONSTANT_KEEP,
                           center, scale, &ncon));
    agree_vals(&c, "standard center", center, std.f + (k * 2) * p, p, EXACT_TOL);
    agree_vals(&c, "standard scale", scale, std.f + (k * 2 + 1) * p, p, EXACT_TOL);
    agree_index(&c, "standard constant columns", (int64_t)ncon, 1);
    CHECK_OK(nd_scaler_fit(ND_SCALE_ROBUST, mat_of(&X), rows, nrows, ND_CONSTANT_KEEP,
                           center, scale, &ncon));
    agree_vals(&c, "robust center", center, rob.f + (k * 2) * p, p, EXACT_TOL);
    agree_vals(&c, "robust scale", scale, rob.f + (k * 2 + 1) * p, p, EXACT_TOL);
    agree_index(&c, "robust constant columns", (int64_t)ncon, 1);
  }
  agree_end(&c);
  free(rows);
  free(center);
  free(scale);
  npy_free(&X);
  npy_free(&std);
  npy_free(&rob);
}

static void logistic_case(const char *tag) {
  char nm[64];
  npy X, y, Xte, Cs, coef, icpt, proba;
  snprintf(nm, sizeof nm, "logit_%s_X", tag);
  npy_expect(nm, &X, 'f', 2, ANY, ANY);
  size_t n = X.shape[0], p = X.shape[1];
  snprintf(nm, sizeof nm, "logit_%s_y", tag);
  npy_expect(nm, &y, 'f', 1, (long)n);
  snprintf(nm, sizeof nm, "logit_%s_Xte", tag);
  npy_expect(nm, &Xte, 'f', 2, ANY, (long)p);
  size_t nte = Xte.shape[0];
  npy_expect("logit_Cs", &Cs, 'f', 1, ANY);
  snprintf(nm, sizeof nm, "logit_%s_coef", tag);
  npy_expect(nm, &coef, 'f', 2, (long)Cs.n, (long)p);
  snprintf(nm, sizeof nm, "logit_%s_intercept", tag);
  npy_expect(nm, &icpt, 'f', 1, (long)Cs.n);
  snprintf(nm, sizeof nm, "logit_%s_proba", tag);
  npy_expect(nm, &proba, 'f', 2, (long)Cs.n, (long)nte);

  char name[64];
  snprintf(name, sizeof name, "logistic %zux%zu", n, p);
  agree c = {.name = name};
  double *b = malloc(p * sizeof *b), *pr = malloc(nte * sizeof *pr);
  assert_true(b && pr);
  for (size_t k = 0; k < Cs.n; k++) {
    double b0;
    CHECK_OK(nd_logistic_fit(mat_of(&X), y.f, Cs.f[k], 0.0, 0, b, &b0));
    agree_vals(&c, "coef", b, coef.f + k * p, p, REL_TOL);
    agree_val(&c, "intercept", b0, icpt.f[k], REL_TOL);
    nd_logistic_proba(mat_of(&Xte), b, b0, pr);
    agree_vals(&c, "proba", pr, proba.f + k * nte, nte, REL_TOL);
  }
  agree_end(&c);
  free(b);
  free(pr);
  npy *all[] = {&X, &y, &Xte, &Cs, &coef, &icpt, &proba};
  for (size_t k = 0; k < sizeof all / sizeof *all; k++) npy_free(all[k]);
}

static void test_logistic_rows_gt_cols(void **state) { logistic_case("a"); }
static void test_logistic_cols_gt_rows(void **state) { logistic_case("w"); }

/* GridSearchCV(StandardScaler + model, grid, cv=3) on the first ntrain rows of
 * gslogit_X, predicting the rest. */
static void gridsearch_case(const char *name, nd_model model, const char *yfile,
                            const char *gridfile, const char *prefix) {
  npy X, y, grid, ntr, scores, best, pred, proba_scores = {0};
  char nm[64];
  bool cls = model == ND_MODEL_LOGISTIC;
  npy_expect("gslogit_X", &X, 'f', 2, ANY, ANY);
  size_t n = X.shape[0];
  npy_expect(yfile, &y, 'f', 1, (long)n);
  npy_expect(gridfile, &grid, 'f', 1, ANY);
  npy_expect("gslogit_ntrain", &ntr, 'i', 1, 1L);
  snprintf(nm, sizeof nm, "%s_mean_scores", prefix);
  npy_expect(nm, &scores, 'f', 1, (long)grid.n);
  if (cls) {
    snprintf(nm, sizeof nm, "%s_mean_scores_proba", prefix);
    npy_expect(nm, &proba_scores, 'f', 1, (long)grid.n);
  }
  snprintf(nm, sizeof nm, "%s_best", prefix);
  npy_expect(nm, &best, 'i', 1, 1L);
  size_t ntrain = (size_t)ntr.i[0], neval = n - ntrain;
  snprintf(nm, sizeof nm, "%s_pred", prefix);
  npy_expect(nm, &pred, 'f', 1, (long)neval);

  nd_pipeline pl = {.scaling = ND_SCALE_STANDARD, .constant = ND_CONSTANT_KEEP,
                    .model = model, .grid = grid.f, .ngrid = grid.n,
                    .scoring = cls ? ND_METRIC_ROC_AUC : ND_METRIC_R2,
                    .inner = {.kind = cls ? ND_CV_STRATIFIED : ND_CV_KFOLD, .k = NINNER}};
  size_t *tr = malloc(ntrain * sizeof *tr), *ev = malloc(neval * sizeof *ev);
  double *got = malloc(neval * sizeof *got), *ms = malloc(grid.n * sizeof *ms);
  assert_true(tr && ev && got && ms);
  for (size_t i = 0; i < ntrain; i++) tr[i] = i;
  for (size_t i = 0; i < neval; i++) ev[i] = ntrain + i;
  nd_search_result res;
  CHECK_OK(nd_pipeline_fit_predict(&pl, mat_of(&X), y.f, NULL, tr, ntrain, ev, neval, got,
                                   &res, ms));
  agree c = {.name = name};
  agree_vals(&c, "mean_test_score", ms, scores.f, grid.n, REL_TOL);
  agree_index(&c, "best_index_", (int64_t)res.best, best.i[0]);
  agree_val(&c, "best score", res.best_score, scores.f[best.i[0]], REL_TOL);
  agree_vals(&c, "pred", got, pred.f, neval, REL_TOL);
  if (cls) {
    agree info = {.name = "  (info) mean scores vs the roc_auc of P(y=1)"};
    agree_vals(&info, "mean score", ms, proba_scores.f, grid.n, INFINITY);
    print_message("%s: max rel diff %.3g\n", info.name, info.max_rel);
  }
  agree_end(&c);
  free(tr);
  free(ev);
  free(got);
  free(ms);
  npy *all[] = {&X, &y, &grid, &ntr, &scores, &best, &pred, &proba_scores};
  for (size_t k = 0; k < sizeof all / sizeof *all; k++) npy_free(all[k]);
}

static void test_gridsearch_logistic(void **state) {
  gridsearch_case("GridSearchCV logistic roc_auc", ND_MODEL_LOGISTIC, "gslogit_y",
                  "gslogit_Cs", "gslogit");
}

static void test_gridsearch_ridge(void **state) {
  gridsearch_case("GridSearchCV ridge r2", ND_MODEL_RIDGE, "gsridge_y", "gsridge_alphas",
                  "gsridge");
}

static void folds_case(agree *c, const char *file, nd_cv_kind kind, uint32_t k,
                       const char *yfile) {
  npy want, y = {0};
  npy_expect(file, &want, 'i', 1, ANY);
  if (yfile) npy_expect(yfile, &y, 'f', 1, (long)want.n);
  int32_t *fold = malloc(want.n * sizeof *fold);
  assert_non_null(fold);
  nd_cv cv = {.kind = kind, .k = k};
  CHECK_OK(nd_cv_assign(&cv, want.n, y.f, NULL, fold));
  size_t bad = 0;
  for (size_t i = 0; i < want.n; i++) bad += fold[i] != want.i[i];
  c->n += want.n;
  if (bad) {
    c->bad += bad;
    print_message("  MISMATCH %s: %zu of %zu rows in another fold\n", file, bad, want.n);
  }
  free(fold);
  npy_free(&want);
  npy_free(&y);
}

static void test_cv_folds(void **state) {
  agree c = {.name = "fold assignments"};
  folds_case(&c, "cv_kfold5_n23", ND_CV_KFOLD, 5, NULL);
  folds_case(&c, "cv_kfold3_n10", ND_CV_KFOLD, 3, NULL);
  folds_case(&c, "cv_strat_a_fold", ND_CV_STRATIFIED, 3, "cv_strat_a_y");
  folds_case(&c, "cv_strat_b_fold", ND_CV_STRATIFIED, 3, "cv_strat_b_y");
  folds_case(&c, "cv_strat_c_fold", ND_CV_STRATIFIED, 3, "cv_strat_c_y");
  agree_end(&c);
}

static void test_metrics(void **state) {
  npy y, pred, vals, yb, score, cvals;
  npy_expect("met_reg_y", &y, 'f', 1, ANY);
  npy_expect("met_reg_pred", &pred, 'f', 1, (long)y.n);
  npy_expect("met_reg_values", &vals, 'f', 1, 3L);
  npy_expect("met_cls_y", &yb, 'f', 1, ANY);
  npy_expect("met_cls_score", &score, 'f', 1, (long)yb.n);
  npy_expect("met_cls_values", &cvals, 'f', 1, 2L);
  agree c = {.name = "metrics"};
  agree_val(&c, "r2", nd_metric_eval(ND_METRIC_R2, y.f, pred.f, y.n), vals.f[0], EXACT_TOL);
  agree_val(&c, "mae", nd_metric_eval(ND_METRIC_MAE, y.f, pred.f, y.n), vals.f[1], EXACT_TOL);
  agree_val(&c, "pearson", nd_metric_eval(ND_METRIC_PEARSON, y.f, pred.f, y.n), vals.f[2],
            EXACT_TOL);
  agree_val(&c, "roc_auc", nd_metric_eval(ND_METRIC_ROC_AUC, yb.f, score.f, yb.n),
            cvals.f[0], EXACT_TOL);
  agree_val(&c, "balanced_accuracy",
            nd_metric_eval(ND_METRIC_BALANCED_ACC, yb.f, score.f, yb.n), cvals.f[1],
            EXACT_TOL);
  agree_end(&c);
  npy *all[] = {&y, &pred, &vals, &yb, &score, &cvals};
  for (size_t k = 0; k < sizeof all / sizeof *all; k++) npy_free(all[k]);
}

/* ------------------------------------------------------ nested ensembles */

/* One experiment's reference (see the script's run_ensembles). */
typedef struct ens_ref {
  npy X, y, widths, grid, outer_fold, pred_sets, best_index, mean_scores, proba_scores, inner_fold,
      stack_oof, stack_meta, pred_stack, pred_vote, pred_grid, grid_choice, grid_scores,
      stack_alpha_index, meta_C;
  size_t n, nsets, nouter;
} ens_ref;

static void ens_load(const char *tag, bool cls, ens_ref *r) {
  char nm[64];
#define LOAD(field, file, kind, ndim, ...)                     \
  do {                                                         \
    snprintf(nm, sizeof nm, "%s_%s", tag, file);               \
    npy_expect(nm, &r->field, kind, ndim, __VA_ARGS__);         \
  } while (0)
  memset(r, 0, sizeof *r);
  LOAD(X, "X", 'f', 2, ANY, ANY);
  r->n = r->X.shape[0];
  long n = (long)r->n;
  LOAD(y, "y", 'f', 1, n);
  LOAD(widths, "widths", 'i', 1, ANY);
  r->nsets = r->widths.n;
  long ns = (long)r->nsets;
  LOAD(grid, cls ? "Cs" : "alphas", 'f', 1, ANY);
  LOAD(outer_fold, "outer_fold", 'i', 1, n);
  LOAD(pred_sets, "pred_sets", 'f', 2, ns, n);
  LOAD(best_index, "best_index", 'i', 2, ns, ANY);
  r->nouter = r->best_index.shape[1];
  long no = (long)r->nouter;
  LOAD(mean_scores, "mean_scores", 'f', 3, ns, no, (long)r->grid.n);
  if (cls) LOAD(proba_scores, "mean_scores_proba", 'f', 3, ns, no, (long)r->grid.n);
  LOAD(inner_fold, "inner_fold", 'i', 2, no, n);
  LOAD(stack_oof, "stack_oof", 'f', 3, no, ns, n);
  LOAD(stack_meta, "stack_meta", 'f', 2, no, ns + 1);
  LOAD(pred_stack, "pred_stack", 'f', 1, n);
  LOAD(pred_vote, "pred_vote", 'f', 1, n);
  LOAD(pred_grid, "pred_grid", 'f', 1, n);
  LOAD(grid_choice, "grid_choice", 'i', 1, no);
  LOAD(grid_scores, "grid_scores", 'f', 2, no, ns);
  if (cls)
    LOAD(meta_C, "meta_C", 'f', 1, 1L);
  else
    LOAD(stack_alpha_index, "stack_alpha_index", 'i', 1, no);
#undef LOAD
  size_t total = 0;
  for (size_t s = 0; s < r->nsets; s++) total += (size_t)r->widths.i[s];
  assert_int_equal(total, r->X.shape[1]);
}

static void ens_free(ens_ref *r) {
  npy *all[] = {&r->X, &r->y, &r->widths, &r->grid, &r->outer_fold, &r->pred_sets,
                &r->best_index, &r->mean_scores, &r->proba_scores, &r->inner_fold, &r->stack_oof,
                &r->stack_meta, &r->pred_stack, &r->pred_vote, &r->pred_grid,
                &r->grid_choice, &r->grid_scores, &r->stack_alpha_index, &r->meta_C};
  for (size_t k = 0; k < sizeof all / sizeof *all; k++) npy_free(all[k]);
}

/* Scratch of one outer fold. */
typedef struct fold_work {
  size_t *train, *test, *itrain, *ieval;
  size_t ntrain, ntest;
  double *ytrain, *full, *oof, *buf, *meta, *scores;
  int32_t *inner;
} fold_work;

/* The column block of set s as a view of X (a parcellation's features). */
static nd_matview set_view(const ens_ref *r, size_t s) {
  size_t off = 0;
  for (size_t k = 0; k < s; k++) off += (size_t)r->widths.i[k];
  return (nd_matview){.data = r->X.f + off, .rows = r->n, .cols = (size_t)r->widths.i[s],
                      .ld = r->X.shape[1]};
}

/* Out-of-fold predictions of set s over the outer training rows: the
 * pipeline fitted outside each inner fold, predicting it. */
static void build_oof(const nd_pipeline *pl, const ens_ref *r, size_t s, fold_work *w,
                      double *oof) {
  for (uint32_t i = 0; i < NINNER; i++) {
    size_t nt = 0, ne = 0;
    for (size_t k = 0; k < w->ntrain; k++) {
      if (w->inner[k] == (int32_t)i)
        w->ieval[ne++] = w->train[k];
      else
        w->itrain[nt++] = w->train[k];
    }
    nd_search_result res;
    CHECK_OK(nd_pipeline_fit_predict(pl, set_view(r, s), r->y.f, NULL, w->itrain, nt,
                                     w->ieval, ne, w->buf, &res, NULL));
    size_t e = 0;
    for (size_t k = 0; k < w->ntrain; k++)
      if (w->inner[k] == (int32_t)i) oof[k] = w->buf[e++];
  }
}

/* The reference values of [fold][set][row] (NaN outside the training rows)
 * gathered in training-row order. */
static void gather_train(const ens_ref *r, const fold_work *w, const double *src,
                         double *dst) {
  for (size_t k = 0; k < w->ntrain; k++) dst[k] = src[w->train[k]];
}

static void ens_case(const char *tag, bool cls) {
  ens_ref r;
  ens_load(tag, cls, &r);
  size_t n = r.n, ns = r.nsets, ng = r.grid.n;
  nd_metric metric = cls ? ND_METRIC_ROC_AUC : ND_METRIC_R2;
  nd_cv_kind kind = cls ? ND_CV_STRATIFIED : ND_CV_KFOLD;
  nd_pipeline pl = {.scaling = ND_SCALE_STANDARD, .constant = ND_CONSTANT_KEEP,
                    .model = cls ? ND_MODEL_LOGISTIC : ND_MODEL_RIDGE, .grid = r.grid.f,
                    .ngrid = ng, .scoring = metric, .inner = {.kind = kind, .k = NINNER}};
  double meta_C = cls ? r.meta_C.f[0] : 0.0;

  char nm[6][64];
  const char *what[] = {"folds", "sets", "oof", "vote", "stack", "grid"};
  agree c[6];
  for (int k = 0; k < 6; k++) {
    snprintf(nm[k], sizeof nm[k], "%s %s", tag, what[k]);
    c[k] = (agree){.name = nm[k]};
  }
  agree *cf = &c[0], *cs = &c[1], *co = &c[2], *cv = &c[3], *cst = &c[4], *cg = &c[5];
  agree info = {.name = "  (info) sets' mean scores vs the roc_auc of P(y=1)"};

  /* Outer folds. */
  int32_t *outer = malloc(n * sizeof *outer);
  assert_non_null(outer);
  nd_cv ocv = {.kind = kind, .k = (uint32_t)r.nouter};
  CHECK_OK(nd_cv_assign(&ocv, n, r.y.f, NULL, outer));
  for (size_t i = 0; i < n; i++) agree_index(cf, "outer fold", outer[i], r.outer_fold.i[i]);

  fold_work w = {0};
  w.train = malloc(n * sizeof *w.train);
  w.test = malloc(n * sizeof *w.test);
  w.itrain = malloc(n * sizeof *w.itrain);
  w.ieval = malloc(n * sizeof *w.ieval);
  w.ytrain = malloc(n * sizeof *w.ytrain);
  w.full = malloc(ns * n * sizeof *w.full);
  w.oof = malloc(ns * n * sizeof *w.oof);
  w.buf = malloc(n * sizeof *w.buf);
  w.meta = malloc((ns + 1) * n * sizeof *w.meta);
  w.scores = malloc((ng > ns ? ng : ns) * sizeof *w.scores);
  w.inner = malloc(n * sizeof *w.inner);
  assert_true(w.train && w.test && w.itrain && w.ieval && w.ytrain && w.full && w.oof &&
              w.buf && w.meta && w.scores && w.inner);
  double *ref = malloc(n * sizeof *ref), *out = malloc(n * sizeof *out);
  assert_true(ref && out);

  for (size_t f = 0; f < r.nouter; f++) {
    char lab[96];
    w.ntrain = w.ntest = 0;
    for (size_t i = 0; i < n; i++) {
      if ((size_t)r.outer_fold.i[i] == f)
        w.test[w.ntest++] = i;
      else
        w.train[w.ntrain++] = i;
    }
    size_t m = w.ntest, nt = w.ntrain;
    for (size_t k = 0; k < nt; k++) w.ytrain[k] = r.y.f[w.train[k]];

    /* Each set: GridSearchCV refit on the outer training rows. */
    const double *test_pred[8], *oof_pred[8];
    assert_true(ns <= 8);
    for (size_t s = 0; s < ns; s++) {
      nd_search_result res;
      double *full = w.full + s * n;
      CHECK_OK(nd_pipeline_fit_predict(&pl, set_view(&r, s), r.y.f, NULL, w.train, nt,
                                       w.test, m, full, &res, w.scores));
      snprintf(lab, sizeof lab, "set %zu fold %zu best_index_", s, f);
      agree_index(cs, lab, (int64_t)res.best, r.best_index.i[s * r.nouter + f]);
      snprintf(lab, sizeof lab, "set %zu fold %zu mean_test_score", s, f);
      agree_vals(cs, lab, w.scores, r.mean_scores.f + (s * r.nouter + f) * ng, ng, REL_TOL);
      if (cls)
        agree_vals(&info, lab, w.scores, r.proba_scores.f + (s * r.nouter + f) * ng, ng,
                   INFINITY);
      for (size_t k = 0; k < m; k++) ref[k] = r.pred_sets.f[s * n + w.test[k]];
      snprintf(lab, sizeof lab, "set %zu fold %zu pred", s, f);
      agree_vals(cs, lab, full, ref, m, REL_TOL);
      test_pred[s] = full;
    }

    /* Inner folds over the training rows, and the members' out-of-fold
     * predictions on them. */
    nd_cv icv = {.kind = kind, .k = NINNER};
    CHECK_OK(nd_cv_assign(&icv, nt, w.ytrain, NULL, w.inner));
    for (size_t k = 0; k < nt; k++) {
      snprintf(lab, sizeof lab, "fold %zu inner fold of row %zu", f, w.train[k]);
      if (w.inner[k] != r.inner_fold.i[f * n + w.train[k]])
        agree_index(cf, lab, w.inner[k], r.inner_fold.i[f * n + w.train[k]]);
      else
        cf->n++;
    }
    for (size_t s = 0; s < ns; s++) {
      double *oof = w.oof + s * n;
      build_oof(&pl, &r, s, &w, oof);
      gather_train(&r, &w, r.stack_oof.f + (f * ns + s) * n, ref);
      snprintf(lab, sizeof lab, "set %zu fold %zu oof", s, f);
      agree_vals(co, lab, oof, ref, nt, REL_TOL);
      oof_pred[s] = oof;
    }

    for (size_t k = 0; k < m; k++) ref[k] = r.pred_vote.f[w.test[k]];
    nd_ensemble_spec vote = {.kind = ND_ENS_VOTE, .task = pl.model, .metric = metric};
    CHECK_OK(nd_ensemble_predict(&vote, ns, test_pred, m, oof_pred, w.ytrain, w.inner, nt,
                                 NINNER, out, NULL));
    snprintf(lab, sizeof lab, "fold %zu vote", f);
    agree_vals(cv, lab, out, ref, m, REL_TOL);

    /* Stacking: the meta-model fitted here on the out-of-fold matrix (the
     * same fit nd_ensemble_predict makes) shows its choice and coefficients. */
    for (size_t k = 0; k < nt; k++)
      for (size_t s = 0; s < ns; s++) w.meta[k * ns + s] = oof_pred[s][k];
    nd_matview mv = {.data = w.meta, .rows = nt, .cols = ns, .ld = ns};
    double b0, *b = w.scores;
    if (cls) {
      CHECK_OK(nd_logistic_fit(mv, w.ytrain, meta_C, 0.0, 0, b, &b0));
    } else {
      size_t best;
      CHECK_OK(nd_ridgecv_fit(mv, w.ytrain, r.grid.f, ng, b, &b0, &best));
      snprintf(lab, sizeof lab, "fold %zu meta RidgeCV alpha index", f);
      agree_index(cst, lab, (int64_t)best, r.stack_alpha_index.i[f]);
    }
    snprintf(lab, sizeof lab, "fold %zu meta intercept", f);
    agree_val(cst, lab, b0, r.stack_meta.f[f * (ns + 1)], REL_TOL);
    snprintf(lab, sizeof lab, "fold %zu meta coef", f);
    agree_vals(cst, lab, b, r.stack_meta.f + f * (ns + 1) + 1, ns, REL_TOL);
    nd_ensemble_spec stack = {.kind = ND_ENS_STACK, .task = pl.model, .metric = metric,
                              .meta_grid = cls ? &meta_C : r.grid.f, .nmeta = cls ? 1 : ng};
    CHECK_OK(nd_ensemble_predict(&stack, ns, test_pred, m, oof_pred, w.ytrain, w.inner, nt,
                                 NINNER, out, NULL));
    for (size_t k = 0; k < m; k++) ref[k] = r.pred_stack.f[w.test[k]];
    snprintf(lab, sizeof lab, "fold %zu stack", f);
    agree_vals(cst, lab, out, ref, m, REL_TOL);

    /* Grid: the set with the best mean inner-fold score, refitted. The
     * scores are recomputed here from the out-of-fold predictions too. */
    for (size_t s = 0; s < ns; s++) {
      double sum = 0.0;
      for (uint32_t i = 0; i < NINNER; i++) {
        size_t ne = 0;
        for (size_t k = 0; k < nt; k++) {
          if (w.inner[k] != (int32_t)i) continue;
          w.buf[ne] = oof_pred[s][k];
          ref[ne++] = w.ytrain[k];
        }
        sum += nd_metric_eval(metric, ref, w.buf, ne);
      }
      w.scores[s] = sum / NINNER;
    }
    snprintf(lab, sizeof lab, "fold %zu grid mean_test_score", f);
    agree_vals(cg, lab, w.scores, r.grid_scores.f + f * ns, ns, REL_TOL);
    nd_ensemble_spec grid = {.kind = ND_ENS_GRID, .task = pl.model, .metric = metric};
    size_t chosen = SIZE_MAX;
    CHECK_OK(nd_ensemble_predict(&grid, ns, test_pred, m, oof_pred, w.ytrain, w.inner, nt,
                                 NINNER, out, &chosen));
    snprintf(lab, sizeof lab, "fold %zu grid choice", f);
    agree_index(cg, lab, (int64_t)chosen, r.grid_choice.i[f]);
    for (size_t k = 0; k < m; k++) ref[k] = r.pred_grid.f[w.test[k]];
    snprintf(lab, sizeof lab, "fold %zu grid", f);
    agree_vals(cg, lab, out, ref, m, REL_TOL);
  }

  bool ok = true;
  for (int k = 0; k < 6; k++) {
    print_message("%s: %zu values, max rel err %.3g, %zu mismatches\n", c[k].name, c[k].n,
                  c[k].max_rel, c[k].bad);
    ok = ok && c[k].bad == 0;
  }
  if (cls) print_message("%s: max rel diff %.3g\n", info.name, info.max_rel);
  free(outer);
  free(ref);
  free(out);
  free(w.train);
  free(w.test);
  free(w.itrain);
  free(w.ieval);
  free(w.ytrain);
  free(w.full);
  free(w.oof);
  free(w.buf);
  free(w.meta);
  free(w.scores);
  free(w.inner);
  ens_free(&r);
  assert_true(ok);
}

static void test_w5_ridge_ensembles(void **state) { ens_case("w5", false); }
static void test_cls_logistic_ensembles(void **state) { ens_case("cls", true); }

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_metrics),
      cmocka_unit_test(test_cv_folds),
      cmocka_unit_test(test_scalers),
      cmocka_unit_test(test_ridge_rows_gt_cols),
      cmocka_unit_test(test_ridge_cols_gt_rows),
      cmocka_unit_test(test_logistic_rows_gt_cols),
      cmocka_unit_test(test_logistic_cols_gt_rows),
      cmocka_unit_test(test_gridsearch_ridge),
      cmocka_unit_test(test_gridsearch_logistic),
      cmocka_unit_test(test_w5_ridge_ensembles),
      cmocka_unit_test(test_cls_logistic_ensembles),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
