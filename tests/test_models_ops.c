/* models ops suite: the fit, ensemble and cv_score graph ops over a real
 * cache, on synthetic feature sets with a planted signal.
 *
 * What it pins down: a cold run computes every fit once and an unchanged
 * rerun computes nothing and returns the same bits; growing or shrinking the
 * pool of feature sets computes only the new sets' fits; the three ensemble
 * strategies share the fits (voting needs no inner fit); results do not
 * depend on the thread count or on whether they came from the cache; fit
 * nodes predict exactly what nd_pipeline_fit_predict does on the rows the
 * splits give; grouped outer folds keep groups whole; bad data fails the
 * nodes it reaches, with a message naming the problem, and nothing else. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/test_graph_util.h"
#include "tests/testutil.h"

#define N 120     /* participants */
#define NSETS 4   /* feature sets */
#define KOUT 5    /* outer folds */
#define KIN 3     /* inner folds */
#define NGROUPS 30
#define MAX_IDS (NSETS * KOUT * (1 + KIN) + NSETS + 3 * KOUT + 3)

static const size_t set_widths[NSETS] = {8, 30, 150, 12};
static const char *const names[NSETS] = {"aal", "schaefer", "voxels", "noise"};
/* How strongly each set carries the latent signal (the last is noise). */
static const double strength[NSETS] = {1.0, 0.6, 0.25, 0.0};
static const double alphas[6] = {0.01, 0.1, 1, 10, 100, 1000};
static const double cs[4] = {0.01, 0.1, 1, 10};
static const double meta_alphas[3] = {0.1, 1, 10};

static uint64_t g_seed;
static nd_pool *pools[2]; /* 1 and 2 workers */

typedef struct fixture {
  char dir[TG_PATH_MAX], cdir[TG_PATH_MAX];
  nd_cache *cache;
  nd_array *X[NSETS];
  nd_array *y, *yc, *groups;
} fixture;

/* ------------------------------------------------------------ data */

static nd_array *f64_array(int ndim, const size_t *shape, const double *data) {
  nd_array *a;
  size_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  assert_int_equal(nd_array_from(&a, ND_F64, ndim, shape, data, n * sizeof *data), ND_OK);
  return a;
}

/* Set s: every third column carries strength[s] * z plus unit noise. y is
 * z plus noise; yc thresholds another noisy copy of z at 0; group g of row i
 * is (7 i) mod 30, so each of the 30 groups has 4 scattered rows. */
static void make_data(fixture *f, uint64_t seed) {
  nd_rng s;
  nd_rng_init(&s, (nd_hash128){.lo = seed, .hi = 0});
  double z[N], y[N], yc[N];
  for (size_t i = 0; i < N; i++) z[i] = nd_rng_normal(&s);
  for (size_t i = 0; i < N; i++) {
    y[i] = z[i] + 0.5 * nd_rng_normal(&s);
    yc[i] = z[i] + 0.7 * nd_rng_normal(&s) > 0 ? 1 : 0;
  }
  for (int k = 0; k < NSETS; k++) {
    size_t p = set_widths[k], shape[2] = {N, p};
    double *x = malloc(N * p * sizeof *x);
    for (size_t i = 0; i < N; i++)
      for (size_t j = 0; j < p; j++)
        x[i * p + j] = (j % 3 == 0 ? strength[k] * z[i] : 0) + nd_rng_normal(&s);
    f->X[k] = f64_array(2, shape, x);
    free(x);
  }
  size_t n1[1] = {N};
  f->y = f64_array(1, n1, y);
  f->yc = f64_array(1, n1, yc);
  int64_t g[N];
  for (size_t i = 0; i < N; i++) g[i] = (int64_t)((7 * i) % NGROUPS);
  assert_int_equal(nd_array_from(&f->groups, ND_I64, 1, n1, g, sizeof g), ND_OK);
}

static int open_cache(fixture *f) {
  nd_cache_opts o = {0};
  o.dir = f->cdir;
  o.no_sync = true;
  int rc = nd_cache_open(&f->cache, &o);
  if (rc) fprintf(stderr, "cache open: %s\n", nd_cache_open_errmsg());
  return rc;
}

static void reopen_cache(fixture *f) {
  assert_int_equal(nd_cache_close(f->cache), ND_OK);
  f->cache = NULL;
  assert_int_equal(open_cache(f), ND_OK);
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!tg_mkdtemp(f->dir)) return -1;
  snprintf(f->cdir, sizeof f->cdir, "%s/cache", f->dir);
  make_data(f, g_seed);
  if (open_cache(f)) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  nd_cache_close(f->cache);
  for (int k = 0; k < NSETS; k++) nd_array_release(f->X[k]);
  nd_array_release(f->y);
  nd_array_release(f->yc);
  nd_array_release(f->groups);
  tg_rm_rf(f->dir);
  free(f);
  return 0;
}

/* ------------------------------------------------------------ specs */

static nd_experiment_spec reg_spec(void) {
  nd_experiment_spec x;
  memset(&x, 0, sizeof x);
  x.fit.pipeline.scaling = ND_SCALE_STANDARD;
  x.fit.pipeline.constant = ND_CONSTANT_ERROR;
  x.fit.pipeline.model = ND_MODEL_RIDGE;
  x.fit.pipeline.grid = alphas;
  x.fit.pipeline.ngrid = 6;
  x.fit.pipeline.scoring = ND_METRIC_R2;
  x.fit.pipeline.inner = (nd_cv){.kind = ND_CV_KFOLD, .k = KIN};
  x.fit.outer = (nd_cv){.kind = ND_CV_KFOLD, .k = KOUT, .shuffle = true, .seed = 7};
  x.fit.inner = (nd_cv){.kind = ND_CV_KFOLD, .k = KIN};
  x.metric = ND_METRIC_R2;
  x.meta_grid = meta_alphas;
  x.nmeta = 3;
  x.ensembles = true;
  return x;
}

static nd_experiment_spec clf_spec(void) {
  nd_experiment_spec x = reg_spec();
  x.fit.pipeline.model = ND_MODEL_LOGISTIC;
  x.fit.pipeline.grid = cs;
  x.fit.pipeline.ngrid = 4;
  x.fit.pipeline.scoring = ND_METRIC_ROC_AUC;
  x.fit.pipeline.inner = (nd_cv){.kind = ND_CV_STRATIFIED, .k = KIN};
  x.fit.outer = (nd_cv){.kind = ND_CV_STRATIFIED, .k = KOUT, .shuffle = true, .seed = 11};
  x.fit.inner = (nd_cv){.kind = ND_CV_STRATIFIED, .k = KIN};
  x.metric = ND_METRIC_ROC_AUC;
  x.meta_grid = NULL;
  x.nmeta = 0;
  return x;
}

/* ------------------------------------------------------------ graphs */

typedef struct xg {
  nd_graph *g;
  int64_t y, groups, sets[NSETS];
  const char *names[NSETS];
  nd_experiment_nodes n;
} xg;

/* A fresh graph with the experiment over the sets listed in which[]. */
static void build(const fixture *f, xg *e, const nd_experiment_spec *spec, const int *which,
                  size_t nsets, bool classify, bool with_groups) {
  assert_int_equal(nd_graph_new(&e->g), ND_OK);
  assert_int_equal(nd_graph_const(e->g, classify ? f->yc : f->y, "y", &e->y), ND_OK);
  e->groups = -1;
  if (with_groups) assert_int_equal(nd_graph_const(e->g, f->groups, "groups", &e->groups), ND_OK);
  for (size_t s = 0; s < nsets; s++) {
    assert_int_equal(nd_graph_const(e->g, f->X[which[s]], names[which[s]], &e->sets[s]), ND_OK);
    e->names[s] = names[which[s]];
  }
  int rc = nd_experiment_add(e->g, spec, e->y, e->groups, e->sets, e->names, nsets, &e->n);
  if (rc) fprintf(stderr, "experiment: %s\n", nd_models_errmsg());
  assert_int_equal(rc, ND_OK);
}

static void xg_free(xg *e) {
  nd_experiment_nodes_free(&e->n);
  nd_graph_free(e->g);
  e->g = NULL;
}

static int run_graph(nd_graph *g, nd_cache *c, nd_pool *p, const int64_t *t, size_t nt,
                     nd_graph_stats *st) {
  nd_graph_run_opts o = {0};
  o.cache = c;
  o.pool = p;
  o.targets = t;
  o.ntargets = nt;
  return nd_graph_run(g, &o, st);
}

static void run_ok(nd_graph *g, nd_cache *c, nd_pool *p, const int64_t *t, size_t nt,
                   nd_graph_stats *st) {
  int rc = run_graph(g, c, p, t, nt, st);
  if (rc) nd_graph_report(g, stderr);
  assert_int_equal(rc, ND_OK);
}

