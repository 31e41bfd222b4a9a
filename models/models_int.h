/* Internal interface of the models layer (not installed). */
#ifndef NIDAG_MODELS_INT_H
#define NIDAG_MODELS_INT_H

#include <stdarg.h>

#include "common/core_int.h"
#include "nidag/models.h"

/* Record the calling thread's models error message (see nd_models_errmsg)
 * and return code, for `return nd__merr(ND_EINVAL, "...", ...)`. */
int nd__merr(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void nd__merr_clear(void);
/* Re-record the calling thread's message behind "prefix: " (its code's
 * name when there is no message) and return code. */
int nd__merr_prefix(int code, const char *prefix);

/* Defaults that the op params write out (op_params.c), so that "default"
 * and its value are one cache key, and that the estimators apply:
 * nd_logistic_fit's tol 0 and max_iter 0, and the stacking meta-models'
 * when a spec gives none (sklearn's RidgeCV alphas, LogisticRegression C). */
#define ND__LOGISTIC_DEFAULT_TOL 1e-10
#define ND__LOGISTIC_DEFAULT_MAX_ITER 100
#define ND__META_DEFAULT_C 1.0
#define ND__RIDGECV_DEFAULT_N 3
extern const double nd__ridgecv_default_alphas[ND__RIDGECV_DEFAULT_N]; /* ensemble.c */

/* The GRID ensemble's choice (ensemble.c): each member's score is the mean
 * over the ninner inner folds of nd_metric_score(metric) on that fold's
 * training rows (inner_fold[r] == i) of its out-of-fold predictions; the
 * best mean wins, NaN worst, ties to the first (all NaN: member 0). *chosen
 * gets its index and *score its mean. No argument checks (nd_ensemble_predict
 * and nd.ensemble validate first); 0 or ND_ENOMEM. */
int nd__grid_choice(nd_metric metric, size_t nmembers, const double *const *oof_pred,
                    const double *ytrain, const int32_t *inner_fold, size_t ntrain,
                    uint32_t ninner, size_t *chosen, double *score);

#endif
