/* The models graph ops (models.h): nd.fit, nd.ensemble, nd.cv_score and
 * the prediction value they exchange. Their params are in op_params.c.
 *
 * Rows: every op rebuilds the outer split from y (and groups) with
 * nd_cv_assign, so a fit node needs only its fold numbers and no row lists
 * travel between nodes. Training and test rows are in ascending row order;
 * the ensembles' inner split runs over the training rows in that order
 * (sklearn's cross_val_predict over the outer training set), and inner fit i
 * predicts the training rows of inner fold i, in that order too. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "models/ops_int.h"

#define ND__OP_FIT_VERSION 1
#define ND__OP_ENSEMBLE_VERSION 1
#define ND__OP_CV_SCORE_VERSION 1

/* The memory a fit holds while it runs. Its inputs' sizes are not known
 * when the graph is planned (a constant's cost is 0), so this is a typical
 * neuroimaging fit: 1,000 participants x 2,000 features hold X as f64
 * (16 MB), the scaled training copy (16 MB), the Gram or kernel matrix and
 * the search folds' copies. nd_graph_set_cost overrides it per node. */
#define ND__FIT_MEM_COST ((size_t)64 << 20)

/* Exact integers in a double (for the prediction header). */
#define ND__MAX_EXACT_INT 9007199254740992.0 /* 2^53 */

/* ============================================================ prediction values */

int nd_pred_view_of(const nd_array *value, nd_pred_view *out) {
  if (!value || !out) return nd__merr(ND_EINVAL, "prediction value: NULL argument");
  if (nd_array_dtype(value) != ND_F64 || nd_array_ndim(value) != 1)
    return nd__merr(ND_EFORMAT, "not a prediction value: a %d-D %s array, not 1-D f64",
                    nd_array_ndim(value), nd_dtype_name(nd_array_dtype(value)));
  size_t count = nd_array_count(value);
  if (count < ND_PRED_HEADER)
    return nd__merr(ND_EFORMAT, "not a prediction value: %zu values, fewer than the %d of "
                                "its header", count, ND_PRED_HEADER);
  const double *d = nd_array_data(value);
  if (!(d[0] >= 0 && d[0] < ND__MAX_EXACT_INT && d[0] == floor(d[0])))
    return nd__merr(ND_EFORMAT, "not a prediction value: chosen index %g", d[0]);
  if (d[3] != (double)(count - ND_PRED_HEADER))
    return nd__merr(ND_EFORMAT, "not a prediction value: its header counts %g predictions "
                                "but %zu follow", d[3], count - ND_PRED_HEADER);
  out->chosen = (size_t)d[0];
  out->chosen_value = d[1];
  out->score = d[2];
  out->pred = d + ND_PRED_HEADER;
  out->n = count - ND_PRED_HEADER;
  return 0;
}

/* A new prediction value of n predictions, its header [0, 0, NaN, n]; the
 * caller fills *pred and may set the choice. */
static int pred_new(size_t n, nd_array **out, double **pred) {
  if (n > SIZE_MAX - ND_PRED_HEADER) return ND_EOVERFLOW;
  size_t shape[1] = {n + ND_PRED_HEADER};
  int rc = nd_array_new(out, ND_F64, 1, shape);
  if (rc) return rc;
  double *d = nd_array_data_mut(*out);
  d[0] = 0;
  d[1] = 0;
  d[2] = NAN;
  d[3] = (double)n;
  *pred = d + ND_PRED_HEADER;
  return 0;
}

/* ============================================================ inputs and rows */

/* The models message of a failed call, for nd_op_fail. */
static const char *mmsg(int rc) {
  const char *m = nd_models_errmsg();
  return *m ? m : nd_strerror(rc);
}

static const nd_array *array_input(nd_op_ctx *ctx, size_t i, const char *what, int *rc) {
  const nd_array *a = nd_op_input(ctx, i);
  if (!a)
    *rc = nd_op_fail(ctx, ND_EINVAL, "input %zu (%s) must be an array, not a file", i, what);
  return a;
}