/* Every node of the experiment: fits, set scores, ensembles, their scores. */
static size_t all_ids(const nd_experiment_nodes *n, int64_t *ids) {
  size_t c = 0;
  for (size_t i = 0; i < n->nsets * n->nouter; i++) ids[c++] = n->fit_full[i];
  for (size_t i = 0; n->fit_inner && i < n->nsets * n->nouter * n->ninner; i++)
    ids[c++] = n->fit_inner[i];
  for (size_t s = 0; s < n->nsets; s++) ids[c++] = n->set_score[s];
  for (int k = 0; k < 3 && n->ens[k]; k++) {
    for (size_t f = 0; f < n->nouter; f++) ids[c++] = n->ens[k][f];
    ids[c++] = n->ens_score[k];
  }
  return c;
}

static nd_array *value(nd_graph *g, int64_t id) {
  nd_array *a = NULL;
  int rc = nd_graph_get(g, id, &a);
  if (rc) fprintf(stderr, "no value for '%s'\n", nd_graph_label(g, id));
  assert_int_equal(rc, ND_OK);
  return a;
}

static nd_pred_view pred_of(const nd_array *a) {
  nd_pred_view v;
  assert_int_equal(nd_pred_view_of(a, &v), ND_OK);
  return v;
}

static void *params_bytes(nd_params *p, size_t *len) {
  void *b;
  assert_int_equal(nd_params_encode(p, &b, len), ND_OK);
  nd_params_free(p);
  return b;
}

/* The rows of one fit, as the op should derive them: outer fold f's
 * training rows (fit) and test rows (eval), or inner fold i's split of the
 * training rows. Returns the eval count; fit count in *nfit. */
static size_t fit_rows(const nd_fit_spec *spec, const double *y, const int64_t *groups, int f,
                       int inner, size_t *fit, size_t *nfit, size_t *eval) {
  int32_t fold[N], ifold[N];
  assert_int_equal(nd_cv_assign(&spec->outer, N, y, groups, fold), ND_OK);
  size_t train[N], ntrain = 0, ne = 0;
  *nfit = 0;
  for (size_t r = 0; r < N; r++) {
    if (fold[r] != f) train[ntrain++] = r;
    else if (inner < 0) eval[ne++] = r;
  }
  if (inner < 0) {
    memcpy(fit, train, ntrain * sizeof *fit);
    *nfit = ntrain;
    return ne;
  }
  double ytr[N];
  int64_t gtr[N];
  for (size_t r = 0; r < ntrain; r++) {
    ytr[r] = y[train[r]];
    gtr[r] = groups ? groups[train[r]] : 0;
  }
  assert_int_equal(nd_cv_assign(&spec->inner, ntrain, ytr, groups ? gtr : NULL, ifold), ND_OK);
  for (size_t r = 0; r < ntrain; r++) {
    if (ifold[r] == inner) eval[ne++] = train[r];
    else fit[(*nfit)++] = train[r];
  }
  return ne;
}

/* The node's predictions equal nd_pipeline_fit_predict's on those rows. */
static void check_fit_direct(nd_graph *g, int64_t node, const nd_fit_spec *spec,
                             const nd_array *X, const nd_array *y, const nd_array *groups,
                             int f, int inner) {
  size_t fit[N], eval[N], nfit;
  const double *yd = nd_array_data(y);
  const int64_t *gd = groups ? nd_array_data(groups) : NULL;
  size_t ne = fit_rows(spec, yd, gd, f, inner, fit, &nfit, eval);
  nd_matview xv = {nd_array_data(X), nd_array_dim(X, 0), nd_array_dim(X, 1),
                   nd_array_dim(X, 1)};
  double pred[N];
  nd_search_result res;
  assert_int_equal(nd_pipeline_fit_predict(&spec->pipeline, xv, yd, gd, fit, nfit, eval, ne,
                                           pred, &res, NULL), ND_OK);
  nd_array *a = value(g, node);
  nd_pred_view v = pred_of(a);
  assert_int_equal(v.n, ne);
  assert_memory_equal(v.pred, pred, ne * sizeof *pred);
  assert_int_equal(v.chosen, res.best);
  assert_true(v.chosen_value == spec->pipeline.grid[res.best]);
  assert_true(memcmp(&v.score, &res.best_score, sizeof v.score) == 0 ||
              (isnan(v.score) && isnan(res.best_score)));
  nd_array_release(a);
}

/* ============================================================ unit tests */

static void test_pred_view(void **state) {
  (void)state;
  double good[6] = {2, 10, 0.5, 2, 1.5, -3};
  size_t shape[1] = {6};
  nd_array *a = f64_array(1, shape, good);
  nd_pred_view v;
  assert_int_equal(nd_pred_view_of(a, &v), ND_OK);
  assert_int_equal(v.chosen, 2);
  assert_true(v.chosen_value == 10 && v.score == 0.5 && v.n == 2);
  assert_true(v.pred[0] == 1.5 && v.pred[1] == -3);
  nd_array_release(a);

  double bad_count[5] = {0, 0, NAN, 2, 1};
  shape[0] = 5;
  a = f64_array(1, shape, bad_count);
  assert_int_equal(nd_pred_view_of(a, &v), ND_EFORMAT);
  assert_non_null(strstr(nd_models_errmsg(), "not a prediction value"));
  nd_array_release(a);

  double neg[4] = {-1, 0, 0, 0};
  shape[0] = 4;
  a = f64_array(1, shape, neg);
  assert_int_equal(nd_pred_view_of(a, &v), ND_EFORMAT);
  nd_array_release(a);

  shape[0] = 3;
  a = f64_array(1, shape, neg);
  assert_int_equal(nd_pred_view_of(a, &v), ND_EFORMAT);
  nd_array_release(a);

  float f32[4] = {0, 0, 0, 0};
  shape[0] = 4;
  assert_int_equal(nd_array_from(&a, ND_F32, 1, shape, f32, sizeof f32), ND_OK);
  assert_int_equal(nd_pred_view_of(a, &v), ND_EFORMAT);
  nd_array_release(a);
  assert_int_equal(nd_pred_view_of(NULL, &v), ND_EINVAL);

  /* An empty prediction value is valid (header only). */
  double empty[4] = {0, 0, NAN, 0};
  a = f64_array(1, shape, empty);
  assert_int_equal(nd_pred_view_of(a, &v), ND_OK);
  assert_int_equal(v.n, 0);
  nd_array_release(a);
}

static bool same_bytes(const void *a, size_t alen, const void *b, size_t blen) {
  return alen == blen && memcmp(a, b, alen) == 0;
}

