/* Ensembles over parcellations for one outer fold (nd_ensemble_predict).
 *
 * Every member (a parcellation's pipeline) arrives as two prediction
 * vectors: its fit on the whole outer training set, evaluated on the outer
 * test rows, and its out-of-fold predictions on the training rows from its
 * fits on the inner folds. The three strategies only combine those vectors,
 * which is why they are cheap next to the fits they share:
 *  - VOTE averages the test predictions (sklearn VotingRegressor, and
 *    VotingClassifier(voting="soft") on P(y=1));
 *  - GRID scores each member's out-of-fold predictions fold by fold, takes
 *    the member with the best mean (NaN worst, ties to the first) and returns
 *    its test predictions;
 *  - STACK fits a meta-model on the out-of-fold predictions (one feature per
 *    member) and applies it to the test predictions, as sklearn's
 *    Stacking{Regressor,Classifier}: RidgeCV(alphas) for regression,
 *    LogisticRegression(C) on P(y=1) for classification. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "models/models_int.h"

/* sklearn RidgeCV's default alphas, used when the spec gives none. */
const double nd__ridgecv_default_alphas[ND__RIDGECV_DEFAULT_N] = {0.1, 1.0, 10.0};

static void vote(size_t nmembers, const double *const *test_pred, size_t m, double *out) {
  for (size_t j = 0; j < m; j++) {
    double s = 0;
    for (size_t k = 0; k < nmembers; k++) s += test_pred[k][j];
    out[j] = s / (double)nmembers;
  }
}

/* Mean over the inner folds of the member's score on each fold's rows.
 * ybuf and pbuf hold ntrain values each. */
static double member_score(nd_metric metric, const double *oof, const double *ytrain,
                           const int32_t *inner_fold, size_t ntrain, uint32_t ninner,
                           double *ybuf, double *pbuf) {
  double sum = 0;
  for (uint32_t i = 0; i < ninner; i++) {
    size_t c = 0;
    for (size_t r = 0; r < ntrain; r++)
      if (inner_fold[r] == (int32_t)i) {
        ybuf[c] = ytrain[r];
        pbuf[c++] = oof[r];
      }
    sum += nd_metric_score(metric, ybuf, pbuf, c);
  }
  return sum / (double)ninner;
}

int nd__grid_choice(nd_metric metric, size_t nmembers, const double *const *oof_pred,
                    const double *ytrain, const int32_t *inner_fold, size_t ntrain,
                    uint32_t ninner, size_t *chosen, double *score) {
  size_t cells, bytes;
  double *buf = nd__mul_size(ntrain, 2, &cells) && nd__mul_size(cells, sizeof *buf, &bytes)
                    ? nd_malloc(bytes)
                    : NULL;
  if (!buf) return nd__merr(ND_ENOMEM, "out of memory scoring %zu training rows", ntrain);
  double best_score = NAN;
  size_t best = 0;
  for (size_t k = 0; k < nmembers; k++) {
    double s = member_score(metric, oof_pred[k], ytrain, inner_fold, ntrain, ninner, buf,
                            buf + ntrain);
    /* NaN is worst; a tie keeps the earlier member. */
    if (k == 0 || (!isnan(s) && (isnan(best_score) || s > best_score))) {
      best_score = s;
      best = k;
    }
  }
  nd_free(buf);
  *chosen = best;
  *score = best_score;
  return 0;
}

/* The meta-features: z[r * nmembers + k] = pred[k][r]. */
static double *meta_features(size_t nmembers, const double *const *pred, size_t rows) {
  size_t cells;
  if (!nd__mul_size(rows, nmembers, &cells)) return NULL;
  double *z = nd_malloc((cells ? cells : 1) * sizeof *z);
  if (!z) return NULL;
  for (size_t r = 0; r < rows; r++)
    for (size_t k = 0; k < nmembers; k++) z[r * nmembers + k] = pred[k][r];
  return z;
}

static int stack(const nd_ensemble_spec *spec, size_t nmembers,
                 const double *const *test_pred, size_t m, const double *const *oof_pred,
                 const double *ytrain, size_t ntrain, double *out) {
  for (size_t k = 0; k < nmembers; k++)
    for (size_t r = 0; r < ntrain; r++)
      if (!isfinite(oof_pred[k][r]))
        return nd__merr(ND_EINVAL,
                        "stacking: member %zu's out-of-fold prediction for training row %zu "
                        "is not finite",
                        k, r);
  double *z = meta_features(nmembers, oof_pred, ntrain);
  double *zt = meta_features(nmembers, test_pred, m);
  double *coef = nd_malloc(nmembers * sizeof *coef);
  int rc = 0;
  if (!z || !zt || !coef) {
    rc = nd__merr(ND_ENOMEM, "out of memory for the stacking meta-features");
    goto out;
  }
  nd_matview zv = {.data = z, .rows = ntrain, .cols = nmembers, .ld = nmembers};
  nd_matview ztv = {.data = zt, .rows = m, .cols = nmembers, .ld = nmembers};
  double intercept = 0;
  if (spec->task == ND_MODEL_RIDGE) {
    const double *alphas = spec->meta_grid && spec->nmeta ? spec->meta_grid
                                                          : nd__ridgecv_default_alphas;
    size_t nalpha = spec->meta_grid && spec->nmeta ? spec->nmeta : ND__RIDGECV_DEFAULT_N;
    rc = nd_ridgecv_fit(zv, ytrain, alphas, nalpha, coef, &intercept, NULL);
    if (rc) {
      rc = nd__merr_prefix(rc, "stacking meta-model (RidgeCV)");
      goto out;
    }
    /* X @ coef, then + intercept, as sklearn's linear predict. */
    for (size_t j = 0; j < m; j++) {
      double s = 0;
      for (size_t k = 0; k < nmembers; k++) s += zt[j * nmembers + k] * coef[k];
      out[j] = s + intercept;
    }
  } else {
    double C = spec->meta_grid && spec->nmeta ? spec->meta_grid[0] : ND__META_DEFAULT_C;
    rc = nd_logistic_fit(zv, ytrain, C, spec->tol, 0, coef, &intercept);
    if (rc) {
      rc = nd__merr_prefix(rc, "stacking meta-model (LogisticRegression)");
      goto out;
    }
    nd_logistic_proba(ztv, coef, intercept, out);
  }
out:
  nd_free(z);
  nd_free(zt);
  nd_free(coef);
  return rc;
}