/* y (input i): 1-D f64 or f32, every value finite; a new f64 copy. */
static int read_target(nd_op_ctx *ctx, size_t i, double **y, size_t *n) {
  int rc = 0;
  const nd_array *a = array_input(ctx, i, "target", &rc);
  if (!a) return rc;
  nd_dtype dt = nd_array_dtype(a);
  if (nd_array_ndim(a) != 1 || (dt != ND_F64 && dt != ND_F32))
    return nd_op_fail(ctx, ND_EINVAL, "the target must be a 1-D f64 or f32 array, got %d-D %s",
                      nd_array_ndim(a), nd_dtype_name(dt));
  *n = nd_array_count(a);
  *y = nd_malloc((*n ? *n : 1) * sizeof **y);
  if (!*y) return nd_op_fail(ctx, ND_ENOMEM, "out of memory for the target");
  for (size_t r = 0; r < *n; r++) {
    double v = dt == ND_F64 ? ((const double *)nd_array_data(a))[r]
                            : (double)((const float *)nd_array_data(a))[r];
    if (!isfinite(v)) {
      nd_free(*y);
      *y = NULL;
      return nd_op_fail(ctx, ND_EINVAL, "the target is not finite at row %zu (%g)", r, v);
    }
    (*y)[r] = v;
  }
  return 0;
}

/* Element r of an integer-valued array as int64; -1 when it is not an
 * integer in the int64 range (*shown then holds it for the message). */
static int group_at(const nd_array *a, size_t r, int64_t *out, double *shown) {
  const void *d = nd_array_data(a);
  switch (nd_array_dtype(a)) {
  case ND_U8: *out = ((const uint8_t *)d)[r]; return 0;
  case ND_I8: *out = ((const int8_t *)d)[r]; return 0;
  case ND_U16: *out = ((const uint16_t *)d)[r]; return 0;
  case ND_I16: *out = ((const int16_t *)d)[r]; return 0;
  case ND_U32: *out = ((const uint32_t *)d)[r]; return 0;
  case ND_I32: *out = ((const int32_t *)d)[r]; return 0;
  case ND_I64: *out = ((const int64_t *)d)[r]; return 0;
  case ND_U64: {
    uint64_t v = ((const uint64_t *)d)[r];
    *shown = (double)v;
    if (v > (uint64_t)INT64_MAX) return -1;
    *out = (int64_t)v;
    return 0;
  }
  case ND_F32:
  case ND_F64: {
    double v = nd_array_dtype(a) == ND_F64 ? ((const double *)d)[r]
                                           : (double)((const float *)d)[r];
    *shown = v;
    /* +-2^63 bounds the int64 range; the upper one itself is out of it. */
    if (!(v == floor(v) && v >= -9223372036854775808.0 && v < 9223372036854775808.0))
      return -1;
    *out = (int64_t)v;
    return 0;
  }
  }
  return -1;
}

/* groups (input i): 1-D of n integer-valued numbers of any dtype, as int64. */
static int read_groups(nd_op_ctx *ctx, size_t i, size_t n, int64_t **g) {
  int rc = 0;
  const nd_array *a = array_input(ctx, i, "groups", &rc);
  if (!a) return rc;
  if (nd_array_ndim(a) != 1)
    return nd_op_fail(ctx, ND_EINVAL, "the groups must be a 1-D array, got %d-D",
                      nd_array_ndim(a));
  if (nd_array_count(a) != n)
    return nd_op_fail(ctx, ND_EINVAL, "the groups have %zu rows but the target has %zu",
                      nd_array_count(a), n);
  *g = nd_malloc((n ? n : 1) * sizeof **g);
  if (!*g) return nd_op_fail(ctx, ND_ENOMEM, "out of memory for the groups");
  for (size_t r = 0; r < n; r++) {
    double shown = 0;
    if (group_at(a, r, &(*g)[r], &shown) != 0) {
      nd_free(*g);
      *g = NULL;
      return nd_op_fail(ctx, ND_EINVAL, "the group of row %zu (%g) is not an integer", r,
                        shown);
    }
  }
  return 0;
}

/* X (input 0): 2-D f64 or f32 with n rows, every value finite. f64 is used
 * in place; f32 is converted once into *owned. */
