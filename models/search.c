/* scale -> model pipelines with a grid search, as scikit-learn's
 * GridSearchCV(Pipeline([scaler, Ridge | LogisticRegression]), cv=inner)
 * fitted on X[train] and predicting X[eval] (nd_pipeline_fit_predict).
 *
 * The inner split is over the training rows in the order given. In each
 * inner fold the scaler is fitted on the inner training rows and both sides
 * are scaled; ridge then scores every alpha from one decomposition
 * (nd__ridge_path_ws), logistic regression fits every C. The candidates'
 * scores are averaged over the folds without weights; the best mean wins,
 * NaN ranks last and ties go to the first candidate (sklearn's rank "min"
 * then argmin). The winner is refitted on all training rows, its scaler
 * included.
 *
 * All scratch comes from one allocation per call, sized for the largest
 * fold, and the data are checked once up front; the fits below run on
 * contiguous gathered rows. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "models/fit_int.h"

/* Scratch for one call, carved from one block. */
typedef struct search_ws {
  void *block;
  size_t p;
  double *ytr;     /* y[train] */
  int64_t *gtr;    /* groups[train] or NULL */
  size_t *rows_a;  /* X rows of the current (inner) training side */
  size_t *rows_b;  /* X rows of the current test side (or the eval rows) */
  double *ya, *yb; /* their targets */
  double *center, *scale, *coef;
  double *shift;   /* what the gather subtracts (see scale_sides) */
  double *Za, *Zb; /* scaled rows: training side, test side */
  double *pred;    /* ngrid x (largest inner test fold) */
  double *scores;  /* ngrid x k */
  double *mean;    /* ngrid */
  double *work;    /* the estimator's */
  double *K;       /* logistic: the Gram of a dual fit, shared by every C */
  int32_t *fold;   /* inner fold of each training row */
} search_ws;

/* Byte layout: doubles first, then size_t and int64 (all 8-byte), then the
 * int32 folds. */
static int ws_alloc(search_ws *ws, const nd_pipeline *pl, size_t p, size_t ntrain,
                    size_t neval, bool groups) {
  size_t k = pl->ngrid > 1 ? pl->inner.k : 1;
  size_t side = ntrain > neval ? ntrain : neval, np, pg, sk, nw, nk = 0;
  if (pl->model == ND_MODEL_RIDGE) {
    nw = nd__ridge_work(ntrain, p, pl->ngrid);
  } else { /* the Gram of a dual fit (n < p): at most min(ntrain, p)^2 */
    nw = nd__logistic_work(ntrain, p);
    nk = ntrain < p ? ntrain * ntrain : p * p;
  }
  if (nw == 0 || !nd__mul_size(side, p, &np) || !nd__mul_size(pl->ngrid, ntrain, &pg) ||
      !nd__mul_size(pl->ngrid, k, &sk))
    return nd__merr(ND_EOVERFLOW, "nd_pipeline_fit_predict: problem too large");
  size_t sizes[] = {ntrain * 3 + 4 * p, 2 * np, pg, sk + pl->ngrid, nw, nk,
                    ntrain + side + (groups ? ntrain : 0)};
  size_t tot = 0, t;
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
    if (!nd__add_size(tot, sizes[i], &tot))
      return nd__merr(ND_EOVERFLOW, "nd_pipeline_fit_predict: problem too large");
  if (!nd__mul_size(tot, 8, &tot) || !nd__mul_size(ntrain, sizeof(int32_t), &t) ||
      !nd__add_size(tot, t, &tot))
    return nd__merr(ND_EOVERFLOW, "nd_pipeline_fit_predict: problem too large");
  double *d = nd_malloc(tot);
  if (!d) return nd__merr(ND_ENOMEM, "nd_pipeline_fit_predict: out of memory");
  ws->block = d;
  ws->p = p;
  ws->ytr = d, d += ntrain;
  ws->ya = d, d += ntrain;
  ws->yb = d, d += ntrain;
  ws->center = d, d += p;
  ws->scale = d, d += p;
  ws->coef = d, d += p;
  ws->shift = d, d += p;
  ws->Za = d, d += np;
  ws->Zb = d, d += np;
  ws->pred = d, d += pg;
  ws->scores = d, d += sk;
  ws->mean = d, d += pl->ngrid;
  ws->work = d, d += nw;
  ws->K = d, d += nk;
  ws->rows_a = (size_t *)d, d += ntrain;
  ws->rows_b = (size_t *)d, d += side;
  ws->gtr = groups ? (int64_t *)d : NULL, d += groups ? ntrain : 0;
  ws->fold = (int32_t *)d;
  return 0;
}

