/* nd.stack_rows: the feature matrix of one parcellation, from its
 * participants' region values.
 *
 * Each input is one participant's parcellation (nd_op_parcellate of a 3D
 * image: shape (1, R) or (R), f32 or f64); the output is the f64 matrix of
 * shape (participants, R'), row i from input i. A region that is empty on the
 * image grid (NaN, e.g. a small label lost when a 1 mm atlas is resampled
 * onto 2 mm) is empty for every participant of that grid; with the param
 * "drop_empty" = 1 (the default) such columns are dropped, so the fits never
 * see them; with 0 they fail the node. A column that is NaN for some participants only is data gone
 * wrong and fails the node, naming the first such participant. */
#include <math.h>
#include <string.h>

#include "models/models_int.h"

#define ND__OP_STACK_VERSION 1

static int region_count(const nd_array *a, size_t *r) {
  nd_dtype dt = nd_array_dtype(a);
  if (dt != ND_F32 && dt != ND_F64) return -1;
  int nd = nd_array_ndim(a);
  if (nd == 1) {
    *r = nd_array_dim(a, 0);
    return 0;
  }
  if (nd == 2 && nd_array_dim(a, 0) == 1) {
    *r = nd_array_dim(a, 1);
    return 0;
  }
  return -1;
}

static double value_at(const nd_array *a, size_t j) {
  return nd_array_dtype(a) == ND_F64 ? ((const double *)nd_array_data(a))[j]
                                     : (double)((const float *)nd_array_data(a))[j];
}

static int read_drop_empty(nd_op_ctx *ctx, bool *drop) {
  size_t len = 0;
  const void *bytes = nd_op_params(ctx, &len);
  *drop = true;
  if (len == 0) return 0;
  nd_params *p = NULL;
  int rc = nd_params_decode(bytes, len, &p);
  if (rc) return nd_op_fail(ctx, rc, "stack_rows: unreadable params");
  int64_t v = 1;
  rc = nd_params_get_i64(p, "drop_empty", &v);
  size_t count = nd_params_count(p);
  nd_params_free(p);
  if (rc == ND_ENOTFOUND && count == 0) return 0;
  if (rc || count != 1 || (v != 0 && v != 1))
    return nd_op_fail(ctx, ND_EINVAL, "stack_rows: the only param is \"drop_empty\" (0 or 1)");
  *drop = v == 1;
  return 0;
}

static int stack_fn(nd_op_ctx *ctx) {
  bool drop = true;
  int rc = read_drop_empty(ctx, &drop);
  if (rc) return rc;
  size_t n = nd_op_ninputs(ctx), regions = 0;
  if (n == 0) return nd_op_fail(ctx, ND_EINVAL, "stack_rows: no inputs");
  for (size_t i = 0; i < n; i++) {
    const nd_array *a = nd_op_input(ctx, i);
    size_t r = 0;
    if (!a || region_count(a, &r) != 0)
      return nd_op_fail(ctx, ND_EINVAL,
                        "stack_rows: input %zu is not one participant's region values "
                        "(a 1-D or 1-row f32/f64 array)", i);
    if (i == 0) regions = r;
    if (r != regions)
      return nd_op_fail(ctx, ND_EINVAL, "stack_rows: input %zu has %zu regions, input 0 has %zu",
                        i, r, regions);
  }
  /* keep[j]: column j is kept; a column is empty when every row is NaN */
  bool *keep = nd_calloc(regions ? regions : 1, sizeof *keep);
  if (!keep) return nd_op_fail(ctx, ND_ENOMEM, "stack_rows: out of memory");
  size_t kept = 0;
  for (size_t j = 0; j < regions; j++) {
    size_t nans = 0, first_nan = 0;
    for (size_t i = 0; i < n; i++) {
      double v = value_at(nd_op_input(ctx, i), j);
      if (isnan(v) && nans++ == 0) first_nan = i;
      if (isinf(v)) {
        nd_free(keep);
        return nd_op_fail(ctx, ND_EINVAL, "stack_rows: input %zu, region column %zu is infinite",
                          i, j);
      }
    }
    if (nans != 0 && nans != n) {
      nd_free(keep);
      return nd_op_fail(ctx, ND_EINVAL,
                        "stack_rows: region column %zu is empty (NaN) for input %zu but not for "
                        "all %zu inputs", j, first_nan, n);
    }
    if (nans != 0 && !drop) {
      nd_free(keep);
      return nd_op_fail(ctx, ND_EINVAL,
                        "stack_rows: region column %zu is empty (NaN) for all %zu inputs and "
                        "drop_empty is 0", j, n);
    }
    keep[j] = nans == 0;
    kept += keep[j];
  }
  if (kept == 0) {
    nd_free(keep);
    return nd_op_fail(ctx, ND_EINVAL, "stack_rows: every one of the %zu regions is empty", regions);
  }
  nd_array *out = NULL;
  size_t shape[2] = {n, kept};
  rc = nd_array_new(&out, ND_F64, 2, shape);
  if (rc) {
    nd_free(keep);
    return nd_op_fail(ctx, rc, "stack_rows: cannot allocate %zu x %zu", n, kept);
  }
  double *d = nd_array_data_mut(out);
  for (size_t i = 0; i < n; i++) {
    const nd_array *a = nd_op_input(ctx, i);
    for (size_t j = 0, c = 0; j < regions; j++)
      if (keep[j]) d[i * kept + c++] = value_at(a, j);
  }
  nd_free(keep);
  return nd_op_set_output(ctx, out);
}

const nd_op nd_op_stack_rows = {.name = "nd.stack_rows",
                                .version = ND__OP_STACK_VERSION,
                                .fn = stack_fn};