/* Params hold what changes results, canonically, and nothing else. */
static void test_params_canonical(void **state) {
  (void)state;
  nd_experiment_spec x = reg_spec();
  void *a, *b;
  size_t al, bl;
  /* The full fit does not depend on the ensembles' inner split. */
  assert_int_equal(nd_fit_params(&x.fit, false, 2, -1, &a, &al), ND_OK);
  nd_fit_spec other = x.fit;
  other.inner.k = 4;
  other.inner.kind = ND_CV_GROUP; /* not even checked: unused */
  assert_int_equal(nd_fit_params(&other, false, 2, -1, &b, &bl), ND_OK);
  assert_true(same_bytes(a, al, b, bl));
  nd_free(b);
  /* ... but an inner fit does, and so does the fold. */
  assert_int_equal(nd_fit_params(&x.fit, false, 2, 0, &b, &bl), ND_OK);
  assert_false(same_bytes(a, al, b, bl));
  nd_free(b);
  assert_int_equal(nd_fit_params(&x.fit, false, 3, -1, &b, &bl), ND_OK);
  assert_false(same_bytes(a, al, b, bl));
  nd_free(b);
  /* Ridge ignores tol and max_iter; an unshuffled split ignores its seed. */
  other = x.fit;
  other.pipeline.tol = 0.5;
  other.pipeline.max_iter = 7;
  other.pipeline.inner.seed = 99;
  assert_int_equal(nd_fit_params(&other, false, 2, -1, &b, &bl), ND_OK);
  assert_true(same_bytes(a, al, b, bl));
  nd_free(b);
  /* A shuffled split's seed matters. */
  other = x.fit;
  other.outer.seed = 8;
  assert_int_equal(nd_fit_params(&other, false, 2, -1, &b, &bl), ND_OK);
  assert_false(same_bytes(a, al, b, bl));
  nd_free(b);
  /* The groups flag is part of the key. */
  assert_int_equal(nd_fit_params(&x.fit, true, 2, -1, &b, &bl), ND_OK);
  assert_false(same_bytes(a, al, b, bl));
  nd_free(b);
  nd_free(a);

  /* One grid value: no search, so scoring and its folds do not matter. */
  other = x.fit;
  other.pipeline.ngrid = 1;
  assert_int_equal(nd_fit_params(&other, false, 0, -1, &a, &al), ND_OK);
  other.pipeline.scoring = ND_METRIC_MAE;
  other.pipeline.inner.k = 9;
  assert_int_equal(nd_fit_params(&other, false, 0, -1, &b, &bl), ND_OK);
  assert_true(same_bytes(a, al, b, bl));
  nd_free(a);
  nd_free(b);

  /* Logistic: tol 0 is the default 1e-10, max_iter 0 is 100. */
  nd_experiment_spec c = clf_spec();
  assert_int_equal(nd_fit_params(&c.fit, false, 1, -1, &a, &al), ND_OK);
  c.fit.pipeline.tol = 1e-10;
  c.fit.pipeline.max_iter = 100;
  assert_int_equal(nd_fit_params(&c.fit, false, 1, -1, &b, &bl), ND_OK);
  assert_true(same_bytes(a, al, b, bl));
  nd_free(b);
  c.fit.pipeline.tol = 1e-6;
  assert_int_equal(nd_fit_params(&c.fit, false, 1, -1, &b, &bl), ND_OK);
  assert_false(same_bytes(a, al, b, bl));
  nd_free(a);
  nd_free(b);

  /* Fields are named and typed. */
  nd_params *p;
  assert_int_equal(nd_fit_params(&x.fit, false, 2, 1, &a, &al), ND_OK);
  assert_int_equal(nd_params_decode(a, al, &p), ND_OK);
  const char *s;
  int64_t i;
  assert_int_equal(nd_params_get_str(p, "model", &s), ND_OK);
  assert_string_equal(s, "ridge");
  assert_int_equal(nd_params_get_str(p, "scaling", &s), ND_OK);
  assert_string_equal(s, "standard");
  assert_int_equal(nd_params_get_str(p, "constant", &s), ND_OK);
  assert_string_equal(s, "error");
  assert_int_equal(nd_params_get_str(p, "outer.kind", &s), ND_OK);
  assert_string_equal(s, "kfold");
  assert_int_equal(nd_params_get_i64(p, "outer.k", &i), ND_OK);
  assert_int_equal(i, KOUT);
  assert_int_equal(nd_params_get_i64(p, "outer_fold", &i), ND_OK);
  assert_int_equal(i, 2);
  assert_int_equal(nd_params_get_i64(p, "inner_fold", &i), ND_OK);
  assert_int_equal(i, 1);
  assert_int_equal(nd_params_get_i64(p, "split.k", &i), ND_OK);
  assert_int_equal(i, KIN);
  assert_int_equal(nd_params_get_i64(p, "groups", &i), ND_OK);
  assert_int_equal(i, 0);
  assert_int_equal(nd_params_get_i64(p, "split.seed", &i), ND_ENOTFOUND);
  assert_int_equal(nd_params_get_f64(p, "tol", NULL), ND_ENOTFOUND);
  nd_params_free(p);
  nd_free(a);

  /* Ensembles: voting has no inner split; stacking's default meta grid is
   * RidgeCV's, written out. */
  nd_ensemble_spec es = {.kind = ND_ENS_VOTE, .task = ND_MODEL_RIDGE};
  assert_int_equal(nd_ensemble_params(&es, &x.fit, false, 0, &a, &al), ND_OK);
  other = x.fit;
  other.inner.k = 7;
  assert_int_equal(nd_ensemble_params(&es, &other, false, 0, &b, &bl), ND_OK);
  assert_true(same_bytes(a, al, b, bl));
  nd_free(a);
  nd_free(b);
  es.kind = ND_ENS_STACK;
  assert_int_equal(nd_ensemble_params(&es, &x.fit, false, 0, &a, &al), ND_OK);
  es.meta_grid = meta_alphas;
  es.nmeta = 3;
  assert_int_equal(nd_ensemble_params(&es, &x.fit, false, 0, &b, &bl), ND_OK);
  assert_true(same_bytes(a, al, b, bl));
  nd_free(b);
  es.nmeta = 2;
  assert_int_equal(nd_ensemble_params(&es, &x.fit, false, 0, &b, &bl), ND_OK);
  assert_false(same_bytes(a, al, b, bl));
  nd_free(a);
  nd_free(b);

  assert_int_equal(nd_cv_score_params(ND_METRIC_R2, &x.fit.outer, false, &a, &al), ND_OK);
  assert_int_equal(nd_params_decode(a, al, &p), ND_OK);
  assert_int_equal(nd_params_get_str(p, "metric", &s), ND_OK);
  assert_string_equal(s, "r2");
  nd_params_free(p);
  nd_free(a);
}

static void test_params_errors(void **state) {
  (void)state;
  nd_experiment_spec x = reg_spec();
  void *a = (void *)1;
  size_t al = 1;
  nd_fit_spec bad = x.fit;
  bad.outer.k = 1;
  assert_int_equal(nd_fit_params(&bad, false, 0, -1, &a, &al), ND_EINVAL);
  assert_null(a);
  assert_non_null(strstr(nd_models_errmsg(), "outer"));
  bad = x.fit;
  bad.outer.kind = ND_CV_GROUP;
  assert_int_equal(nd_fit_params(&bad, false, 0, -1, &a, &al), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "grouped"));
  assert_int_equal(nd_fit_params(&bad, true, 0, -1, &a, &al), ND_OK);
  nd_free(a);
  assert_int_equal(nd_fit_params(&x.fit, false, KOUT, -1, &a, &al), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "outer fold 5"));
  assert_int_equal(nd_fit_params(&x.fit, false, 0, -2, &a, &al), ND_EINVAL);
  assert_int_equal(nd_fit_params(&x.fit, false, 0, KIN, &a, &al), ND_EINVAL);
  bad = x.fit;
  bad.inner.k = 0;
  assert_int_equal(nd_fit_params(&bad, false, 0, 0, &a, &al), ND_EINVAL);
  bad = x.fit;
  double zero[2] = {1, 0};
  bad.pipeline.grid = zero;
  bad.pipeline.ngrid = 2;
  assert_int_equal(nd_fit_params(&bad, false, 0, -1, &a, &al), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "grid value 1"));
  bad.pipeline.ngrid = 0;
  assert_int_equal(nd_fit_params(&bad, false, 0, -1, &a, &al), ND_EINVAL);
  bad = x.fit;
  bad.pipeline.model = (nd_model)9;
  assert_int_equal(nd_fit_params(&bad, false, 0, -1, &a, &al), ND_EINVAL);
  assert_int_equal(nd_fit_params(NULL, false, 0, -1, &a, &al), ND_EINVAL);

  nd_ensemble_spec es = {.kind = ND_ENS_GRID, .task = ND_MODEL_RIDGE, .metric = (nd_metric)42};
  assert_int_equal(nd_ensemble_params(&es, &x.fit, false, 0, &a, &al), ND_EINVAL);
  es.metric = ND_METRIC_R2;
  es.kind = (nd_ensemble)5;
  assert_int_equal(nd_ensemble_params(&es, &x.fit, false, 0, &a, &al), ND_EINVAL);
  es.kind = ND_ENS_STACK;
  double neg = -1;
  es.meta_grid = &neg;
  es.nmeta = 1;
  assert_int_equal(nd_ensemble_params(&es, &x.fit, false, 0, &a, &al), ND_EINVAL);
  assert_int_equal(nd_cv_score_params((nd_metric)42, &x.fit.outer, false, &a, &al), ND_EINVAL);

  /* An experiment with a grouped split and no groups is refused, clearly. */
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), ND_OK);
  int64_t set = 0, y = 0;
  nd_experiment_nodes n;
  x.fit.outer.kind = ND_CV_GROUP;
  assert_int_equal(nd_experiment_add(g, &x, y, -1, &set, NULL, 1, &n), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "grouped"));
  assert_null(n.fit_full);
  assert_int_equal(nd_experiment_add(g, &x, y, -1, &set, NULL, 0, &n), ND_EINVAL);
  /* Node-array sizes that overflow are refused before any set is read. */
  x = reg_spec();
  x.ensembles = false;
  assert_int_equal(nd_experiment_add(g, &x, y, -1, &set, NULL, (size_t)1 << 62, &n),
                   ND_EOVERFLOW);
  assert_non_null(strstr(nd_models_errmsg(), "too many feature sets"));
  assert_null(n.fit_full);
  x.ensembles = true;
  assert_int_equal(nd_experiment_add(g, &x, y, -1, &set, NULL, (size_t)1 << 61, &n),
                   ND_EOVERFLOW);
  nd_experiment_nodes_free(&n);
  nd_experiment_nodes_free(NULL);
  nd_graph_free(g);
}

