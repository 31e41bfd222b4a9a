/* STUB: replaced by the real implementation. */
#include <math.h>
#include "models/models_int.h"

static int nd__fit_stub(nd_op_ctx *c) { return nd__merr(ND_EUNSUPPORTED, "not implemented"); }

const nd_op nd_op_fit = {.name = "nd.fit", .version = 1, .fn = nd__fit_stub};

const nd_op nd_op_ensemble = {.name = "nd.ensemble", .version = 1, .fn = nd__fit_stub};

const nd_op nd_op_cv_score = {.name = "nd.cv_score", .version = 1, .fn = nd__fit_stub};

int nd_pred_view_of(const nd_array *value, nd_pred_view *out) { return nd__merr(ND_EUNSUPPORTED, "not implemented"); }

int nd_fit_params(const nd_fit_spec *spec, bool groups, int outer_fold, int inner_fold,
                  void **out, size_t *len) { return nd__merr(ND_EUNSUPPORTED, "not implemented"); }

int nd_ensemble_params(const nd_ensemble_spec *spec, const nd_fit_spec *fit, bool groups,
                       int outer_fold, void **out, size_t *len) { return nd__merr(ND_EUNSUPPORTED, "not implemented"); }

int nd_cv_score_params(nd_metric metric, const nd_cv *outer, bool groups, void **out,
                       size_t *len) { return nd__merr(ND_EUNSUPPORTED, "not implemented"); }

int nd_experiment_add(nd_graph *g, const nd_experiment_spec *spec, int64_t y,
                      int64_t groups, const int64_t *sets,
                      const char *const *set_names, size_t nsets, nd_experiment_nodes *out) { return nd__merr(ND_EUNSUPPORTED, "not implemented"); }

void nd_experiment_nodes_free(nd_experiment_nodes *n) {}