static int check_y01(const double *y, const size_t *train, size_t ntrain) {
  size_t ones = 0;
  for (size_t r = 0; r < ntrain; r++) {
    double v = y[train[r]];
    if (v != 0.0 && v != 1.0)
      return nd__merr(ND_EINVAL, "nd_pipeline_fit_predict: y[%zu] = %g is not 0/1", train[r],
                      v);
    ones += v == 1.0;
  }
  if (ones == 0 || ones == ntrain)
    return nd__merr(ND_EINVAL, "nd_pipeline_fit_predict: a single class (all %d) in the "
                    "training rows", ones ? 1 : 0);
  return 0;
}

static int check_rows(const size_t *rows, size_t n, size_t nrows, const char *what) {
  for (size_t r = 0; r < n; r++)
    if (rows[r] >= nrows)
      return nd__merr(ND_EINVAL, "nd_pipeline_fit_predict: %s[%zu] = %zu is not a row of X "
                      "(%zu rows)", what, r, rows[r], nrows);
  return 0;
}

static int check_args(const nd_pipeline *pl, nd_matview X, const double *y,
                      const int64_t *groups, const size_t *train, size_t ntrain,
                      const size_t *eval, size_t neval, const double *pred,
                      const nd_search_result *res) {
  static const char fn[] = "nd_pipeline_fit_predict";
  if (!pl || !y || !res || !X.data || (!train && ntrain) || (neval && (!eval || !pred)))
    return nd__merr(ND_EINVAL, "%s: NULL argument", fn);
  if (pl->model != ND_MODEL_RIDGE && pl->model != ND_MODEL_LOGISTIC)
    return nd__merr(ND_EINVAL, "%s: unknown model %d", fn, (int)pl->model);
  if (X.cols == 0 || X.ld < X.cols || X.cols > ND__FIT_DIM_MAX)
    return nd__merr(ND_EINVAL, "%s: bad X shape (%zu columns, leading dimension %zu)", fn,
                    X.cols, X.ld);
  if (pl->ngrid == 0 || pl->ngrid > ND_MAX_GRID || !pl->grid)
    return nd__merr(ND_EINVAL, "%s: the grid holds %zu values (1..%d)", fn, pl->ngrid,
                    ND_MAX_GRID);
  for (size_t c = 0; c < pl->ngrid; c++)
    if (!(pl->grid[c] > 0) || !isfinite(pl->grid[c]))
      return nd__merr(ND_EINVAL, "%s: grid[%zu] = %g is not a finite value > 0", fn, c,
                      pl->grid[c]);
  if (!(pl->tol >= 0) || !isfinite(pl->tol))
    return nd__merr(ND_EINVAL, "%s: tol = %g is not a finite value >= 0", fn, pl->tol);
  if (ntrain == 0 || ntrain > ND__FIT_DIM_MAX)
    return nd__merr(ND_EINVAL, "%s: %zu training rows", fn, ntrain);
  if (pl->ngrid > 1 && ntrain < pl->inner.k)
    return nd__merr(ND_EINVAL, "%s: %zu training rows are fewer than the %u inner folds", fn,
                    ntrain, (unsigned)pl->inner.k);
  if (pl->ngrid > 1 && (unsigned)pl->scoring > ND_METRIC_BALANCED_ACC)
    return nd__merr(ND_EINVAL, "%s: unknown scoring metric %d", fn, (int)pl->scoring);
  if (pl->ngrid > 1 && pl->inner.kind == ND_CV_GROUP && !groups)
    return nd__merr(ND_EINVAL, "%s: a GROUP inner split without groups", fn);
  int rc = check_rows(train, ntrain, X.rows, "train");
  if (!rc) rc = check_rows(eval, neval, X.rows, "eval");
  if (!rc) rc = nd__check_finite_rows(X, train, ntrain, "X");
  if (!rc) rc = nd__check_finite_rows(X, eval, neval, "X");
  if (rc) return rc;
  for (size_t r = 0; r < ntrain; r++)
    if (!isfinite(y[train[r]]))
      return nd__merr(ND_EINVAL, "%s: y[%zu] is not finite (%g)", fn, train[r], y[train[r]]);
  return pl->model == ND_MODEL_LOGISTIC ? check_y01(y, train, ntrain) : 0;
}

/* out[r] = (X[rows[r]] - center) * rscale: nd_scaler_apply with the
 * division by the scale turned into a multiplication by its reciprocal
 * (at most an ulp apart), fused with the gather. The division was a tenth
 * of a whole search on the widest feature sets. */
static void gather_scaled(nd_matview X, const size_t *rows, size_t n, const double *center,
                          const double *rscale, double *out) {
  size_t p = X.cols;
  for (size_t r = 0; r < n; r++) {
    const double *restrict x = X.data + rows[r] * X.ld;
    double *restrict o = out + r * p;
    for (size_t j = 0; j < p; j++) o[j] = (x[j] - center[j]) * rscale[j];
  }
}

