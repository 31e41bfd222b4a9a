/* STUB: replaced by the real implementation. */
#include <math.h>
#include "models/models_int.h"

int nd_pipeline_fit_predict(const nd_pipeline *pl, nd_matview X, const double *y,
                            const int64_t *groups, const size_t *train, size_t ntrain,
                            const size_t *eval, size_t neval, double *pred,
                            nd_search_result *res, double *mean_scores) { return nd__merr(ND_EUNSUPPORTED, "not implemented"); }

