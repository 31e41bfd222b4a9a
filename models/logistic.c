/* STUB: replaced by the real implementation. */
#include <math.h>
#include "models/models_int.h"

int nd_logistic_fit(nd_matview X, const double *y, double C, double tol, uint32_t max_iter,
                    double *coef, double *intercept) { return nd__merr(ND_EUNSUPPORTED, "not implemented"); }

void nd_logistic_proba(nd_matview X, const double *coef, double intercept, double *proba) {}