/* nd_ensemble_predict directly: the three strategies and their errors. */
static void test_ensemble_predict(void **state) {
  (void)state;
  enum { NT = 12, M = 3 };
  double ytr[NT], oof[3][NT], test[3][M];
  int32_t fold[NT];
  nd_rng s;
  nd_rng_init(&s, (nd_hash128){.lo = 5, .hi = 0});
  for (size_t r = 0; r < NT; r++) {
    ytr[r] = (double)r + nd_rng_normal(&s) * 0.1;
    fold[r] = (int32_t)(r % 3);
    oof[0][r] = 4.0;                        /* constant: Pearson NaN */
    oof[1][r] = ytr[r] + 0.3 * nd_rng_normal(&s);   /* good */
    oof[2][r] = oof[1][r];                  /* tie with member 1 */
  }
  for (size_t j = 0; j < M; j++) {
    test[0][j] = 1 + (double)j;
    test[1][j] = 10 + (double)j;
    test[2][j] = 100 + (double)j;
  }
  const double *tp[3] = {test[0], test[1], test[2]}, *op[3] = {oof[0], oof[1], oof[2]};
  double out[M];
  size_t chosen = 99;

  nd_ensemble_spec vote = {.kind = ND_ENS_VOTE, .task = ND_MODEL_RIDGE};
  assert_int_equal(nd_ensemble_predict(&vote, 3, tp, M, NULL, NULL, NULL, 0, 0, out, &chosen),
                   ND_OK);
  assert_int_equal(chosen, 0);
  for (size_t j = 0; j < M; j++)
    assert_true(out[j] == (test[0][j] + test[1][j] + test[2][j]) / 3);

  /* GRID: NaN is worst and a tie keeps the first. */
  nd_ensemble_spec grid = {.kind = ND_ENS_GRID, .task = ND_MODEL_RIDGE,
                           .metric = ND_METRIC_PEARSON};
  assert_int_equal(nd_ensemble_predict(&grid, 3, tp, M, op, ytr, fold, NT, 3, out, &chosen),
                   ND_OK);
  assert_int_equal(chosen, 1);
  assert_memory_equal(out, test[1], sizeof out);
  /* All NaN: the first member. */
  const double *nan_oof[2] = {oof[0], oof[0]};
  assert_int_equal(nd_ensemble_predict(&grid, 2, tp, M, nan_oof, ytr, fold, NT, 3, out, &chosen),
                   ND_OK);
  assert_int_equal(chosen, 0);

  /* STACK (regression): RidgeCV on the out-of-fold predictions, applied to
   * the test predictions. */
  double meta[NT * 2];
  for (size_t r = 0; r < NT; r++) {
    meta[r * 2] = oof[1][r];
    meta[r * 2 + 1] = oof[0][r] + nd_rng_normal(&s);
  }
  double noisy[NT];
  for (size_t r = 0; r < NT; r++) noisy[r] = meta[r * 2 + 1];
  const double *sop[2] = {oof[1], noisy}, *stp[2] = {test[1], test[0]};
  nd_ensemble_spec stack = {.kind = ND_ENS_STACK, .task = ND_MODEL_RIDGE,
                            .meta_grid = meta_alphas, .nmeta = 3};
  assert_int_equal(nd_ensemble_predict(&stack, 2, stp, M, sop, ytr, fold, NT, 3, out, &chosen),
                   ND_OK);
  double coef[2], icpt;
  nd_matview mv = {meta, NT, 2, 2};
  assert_int_equal(nd_ridgecv_fit(mv, ytr, meta_alphas, 3, coef, &icpt, NULL), ND_OK);
  for (size_t j = 0; j < M; j++) {
    double want = test[1][j] * coef[0] + test[0][j] * coef[1] + icpt;
    assert_true(fabs(out[j] - want) <= 1e-12 * (1 + fabs(want)));
  }
  assert_true(coef[0] > 0.5); /* the good member dominates */

  /* STACK (classification): LogisticRegression(C=1) on P(y=1). */
  double yc[NT], p1[NT], p2[NT], t1[M] = {0.9, 0.2, 0.6}, t2[M] = {0.5, 0.5, 0.5};
  for (size_t r = 0; r < NT; r++) {
    yc[r] = r % 2 ? 1 : 0;
    p1[r] = yc[r] ? 0.7 + 0.02 * (double)r : 0.4 - 0.02 * (double)r;
    p2[r] = nd_rng_uniform(&s);
  }
  const double *cop[2] = {p1, p2}, *ctp[2] = {t1, t2};
  nd_ensemble_spec cstack = {.kind = ND_ENS_STACK, .task = ND_MODEL_LOGISTIC};
  assert_int_equal(nd_ensemble_predict(&cstack, 2, ctp, M, cop, yc, fold, NT, 3, out, NULL),
                   ND_OK);
  for (size_t j = 0; j < M; j++) assert_true(out[j] > 0 && out[j] < 1);
  assert_true(out[0] > out[1]);

  /* Errors. */
  assert_int_equal(nd_ensemble_predict(&vote, 0, tp, M, NULL, NULL, NULL, 0, 0, out, NULL),
                   ND_EINVAL);
  assert_int_equal(nd_ensemble_predict(&grid, 3, tp, M, NULL, ytr, fold, NT, 3, out, NULL),
                   ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "out-of-fold"));
  int32_t badfold[NT];
  memcpy(badfold, fold, sizeof badfold);
  badfold[4] = 3;
  assert_int_equal(nd_ensemble_predict(&grid, 3, tp, M, op, ytr, badfold, NT, 3, out, NULL),
                   ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "training row 4"));
  double one_class[NT];
  for (size_t r = 0; r < NT; r++) one_class[r] = 1;
  assert_int_equal(nd_ensemble_predict(&cstack, 2, ctp, M, cop, one_class, fold, NT, 3, out,
                                       NULL), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "stacking meta-model"));
  assert_non_null(strstr(nd_models_errmsg(), "single class"));
  double nan_oof1[NT];
  memcpy(nan_oof1, p1, sizeof nan_oof1);
  nan_oof1[3] = NAN;
  const double *nop[2] = {nan_oof1, p2};
  assert_int_equal(nd_ensemble_predict(&cstack, 2, ctp, M, nop, yc, fold, NT, 3, out, NULL),
                   ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "training row 3"));
}

/* ============================================================ graph tests */

/* Cold: every node computed once, fits exactly as the pipeline called
 * directly; unchanged rerun on a reopened cache: nothing computed, the same
 * bits. */
static void test_cold_then_cached(void **state) {
  fixture *f = *state;
  nd_experiment_spec x = reg_spec();
  const int which[NSETS] = {0, 1, 2, 3};
  xg e;
  build(f, &e, &x, which, NSETS, false, false);
  int64_t ids[MAX_IDS];
  size_t nids = all_ids(&e.n, ids);
  assert_int_equal(nids, MAX_IDS);
  nd_graph_stats st;
  run_ok(e.g, f->cache, pools[1], ids, nids, &st);
  assert_int_equal(st.computed, MAX_IDS);
  assert_int_equal(st.failed + st.skipped, 0);
  for (size_t i = 0; i < nids; i++)
    assert_int_equal(nd_graph_state(e.g, ids[i]), ND_GNODE_COMPUTED);

  /* Labels name the set, the fold and the inner fold. */
  assert_string_equal(nd_graph_label(e.g, e.n.fit_full[0 * KOUT + 2]), "fit aal f2");
  assert_string_equal(nd_graph_label(e.g, e.n.fit_inner[(1 * KOUT + 2) * KIN + 1]),
                      "fit schaefer f2 inner1");
  assert_string_equal(nd_graph_label(e.g, e.n.ens[ND_ENS_STACK][3]), "stack f3");
  assert_string_equal(nd_graph_label(e.g, e.n.set_score[2]), "score voxels");
  assert_string_equal(nd_graph_label(e.g, e.n.ens_score[ND_ENS_GRID]), "score grid");

  /* Fits are the pipeline on the rows the splits give. */
  for (int k = 0; k < NSETS; k += 2) {
    check_fit_direct(e.g, e.n.fit_full[k * KOUT + 1], &x.fit, f->X[k], f->y, NULL, 1, -1);
    check_fit_direct(e.g, e.n.fit_inner[(k * KOUT + 3) * KIN + 2], &x.fit, f->X[k], f->y, NULL,
                     3, 2);
  }

  /* Voting is the mean of the full fits; the set score holds the fold
   * metrics and the out-of-fold predictions. */
  for (int fo = 0; fo < KOUT; fo++) {
    nd_array *va = value(e.g, e.n.ens[ND_ENS_VOTE][fo]), *fa[NSETS];
    nd_pred_view vv = pred_of(va), fv[NSETS];
    for (int k = 0; k < NSETS; k++) {
      fa[k] = value(e.g, e.n.fit_full[k * KOUT + fo]);
      fv[k] = pred_of(fa[k]);
      assert_int_equal(fv[k].n, vv.n);
    }
    for (size_t j = 0; j < vv.n; j++) {
      double sum = 0;
      for (int k = 0; k < NSETS; k++) sum += fv[k].pred[j];
      assert_true(vv.pred[j] == sum / NSETS);
    }
    /* GRID picked one member and returned its full fit's predictions. */
    nd_array *ga = value(e.g, e.n.ens[ND_ENS_GRID][fo]);
    nd_pred_view gv = pred_of(ga);
    assert_true(gv.chosen < NSETS);
    assert_true(gv.chosen_value == (double)gv.chosen);
    assert_false(isnan(gv.score));
    assert_memory_equal(gv.pred, fv[gv.chosen].pred, gv.n * sizeof *gv.pred);
    nd_array_release(ga);
    for (int k = 0; k < NSETS; k++) nd_array_release(fa[k]);
    nd_array_release(va);
  }
  double score[NSETS];
  int32_t fold[N];
  assert_int_equal(nd_cv_assign(&x.fit.outer, N, nd_array_data(f->y), NULL, fold), ND_OK);
  for (int k = 0; k < NSETS; k++) {
    nd_array *sa = value(e.g, e.n.set_score[k]);
    assert_int_equal(nd_array_count(sa), 2 + KOUT + N);
    const double *d = nd_array_data(sa);
    double sum = 0, ss = 0;
    for (int fo = 0; fo < KOUT; fo++) sum += d[2 + fo];
    assert_true(fabs(d[0] - sum / KOUT) < 1e-15);
    for (int fo = 0; fo < KOUT; fo++) ss += (d[2 + fo] - d[0]) * (d[2 + fo] - d[0]);
    assert_true(fabs(d[1] - sqrt(ss / KOUT)) < 1e-15);
    /* Fold 0's metric from its test rows. */
    nd_array *fa = value(e.g, e.n.fit_full[k * KOUT + 0]);
    nd_pred_view fv = pred_of(fa);
    double yt[N], pt[N];
    size_t m = 0;
    for (size_t r = 0; r < N; r++)
      if (fold[r] == 0) {
        yt[m] = ((const double *)nd_array_data(f->y))[r];
        pt[m] = d[2 + KOUT + r];
        m++;
      }
    assert_int_equal(m, fv.n);
    assert_memory_equal(pt, fv.pred, m * sizeof *pt);
    assert_true(d[2] == nd_metric_eval(ND_METRIC_R2, yt, fv.pred, m));
    nd_array_release(fa);
    score[k] = d[0];
    nd_array_release(sa);
  }
  /* The planted signal: the strong set beats the noise. (Over 200 seeds
   * its R2 ranged down to 0.24 and the noise's up to 0.04.) */
  assert_true(score[0] > 0.15);
  assert_true(score[0] > score[3]);
  assert_true(score[3] < 0.2);

  nd_array *ref[MAX_IDS];
  for (size_t i = 0; i < nids; i++) ref[i] = value(e.g, ids[i]);
  xg_free(&e);

  /* Unchanged rerun: a fresh graph on the reopened cache. */
  reopen_cache(f);
  build(f, &e, &x, which, NSETS, false, false);
  assert_int_equal(all_ids(&e.n, ids), nids);
  run_ok(e.g, f->cache, pools[1], ids, nids, &st);
  assert_int_equal(st.computed, 0);
  assert_int_equal(st.hits, nids);
  for (size_t i = 0; i < nids; i++) {
    nd_array *v = value(e.g, ids[i]);
    assert_true(nd_array_equal(v, ref[i]));
    nd_array_release(v);
    nd_array_release(ref[i]);
  }
  /* The same experiment added again to the same graph is the same nodes;
   * a smaller pool adds only its combine nodes. */
  nd_experiment_nodes again;
  size_t before = nd_graph_size(e.g);
  assert_int_equal(nd_experiment_add(e.g, &x, e.y, -1, e.sets, e.names, NSETS, &again), ND_OK);
  assert_int_equal(nd_graph_size(e.g), before);
  int64_t ids2[MAX_IDS];
  assert_int_equal(all_ids(&again, ids2), nids);
  assert_memory_equal(ids, ids2, sizeof ids);
  nd_experiment_nodes_free(&again);
  assert_int_equal(nd_experiment_add(e.g, &x, e.y, -1, e.sets + 1, e.names + 1, 2, &again),
                   ND_OK);
  assert_int_equal(nd_graph_size(e.g), before + 3 * KOUT + 3);
  assert_int_equal(again.fit_full[0], e.n.fit_full[KOUT]);
  assert_int_equal(again.fit_inner[KOUT * KIN - 1], e.n.fit_inner[2 * KOUT * KIN - 1]);
  run_ok(e.g, f->cache, pools[1], NULL, 0, &st);
  assert_int_equal(st.computed, 3 * KOUT + 3);
  nd_experiment_nodes_free(&again);
  xg_free(&e);
}

