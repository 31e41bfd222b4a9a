/* STUB: replaced by the real implementation. */
#include <math.h>
#include "models/models_int.h"

int nd_ridge_path(nd_matview Xtr, const double *ytr, nd_matview Xte, const double *alphas,
                  size_t nalpha, double *pred) { return nd__merr(ND_EUNSUPPORTED, "not implemented"); }

int nd_ridge_fit(nd_matview X, const double *y, double alpha, double *coef,
                 double *intercept) { return nd__merr(ND_EUNSUPPORTED, "not implemented"); }

int nd_ridgecv_fit(nd_matview X, const double *y, const double *alphas, size_t nalpha,
                   double *coef, double *intercept, size_t *best) { return nd__merr(ND_EUNSUPPORTED, "not implemented"); }

