/* STUB: replaced by the real implementation. */
#include <math.h>
#include "models/models_int.h"

int nd_ensemble_predict(const nd_ensemble_spec *spec, size_t nmembers,
                        const double *const *test_pred, size_t m,
                        const double *const *oof_pred, const double *ytrain,
                        const int32_t *inner_fold, size_t ntrain, uint32_t ninner,
                        double *out, size_t *chosen) { return nd__merr(ND_EUNSUPPORTED, "not implemented"); }