static void assert_none_computed(const xg *e, const int64_t *ids, size_t n) {
  for (size_t i = 0; i < n; i++)
    assert_int_not_equal(nd_graph_state(e->g, ids[i]), ND_GNODE_COMPUTED);
}

/* Pools {A,B}, then {A,B,C}: only C's fits are computed; then {A}: no fit. */
static void test_pool_growth(void **state) {
  fixture *f = *state;
  nd_experiment_spec x = reg_spec();
  const int ab[2] = {0, 1}, abc[3] = {0, 1, 2}, a[1] = {0};
  xg e;
  nd_graph_stats st;
  build(f, &e, &x, ab, 2, false, false);
  run_ok(e.g, f->cache, pools[1], NULL, 0, &st);
  assert_int_equal(st.computed, 2 * KOUT * (1 + KIN) + 2 + 3 * KOUT + 3);
  xg_free(&e);

  build(f, &e, &x, abc, 3, false, false);
  run_ok(e.g, f->cache, pools[1], NULL, 0, &st);
  const size_t per_set = KOUT * (1 + KIN);
  assert_int_equal(st.computed, per_set + 1 + 3 * KOUT + 3);
  for (size_t s = 0; s < 3; s++)
    for (size_t fo = 0; fo < KOUT; fo++) {
      nd_graph_node_state want = s == 2 ? ND_GNODE_COMPUTED : ND_GNODE_HIT;
      assert_int_equal(nd_graph_state(e.g, e.n.fit_full[s * KOUT + fo]), want);
      for (size_t i = 0; i < KIN; i++)
        assert_int_equal(nd_graph_state(e.g, e.n.fit_inner[(s * KOUT + fo) * KIN + i]), want);
    }
  assert_int_equal(nd_graph_state(e.g, e.n.set_score[0]), ND_GNODE_HIT);
  assert_int_equal(nd_graph_state(e.g, e.n.set_score[2]), ND_GNODE_COMPUTED);
  xg_free(&e);

  build(f, &e, &x, a, 1, false, false);
  int64_t ids[MAX_IDS];
  size_t nids = all_ids(&e.n, ids);
  run_ok(e.g, f->cache, pools[1], ids, nids, &st);
  assert_int_equal(st.computed, 3 * KOUT + 3); /* the new pool's combine nodes only */
  assert_none_computed(&e, e.n.fit_full, KOUT);
  assert_none_computed(&e, e.n.fit_inner, KOUT * KIN);
  /* One member: voting and grid are that member's full fit. */
  nd_array *va = value(e.g, e.n.ens[ND_ENS_VOTE][1]), *fa = value(e.g, e.n.fit_full[1]);
  nd_pred_view vv = pred_of(va), fv = pred_of(fa);
  assert_memory_equal(vv.pred, fv.pred, fv.n * sizeof *fv.pred);
  nd_array_release(va);
  nd_array_release(fa);
  xg_free(&e);
}

/* 1 and 2 workers, cold and from the cache, with and without a cache: the
 * same bits everywhere. */
static void test_threads_and_cache(void **state) {
  fixture *f = *state;
  nd_experiment_spec x = reg_spec();
  const int which[3] = {0, 2, 3};
  nd_array *ref[MAX_IDS] = {0};
  size_t nids = 0;
  struct {
    int pool;
    int cache; /* 0: none; 1, 2: cache directories */
    bool cached;
  } runs[] = {{0, 1, false}, {1, 2, false}, {1, 0, false}, {1, 1, true}, {0, 2, true}};
  for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
    nd_cache *c = NULL;
    if (runs[r].cache) {
      char cdir[TG_PATH_MAX];
      snprintf(cdir, sizeof cdir, "%s/threads-%d", f->dir, runs[r].cache);
      nd_cache_opts co = {0};
      co.dir = cdir;
      co.no_sync = true;
      assert_int_equal(nd_cache_open(&c, &co), ND_OK);
    }
    xg e;
    build(f, &e, &x, which, 3, false, false);
    int64_t ids[MAX_IDS];
    nids = all_ids(&e.n, ids);
    nd_graph_stats st;
    run_ok(e.g, c, pools[runs[r].pool], ids, nids, &st);
    assert_int_equal(st.computed, runs[r].cached ? 0 : nids);
    for (size_t i = 0; i < nids; i++) {
      nd_array *v = value(e.g, ids[i]);
      if (!ref[i]) {
        ref[i] = v;
        continue;
      }
      if (!nd_array_equal(v, ref[i]))
        fail_msg("run %zu: '%s' differs", r, nd_graph_label(e.g, ids[i]));
      nd_array_release(v);
    }
    xg_free(&e);
    if (c) assert_int_equal(nd_cache_close(c), ND_OK);
  }
  for (size_t i = 0; i < nids; i++) nd_array_release(ref[i]);
}

/* Voting first needs only the full fits; stacking then adds the inner fits;
 * grid then reuses both. */
static void test_strategies_share_fits(void **state) {
  fixture *f = *state;
  nd_experiment_spec x = reg_spec();
  const int which[3] = {0, 1, 3};
  const size_t ns = 3;
  nd_graph_stats st;
  const nd_ensemble order[3] = {ND_ENS_VOTE, ND_ENS_STACK, ND_ENS_GRID};
  const size_t want[3] = {ns * KOUT + KOUT + 1, ns * KOUT * KIN + KOUT + 1, KOUT + 1};
  for (int step = 0; step < 3; step++) {
    xg e;
    build(f, &e, &x, which, ns, false, false);
    int64_t t[KOUT + 1];
    for (int fo = 0; fo < KOUT; fo++) t[fo] = e.n.ens[order[step]][fo];
    t[KOUT] = e.n.ens_score[order[step]];
    run_ok(e.g, f->cache, pools[1], t, KOUT + 1, &st);
    assert_int_equal(st.computed, want[step]);
    for (size_t i = 0; i < ns * KOUT; i++)
      assert_int_equal(nd_graph_state(e.g, e.n.fit_full[i]),
                       step == 0 ? ND_GNODE_COMPUTED : ND_GNODE_HIT);
    for (size_t i = 0; i < ns * KOUT * KIN; i++)
      assert_int_equal(nd_graph_state(e.g, e.n.fit_inner[i]),
                       step == 0   ? ND_GNODE_UNUSED
                       : step == 1 ? ND_GNODE_COMPUTED
                                   : ND_GNODE_HIT);
    xg_free(&e);
  }
}

