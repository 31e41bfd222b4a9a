/* Evaluation metrics, defined as scikit-learn 1.2 defines them (r2_score,
 * mean_absolute_error, scipy's pearsonr, roc_auc_score and
 * balanced_accuracy_score), returning NaN where those raise or warn that the
 * value is undefined: an empty or one-sample R², a constant side for Pearson,
 * one class for ROC AUC, labels that are not 0/1, NaN scores for the
 * classification metrics. Means are two-pass (mean first, then deviations
 * from it), so a large offset does not swamp the spread. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "models/models_int.h"

/* Probability above which a score predicts class 1 (balanced accuracy). */
#define ND__PROBA_THRESHOLD 0.5

static const char *const nd__metric_names[] = {
    [ND_METRIC_R2] = "r2",
    [ND_METRIC_MAE] = "mae",
    [ND_METRIC_PEARSON] = "pearson",
    [ND_METRIC_ROC_AUC] = "roc_auc",
    [ND_METRIC_BALANCED_ACC] = "balanced_accuracy",
};
#define ND__NMETRICS (sizeof nd__metric_names / sizeof nd__metric_names[0])

static double nd__mean(const double *x, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += x[i];
  return s / (double)n;
}

/* r2_score needs at least two samples; with force_finite a perfect fit is 1
 * even on a constant target, and any error on a constant target is 0. */
static double nd__r2(const double *y, const double *pred, size_t n) {
  if (n < 2)
    return NAN;
  double my = nd__mean(y, n);
  double ssres = 0.0, sstot = 0.0;
  for (size_t i = 0; i < n; i++) {
    double r = y[i] - pred[i], d = y[i] - my;
    ssres += r * r;
    sstot += d * d;
  }
  if (isnan(ssres) || isnan(sstot))
    return NAN;
  if (ssres == 0.0)
    return 1.0;
  if (sstot == 0.0)
    return 0.0;
  return 1.0 - ssres / sstot;
}

static double nd__mae(const double *y, const double *pred, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += fabs(y[i] - pred[i]);
  return s / (double)n;
}

static bool nd__constant(const double *x, size_t n) {
  for (size_t i = 1; i < n; i++)
    if (x[i] != x[0])
      return false;
  return true;
}

/* As scipy.stats.pearsonr: NaN for a constant side (exactly equal values)
 * or fewer than two samples; the product of the norms is formed as a product
 * of square roots so it cannot overflow, and r is clipped to [-1, 1]. */
static double nd__pearson(const double *y, const double *pred, size_t n) {
  if (n < 2 || nd__constant(y, n) || nd__constant(pred, n))
    return NAN;
  double my = nd__mean(y, n), mp = nd__mean(pred, n);
  double sxy = 0.0, sxx = 0.0, syy = 0.0;
  for (size_t i = 0; i < n; i++) {
    double dy = y[i] - my, dp = pred[i] - mp;
    sxy += dy * dp;
    syy += dy * dy;
    sxx += dp * dp;
  }
  double r = sxy / (sqrt(sxx) * sqrt(syy));
  if (r > 1.0)
    r = 1.0;
  else if (r < -1.0)
    r = -1.0;
  return r;
}

/* Labels must be exactly 0 or 1 and scores not NaN; counts the positives. */
static bool nd__binary_ok(const double *y, const double *score, size_t n, size_t *npos) {
  size_t p = 0;
  for (size_t i = 0; i < n; i++) {
    if (y[i] != 0.0 && y[i] != 1.0)
      return false;
    if (isnan(score[i]))
      return false;
    p += y[i] == 1.0;
  }
  *npos = p;
  return true;
}

typedef struct nd__scored {
  double score;
  int positive;
} nd__scored;

static int nd__scored_cmp(const void *a, const void *b) {
  double x = ((const nd__scored *)a)->score, y = ((const nd__scored *)b)->score;
  return (x > y) - (x < y);
}