static int read_features(nd_op_ctx *ctx, size_t n, nd_matview *X, double **owned) {
  int rc = 0;
  *owned = NULL;
  const nd_array *a = array_input(ctx, 0, "features", &rc);
  if (!a) return rc;
  nd_dtype dt = nd_array_dtype(a);
  if (nd_array_ndim(a) != 2 || (dt != ND_F64 && dt != ND_F32))
    return nd_op_fail(ctx, ND_EINVAL,
                      "the features must be a 2-D f64 or f32 array (rows = participants), "
                      "got %d-D %s",
                      nd_array_ndim(a), nd_dtype_name(dt));
  size_t rows = nd_array_dim(a, 0), cols = nd_array_dim(a, 1);
  if (rows != n)
    return nd_op_fail(ctx, ND_EINVAL, "the features have %zu rows but the target has %zu",
                      rows, n);
  if (cols == 0) return nd_op_fail(ctx, ND_EINVAL, "the features have no columns");
  const double *data = nd_array_data(a);
  if (dt == ND_F32) {
    size_t cells = nd_array_count(a);
    double *d = nd_malloc(cells * sizeof *d);
    if (!d) return nd_op_fail(ctx, ND_ENOMEM, "out of memory converting %zu features", cells);
    const float *f = nd_array_data(a);
    for (size_t i = 0; i < cells; i++) d[i] = (double)f[i];
    data = *owned = d;
  }
  for (size_t r = 0; r < rows; r++)
    for (size_t j = 0; j < cols; j++)
      if (!isfinite(data[r * cols + j])) {
        nd_free(*owned);
        *owned = NULL;
        return nd_op_fail(ctx, ND_EINVAL, "the features are not finite at row %zu, column %zu "
                                          "(%g)", r, j, data[r * cols + j]);
      }
  *X = (nd_matview){.data = data, .rows = rows, .cols = cols, .ld = cols};
  return 0;
}

/* The outer split of one fold: rows' folds, then its training and test rows
 * in ascending order. */
typedef struct split_rows {
  int32_t *fold;
  size_t *train, ntrain;
  size_t *test, ntest;
} split_rows;

static void rows_free(split_rows *s) {
  nd_free(s->fold);
  nd_free(s->train);
  nd_free(s->test);
  memset(s, 0, sizeof *s);
}

static int outer_rows(nd_op_ctx *ctx, const nd_cv *cv, int f, const double *y, size_t n,
                      const int64_t *groups, split_rows *s) {
  memset(s, 0, sizeof *s);
  s->fold = nd_malloc((n ? n : 1) * sizeof *s->fold);
  s->train = nd_malloc((n ? n : 1) * sizeof *s->train);
  s->test = nd_malloc((n ? n : 1) * sizeof *s->test);
  if (!s->fold || !s->train || !s->test) {
    rows_free(s);
    return nd_op_fail(ctx, ND_ENOMEM, "out of memory for the outer split of %zu rows", n);
  }
  nd__merr_clear();
  int rc = nd_cv_assign(cv, n, y, groups, s->fold);
  if (rc) {
    rows_free(s);
    return nd_op_fail(ctx, rc, "outer split: %s", mmsg(rc));
  }
  for (size_t r = 0; r < n; r++) {
    if (s->fold[r] == f) s->test[s->ntest++] = r;
    else s->train[s->ntrain++] = r;
  }
  if (s->ntest == 0 || s->ntrain == 0) {
    rows_free(s);
    return nd_op_fail(ctx, ND_EINVAL, "outer fold %d has %s", f,
                      s->ntest == 0 ? "no test rows" : "no training rows");
  }
  return 0;
}

