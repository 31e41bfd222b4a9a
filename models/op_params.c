/* The params of the models graph ops (models.h): their encoders
 * (nd_fit_params, nd_ensemble_params, nd_cv_score_params) and the strict
 * decoders the ops use (ops_int.h).
 *
 * Params are the cache key of every fit, so they hold exactly the settings
 * that change its result, in canonical form, and nothing else:
 *  - the pipeline's search folds ("inner.*") and "scoring" only when the grid
 *    has more than one value (one value skips the search);
 *  - "tol" and "max_iter" only for logistic regression, with the library
 *    defaults written out (0 -> 1e-10 and 100), so "default" and the default's
 *    value are one key;
 *  - a split's "seed" only when it is shuffled;
 *  - the ensembles' inner split ("split.*") only in the inner fits (and in
 *    the grid and stacking ensembles), so the full fit of a fold is one node
 *    whatever the ensembles do with it;
 *  - the stacking meta-model's settings only in stacking ensembles, with
 *    sklearn's defaults written out (RidgeCV alphas 0.1, 1, 10; C = 1).
 * A cv is written as "<prefix>.kind" ("kfold" | "stratified" | "group"),
 * "<prefix>.k", "<prefix>.shuffle" (0/1) and "<prefix>.seed" (u64 bits as
 * i64). Decoding is strict: every field is checked, and a missing or
 * unexpected one is an error naming it, so a hand-made or stale params
 * string fails loudly instead of being half understood. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "models/ops_int.h"

#define ND__MAX_PARAM_FIELDS 64 /* more than any op takes */
#define ND__PARAM_NAME_MAX 64

static const char *const cv_kind_names[] = {"kfold", "stratified", "group"};
static const char *const scaling_names[] = {"none", "standard", "robust"};
static const char *const constant_names[] = {"error", "keep"};
static const char *const model_names[] = {"ridge", "logistic"};
static const char *const strategy_names[] = {"vote", "grid", "stack"};
static const char *const task_names[] = {"regression", "classification"};
#define ND__COUNT(a) (sizeof(a) / sizeof *(a))

/* ============================================================ params: writing */

static int check_cv(const nd_cv *cv, const char *what, bool groups) {
  if ((unsigned)cv->kind > ND_CV_GROUP)
    return nd__merr(ND_EINVAL, "the %s split has an unknown kind %d", what, (int)cv->kind);
  if (cv->k < 2 || cv->k > ND__MAX_FOLDS)
    return nd__merr(ND_EINVAL, "the %s split needs 2 to %d folds, got %u", what,
                    ND__MAX_FOLDS, cv->k);
  if (cv->kind == ND_CV_GROUP && !groups)
    return nd__merr(ND_EINVAL, "the %s split is grouped but there is no groups input", what);
  return 0;
}

static bool metric_ok(nd_metric m) { return (unsigned)m <= ND_METRIC_BALANCED_ACC; }

static int check_pipeline(const nd_pipeline *pl, bool groups) {
  if ((unsigned)pl->scaling > ND_SCALE_ROBUST)
    return nd__merr(ND_EINVAL, "unknown scaling %d", (int)pl->scaling);
  if ((unsigned)pl->constant > ND_CONSTANT_KEEP)
    return nd__merr(ND_EINVAL, "unknown constant-feature policy %d", (int)pl->constant);
  if ((unsigned)pl->model > ND_MODEL_LOGISTIC)
    return nd__merr(ND_EINVAL, "unknown model %d", (int)pl->model);
  if (!pl->grid || pl->ngrid < 1 || pl->ngrid > ND_MAX_GRID)
    return nd__merr(ND_EINVAL, "the grid needs 1 to %d values, got %zu", ND_MAX_GRID,
                    pl->grid ? pl->ngrid : 0);
  for (size_t i = 0; i < pl->ngrid; i++)
    if (!(isfinite(pl->grid[i]) && pl->grid[i] > 0))
      return nd__merr(ND_EINVAL, "grid value %zu (%g) must be finite and > 0", i, pl->grid[i]);
  if (pl->ngrid > 1) {
    if (!metric_ok(pl->scoring))
      return nd__merr(ND_EINVAL, "unknown scoring metric %d", (int)pl->scoring);
    int rc = check_cv(&pl->inner, "search", groups);
    if (rc) return rc;
  }
  if (pl->model == ND_MODEL_LOGISTIC && !(isfinite(pl->tol) && pl->tol >= 0))
    return nd__merr(ND_EINVAL, "tol must be finite and >= 0, got %g", pl->tol);
  return 0;
}

