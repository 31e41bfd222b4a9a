/* Private interface between the models ops (ops.c) and their params
 * (op_params.c): the decoded settings of each op. Not installed. */
#ifndef NIDAG_MODELS_OPS_INT_H
#define NIDAG_MODELS_OPS_INT_H

#include "models/models_int.h"

#define ND__MAX_FOLDS 1000000 /* sanity bound on a split's k in params */

/* nd.fit: the pipeline (grid points into the struct), the outer split and,
 * for an inner fit, the ensembles' inner split. */
typedef struct nd__fit_cfg {
  nd_pipeline pl;
  nd_cv outer, split;
  int outer_fold, inner_fold; /* inner_fold -1: the full fit */
  bool groups;
  double grid[ND_MAX_GRID];
} nd__fit_cfg;

/* nd.ensemble: the strategy, the outer split and (GRID, STACK) the inner
 * split; meta_grid points into the struct. */
typedef struct nd__ens_cfg {
  nd_ensemble_spec spec;
  nd_cv outer, split;
  uint32_t ninner; /* inner-fit inputs per member: 0 for VOTE */
  int outer_fold;
  bool groups;
  double meta[ND_MAX_GRID];
} nd__ens_cfg;

/* nd.cv_score. */
typedef struct nd__score_cfg {
  nd_metric metric;
  nd_cv outer;
  bool groups;
} nd__score_cfg;

/* Decode the op's params into *c. On error the message is recorded on the
 * op (nd_op_fail) and the code returned. */
int nd__fit_decode(nd_op_ctx *ctx, nd__fit_cfg *c);
int nd__ens_decode(nd_op_ctx *ctx, nd__ens_cfg *c);
int nd__score_decode(nd_op_ctx *ctx, nd__score_cfg *c);

#endif