/* The ensembles' inner folds over the training rows (in their order). */
static int inner_folds(nd_op_ctx *ctx, const nd_cv *cv, const split_rows *s, const double *y,
                       const int64_t *groups, int32_t **fold) {
  size_t n = s->ntrain;
  double *ytr = nd_malloc(n * sizeof *ytr);
  int64_t *gtr = groups ? nd_malloc(n * sizeof *gtr) : NULL;
  *fold = nd_malloc(n * sizeof **fold);
  int rc = 0;
  if (!ytr || (groups && !gtr) || !*fold) {
    rc = nd_op_fail(ctx, ND_ENOMEM, "out of memory for the inner split of %zu rows", n);
    goto out;
  }
  for (size_t r = 0; r < n; r++) {
    ytr[r] = y[s->train[r]];
    if (gtr) gtr[r] = groups[s->train[r]];
  }
  nd__merr_clear();
  rc = nd_cv_assign(cv, n, ytr, gtr, *fold);
  if (rc) rc = nd_op_fail(ctx, rc, "inner split of the outer training rows: %s", mmsg(rc));
out:
  nd_free(ytr);
  nd_free(gtr);
  if (rc) {
    nd_free(*fold);
    *fold = NULL;
  }
  return rc;
}

/* y, and groups when the params say they follow it (inputs 'at', 'at'+1).
 * n == 0 is refused: there is nothing to split. */
static int read_y_groups(nd_op_ctx *ctx, size_t at, bool with_groups, double **y, size_t *n,
                         int64_t **groups) {
  *groups = NULL;
  int rc = read_target(ctx, at, y, n);
  if (rc) return rc;
  if (*n == 0) rc = nd_op_fail(ctx, ND_EINVAL, "the target is empty");
  if (!rc && with_groups) rc = read_groups(ctx, at + 1, *n, groups);
  if (rc) {
    nd_free(*y);
    *y = NULL;
  }
  return rc;
}

/* ============================================================ nd.fit */

static int fit_run(nd_op_ctx *ctx, const nd__fit_cfg *c, nd_matview X, const double *y, size_t n,
                   const int64_t *groups) {
  split_rows s;
  int rc = outer_rows(ctx, &c->outer, c->outer_fold, y, n, groups, &s);
  if (rc) return rc;
  const size_t *fit = s.train, *eval = s.test;
  size_t nfit = s.ntrain, neval = s.ntest;
  int32_t *ifold = NULL;
  size_t *buf = NULL;
  if (c->inner_fold >= 0) {
    if ((rc = inner_folds(ctx, &c->split, &s, y, groups, &ifold))) goto out;
    buf = nd_malloc(2 * s.ntrain * sizeof *buf);
    if (!buf) {
      rc = nd_op_fail(ctx, ND_ENOMEM, "out of memory for the inner rows");
      goto out;
    }
    /* Training rows outside inner fold i are fitted; those inside are
     * predicted. Both stay in ascending row order. */
    size_t *fr = buf, *er = buf + s.ntrain, nf = 0, ne = 0;
    for (size_t r = 0; r < s.ntrain; r++) {
      if (ifold[r] == c->inner_fold) er[ne++] = s.train[r];
      else fr[nf++] = s.train[r];
    }
    if (ne == 0 || nf == 0) {
      rc = nd_op_fail(ctx, ND_EINVAL, "inner fold %d of outer fold %d has %s", c->inner_fold,
                      c->outer_fold, ne == 0 ? "no rows" : "all the training rows");
      goto out;
    }
    fit = fr;
    nfit = nf;
    eval = er;
    neval = ne;
  }
  nd_array *out = NULL;
  double *pred;
  if ((rc = pred_new(neval, &out, &pred))) {
    rc = nd_op_fail(ctx, rc, "cannot allocate %zu predictions", neval);
    goto out;
  }
  nd_search_result res = {0};
  nd__merr_clear();
  rc = nd_pipeline_fit_predict(&c->pl, X, y, groups, fit, nfit, eval, neval, pred, &res, NULL);
  if (rc) {
    nd_array_release(out);
    rc = nd_op_fail(ctx, rc, "%s", mmsg(rc));
    goto out;
  }
  double *d = nd_array_data_mut(out);
  d[0] = (double)res.best;
  d[1] = res.best < c->pl.ngrid ? c->pl.grid[res.best] : NAN;
  d[2] = res.best_score;
  rc = nd_op_set_output(ctx, out);
out:
  nd_free(buf);
  nd_free(ifold);
  rows_free(&s);
  return rc;
}