/* Fields are set in any order (nd_params sorts them); the first error wins. */
typedef struct pw {
  nd_params *p;
  int rc;
} pw;

static void pw_i64(pw *w, const char *name, int64_t v) {
  if (!w->rc) w->rc = nd_params_i64(w->p, name, v);
}
static void pw_f64(pw *w, const char *name, double v) {
  if (!w->rc) w->rc = nd_params_f64(w->p, name, v);
}
static void pw_str(pw *w, const char *name, const char *v) {
  if (!w->rc) w->rc = nd_params_str(w->p, name, v);
}
static void pw_f64s(pw *w, const char *name, const double *v, size_t n) {
  if (!w->rc) w->rc = nd_params_f64s(w->p, name, v, n);
}

static void pw_cv(pw *w, const char *prefix, const nd_cv *cv) {
  char name[ND__PARAM_NAME_MAX];
  snprintf(name, sizeof name, "%s.kind", prefix);
  pw_str(w, name, cv_kind_names[cv->kind]);
  snprintf(name, sizeof name, "%s.k", prefix);
  pw_i64(w, name, cv->k);
  snprintf(name, sizeof name, "%s.shuffle", prefix);
  pw_i64(w, name, cv->shuffle ? 1 : 0);
  if (cv->shuffle) {
    int64_t seed;
    memcpy(&seed, &cv->seed, sizeof seed);
    snprintf(name, sizeof name, "%s.seed", prefix);
    pw_i64(w, name, seed);
  }
}

static int pw_open(pw *w) {
  w->rc = nd_params_new(&w->p);
  return w->rc ? nd__merr(w->rc, "out of memory for params") : 0;
}

static int pw_finish(pw *w, void **out, size_t *len) {
  if (!w->rc) w->rc = nd_params_encode(w->p, out, len);
  nd_params_free(w->p);
  return w->rc ? nd__merr(w->rc, "cannot encode params: %s", nd_strerror(w->rc)) : 0;
}

static void pw_pipeline(pw *w, const nd_pipeline *pl) {
  pw_str(w, "model", model_names[pl->model]);
  pw_str(w, "scaling", scaling_names[pl->scaling]);
  pw_str(w, "constant", constant_names[pl->constant]);
  pw_f64s(w, "grid", pl->grid, pl->ngrid);
  if (pl->ngrid > 1) {
    pw_str(w, "scoring", nd_metric_name(pl->scoring));
    pw_cv(w, "inner", &pl->inner);
  }
  if (pl->model == ND_MODEL_LOGISTIC) {
    pw_f64(w, "tol", pl->tol > 0 ? pl->tol : ND__LOGISTIC_DEFAULT_TOL);
    pw_i64(w, "max_iter", pl->max_iter ? pl->max_iter : ND__LOGISTIC_DEFAULT_MAX_ITER);
  }
}

int nd_fit_params(const nd_fit_spec *spec, bool groups, int outer_fold, int inner_fold,
                  void **out, size_t *len) {
  if (!spec || !out || !len) return nd__merr(ND_EINVAL, "nd_fit_params: NULL argument");
  *out = NULL;
  *len = 0;
  int rc = check_pipeline(&spec->pipeline, groups);
  if (!rc) rc = check_cv(&spec->outer, "outer", groups);
  if (rc) return rc;
  if (outer_fold < 0 || (uint32_t)outer_fold >= spec->outer.k)
    return nd__merr(ND_EINVAL, "outer fold %d is not in [0, %u)", outer_fold, spec->outer.k);
  if (inner_fold < -1)
    return nd__merr(ND_EINVAL, "inner fold %d: -1 is the full fit, else a fold index",
                    inner_fold);
  if (inner_fold >= 0) {
    if ((rc = check_cv(&spec->inner, "ensembles' inner", groups))) return rc;
    if ((uint32_t)inner_fold >= spec->inner.k)
      return nd__merr(ND_EINVAL, "inner fold %d is not in [0, %u)", inner_fold, spec->inner.k);
  }
  pw w;
  if ((rc = pw_open(&w))) return rc;
  pw_pipeline(&w, &spec->pipeline);
  pw_cv(&w, "outer", &spec->outer);
  pw_i64(&w, "outer_fold", outer_fold);
  pw_i64(&w, "inner_fold", inner_fold);
  if (inner_fold >= 0) pw_cv(&w, "split", &spec->inner);
  pw_i64(&w, "groups", groups ? 1 : 0);
  return pw_finish(&w, out, len);
}