/* Logistic with stratified folds and ROC AUC, end to end. */
static void test_classification(void **state) {
  fixture *f = *state;
  nd_experiment_spec x = clf_spec();
  const int which[NSETS] = {0, 1, 2, 3};
  xg e;
  build(f, &e, &x, which, NSETS, true, false);
  int64_t ids[MAX_IDS];
  size_t nids = all_ids(&e.n, ids);
  nd_graph_stats st;
  run_ok(e.g, f->cache, pools[1], ids, nids, &st);
  assert_int_equal(st.computed, nids);
  check_fit_direct(e.g, e.n.fit_full[0 * KOUT + 2], &x.fit, f->X[0], f->yc, NULL, 2, -1);
  check_fit_direct(e.g, e.n.fit_inner[(2 * KOUT + 4) * KIN + 0], &x.fit, f->X[2], f->yc, NULL,
                   4, 0);
  /* Predictions are probabilities, for fits and ensembles (the ids before
   * the set scores, and each strategy's folds). */
  size_t npred = NSETS * KOUT * (1 + KIN);
  for (int k = 0; k < 3; k++)
    for (int fo = 0; fo < KOUT; fo++) ids[npred++] = e.n.ens[k][fo];
  for (size_t i = 0; i < npred; i++) {
    nd_array *a = value(e.g, ids[i]);
    nd_pred_view v = pred_of(a);
    for (size_t j = 0; j < v.n; j++) assert_true(v.pred[j] >= 0 && v.pred[j] <= 1);
    nd_array_release(a);
  }
  nd_array *sa = value(e.g, e.n.set_score[0]), *na = value(e.g, e.n.set_score[3]);
  const double *sd = nd_array_data(sa), *noise = nd_array_data(na);
  /* AUC of the strong set: at least 0.70 over 200 seeds, the ensembles'
   * at least 0.65. */
  assert_true(sd[0] > 0.65);
  assert_true(sd[0] > noise[0]);
  for (int k = 0; k < 3; k++) {
    nd_array *ea = value(e.g, e.n.ens_score[k]);
    const double *ed = nd_array_data(ea);
    assert_true(ed[0] > 0.55 && ed[0] <= 1);
    nd_array_release(ea);
  }
  nd_array_release(sa);
  nd_array_release(na);
  xg_free(&e);
}

/* Grouped outer folds: every group's rows are in one test fold, the fits
 * use exactly those rows, and a group-free split ignores the groups. */
static void test_grouped_outer(void **state) {
  fixture *f = *state;
  nd_experiment_spec x = reg_spec();
  x.fit.outer = (nd_cv){.kind = ND_CV_GROUP, .k = KOUT, .shuffle = true, .seed = 3};
  x.ensembles = false;
  const int which[2] = {0, 3};
  xg e;
  build(f, &e, &x, which, 2, false, true);
  assert_null(e.n.fit_inner);
  assert_null(e.n.ens[0]);
  assert_int_equal(e.n.ens_score[0], -1);
  int64_t ids[MAX_IDS];
  size_t nids = all_ids(&e.n, ids);
  assert_int_equal(nids, 2 * KOUT + 2);
  nd_graph_stats st;
  run_ok(e.g, f->cache, pools[1], ids, nids, &st);
  assert_int_equal(st.computed, nids);

  int32_t fold[N];
  const int64_t *g = nd_array_data(f->groups);
  assert_int_equal(nd_cv_assign(&x.fit.outer, N, nd_array_data(f->y), g, fold), ND_OK);
  for (size_t r = 0; r < N; r++)
    for (size_t q = 0; q < N; q++)
      if (g[r] == g[q]) assert_int_equal(fold[r], fold[q]);
  size_t total = 0;
  for (int fo = 0; fo < KOUT; fo++) {
    size_t m = 0;
    for (size_t r = 0; r < N; r++) m += fold[r] == fo;
    nd_array *a = value(e.g, e.n.fit_full[fo]);
    assert_int_equal(pred_of(a).n, m);
    total += m;
    nd_array_release(a);
    check_fit_direct(e.g, e.n.fit_full[KOUT + fo], &x.fit, f->X[3], f->y, f->groups, fo, -1);
  }
  assert_int_equal(total, N);
  xg_free(&e);

  /* With an ungrouped split the groups input is left off: the same fit
   * nodes (keys) with or without groups. */
  x = reg_spec();
  xg with, without;
  build(f, &with, &x, which, 2, false, true);
  build(f, &without, &x, which, 2, false, false);
  nd_hash128 k1, k2;
  assert_int_equal(nd_graph_key(with.g, with.n.fit_inner[4], &k1), ND_OK);
  assert_int_equal(nd_graph_key(without.g, without.n.fit_inner[4], &k2), ND_OK);
  assert_true(nd_hash128_eq(k1, k2));
  xg_free(&with);
  xg_free(&without);
}

/* ------------------------------------------------------------ bad inputs */

/* A feature set with one NaN: that set's fits fail, its dependants are
 * skipped, the other set's fits are computed and cached. */
static void test_nan_in_one_set(void **state) {
  fixture *f = *state;
  size_t p = set_widths[1], shape[2] = {N, p};
  double *x = malloc(N * p * sizeof *x);
  memcpy(x, nd_array_data(f->X[1]), N * p * sizeof *x);
  x[7 * p + 3] = NAN;
  nd_array_release(f->X[1]);
  f->X[1] = f64_array(2, shape, x);
  free(x);

  nd_experiment_spec spec = reg_spec();
  const int which[2] = {0, 1};
  xg e;
  build(f, &e, &spec, which, 2, false, false);
  nd_graph_stats st;
  assert_int_equal(run_graph(e.g, f->cache, pools[1], NULL, 0, &st), ND_ETASK);
  const size_t per_set = KOUT * (1 + KIN);
  assert_int_equal(st.failed, per_set);
  assert_int_equal(st.computed, per_set + 1);
  for (size_t fo = 0; fo < KOUT; fo++) {
    const char *msg;
    assert_int_equal(nd_graph_state(e.g, e.n.fit_full[KOUT + fo]), ND_GNODE_FAILED);
    assert_int_equal(nd_graph_error(e.g, e.n.fit_full[KOUT + fo], &msg), ND_EINVAL);
    assert_non_null(strstr(msg, "row 7, column 3"));
    assert_int_equal(nd_graph_state(e.g, e.n.fit_inner[(KOUT + fo) * KIN]), ND_GNODE_FAILED);
    int64_t good = e.n.fit_full[fo];
    assert_int_equal(nd_graph_state(e.g, good), ND_GNODE_COMPUTED);
    nd_hash128 key;
    assert_int_equal(nd_graph_key(e.g, good, &key), ND_OK);
    assert_int_equal(nd_cache_has(f->cache, key), 1);
    for (int k = 0; k < 3; k++)
      assert_int_equal(nd_graph_state(e.g, e.n.ens[k][fo]), ND_GNODE_SKIPPED);
  }
  assert_int_equal(nd_graph_state(e.g, e.n.set_score[0]), ND_GNODE_COMPUTED);
  assert_int_equal(nd_graph_state(e.g, e.n.set_score[1]), ND_GNODE_SKIPPED);
  char *rep = tg_report(e.g, NULL);
  assert_non_null(strstr(rep, "failed  fit schaefer f0: ND_EINVAL: "));
  free(rep);
  xg_free(&e);
}

static int64_t add_const(nd_graph *g, nd_array *a, const char *label) {
  int64_t id;
  assert_int_equal(nd_graph_const(g, a, label, &id), ND_OK);
  nd_array_release(a);
  return id;
}

static int64_t add_fit(nd_graph *g, const nd_fit_spec *spec, int64_t X, int64_t y,
                       int outer, int inner, const char *label) {
  void *p;
  size_t len;
  assert_int_equal(nd_fit_params(spec, false, outer, inner, &p, &len), ND_OK);
  int64_t in[2] = {X, y}, id;
  assert_int_equal(nd_graph_add(g, &nd_op_fit, p, len, in, 2, label, &id), ND_OK);
  nd_free(p);
  return id;
}

static void expect_failure(nd_graph *g, int64_t id, const char *a, const char *b) {
  const char *msg;
  assert_int_equal(nd_graph_state(g, id), ND_GNODE_FAILED);
  assert_int_not_equal(nd_graph_error(g, id, &msg), 0);
  if (!strstr(msg, a) || (b && !strstr(msg, b)))
    fail_msg("'%s': message \"%s\" lacks \"%s\"%s%s", nd_graph_label(g, id), msg, a,
             b ? " or " : "", b ? b : "");
}