static int fit_fn(nd_op_ctx *ctx) {
  nd__fit_cfg *c = nd_calloc(1, sizeof *c);
  if (!c) return nd_op_fail(ctx, ND_ENOMEM, "out of memory");
  int rc = nd__fit_decode(ctx, c);
  double *y = NULL, *xbuf = NULL;
  int64_t *groups = NULL;
  size_t n = 0;
  if (!rc && nd_op_ninputs(ctx) != (c->groups ? 3u : 2u))
    rc = nd_op_fail(ctx, ND_EINVAL, "fit takes inputs X, y%s; got %zu inputs",
                    c->groups ? ", groups" : "", nd_op_ninputs(ctx));
  if (!rc) rc = read_y_groups(ctx, 1, c->groups, &y, &n, &groups);
  nd_matview X;
  if (!rc) rc = read_features(ctx, n, &X, &xbuf);
  if (!rc) rc = fit_run(ctx, c, X, y, n, groups);
  nd_free(xbuf);
  nd_free(y);
  nd_free(groups);
  nd_free(c);
  return rc;
}

const nd_op nd_op_fit = {.name = "nd.fit",
                         .version = ND__OP_FIT_VERSION,
                         .fn = fit_fn,
                         .mem_cost = ND__FIT_MEM_COST};

/* ============================================================ nd.ensemble */

/* Working arrays of one ensemble node. */
typedef struct ens_work {
  split_rows s;
  int32_t *ifold;        /* ntrain */
  size_t *count;         /* ninner: rows per inner fold */
  double *ytrain;        /* ntrain */
  double *oof;           /* nmembers x ntrain */
  const double **test;   /* nmembers */
  const double **oofp;   /* nmembers */
} ens_work;

static void ens_work_free(ens_work *w) {
  rows_free(&w->s);
  nd_free(w->ifold);
  nd_free(w->count);
  nd_free(w->ytrain);
  nd_free(w->oof);
  nd_free((void *)w->test);
  nd_free((void *)w->oofp);
}

/* Input i as a prediction value of exactly want predictions. */
static int member_input(nd_op_ctx *ctx, size_t i, size_t k, int inner, size_t want,
                        nd_pred_view *v) {
  char what[64];
  if (inner < 0) snprintf(what, sizeof what, "member %zu's full fit", k);
  else snprintf(what, sizeof what, "member %zu's inner fit %d", k, inner);
  int rc = 0;
  const nd_array *a = array_input(ctx, i, what, &rc);
  if (!a) return rc;
  nd__merr_clear();
  if ((rc = nd_pred_view_of(a, v)))
    return nd_op_fail(ctx, rc, "input %zu (%s): %s", i, what, mmsg(rc));
  if (v->n != want && inner < 0)
    return nd_op_fail(ctx, ND_EINVAL, "input %zu (%s) has %zu predictions but the outer fold "
                                      "has %zu test rows", i, what, v->n, want);
  if (v->n != want)
    return nd_op_fail(ctx, ND_EINVAL, "input %zu (%s) has %zu predictions but inner fold %d "
                                      "has %zu rows", i, what, v->n, inner, want);
  return 0;
}

/* Gather every member's test predictions and out-of-fold vector. */
static int ens_gather(nd_op_ctx *ctx, const nd__ens_cfg *c, size_t first, size_t nm, ens_work *w) {
  size_t ntrain = w->s.ntrain;
  for (size_t k = 0; k < nm; k++) {
    size_t base = first + k * (1 + (size_t)c->ninner);
    nd_pred_view v;
    int rc = member_input(ctx, base, k, -1, w->s.ntest, &v);
    if (rc) return rc;
    w->test[k] = v.pred;
    if (!c->ninner) continue;
    double *oof = w->oof + k * ntrain;
    w->oofp[k] = oof;
    for (uint32_t i = 0; i < c->ninner; i++) {
      if ((rc = member_input(ctx, base + 1 + i, k, (int)i, w->count[i], &v))) return rc;
      size_t at = 0;
      for (size_t r = 0; r < ntrain; r++)
        if (w->ifold[r] == (int32_t)i) oof[r] = v.pred[at++];
    }
  }
  return 0;
}