int nd_ensemble_params(const nd_ensemble_spec *spec, const nd_fit_spec *fit, bool groups,
                       int outer_fold, void **out, size_t *len) {
  if (!spec || !fit || !out || !len)
    return nd__merr(ND_EINVAL, "nd_ensemble_params: NULL argument");
  *out = NULL;
  *len = 0;
  if ((unsigned)spec->kind > ND_ENS_STACK)
    return nd__merr(ND_EINVAL, "unknown ensemble strategy %d", (int)spec->kind);
  if ((unsigned)spec->task > ND_MODEL_LOGISTIC)
    return nd__merr(ND_EINVAL, "unknown ensemble task %d", (int)spec->task);
  int rc = check_cv(&fit->outer, "outer", groups);
  if (rc) return rc;
  if (outer_fold < 0 || (uint32_t)outer_fold >= fit->outer.k)
    return nd__merr(ND_EINVAL, "outer fold %d is not in [0, %u)", outer_fold, fit->outer.k);
  bool stack = spec->kind == ND_ENS_STACK, classify = spec->task == ND_MODEL_LOGISTIC;
  if (spec->kind != ND_ENS_VOTE && (rc = check_cv(&fit->inner, "ensembles' inner", groups)))
    return rc;
  if (spec->kind == ND_ENS_GRID && !metric_ok(spec->metric))
    return nd__merr(ND_EINVAL, "unknown selection metric %d", (int)spec->metric);
  if (stack && spec->meta_grid && spec->nmeta == 0)
    return nd__merr(ND_EINVAL, "the stacking meta grid is given with nmeta 0");
  if (stack && spec->meta_grid) {
    size_t nmeta = classify ? 1 : spec->nmeta;
    if (nmeta > ND_MAX_GRID)
      return nd__merr(ND_EINVAL, "the stacking meta grid has %zu values, more than %d",
                      nmeta, ND_MAX_GRID);
    for (size_t i = 0; i < nmeta; i++)
      if (!(isfinite(spec->meta_grid[i]) && spec->meta_grid[i] > 0))
        return nd__merr(ND_EINVAL, "stacking meta grid value %zu (%g) must be finite and > 0",
                        i, spec->meta_grid[i]);
  }
  if (stack && classify && !(isfinite(spec->tol) && spec->tol >= 0))
    return nd__merr(ND_EINVAL, "the stacking tol must be finite and >= 0, got %g", spec->tol);
  pw w;
  if ((rc = pw_open(&w))) return rc;
  pw_str(&w, "strategy", strategy_names[spec->kind]);
  pw_str(&w, "task", task_names[spec->task]);
  pw_cv(&w, "outer", &fit->outer);
  pw_i64(&w, "outer_fold", outer_fold);
  if (spec->kind != ND_ENS_VOTE) pw_cv(&w, "split", &fit->inner);
  if (spec->kind == ND_ENS_GRID) pw_str(&w, "metric", nd_metric_name(spec->metric));
  if (stack && !classify) {
    if (spec->meta_grid) pw_f64s(&w, "meta_alphas", spec->meta_grid, spec->nmeta);
    else pw_f64s(&w, "meta_alphas", nd__ridgecv_default_alphas, ND__RIDGECV_DEFAULT_N);
  }
  if (stack && classify) {
    pw_f64(&w, "meta_C", spec->meta_grid ? spec->meta_grid[0] : ND__META_DEFAULT_C);
    pw_f64(&w, "meta_tol", spec->tol > 0 ? spec->tol : ND__LOGISTIC_DEFAULT_TOL);
  }
  pw_i64(&w, "groups", groups ? 1 : 0);
  return pw_finish(&w, out, len);
}