/* Arguments every strategy needs, and the inner-fold ones GRID and STACK need. */
static int check_args(const nd_ensemble_spec *spec, size_t nmembers,
                      const double *const *test_pred, size_t m,
                      const double *const *oof_pred, const double *ytrain,
                      const int32_t *inner_fold, size_t ntrain, uint32_t ninner,
                      const double *out) {
  if (!spec) return nd__merr(ND_EINVAL, "ensemble: no spec");
  if ((unsigned)spec->kind > ND_ENS_STACK)
    return nd__merr(ND_EINVAL, "ensemble: unknown strategy %d", (int)spec->kind);
  if ((unsigned)spec->task > ND_MODEL_LOGISTIC)
    return nd__merr(ND_EINVAL, "ensemble: unknown task %d", (int)spec->task);
  if (nmembers == 0) return nd__merr(ND_EINVAL, "ensemble: no members");
  if (m > 0 && (!test_pred || !out))
    return nd__merr(ND_EINVAL, "ensemble: no test predictions or output");
  for (size_t k = 0; m > 0 && k < nmembers; k++)
    if (!test_pred[k])
      return nd__merr(ND_EINVAL, "ensemble: member %zu has no test predictions", k);
  if (spec->kind == ND_ENS_VOTE) return 0;
  if (spec->kind == ND_ENS_GRID && (unsigned)spec->metric > ND_METRIC_BALANCED_ACC)
    return nd__merr(ND_EINVAL, "ensemble: unknown metric %d", (int)spec->metric);
  if (spec->kind == ND_ENS_STACK && spec->meta_grid && spec->nmeta == 0)
    return nd__merr(ND_EINVAL, "ensemble: meta_grid given with nmeta 0");
  if (ntrain == 0 || !oof_pred || !ytrain || !inner_fold || ninner == 0)
    return nd__merr(ND_EINVAL, "ensemble: %s needs out-of-fold predictions over the "
                               "training rows and their inner folds",
                    spec->kind == ND_ENS_GRID ? "grid selection" : "stacking");
  for (size_t k = 0; k < nmembers; k++)
    if (!oof_pred[k])
      return nd__merr(ND_EINVAL, "ensemble: member %zu has no out-of-fold predictions", k);
  for (size_t r = 0; r < ntrain; r++) {
    if (inner_fold[r] < 0 || (uint32_t)inner_fold[r] >= ninner)
      return nd__merr(ND_EINVAL, "ensemble: training row %zu has inner fold %d, not in [0, %u)",
                      r, (int)inner_fold[r], ninner);
    if (!isfinite(ytrain[r]))
      return nd__merr(ND_EINVAL, "ensemble: the target of training row %zu is not finite", r);
  }
  return 0;
}

int nd_ensemble_predict(const nd_ensemble_spec *spec, size_t nmembers,
                        const double *const *test_pred, size_t m,
                        const double *const *oof_pred, const double *ytrain,
                        const int32_t *inner_fold, size_t ntrain, uint32_t ninner,
                        double *out, size_t *chosen) {
  if (chosen) *chosen = 0;
  int rc = check_args(spec, nmembers, test_pred, m, oof_pred, ytrain, inner_fold, ntrain,
                      ninner, out);
  if (rc) return rc;
  switch (spec->kind) {
  case ND_ENS_VOTE:
    vote(nmembers, test_pred, m, out);
    return 0;
  case ND_ENS_GRID: {
    size_t best = 0;
    double score;
    rc = nd__grid_choice(spec->metric, nmembers, oof_pred, ytrain, inner_fold, ntrain, ninner,
                         &best, &score);
    if (rc) return rc;
    if (m) memcpy(out, test_pred[best], m * sizeof *out);
    if (chosen) *chosen = best;
    return 0;
  }
  case ND_ENS_STACK:
    return stack(spec, nmembers, test_pred, m, oof_pred, ytrain, ntrain, out);
  }
  return nd__merr(ND_EINVAL, "ensemble: unknown strategy %d", (int)spec->kind);
}
