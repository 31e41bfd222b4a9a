/* STUB: replaced by the real implementation. */
#include <math.h>
#include "models/models_int.h"

int nd_scaler_fit(nd_scaling kind, nd_matview X, const size_t *rows, size_t nrows,
                  nd_constant_policy policy, double *center, double *scale,
                  size_t *nconstant) { return nd__merr(ND_EUNSUPPORTED, "not implemented"); }

void nd_scaler_apply(nd_matview X, const size_t *rows, size_t nrows, const double *center,
                     const double *scale, double *out) {}