/* Bad data, each failing its own node with a clear message while a good
 * node in the same graph computes. */
static void test_bad_data(void **state) {
  fixture *f = *state;
  nd_experiment_spec x = reg_spec();
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), ND_OK);
  int64_t X0 = add_const(g, nd_array_retain(f->X[0]), "X0");
  int64_t y = add_const(g, nd_array_retain(f->y), "y");
  int64_t good = add_fit(g, &x.fit, X0, y, 0, -1, "good fit");

  /* Inf in y. */
  size_t n1[1] = {N};
  double yv[N];
  memcpy(yv, nd_array_data(f->y), sizeof yv);
  yv[5] = INFINITY;
  int64_t yinf = add_const(g, f64_array(1, n1, yv), "y inf");
  int64_t inf_fit = add_fit(g, &x.fit, X0, yinf, 0, -1, "fit y inf");

  /* A constant feature under constant=error. */
  size_t p = set_widths[0], shape[2] = {N, p};
  double xv[N * 8];
  memcpy(xv, nd_array_data(f->X[0]), sizeof xv);
  for (size_t r = 0; r < N; r++) xv[r * p + 2] = 3.5;
  int64_t Xc = add_const(g, f64_array(2, shape, xv), "X constant");
  int64_t const_fit = add_fit(g, &x.fit, Xc, y, 1, 0, "fit constant");

  /* Fewer rows than folds. */
  size_t s3[2] = {3, 4}, s3y[1] = {3};
  double small[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 4}, ysmall[3] = {1, 2, 3};
  int64_t Xs = add_const(g, f64_array(2, s3, small), "X small");
  int64_t ys = add_const(g, f64_array(1, s3y, ysmall), "y small");
  int64_t small_fit = add_fit(g, &x.fit, Xs, ys, 0, -1, "fit small");

  /* Mismatched row counts. */
  size_t n119[1] = {N - 1};
  int64_t y119 = add_const(g, f64_array(1, n119, nd_array_data(f->y)), "y 119");
  int64_t mism_fit = add_fit(g, &x.fit, X0, y119, 0, -1, "fit mismatched");

  /* Wrong input kinds: a 1-D X, a 2-D y, an f32 X works. */
  int64_t flat_fit = add_fit(g, &x.fit, y, y, 0, -1, "fit flat X");
  int64_t tall_fit = add_fit(g, &x.fit, X0, X0, 0, -1, "fit 2-D y");
  float xf[N * 8];
  for (size_t i = 0; i < N * 8; i++) xf[i] = (float)((const double *)nd_array_data(f->X[0]))[i];
  nd_array *af;
  assert_int_equal(nd_array_from(&af, ND_F32, 2, shape, xf, sizeof xf), ND_OK);
  int64_t f32_fit = add_fit(g, &x.fit, add_const(g, af, "X f32"), y, 0, -1, "fit f32");

  /* Params: garbage, and an unexpected field. */
  int64_t in[2] = {X0, y}, garbage, extra;
  assert_int_equal(nd_graph_add(g, &nd_op_fit, "junk", 4, in, 2, "fit junk", &garbage), ND_OK);
  void *pb;
  size_t pl;
  nd_params *pp;
  assert_int_equal(nd_fit_params(&x.fit, false, 0, -1, &pb, &pl), ND_OK);
  assert_int_equal(nd_params_decode(pb, pl, &pp), ND_OK);
  nd_free(pb);
  assert_int_equal(nd_params_str(pp, "colour", "blue"), ND_OK);
  pb = params_bytes(pp, &pl);
  assert_int_equal(nd_graph_add(g, &nd_op_fit, pb, pl, in, 2, "fit extra", &extra), ND_OK);
  nd_free(pb);
  /* A params field of the wrong type. */
  assert_int_equal(nd_fit_params(&x.fit, false, 0, -1, &pb, &pl), ND_OK);
  assert_int_equal(nd_params_decode(pb, pl, &pp), ND_OK);
  nd_free(pb);
  assert_int_equal(nd_params_f64(pp, "outer.k", 5.0), ND_OK);
  pb = params_bytes(pp, &pl);
  int64_t typed;
  assert_int_equal(nd_graph_add(g, &nd_op_fit, pb, pl, in, 2, "fit typed", &typed), ND_OK);
  nd_free(pb);

  nd_graph_stats st;
  assert_int_equal(run_graph(g, f->cache, pools[1], NULL, 0, &st), ND_ETASK);
  assert_int_equal(nd_graph_state(g, good), ND_GNODE_COMPUTED);
  assert_int_equal(nd_graph_state(g, f32_fit), ND_GNODE_COMPUTED);
  expect_failure(g, inf_fit, "target is not finite at row 5", NULL);
  expect_failure(g, const_fit, "constant", "column 2");
  expect_failure(g, small_fit, "outer split", "3 rows");
  expect_failure(g, mism_fit, "features have 120 rows but the target has 119", NULL);
  expect_failure(g, flat_fit, "2-D", NULL);
  expect_failure(g, tall_fit, "1-D", NULL);
  expect_failure(g, garbage, "malformed params", NULL);
  expect_failure(g, extra, "unexpected param 'colour'", NULL);
  expect_failure(g, typed, "param 'outer.k' must be an integer", NULL);
  assert_int_equal(st.failed, 9);
  assert_int_equal(nd_graph_report(g, stdout), 9); /* the messages, for people */

  /* f32 features are the f64 fit of the same (converted) values. */
  nd_array *a32 = value(g, f32_fit);
  assert_int_equal(pred_of(a32).n, N / KOUT);
  nd_array_release(a32);
  nd_graph_free(g);
}

/* Logistic on a training set of one class: that fold's fit fails, the other
 * folds compute. */
static void test_single_class_fold(void **state) {
  fixture *f = *state;
  nd_experiment_spec x = clf_spec();
  x.fit.outer = (nd_cv){.kind = ND_CV_KFOLD, .k = KOUT}; /* contiguous folds */
  x.ensembles = false;
  size_t n1[1] = {N};
  double yv[N];
  for (size_t r = 0; r < N; r++) yv[r] = r < N / KOUT ? 1 : 0; /* class 1 only in fold 0 */
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), ND_OK);
  int64_t X0 = add_const(g, nd_array_retain(f->X[0]), "X0");
  int64_t y = add_const(g, f64_array(1, n1, yv), "y");
  int64_t fits[KOUT];
  for (int fo = 0; fo < KOUT; fo++) fits[fo] = add_fit(g, &x.fit, X0, y, fo, -1, NULL);
  assert_int_equal(run_graph(g, f->cache, pools[1], NULL, 0, NULL), ND_ETASK);
  expect_failure(g, fits[0], "single class", NULL);
  for (int fo = 1; fo < KOUT; fo++)
    assert_int_equal(nd_graph_state(g, fits[fo]), ND_GNODE_COMPUTED);
  nd_graph_free(g);
}

/* Ensemble and score nodes check their inputs. */
static void test_bad_combine_inputs(void **state) {
  fixture *f = *state;
  nd_experiment_spec x = reg_spec();
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), ND_OK);
  int64_t X0 = add_const(g, nd_array_retain(f->X[0]), "X0");
  int64_t y = add_const(g, nd_array_retain(f->y), "y");
  int64_t full = add_fit(g, &x.fit, X0, y, 0, -1, "full");
  int64_t inner[KIN];
  for (int i = 0; i < KIN; i++) inner[i] = add_fit(g, &x.fit, X0, y, 0, i, NULL);
  nd_ensemble_spec es = {.kind = ND_ENS_STACK, .task = ND_MODEL_RIDGE};
  void *p;
  size_t len;
  assert_int_equal(nd_ensemble_params(&es, &x.fit, false, 0, &p, &len), ND_OK);
  /* Good: y, then full + 3 inner. */
  int64_t in[8] = {y, full, inner[0], inner[1], inner[2]}, ok, swapped, notpred, count;
  assert_int_equal(nd_graph_add(g, &nd_op_ensemble, p, len, in, 5, "stack ok", &ok), ND_OK);
  /* An inner fit where the full fit belongs: wrong length. */
  int64_t in2[5] = {y, inner[0], full, inner[1], inner[2]};
  assert_int_equal(nd_graph_add(g, &nd_op_ensemble, p, len, in2, 5, "stack swapped", &swapped),
                   ND_OK);
  /* Not a prediction value. */
  int64_t in3[5] = {y, X0, inner[0], inner[1], inner[2]};
  assert_int_equal(nd_graph_add(g, &nd_op_ensemble, p, len, in3, 5, "stack X", &notpred), ND_OK);
  /* Inputs that do not divide into members. */
  assert_int_equal(nd_graph_add(g, &nd_op_ensemble, p, len, in, 4, "stack short", &count), ND_OK);
  nd_free(p);
  /* A score over too few folds. */
  assert_int_equal(nd_cv_score_params(ND_METRIC_R2, &x.fit.outer, false, &p, &len), ND_OK);
  int64_t sin[3] = {y, full, ok}, score;
  assert_int_equal(nd_graph_add(g, &nd_op_cv_score, p, len, sin, 3, "score short", &score), ND_OK);
  nd_free(p);
  assert_int_equal(run_graph(g, f->cache, pools[1], NULL, 0, NULL), ND_ETASK);
  assert_int_equal(nd_graph_state(g, ok), ND_GNODE_COMPUTED);
  expect_failure(g, swapped, "predictions but", NULL);
  expect_failure(g, notpred, "not a prediction value", NULL);
  expect_failure(g, count, "ensemble takes inputs", NULL);
  expect_failure(g, score, "cv_score takes inputs", NULL);
  nd_graph_free(g);
}

