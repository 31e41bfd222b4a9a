/* nidag models: scaling, ridge and logistic regression, metrics,
 * cross-validation splits, grid search (GridSearchCV semantics), ensembles
 * over parcellations, and the graph ops that make every fold fit a cached node.
 *
 * Semantics follow scikit-learn 1.2 (Debian 12's python3-sklearn) wherever it
 * defines them; scripts/models_reference.py writes the reference outputs the
 * tests compare against.
 *
 * Matrices are row-major float64: element (i, j) of an nd_matview is
 * data[i * ld + j]. Targets are float64: values for regression, 0/1 for
 * binary classification (any two distinct values are refused as "not 0/1").
 *
 * Errors: functions return 0 or a negative ND_E* code. The message of the
 * calling thread's last failure is in nd_models_errmsg(). Bad data (NaN/Inf,
 * a constant feature under ND_CONSTANT_ERROR, a single-class fold, fewer rows
 * than folds, mismatched row counts) is ND_EINVAL with a message naming the
 * row/column/fold; nothing aborts.
 */
#ifndef NIDAG_MODELS_H
#define NIDAG_MODELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nidag/core.h"
#include "nidag/graph.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The calling thread's last models error message ("" if none). */
const char *nd_models_errmsg(void);

typedef struct nd_matview {
  const double *data;
  size_t rows, cols;
  size_t ld; /* >= cols */
} nd_matview;

/* ------------------------------------------------------------ .npy files */

/* Load a NumPy .npy file (format 1.0, 2.0 or 3.0; C order; little-endian or
 * native dtypes f8, f4, i8, i4, i2, i1, u8, u4, u2, u1) as an nd_array of the
 * same type (ND_F64, ND_F32, ND_I64, ..., ND_U8). Errors: ND_EIO,
 * ND_EFORMAT (not .npy, malformed header, truncated or trailing data,
 * Fortran order, big-endian), ND_EUNSUPPORTED (dtype, more than ND_MAX_DIMS
 * dimensions), ND_EOVERFLOW (shape), ND_ENOMEM, each with a message naming
 * the file. */
int nd_npy_load(const char *path, nd_array **out);
/* Write a (format 1.0) .npy file. Errors: ND_EUNSUPPORTED (a dtype .npy
 * lacks), ND_EIO, each naming the file. */
int nd_npy_save(const char *path, const nd_array *a);

/* ---------------------------------------------------------------- metrics */

typedef enum nd_metric {
  ND_METRIC_R2 = 0,      /* sklearn r2_score: 1 - SSres/SStot; SStot == 0 gives
                            1 if SSres == 0 else 0 (force_finite) */
  ND_METRIC_MAE,         /* mean absolute error (lower is better) */
  ND_METRIC_PEARSON,     /* Pearson r; NaN when either side is constant */
  ND_METRIC_ROC_AUC,     /* area under the ROC curve of scores vs 0/1 labels,
                            ties counted 1/2 (Mann-Whitney); NaN with one class */
  ND_METRIC_BALANCED_ACC /* mean per-class recall of (score > 0.5) vs 0/1
                            labels (scores are probabilities) */
} nd_metric;

/* The metric's value. n == 0 gives NaN. */
double nd_metric_eval(nd_metric m, const double *y, const double *pred, size_t n);
/* Higher is better: the value, or minus it for MAE (sklearn's
 * neg_mean_absolute_error). Searches maximise this. */
double nd_metric_score(nd_metric m, const double *y, const double *pred, size_t n);
const char *nd_metric_name(nd_metric m); /* "r2", "mae", "pearson", "roc_auc", "balanced_accuracy" */
int nd_metric_parse(const char *name, nd_metric *out); /* ND_EINVAL for an unknown name */

/* ---------------------------------------------------------------- scaling */

typedef enum nd_scaling {
  ND_SCALE_NONE = 0,
  ND_SCALE_STANDARD, /* mean and population sd (sklearn StandardScaler) */
  ND_SCALE_ROBUST    /* median and the 5-95 % quantile range, linear
                        interpolation (sklearn RobustScaler(quantile_range=(5, 95))) */
} nd_scaling;

typedef enum nd_constant_policy {
  ND_CONSTANT_ERROR = 0, /* a feature constant on the training rows is an error */
  ND_CONSTANT_KEEP       /* as scikit-learn: its scale is 1 (the column becomes 0) */
} nd_constant_policy;

/* Fit on the given rows of X: center[j], scale[j] for each column (NONE gives
 * 0 and 1). A constant column (sklearn's test: var <= n*eps*var + (n*mean*eps)^2,
 * or a zero quantile range) follows the policy; *nconstant (may be NULL)
 * counts them. NaN/Inf in the rows is ND_EINVAL; finite values whose sum or
 * variance exceeds the double range are ND_ERANGE (STANDARD). */