int nd_cv_score_params(nd_metric metric, const nd_cv *outer, bool groups, void **out,
                       size_t *len) {
  if (!outer || !out || !len) return nd__merr(ND_EINVAL, "nd_cv_score_params: NULL argument");
  *out = NULL;
  *len = 0;
  if (!metric_ok(metric)) return nd__merr(ND_EINVAL, "unknown metric %d", (int)metric);
  int rc = check_cv(outer, "outer", groups);
  if (rc) return rc;
  pw w;
  if ((rc = pw_open(&w))) return rc;
  pw_str(&w, "metric", nd_metric_name(metric));
  pw_cv(&w, "outer", outer);
  pw_i64(&w, "groups", groups ? 1 : 0);
  return pw_finish(&w, out, len);
}

/* ============================================================ params: reading */

/* A strict reader over an op's params: each lookup marks its field used,
 * and prd_close refuses any field nobody asked for. The first error is
 * recorded on the op (nd_op_fail) and every later call is a no-op. */
typedef struct prd {
  nd_op_ctx *ctx;
  nd_params *p;
  int rc;
  bool used[ND__MAX_PARAM_FIELDS];
} prd;

static void prd_fail(prd *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void prd_fail(prd *r, const char *fmt, ...) {
  if (r->rc) return;
  char msg[ND__ERRMSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  r->rc = nd_op_fail(r->ctx, ND_EINVAL, "%s", msg);
}

static int prd_open(nd_op_ctx *ctx, prd *r) {
  memset(r, 0, sizeof *r);
  r->ctx = ctx;
  size_t len;
  const void *bytes = nd_op_params(ctx, &len);
  if (!len) return nd_op_fail(ctx, ND_EINVAL, "no params (encode them with nd_*_params)");
  int rc = nd_params_decode(bytes, len, &r->p);
  if (rc)
    return nd_op_fail(ctx, rc, "malformed params (not an nd_params encoding: %s)",
                      nd_strerror(rc));
  size_t count = nd_params_count(r->p);
  if (count > ND__MAX_PARAM_FIELDS) {
    nd_params_free(r->p);
    r->p = NULL;
    return nd_op_fail(ctx, ND_EINVAL, "%zu params, more than any op of this kind takes", count);
  }
  return 0;
}

/* Refuse unused fields; release the params. Returns the first error. */
static int prd_close(prd *r) {
  for (size_t i = 0; !r->rc && i < nd_params_count(r->p); i++) {
    const char *name;
    nd_params_field(r->p, i, &name, NULL, NULL, NULL);
    if (!r->used[i]) prd_fail(r, "unexpected param '%s' (not used in this configuration)", name);
  }
  nd_params_free(r->p);
  r->p = NULL;
  return r->rc;
}

static const char *type_desc(nd_param_type t) {
  switch (t) {
  case ND_PARAM_I64: return "an integer";
  case ND_PARAM_F64: return "a number";
  case ND_PARAM_STR: return "a string";
  case ND_PARAM_BYTES: return "bytes";
  case ND_PARAM_I64S: return "a list of integers";
  case ND_PARAM_F64S: return "a list of numbers";
  }
  return "?";
}

/* The field's value (*n: its element count), or NULL (missing: an error). */
static const void *prd_field(prd *r, const char *name, nd_param_type type, size_t *n) {
  if (r->rc) return NULL;
  for (size_t i = 0; i < nd_params_count(r->p); i++) {
    const char *fname;
    nd_param_type t;
    const void *val;
    size_t cnt;
    nd_params_field(r->p, i, &fname, &t, &val, &cnt);
    if (strcmp(fname, name) != 0) continue;
    if (t != type) {
      prd_fail(r, "param '%s' must be %s, not %s", name, type_desc(type), type_desc(t));
      return NULL;
    }
    r->used[i] = true;
    if (n) *n = cnt;
    return val;
  }
  prd_fail(r, "param '%s' is missing", name);
  return NULL;
}

static int64_t prd_i64(prd *r, const char *name, int64_t lo, int64_t hi) {
  const void *v = prd_field(r, name, ND_PARAM_I64, NULL);
  int64_t x = 0;
  if (!v) return lo;
  memcpy(&x, v, sizeof x);
  if (x < lo || x > hi) {
    prd_fail(r, "param '%s' must be in [%lld, %lld], got %lld", name, (long long)lo,
             (long long)hi, (long long)x);
    return lo;
  }
  return x;
}

/* A finite number > 0. */
static double prd_pos(prd *r, const char *name) {
  const void *v = prd_field(r, name, ND_PARAM_F64, NULL);
  double x = 1;
  if (!v) return x;
  memcpy(&x, v, sizeof x);
  if (!(isfinite(x) && x > 0)) {
    prd_fail(r, "param '%s' must be finite and > 0, got %g", name, x);
    return 1;
  }
  return x;
}

/* The index of the field's string in names[]. */
static int prd_enum(prd *r, const char *name, const char *const *names, size_t count) {
  const char *s = prd_field(r, name, ND_PARAM_STR, NULL);
  if (!s) return 0;
  for (size_t i = 0; i < count; i++)
    if (strcmp(s, names[i]) == 0) return (int)i;
  char list[256] = "";
  size_t used = 0;
  for (size_t i = 0; i < count && used < sizeof list; i++)
    used += (size_t)snprintf(list + used, sizeof list - used, "%s\"%s\"", i ? ", " : "",
                             names[i]);
  prd_fail(r, "param '%s' must be one of %s; got \"%s\"", name, list, s);
  return 0;
}

static nd_metric prd_metric(prd *r, const char *name) {
  const char *s = prd_field(r, name, ND_PARAM_STR, NULL);
  nd_metric m = ND_METRIC_R2;
  if (s && nd_metric_parse(s, &m) != 0)
    prd_fail(r, "param '%s': unknown metric \"%s\"", name, s);
  return m;
}

/* A list of 1..ND_MAX_GRID finite values > 0, copied into buf (ND_MAX_GRID). */
static size_t prd_grid(prd *r, const char *name, double *buf) {
  size_t n = 0;
  const void *v = prd_field(r, name, ND_PARAM_F64S, &n);
  if (!v) return 0;
  if (n < 1 || n > ND_MAX_GRID) {
    prd_fail(r, "param '%s' needs 1 to %d values, got %zu", name, ND_MAX_GRID, n);
    return 0;
  }
  memcpy(buf, v, n * sizeof *buf);
  for (size_t i = 0; i < n; i++)
    if (!(isfinite(buf[i]) && buf[i] > 0)) {
      prd_fail(r, "param '%s': value %zu (%g) must be finite and > 0", name, i, buf[i]);
      return 0;
    }
  return n;
}

static nd_cv prd_cv(prd *r, const char *prefix) {
  char name[ND__PARAM_NAME_MAX];
  nd_cv cv = {.k = 2};
  snprintf(name, sizeof name, "%s.kind", prefix);
  cv.kind = (nd_cv_kind)prd_enum(r, name, cv_kind_names, ND__COUNT(cv_kind_names));
  snprintf(name, sizeof name, "%s.k", prefix);
  cv.k = (uint32_t)prd_i64(r, name, 2, ND__MAX_FOLDS);
  snprintf(name, sizeof name, "%s.shuffle", prefix);
  cv.shuffle = prd_i64(r, name, 0, 1) == 1;
  if (cv.shuffle) {
    snprintf(name, sizeof name, "%s.seed", prefix);
    int64_t s = prd_i64(r, name, INT64_MIN, INT64_MAX);
    memcpy(&cv.seed, &s, sizeof s);
  }
  return cv;
}

static void prd_need_groups(prd *r, const nd_cv *cv, const char *what, bool groups) {
  if (cv->kind == ND_CV_GROUP && !groups)
    prd_fail(r, "the %s split is grouped but param 'groups' is 0", what);
}

/* ------------------------------------------------------------ the three configs */

int nd__fit_decode(nd_op_ctx *ctx, nd__fit_cfg *c) {
  prd r;
  int rc = prd_open(ctx, &r);
  if (rc) return rc;
  nd_pipeline *pl = &c->pl;
  pl->model = (nd_model)prd_enum(&r, "model", model_names, ND__COUNT(model_names));
  pl->scaling = (nd_scaling)prd_enum(&r, "scaling", scaling_names, ND__COUNT(scaling_names));
  pl->constant =
      (nd_constant_policy)prd_enum(&r, "constant", constant_names, ND__COUNT(constant_names));
  pl->grid = c->grid;
  pl->ngrid = prd_grid(&r, "grid", c->grid);
  if (pl->ngrid > 1) {
    pl->scoring = prd_metric(&r, "scoring");
    pl->inner = prd_cv(&r, "inner");
  }
  if (pl->model == ND_MODEL_LOGISTIC) {
    pl->tol = prd_pos(&r, "tol");
    pl->max_iter = (uint32_t)prd_i64(&r, "max_iter", 1, UINT32_MAX);
  }
  c->outer = prd_cv(&r, "outer");
  c->outer_fold = (int)prd_i64(&r, "outer_fold", 0, (int64_t)c->outer.k - 1);
  c->inner_fold = (int)prd_i64(&r, "inner_fold", -1, ND__MAX_FOLDS - 1);
  if (c->inner_fold >= 0) {
    c->split = prd_cv(&r, "split");
    if (!r.rc && (uint32_t)c->inner_fold >= c->split.k)
      prd_fail(&r, "param 'inner_fold' is %d but the split has %u folds", c->inner_fold,
               c->split.k);
  }
  c->groups = prd_i64(&r, "groups", 0, 1) == 1;
  prd_need_groups(&r, &c->outer, "outer", c->groups);
  if (pl->ngrid > 1) prd_need_groups(&r, &pl->inner, "search", c->groups);
  if (c->inner_fold >= 0) prd_need_groups(&r, &c->split, "ensembles' inner", c->groups);
  return prd_close(&r);
}

int nd__ens_decode(nd_op_ctx *ctx, nd__ens_cfg *c) {
  prd r;
  int rc = prd_open(ctx, &r);
  if (rc) return rc;
  nd_ensemble_spec *s = &c->spec;
  s->kind = (nd_ensemble)prd_enum(&r, "strategy", strategy_names, ND__COUNT(strategy_names));
  s->task = (nd_model)prd_enum(&r, "task", task_names, ND__COUNT(task_names));
  c->outer = prd_cv(&r, "outer");
  c->outer_fold = (int)prd_i64(&r, "outer_fold", 0, (int64_t)c->outer.k - 1);
  if (s->kind != ND_ENS_VOTE) {
    c->split = prd_cv(&r, "split");
    c->ninner = c->split.k;
  }
  if (s->kind == ND_ENS_GRID) s->metric = prd_metric(&r, "metric");
  if (s->kind == ND_ENS_STACK && s->task == ND_MODEL_RIDGE) {
    s->nmeta = prd_grid(&r, "meta_alphas", c->meta);
    s->meta_grid = c->meta;
  }
  if (s->kind == ND_ENS_STACK && s->task == ND_MODEL_LOGISTIC) {
    c->meta[0] = prd_pos(&r, "meta_C");
    s->meta_grid = c->meta;
    s->nmeta = 1;
    s->tol = prd_pos(&r, "meta_tol");
  }
  c->groups = prd_i64(&r, "groups", 0, 1) == 1;
  prd_need_groups(&r, &c->outer, "outer", c->groups);
  if (s->kind != ND_ENS_VOTE) prd_need_groups(&r, &c->split, "ensembles' inner", c->groups);
  return prd_close(&r);
}

int nd__score_decode(nd_op_ctx *ctx, nd__score_cfg *c) {
  prd r;
  int rc = prd_open(ctx, &r);
  if (rc) return rc;
  c->metric = prd_metric(&r, "metric");
  c->outer = prd_cv(&r, "outer");
  c->groups = prd_i64(&r, "groups", 0, 1) == 1;
  prd_need_groups(&r, &c->outer, "outer", c->groups);
  return prd_close(&r);
}