/* ------------------------------------------------------------ scikit-learn */

/* tests/data/models (scripts/models_reference.py), found next to this file. */
static bool ref_dir(char *out, size_t cap) {
  const char *slash = strrchr(__FILE__, '/');
  if (!slash) return false;
  snprintf(out, cap, "%.*s/data/models", (int)(slash - __FILE__), __FILE__);
  struct stat st;
  return stat(out, &st) == 0;
}

static nd_array *load_ref(const char *dir, const char *tag, const char *what) {
  char path[TG_PATH_MAX];
  snprintf(path, sizeof path, "%s/%s_%s.npy", dir, tag, what);
  nd_array *a = NULL;
  int rc = nd_npy_load(path, &a);
  if (rc) fail_msg("%s", nd_models_errmsg());
  return a;
}

/* |a - b| / max(1, |b|), NaN as infinitely far. */
static double rel_diff(double a, double b) {
  double d = fabs(a - b) / fmax(1.0, fabs(b));
  return d == d ? d : INFINITY;
}

#define REF_TOL 1e-6

/* The ensembles of scikit-learn's Stacking*, Voting* (soft) and a
 * GridSearchCV over the feature sets, per outer fold, against ours built
 * from cached fit nodes: every full fit, every inner (out-of-fold) fit, the
 * three strategies, the grid's choice and its score. */
static void sklearn_case(fixture *f, const char *tag, bool classify) {
  char dir[TG_PATH_MAX], last[TG_PATH_MAX];
  struct stat st;
  if (ref_dir(dir, sizeof dir)) snprintf(last, sizeof last, "%s/%s_grid_scores.npy", dir, tag);
  if (!ref_dir(dir, sizeof dir) || stat(last, &st) != 0) {
    printf("no %s_*.npy reference data (scripts/models_reference.py): skipped\n", tag);
    skip();
  }
  nd_array *X = load_ref(dir, tag, "X"), *y = load_ref(dir, tag, "y");
  nd_array *widths = load_ref(dir, tag, "widths");
  nd_array *grid = load_ref(dir, tag, classify ? "Cs" : "alphas");
  nd_array *meta_c = classify ? load_ref(dir, tag, "meta_C") : NULL;
  size_t n = nd_array_dim(X, 0), p = nd_array_dim(X, 1), nsets = nd_array_count(widths);
  assert_true(nsets <= NSETS);
  nd_experiment_spec x = classify ? clf_spec() : reg_spec();
  x.fit.pipeline.constant = ND_CONSTANT_KEEP; /* StandardScaler's */
  x.fit.pipeline.grid = nd_array_data(grid);
  x.fit.pipeline.ngrid = nd_array_count(grid);
  x.fit.outer.shuffle = false;
  x.meta_grid = classify ? nd_array_data(meta_c) : nd_array_data(grid);
  x.nmeta = classify ? 1 : nd_array_count(grid);
  xg e;
  assert_int_equal(nd_graph_new(&e.g), ND_OK);
  assert_int_equal(nd_graph_const(e.g, y, "y", &e.y), ND_OK);
  const int64_t *w = nd_array_data(widths);
  for (size_t s = 0, c0 = 0; s < nsets; c0 += (size_t)w[s], s++) {
    size_t shape[2] = {n, (size_t)w[s]};
    nd_array *b;
    assert_int_equal(nd_array_new(&b, ND_F64, 2, shape), ND_OK);
    double *d = nd_array_data_mut(b);
    for (size_t r = 0; r < n; r++)
      memcpy(d + r * (size_t)w[s], (const double *)nd_array_data(X) + r * p + c0,
             (size_t)w[s] * sizeof *d);
    e.sets[s] = add_const(e.g, b, names[s]);
    e.names[s] = names[s];
  }
  assert_int_equal(nd_experiment_add(e.g, &x, e.y, -1, e.sets, e.names, nsets, &e.n), ND_OK);
  int64_t ids[MAX_IDS];
  size_t nids = all_ids(&e.n, ids);
  run_ok(e.g, f->cache, pools[1], ids, nids, NULL);

  nd_array *outer = load_ref(dir, tag, "outer_fold"), *inner = load_ref(dir, tag, "inner_fold");
  nd_array *sets_ref = load_ref(dir, tag, "pred_sets"), *oof = load_ref(dir, tag, "stack_oof");
  nd_array *ens_ref[3] = {load_ref(dir, tag, "pred_vote"), load_ref(dir, tag, "pred_grid"),
                          load_ref(dir, tag, "pred_stack")};
  nd_array *choice = load_ref(dir, tag, "grid_choice");
  nd_array *gscores = load_ref(dir, tag, "grid_scores");
  const int64_t *of = nd_array_data(outer), *inf = nd_array_data(inner);
  double worst = 0, worst_ens = 0;
  for (int fo = 0; fo < KOUT; fo++) {
    for (size_t s = 0; s < nsets; s++) {
      nd_array *a = value(e.g, e.n.fit_full[s * KOUT + (size_t)fo]);
      nd_pred_view v = pred_of(a);
      const double *want = (const double *)nd_array_data(sets_ref) + s * n;
      for (size_t r = 0, j = 0; r < n; r++)
        if (of[r] == fo) worst = fmax(worst, rel_diff(v.pred[j++], want[r]));
      nd_array_release(a);
      for (int i = 0; i < KIN; i++) {
        a = value(e.g, e.n.fit_inner[(s * KOUT + (size_t)fo) * KIN + (size_t)i]);
        v = pred_of(a);
        want = (const double *)nd_array_data(oof) + ((size_t)fo * nsets + s) * n;
        size_t j = 0;
        for (size_t r = 0; r < n; r++)
          if (inf[(size_t)fo * n + r] == i) worst = fmax(worst, rel_diff(v.pred[j++], want[r]));
        assert_int_equal(j, v.n);
        nd_array_release(a);
      }
    }
    for (int k = 0; k < 3; k++) {
      nd_array *a = value(e.g, e.n.ens[k][fo]);
      nd_pred_view v = pred_of(a);
      const double *want = nd_array_data(ens_ref[k]);
      double wk = 0;
      for (size_t r = 0, j = 0; r < n; r++)
        if (of[r] == fo) wk = fmax(wk, rel_diff(v.pred[j++], want[r]));
      if (!(wk <= REF_TOL))
        fail_msg("%s '%s': off scikit-learn's by %g", tag, nd_graph_label(e.g, e.n.ens[k][fo]),
                 wk);
      worst_ens = fmax(worst_ens, wk);
      if (k == ND_ENS_GRID) {
        assert_int_equal(v.chosen, ((const int64_t *)nd_array_data(choice))[fo]);
        double ws = ((const double *)nd_array_data(gscores))[(size_t)fo * nsets + v.chosen];
        assert_true(rel_diff(v.score, ws) <= REF_TOL);
      }
      nd_array_release(a);
    }
  }
  printf("%s: fits off scikit-learn's by at most %.3g, ensembles by %.3g\n", tag, worst,
         worst_ens);
  assert_true(worst <= REF_TOL);
  nd_array *all[] = {X, y, widths, grid, meta_c, outer, inner, sets_ref, oof, ens_ref[0],
                     ens_ref[1], ens_ref[2], choice, gscores};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) nd_array_release(all[i]);
  xg_free(&e);
}

static void test_sklearn_regression(void **state) { sklearn_case(*state, "w5", false); }
static void test_sklearn_classification(void **state) { sklearn_case(*state, "cls", true); }

int main(void) {
  g_seed = nd_test_seed("models_ops", 20240611);
  unsigned threads[2] = {1, 2};
  if (nd_test_open_pools(pools, threads, 2) != 0) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pred_view),
      cmocka_unit_test(test_params_canonical),
      cmocka_unit_test(test_params_errors),
      cmocka_unit_test(test_ensemble_predict),
      cmocka_unit_test_setup_teardown(test_cold_then_cached, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pool_growth, setup, teardown),
      cmocka_unit_test_setup_teardown(test_threads_and_cache, setup, teardown),
      cmocka_unit_test_setup_teardown(test_strategies_share_fits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_classification, setup, teardown),
      cmocka_unit_test_setup_teardown(test_grouped_outer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nan_in_one_set, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_data, setup, teardown),
      cmocka_unit_test_setup_teardown(test_single_class_fold, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_combine_inputs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sklearn_regression, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sklearn_classification, setup, teardown),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nd_test_close_pools(pools, 2);
  return rc;
}