int nd_scaler_fit(nd_scaling kind, nd_matview X, const size_t *rows, size_t nrows,
                  nd_constant_policy policy, double *center, double *scale,
                  size_t *nconstant);
/* out[r][j] = (X[rows[r]][j] - center[j]) / scale[j]; out is nrows x X.cols. */
void nd_scaler_apply(nd_matview X, const size_t *rows, size_t nrows, const double *center,
                     const double *scale, double *out);

/* ------------------------------------------------------------------ ridge */

/* Ridge regression with an unpenalised intercept (X and y centred on the
 * training rows, as sklearn Ridge(fit_intercept=True)), for many alphas from
 * one decomposition of the Gram matrix (primal when rows >= cols, kernel
 * otherwise). pred[a * Xte.rows + i] is the prediction for Xte row i under
 * alphas[a]. Alphas must be > 0. */
int nd_ridge_path(nd_matview Xtr, const double *ytr, nd_matview Xte, const double *alphas,
                  size_t nalpha, double *pred);
/* One alpha: coef[X.cols] and the intercept. */
int nd_ridge_fit(nd_matview X, const double *y, double alpha, double *coef,
                 double *intercept);
/* sklearn RidgeCV(alphas) with its default efficient leave-one-out (GCV)
 * selection: the alpha with the smallest mean squared LOO error (ties to the
 * first), then coef/intercept refitted with it. *best (may be NULL) gets its
 * index. */
int nd_ridgecv_fit(nd_matview X, const double *y, const double *alphas, size_t nalpha,
                   double *coef, double *intercept, size_t *best);

/* --------------------------------------------------------------- logistic */

/* L2-penalised binary logistic regression, sklearn LogisticRegression(C)
 * objective: C * sum(log-loss) + ||coef||^2 / 2, the intercept unpenalised.
 * Solved by Newton's method with a backtracking line search; it stops when
 * the largest gradient component is <= tol * max(1, C * n) (tol 0 means 1e-10)
 * or after max_iter iterations (0 means 100), which is ND_ERANGE ("did not
 * converge"). y must be 0/1 with both classes present. */
int nd_logistic_fit(nd_matview X, const double *y, double C, double tol, uint32_t max_iter,
                    double *coef, double *intercept);
/* P(y = 1) for each row of X. */
void nd_logistic_proba(nd_matview X, const double *coef, double intercept, double *proba);

/* ------------------------------------------------------- cross-validation */

typedef enum nd_cv_kind {
  ND_CV_KFOLD = 0,   /* sklearn KFold: contiguous folds, the first n % k one
                        row larger; shuffled: the same over a seeded permutation */
  ND_CV_STRATIFIED,  /* sklearn StratifiedKFold (unshuffled: its exact
                        allocation); shuffled: per-class seeded permutation */
  ND_CV_GROUP        /* K-fold over the unique group ids (sorted, then shuffled
                        when shuffle is set): each group lands in one fold */
} nd_cv_kind;

typedef struct nd_cv {
  nd_cv_kind kind;
  uint32_t k;     /* folds, >= 2 */
  bool shuffle;
  uint64_t seed;  /* used when shuffle is set: the nd_rng stream keyed {seed, 0}
                     (Philox; reproducible everywhere, not numpy's) */
} nd_cv;

/* fold[i] in [0, k) is the test fold of row i. y is needed for STRATIFIED
 * (class labels as doubles, any number of classes) and groups for GROUP;
 * either may be NULL otherwise. Errors (ND_EINVAL): k < 2, fewer rows (or
 * groups) than folds, STRATIFIED with no class of k rows, a fold left
 * empty, NaN/Inf labels; ND_ENOMEM. */
int nd_cv_assign(const nd_cv *cv, size_t n, const double *y, const int64_t *groups,
                 int32_t *fold);

/* ------------------------------------------------ pipelines with a search */

typedef enum nd_model {
  ND_MODEL_RIDGE = 0, /* regression; grid = alphas */
  ND_MODEL_LOGISTIC   /* binary classification; grid = Cs; predictions are P(y=1) */
} nd_model;

/* scale -> model, with GridSearchCV over grid on the inner folds: the
 * unweighted mean of the inner scores per candidate, NaN ranked worst, ties
 * to the first candidate, the winner refitted on all training rows. ngrid == 1
 * skips the search. */