static int ens_alloc(nd_op_ctx *ctx, const nd__ens_cfg *c, size_t nm, ens_work *w) {
  size_t ntrain = w->s.ntrain, cells;
  w->test = nd_calloc(nm, sizeof *w->test);
  w->oofp = nd_calloc(nm, sizeof *w->oofp);
  w->ytrain = nd_malloc(ntrain * sizeof *w->ytrain);
  if (c->ninner) {
    w->count = nd_calloc(c->ninner, sizeof *w->count);
    w->oof = nd__mul_size(nm, ntrain, &cells) ? nd_malloc(cells * sizeof *w->oof) : NULL;
  }
  if (!w->test || !w->oofp || !w->ytrain || (c->ninner && (!w->count || !w->oof)))
    return nd_op_fail(ctx, ND_ENOMEM, "out of memory for %zu members", nm);
  return 0;
}

static int ens_run(nd_op_ctx *ctx, const nd__ens_cfg *c, const double *y, size_t n,
                   const int64_t *groups, size_t first, size_t nm) {
  ens_work w = {0};
  int rc = outer_rows(ctx, &c->outer, c->outer_fold, y, n, groups, &w.s);
  if (!rc) rc = ens_alloc(ctx, c, nm, &w);
  if (!rc && c->ninner) rc = inner_folds(ctx, &c->split, &w.s, y, groups, &w.ifold);
  if (rc) goto out;
  size_t ntrain = w.s.ntrain;
  for (size_t r = 0; r < ntrain; r++) {
    w.ytrain[r] = y[w.s.train[r]];
    if (c->ninner) {
      if (w.ifold[r] < 0 || (uint32_t)w.ifold[r] >= c->ninner) {
        rc = nd_op_fail(ctx, ND_EINVAL, "inner split: training row %zu has fold %d", r,
                        (int)w.ifold[r]);
        goto out;
      }
      w.count[w.ifold[r]]++;
    }
  }
  if ((rc = ens_gather(ctx, c, first, nm, &w))) goto out;
  nd_array *out = NULL;
  double *pred;
  if ((rc = pred_new(w.s.ntest, &out, &pred))) {
    rc = nd_op_fail(ctx, rc, "cannot allocate %zu predictions", w.s.ntest);
    goto out;
  }
  size_t chosen = 0;
  nd__merr_clear();
  rc = nd_ensemble_predict(&c->spec, nm, w.test, w.s.ntest, c->ninner ? w.oofp : NULL,
                           w.ytrain, w.ifold, ntrain, c->ninner, pred, &chosen);
  if (rc) {
    nd_array_release(out);
    rc = nd_op_fail(ctx, rc, "%s", mmsg(rc));
    goto out;
  }
  if (c->spec.kind == ND_ENS_GRID) {
    /* The header reports the score behind the choice: the same selection
     * nd_ensemble_predict made, repeated for its score (cheap next to the
     * fits: metrics over vectors already in memory). */
    double score;
    nd__merr_clear();
    if ((rc = nd__grid_choice(c->spec.metric, nm, w.oofp, w.ytrain, w.ifold, ntrain, c->ninner,
                              &chosen, &score))) {
      nd_array_release(out);
      rc = nd_op_fail(ctx, rc, "%s", mmsg(rc));
      goto out;
    }
    double *d = nd_array_data_mut(out);
    d[0] = (double)chosen;
    d[1] = (double)chosen;
    d[2] = score;
  }
  rc = nd_op_set_output(ctx, out);
out:
  ens_work_free(&w);
  return rc;
}

static int ensemble_fn(nd_op_ctx *ctx) {
  nd__ens_cfg *c = nd_calloc(1, sizeof *c);
  if (!c) return nd_op_fail(ctx, ND_ENOMEM, "out of memory");
  int rc = nd__ens_decode(ctx, c);
  double *y = NULL;
  int64_t *groups = NULL;
  size_t n = 0, first = c->groups ? 2 : 1, per = 1 + (size_t)c->ninner, nin = nd_op_ninputs(ctx);
  if (!rc && (nin <= first || (nin - first) % per != 0))
    rc = nd_op_fail(ctx, ND_EINVAL,
                    "ensemble takes inputs y%s, then per member its full fit and %u inner "
                    "fits; got %zu inputs",
                    c->groups ? ", groups" : "", c->ninner, nin);
  if (!rc) rc = read_y_groups(ctx, 0, c->groups, &y, &n, &groups);
  if (!rc) rc = ens_run(ctx, c, y, n, groups, first, (nin - first) / per);
  nd_free(y);
  nd_free(groups);
  nd_free(c);
  return rc;
}