/* The mean of X's rows (in order, as the scalers sum). */
static void row_mean(nd_matview X, const size_t *rows, size_t n, double *mean) {
  size_t p = X.cols;
  memset(mean, 0, p * sizeof *mean);
  for (size_t r = 0; r < n; r++) {
    const double *restrict x = X.data + rows[r] * X.ld;
    for (size_t j = 0; j < p; j++) mean[j] += x[j];
  }
  for (size_t j = 0; j < p; j++) mean[j] /= (double)n;
}

/* Fit the scaler on rows_a (na of them) and scale rows_a into Za and rows_b
 * into Zb. For ridge the gather also centres: ridge re-centres the scaled
 * training rows anyway, and (x - c)/s minus its mean is (x - mean)/s, so
 * both sides are shifted by the raw training mean instead of the scaler's
 * centre (the same thing for standard scaling) and the fit skips its own
 * centring pass. */
static int scale_sides(const nd_pipeline *pl, nd_matview X, search_ws *ws, size_t na,
                       size_t nb, const char *where) {
  int rc = nd_scaler_fit(pl->scaling, X, ws->rows_a, na, pl->constant, ws->center, ws->scale,
                         NULL);
  if (rc) return nd__merr_prefix(rc, where);
  for (size_t j = 0; j < ws->p; j++) ws->scale[j] = 1.0 / ws->scale[j];
  const double *shift = ws->center;
  if (pl->model == ND_MODEL_RIDGE && pl->scaling != ND_SCALE_STANDARD) {
    row_mean(X, ws->rows_a, na, ws->shift);
    shift = ws->shift;
  }
  gather_scaled(X, ws->rows_a, na, shift, ws->scale, ws->Za);
  gather_scaled(X, ws->rows_b, nb, shift, ws->scale, ws->Zb);
  return 0;
}

static bool single_class(const double *y, size_t n) {
  for (size_t i = 1; i < n; i++)
    if (y[i] != y[0]) return false;
  return true;
}

/* The Gram matrix a dual logistic fit on A needs (NULL for a primal one). */
static const double *logistic_gram(nd_matview A, search_ws *ws) {
  if (!nd__logistic_dual(A.rows, A.cols)) return NULL;
  nd__logistic_gram(A, ws->K);
  return ws->K;
}

/* Predictions of every candidate for one inner fold: pred[c * nb + i].
 * Logistic regression is scored on P(y=1), except ROC AUC: sklearn's
 * roc_auc scorer ranks decision_function values, and the sigmoid would
 * turn large ones into ties at exactly 0 or 1 (a separable fold with a
 * large C then scored differently). */
static int fold_predictions(const nd_pipeline *pl, search_ws *ws, size_t na, size_t nb,
                            unsigned f) {
  size_t p = ws->p;
  if (pl->model == ND_MODEL_RIDGE) {
    int rc = nd__ridge_path_ws(ws->Za, na, p, true, ws->ya, ws->Zb, p, nb, pl->grid, pl->ngrid,
                               ws->pred, ws->work);
    if (rc) {
      char where[48];
      snprintf(where, sizeof where, "inner fold %u", f);
      return nd__merr_prefix(rc, where);
    }
    return 0;
  }
  nd_matview A = {ws->Za, na, p, p}, B = {ws->Zb, nb, p, p};
  const double *K = logistic_gram(A, ws);
  for (size_t c = 0; c < pl->ngrid; c++) {
    double b;
    int rc = nd__logistic_fit_ws(A, ws->ya, pl->grid[c], pl->tol, pl->max_iter, K, ws->coef,
                                 &b, ws->work);
    if (rc) {
      char where[48];
      snprintf(where, sizeof where, "inner fold %u, C = %g", f, pl->grid[c]);
      return nd__merr_prefix(rc, where);
    }
    double *out = ws->pred + c * nb;
    if (pl->scoring == ND_METRIC_ROC_AUC) { /* sklearn ranks decision_function */
      cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)nb, (int)p, 1.0, B.data, (int)p, ws->coef,
                  1, 0.0, out, 1);
      for (size_t i = 0; i < nb; i++) out[i] += b;
    } else {
      nd_logistic_proba(B, ws->coef, b, out);
    }
  }
  return 0;
}