typedef struct nd_pipeline {
  nd_scaling scaling;
  nd_constant_policy constant;
  nd_model model;
  const double *grid;
  size_t ngrid;        /* 1..ND_MAX_GRID */
  nd_metric scoring;   /* inner-search metric */
  nd_cv inner;         /* inner folds over the training rows (sklearn cv=3:
                          unshuffled KFold, or StratifiedKFold for classifiers) */
  double tol;          /* logistic (0: 1e-10) */
  uint32_t max_iter;   /* logistic (0: 100) */
} nd_pipeline;

#define ND_MAX_GRID 1024

typedef struct nd_search_result {
  size_t best;          /* index into grid */
  double best_score;    /* its mean inner score (NaN when ngrid == 1) */
} nd_search_result;

/* Fit the pipeline on X[train] (with the search) and predict X[eval].
 * mean_scores (may be NULL) gets the ngrid mean inner scores. groups (may be
 * NULL) is used by a GROUP inner split; the inner split sees the training rows
 * in the order given. */
int nd_pipeline_fit_predict(const nd_pipeline *pl, nd_matview X, const double *y,
                            const int64_t *groups, const size_t *train, size_t ntrain,
                            const size_t *eval, size_t neval, double *pred,
                            nd_search_result *res, double *mean_scores);

/* -------------------------------------------------------------- ensembles */

typedef enum nd_ensemble {
  ND_ENS_VOTE = 0, /* mean of the members' predictions (soft voting: of P(y=1)) */
  ND_ENS_GRID,     /* the member with the best mean inner-fold score (metric),
                      ties to the first, NaN worst; its full-training-set fit */
  ND_ENS_STACK     /* meta-model on the members' out-of-fold inner predictions:
                      RidgeCV(alphas) for regression, LogisticRegression(C) for
                      classification (sklearn Stacking*, cv = the inner folds) */
} nd_ensemble;

typedef struct nd_ensemble_spec {
  nd_ensemble kind;
  nd_model task;        /* RIDGE: regression, LOGISTIC: classification */
  nd_metric metric;     /* GRID's selection score */
  const double *meta_grid; /* STACK regression: RidgeCV alphas (NULL: sklearn's
                              0.1, 1, 10); classification: meta_grid[0] is C
                              (NULL: C = 1) */
  size_t nmeta;
  double tol;           /* meta logistic (0: 1e-10) */
} nd_ensemble_spec;

/* One outer fold. test_pred[s] (m values) are member s's predictions on the
 * outer test rows from its fit on all training rows; oof_pred[s] (ntrain
 * values, training-row order) are its out-of-fold predictions from its fits
 * on the inner folds; inner_fold[r] is training row r's inner fold (GRID
 * scores each fold then averages). ytrain is the training targets. out gets
 * m predictions; *chosen (may be NULL) the member GRID picked (else 0). */
int nd_ensemble_predict(const nd_ensemble_spec *spec, size_t nmembers,
                        const double *const *test_pred, size_t m,
                        const double *const *oof_pred, const double *ytrain,
                        const int32_t *inner_fold, size_t ntrain, uint32_t ninner,
                        double *out, size_t *chosen);

/* -------------------------------------------------------------- graph ops */

/* Values. A prediction value (from nd_op_fit and nd_op_ensemble) is a 1-D
 * f64 array: ND_PRED_HEADER header entries, then one prediction per
 * evaluated row in ascending row order:
 *   [0] chosen index (grid index of the fit; member index for GRID; else 0)
 *   [1] chosen value (alpha or C; member index)
 *   [2] score behind the choice (best mean inner score; NaN if none)
 *   [3] number of predictions that follow */
#define ND_PRED_HEADER 4

typedef struct nd_pred_view {
  size_t chosen;
  double chosen_value;
  double score;
  const double *pred;
  size_t n;
} nd_pred_view;

/* Check the layout (ND_EFORMAT when it is not a prediction value). */
int nd_pred_view_of(const nd_array *value, nd_pred_view *out);

/* Experiment description shared by the ops (encoded into their params). */
typedef struct nd_fit_spec {
  nd_pipeline pipeline;
  nd_cv outer;     /* outer folds over all rows */
  nd_cv inner;     /* inner folds over each outer training set (where the
                      ensembles' inner fits come from) */
} nd_fit_spec;

/* nd_op_fit: inputs X (2-D f32/f64, rows = participants), y (1-D f64/f32), and
 * optionally groups (1-D, integer-valued). Params (nd_params) from
 * nd_fit_params: the spec, "outer_fold" and "inner_fold" (-1: the fit on the
 * whole outer training set, predicting the outer test rows; i >= 0: the fit
 * on the outer training rows outside inner fold i, predicting inner fold i).
 * Output: a prediction value.
 *
 * Every op's params carry "groups" (0/1): whether a groups input follows y.
 *
 * nd_op_ensemble: inputs y, [groups], then for each member the full fit
 * node and its ninner inner-fold nodes (none for VOTE), all of the same outer
 * fold. Params from nd_ensemble_params. Output: a prediction value over the
 * outer test rows.
 *
 * nd_op_cv_score: inputs y, [groups], then the k outer folds' prediction
 * values (fit or ensemble). Params "metric", the outer cv. Output: 1-D f64 of
 * 2 + k + n: [mean, sd (population) over folds, the k fold metrics, the n
 * out-of-fold predictions in row order]. */