const nd_op nd_op_ensemble = {.name = "nd.ensemble",
                              .version = ND__OP_ENSEMBLE_VERSION,
                              .fn = ensemble_fn};

/* ============================================================ nd.cv_score */

static int score_run(nd_op_ctx *ctx, const nd__score_cfg *c, const double *y, size_t n,
                     const int64_t *groups, size_t first) {
  uint32_t k = c->outer.k;
  split_rows s;
  int rc = outer_rows(ctx, &c->outer, 0, y, n, groups, &s);
  if (rc) return rc;
  nd_array *out = NULL;
  size_t shape[1] = {2 + (size_t)k + n};
  double *ybuf = nd_malloc(n * sizeof *ybuf);
  if (!ybuf || (rc = nd_array_new(&out, ND_F64, 1, shape))) {
    rc = nd_op_fail(ctx, ybuf ? rc : ND_ENOMEM, "out of memory for the scores");
    goto out;
  }
  double *d = nd_array_data_mut(out), *fm = d + 2, *oof = d + 2 + k;
  for (uint32_t f = 0; f < k; f++) {
    size_t m = 0;
    for (size_t r = 0; r < n; r++)
      if (s.fold[r] == (int32_t)f) ybuf[m++] = y[r];
    char what[32];
    snprintf(what, sizeof what, "outer fold %u", f);
    const nd_array *a = array_input(ctx, first + f, what, &rc);
    nd_pred_view v;
    if (!a) goto out;
    nd__merr_clear();
    if ((rc = nd_pred_view_of(a, &v))) {
      rc = nd_op_fail(ctx, rc, "input %zu (outer fold %u): %s", first + f, f, mmsg(rc));
      goto out;
    }
    if (v.n != m) {
      rc = nd_op_fail(ctx, ND_EINVAL, "input %zu (outer fold %u) has %zu predictions but the "
                                      "fold has %zu test rows", first + f, f, v.n, m);
      goto out;
    }
    size_t at = 0;
    for (size_t r = 0; r < n; r++)
      if (s.fold[r] == (int32_t)f) oof[r] = v.pred[at++];
    fm[f] = nd_metric_eval(c->metric, ybuf, v.pred, m);
  }
  double sum = 0, ss = 0;
  for (uint32_t f = 0; f < k; f++) sum += fm[f];
  d[0] = sum / k;
  for (uint32_t f = 0; f < k; f++) ss += (fm[f] - d[0]) * (fm[f] - d[0]);
  d[1] = sqrt(ss / k);
  rc = nd_op_set_output(ctx, out);
  out = NULL;
out:
  nd_array_release(out);
  nd_free(ybuf);
  rows_free(&s);
  return rc;
}

static int cv_score_fn(nd_op_ctx *ctx) {
  nd__score_cfg c = {0};
  int rc = nd__score_decode(ctx, &c);
  if (rc) return rc;
  size_t first = c.groups ? 2 : 1, nin = nd_op_ninputs(ctx);
  if (nin != first + c.outer.k)
    return nd_op_fail(ctx, ND_EINVAL, "cv_score takes inputs y%s and the %u folds' predictions; "
                                      "got %zu inputs",
                      c.groups ? ", groups" : "", c.outer.k, nin);
  double *y = NULL;
  int64_t *groups = NULL;
  size_t n = 0;
  rc = read_y_groups(ctx, 0, c.groups, &y, &n, &groups);
  if (!rc) rc = score_run(ctx, &c, y, n, groups, first);
  nd_free(y);
  nd_free(groups);
  return rc;
}

const nd_op nd_op_cv_score = {.name = "nd.cv_score",
                              .version = ND__OP_CV_SCORE_VERSION,
                              .fn = cv_score_fn};