/* The inner search: ws->mean[c] = mean over folds of candidate c's score. */
static int inner_search(const nd_pipeline *pl, nd_matview X, const int64_t *groups,
                        const size_t *train, size_t ntrain, search_ws *ws) {
  size_t k = pl->inner.k, ngrid = pl->ngrid;
  if (ws->gtr)
    for (size_t r = 0; r < ntrain; r++) ws->gtr[r] = groups[train[r]];
  int rc = nd_cv_assign(&pl->inner, ntrain, ws->ytr, ws->gtr, ws->fold);
  if (rc) return nd__merr_prefix(rc, "inner split");
  for (unsigned f = 0; f < k; f++) {
    size_t na = 0, nb = 0;
    for (size_t r = 0; r < ntrain; r++) {
      if (ws->fold[r] == (int32_t)f) {
        ws->rows_b[nb] = train[r];
        ws->yb[nb++] = ws->ytr[r];
      } else {
        ws->rows_a[na] = train[r];
        ws->ya[na++] = ws->ytr[r];
      }
    }
    if (na == 0 || nb == 0)
      return nd__merr(ND_EINVAL, "nd_pipeline_fit_predict: inner fold %u is empty", f);
    if (pl->model == ND_MODEL_LOGISTIC && single_class(ws->ya, na))
      return nd__merr(ND_EINVAL, "nd_pipeline_fit_predict: inner fold %u training rows hold "
                      "a single class (all %g)", f, ws->ya[0]);
    char where[32];
    snprintf(where, sizeof where, "inner fold %u", f);
    if ((rc = scale_sides(pl, X, ws, na, nb, where)) != 0) return rc;
    if ((rc = fold_predictions(pl, ws, na, nb, f)) != 0) return rc;
    for (size_t c = 0; c < ngrid; c++)
      ws->scores[c * k + f] = nd_metric_score(pl->scoring, ws->yb, ws->pred + c * nb, nb);
  }
  for (size_t c = 0; c < ngrid; c++) {
    double s = 0;
    for (size_t f = 0; f < k; f++) s += ws->scores[c * k + f];
    ws->mean[c] = s / (double)k;
  }
  return 0;
}

/* The best mean: NaN last, ties to the first; all NaN gives 0. */
static size_t pick_best(const double *mean, size_t n) {
  size_t best = 0;
  bool found = false;
  for (size_t c = 0; c < n; c++)
    if (!isnan(mean[c]) && (!found || mean[c] > mean[best])) best = c, found = true;
  return best;
}

/* Refit on all training rows with grid value v and predict the eval rows. */
static int refit_predict(const nd_pipeline *pl, nd_matview X, const size_t *train,
                         size_t ntrain, const size_t *eval, size_t neval, double v,
                         search_ws *ws, double *pred) {
  size_t p = ws->p;
  memcpy(ws->rows_a, train, ntrain * sizeof *train);
  if (neval) memcpy(ws->rows_b, eval, neval * sizeof *eval);
  int rc = scale_sides(pl, X, ws, ntrain, neval, "training rows");
  if (rc) return rc;
  double b;
  if (pl->model == ND_MODEL_RIDGE) {
    rc = nd__ridge_fit_ws(ws->Za, ntrain, p, true, ws->ytr, v, ws->coef, &b, ws->work);
    if (rc) return nd__merr_prefix(rc, "refit");
    if (neval) {
      cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)neval, (int)p, 1.0, ws->Zb, (int)p,
                  ws->coef, 1, 0.0, pred, 1);
      for (size_t i = 0; i < neval; i++) pred[i] += b;
    }
    return 0;
  }
  nd_matview A = {ws->Za, ntrain, p, p}, B = {ws->Zb, neval, p, p};
  rc = nd__logistic_fit_ws(A, ws->ytr, v, pl->tol, pl->max_iter, logistic_gram(A, ws),
                           ws->coef, &b, ws->work);
  if (rc) return nd__merr_prefix(rc, "refit");
  nd_logistic_proba(B, ws->coef, b, pred);
  return 0;
}

int nd_pipeline_fit_predict(const nd_pipeline *pl, nd_matview X, const double *y,
                            const int64_t *groups, const size_t *train, size_t ntrain,
                            const size_t *eval, size_t neval, double *pred,
                            nd_search_result *res, double *mean_scores) {
  int rc = check_args(pl, X, y, groups, train, ntrain, eval, neval, pred, res);
  if (rc) return rc;
  search_ws ws;
  bool use_groups = pl->ngrid > 1 && groups != NULL;
  if ((rc = ws_alloc(&ws, pl, X.cols, ntrain, neval, use_groups)) != 0) return rc;
  for (size_t r = 0; r < ntrain; r++) ws.ytr[r] = y[train[r]];
  size_t best = 0;
  if (pl->ngrid > 1) {
    rc = inner_search(pl, X, groups, train, ntrain, &ws);
    if (rc) goto done;
    best = pick_best(ws.mean, pl->ngrid);
  }
  rc = refit_predict(pl, X, train, ntrain, eval, neval, pl->grid[best], &ws, pred);
  if (rc) goto done;
  res->best = best;
  res->best_score = pl->ngrid > 1 ? ws.mean[best] : NAN;
  if (mean_scores)
    for (size_t c = 0; c < pl->ngrid; c++)
      mean_scores[c] = pl->ngrid > 1 ? ws.mean[c] : NAN;
done:
  nd_free(ws.block);
  return rc;
}
