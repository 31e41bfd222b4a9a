/* STUB: replaced by the real implementation. */
#include <math.h>
#include "models/models_int.h"

double nd_metric_eval(nd_metric m, const double *y, const double *pred, size_t n) { return NAN; }

double nd_metric_score(nd_metric m, const double *y, const double *pred, size_t n) { return NAN; }

const char *nd_metric_name(nd_metric m) { return "?"; }

int nd_metric_parse(const char *name, nd_metric *out) { return nd__merr(ND_EUNSUPPORTED, "not implemented"); }