extern const nd_op nd_op_fit;
extern const nd_op nd_op_ensemble;
extern const nd_op nd_op_cv_score;

/* Encode params (caller frees *out with nd_free). */
int nd_fit_params(const nd_fit_spec *spec, bool groups, int outer_fold, int inner_fold,
                  void **out, size_t *len);
int nd_ensemble_params(const nd_ensemble_spec *spec, const nd_fit_spec *fit, bool groups,
                       int outer_fold, void **out, size_t *len);
int nd_cv_score_params(nd_metric metric, const nd_cv *outer, bool groups, void **out,
                       size_t *len);

/* Build a whole experiment over feature sets (parcellations): for every set
 * and outer fold the full fit and the inner fits, for every strategy and fold
 * the ensemble, and score nodes. Node ids go into out (free with
 * nd_experiment_nodes_free). groups may be -1. Equal fits across calls (and
 * pools) are the same nodes, so a run of a larger or smaller pool reuses them
 * from the cache. */
typedef struct nd_experiment_nodes {
  size_t nsets, nouter, ninner;
  int64_t *fit_full;    /* [s * nouter + f] */
  int64_t *fit_inner;   /* [(s * nouter + f) * ninner + i] */
  int64_t *set_score;   /* [s]: nd_op_cv_score of set s's full fits */
  int64_t *ens[3];      /* [strategy][f], strategy = nd_ensemble */
  int64_t ens_score[3]; /* nd_op_cv_score per strategy */
} nd_experiment_nodes;

typedef struct nd_experiment_spec {
  nd_fit_spec fit;
  nd_metric metric;      /* reported outer metric, and GRID's selection */
  const double *meta_grid; /* stacking meta-model (see nd_ensemble_spec) */
  size_t nmeta;
  bool ensembles;        /* false: per-set fits and scores only (no inner fits) */
} nd_experiment_spec;

int nd_experiment_add(nd_graph *g, const nd_experiment_spec *spec, int64_t y,
                      int64_t groups, const int64_t *sets,
                      const char *const *set_names, size_t nsets, nd_experiment_nodes *out);
void nd_experiment_nodes_free(nd_experiment_nodes *n);

/* ------------------------------------------------ features from images */

/* nd_op_stack_rows: inputs are participants' region values (nd_op_parcellate
 * of a 3D image: shape (1, R) or (R), f32/f64, the same R for all); output
 * the f64 matrix (participants, R'), row i from input i. Param "drop_empty"
 * (i64, default 1): drop region columns that are NaN for every participant
 * (regions empty on the image grid). A column NaN for some participants only,
 * or an infinite value, fails the node naming the input. */
extern const nd_op nd_op_stack_rows;

/* The parcellation half of an experiment, as nodes of g:
 *   per atlas: file -> nd.nifti_load -> nd.resample onto the grid image;
 *   per image: file -> nd.nifti_load ("load <id>"), then per atlas
 *   nd.parcellate ("parcellate <id> <atlas>", the "reduce" param) and per
 *   atlas nd.stack_rows over all images ("features <atlas>").
 * features[a] gets atlas a's feature-matrix node; loads (n, may be NULL) the
 * image loads; extractions (natlas x n, [a * n + i], may be NULL) the
 * parcellations. Unless cache_loads is set, loads are ND_OP_NO_CACHE (same
 * keys): the extractions are stored, the images are not copied into the
 * cache. */
typedef struct nd_features_spec {
  const char *const *images;      /* n paths (NIfTI, 3D) */
  const char *const *ids;         /* n participant ids for labels (NULL: the paths) */
  size_t n;
  const char *const *atlases;     /* natlas label-atlas paths */
  const char *const *atlas_names; /* for labels (NULL: the paths) */
  size_t natlas;
  const char *grid;               /* an image on the images' grid (NULL: images[0]) */
  const char *reduce;             /* nd_parcellate reduction (NULL: "mean") */
  bool cache_loads;
} nd_features_spec;

int nd_features_add(nd_graph *g, const nd_features_spec *spec, int64_t *features,
                    int64_t *loads, int64_t *extractions);

#ifdef __cplusplus
}
#endif
#endif /* NIDAG_MODELS_H */