/* ROC AUC as the Mann-Whitney statistic: sort by score, and every positive
 * beats each negative below it (1) and ties with each negative of equal
 * score (1/2). Doubling keeps the count an exact integer:
 * 2U = sum over tie blocks of pos * (2 * negatives_below + neg_in_block),
 * and AUC = 2U / (2 * npos * nneg), which is the trapezoidal area sklearn
 * computes. O(n log n). */
static double nd__roc_auc(const double *y, const double *score, size_t n) {
  size_t npos;
  if (!nd__binary_ok(y, score, n, &npos) || npos == 0 || npos == n)
    return NAN;
  size_t bytes;
  nd__scored *s = nd__mul_size(n, sizeof *s, &bytes) ? nd_malloc(bytes) : NULL;
  if (s == NULL) {
    nd__merr(ND_ENOMEM, "roc_auc: no memory to rank %zu scores", n);
    return NAN;
  }
  for (size_t i = 0; i < n; i++) s[i] = (nd__scored){score[i], y[i] == 1.0};
  qsort(s, n, sizeof *s, nd__scored_cmp);
  uint64_t twice_u = 0, neg_below = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    uint64_t pos = 0, neg = 0;
    for (; j < n && s[j].score == s[i].score; j++) {
      pos += (uint64_t)s[j].positive;
      neg += (uint64_t)!s[j].positive;
    }
    twice_u += pos * (2 * neg_below + neg);
    neg_below += neg;
    i = j;
  }
  nd_free(s);
  double nneg = (double)(n - npos);
  return (double)twice_u / (2.0 * (double)npos * nneg);
}

/* Mean recall over the classes present in y (sklearn drops a class with no
 * true samples, with a warning), predicting 1 when score > 0.5. */
static double nd__balanced_acc(const double *y, const double *score, size_t n) {
  size_t npos;
  if (!nd__binary_ok(y, score, n, &npos))
    return NAN;
  size_t hit[2] = {0, 0};
  for (size_t i = 0; i < n; i++) {
    int truth = y[i] == 1.0, guess = score[i] > ND__PROBA_THRESHOLD;
    hit[truth] += truth == guess;
  }
  size_t count[2] = {n - npos, npos};
  double sum = 0.0;
  int present = 0;
  for (int c = 0; c < 2; c++) {
    if (count[c] == 0)
      continue;
    sum += (double)hit[c] / (double)count[c];
    present++;
  }
  return sum / present; /* n > 0, so at least one class is present */
}

double nd_metric_eval(nd_metric m, const double *y, const double *pred, size_t n) {
  if (n == 0 || y == NULL || pred == NULL)
    return NAN;
  switch (m) {
  case ND_METRIC_R2:
    return nd__r2(y, pred, n);
  case ND_METRIC_MAE:
    return nd__mae(y, pred, n);
  case ND_METRIC_PEARSON:
    return nd__pearson(y, pred, n);
  case ND_METRIC_ROC_AUC:
    return nd__roc_auc(y, pred, n);
  case ND_METRIC_BALANCED_ACC:
    return nd__balanced_acc(y, pred, n);
  }
  return NAN;
}

double nd_metric_score(nd_metric m, const double *y, const double *pred, size_t n) {
  double v = nd_metric_eval(m, y, pred, n);
  return m == ND_METRIC_MAE ? -v : v;
}

const char *nd_metric_name(nd_metric m) {
  if ((unsigned)m >= ND__NMETRICS)
    return "unknown";
  return nd__metric_names[m];
}

int nd_metric_parse(const char *name, nd_metric *out) {
  if (name == NULL || out == NULL)
    return nd__merr(ND_EINVAL, "nd_metric_parse: NULL argument");
  for (size_t i = 0; i < ND__NMETRICS; i++) {
    if (strcmp(name, nd__metric_names[i]) == 0) {
      *out = (nd_metric)i;
      return ND_OK;
    }
  }
  return nd__merr(ND_EINVAL,
                  "unknown metric '%s' (expected r2, mae, pearson, roc_auc or "
                  "balanced_accuracy)",
                  name);
}
