/* STUB: replaced by the real implementation. */
#include <math.h>
#include "models/models_int.h"

int nd_cv_assign(const nd_cv *cv, size_t n, const double *y, const int64_t *groups,
                 int32_t *fold) { return nd__merr(ND_EUNSUPPORTED, "not implemented"); }

