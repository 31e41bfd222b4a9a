/* Parcellation: one value per region (column) and volume (row).
 *
 * Label atlases: one pass over the voxels validates the atlas and cuts it
 * into runs of equal labels (nd__atlas_runs, atlas.c); everything after
 * works on the runs, far fewer than the voxels. Each run's label maps to its
 * column (a direct lookup table for labels below 2^20, else a binary
 * search), the mask splits runs, and mean and sum walk the runs (see "by
 * runs" below); the other reductions expand them into per-column voxel
 * lists in voxel order (CSR).
 * Probabilistic atlases: one list of (voxel, weight) per map, voxels with a
 * non-zero weight only. The output cells (t, column) are then computed in
 * parallel over the flattened cell range (row-major: consecutive cells share
 * a volume); each cell is computed by exactly one task, summing in double in
 * voxel order, so results do not depend on threads or scheduling.
 *
 * Reductions follow numpy/scipy.ndimage: median averages the two middle
 * values for an even count; std and variance divide by n (two passes: the
 * mean, then the squared deviations). A NaN among the values gives NaN for
 * every reduction. Empty columns are NaN and flagged. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "neuro/parc_int.h"
#include "nidag/runtime.h"

static const char *const nd__reduce_names[] = {"mean", "median", "sum", "min",
                                               "max",  "std",    "variance"};
#define ND__NREDUCE (sizeof nd__reduce_names / sizeof nd__reduce_names[0])

const char *nd_reduce_fn_name(nd_reduce_fn f) {
  if ((unsigned)f >= ND__NREDUCE) return "invalid";
  return nd__reduce_names[f];
}

int nd_reduce_fn_parse(const char *name, nd_reduce_fn *out) {
  nd__nerr_clear();
  if (!name || !out) return nd__nerr(ND_EINVAL, "reduce: NULL %s", name ? "output" : "name");
  for (size_t i = 0; i < ND__NREDUCE; i++)
    if (strcmp(name, nd__reduce_names[i]) == 0) {
      *out = (nd_reduce_fn)i;
      return 0;
    }
  return nd__nerr(ND_EINVAL,
                  "reduce: unknown function \"%s\" (mean, median, sum, min, max, std, "
                  "variance)",
                  name);
}

/* ------------------------------------------------------------ the cells */

typedef struct pc_ctx {
  const void *img; /* f32 or f64, (t, N) */
  bool f32;
  size_t nvox, ncols;
  nd_reduce_fn reduce;
  bool prob;
  const size_t *start; /* ncols + 1 */
  const size_t *vox;   /* CSR voxel indices */
  const double *w;     /* prob: weights parallel to vox */
  const double *wsum;  /* prob: Σw per column */
  size_t maxcount;     /* largest column (median scratch) */
  double *out;         /* (t, ncols) */
} pc_ctx;

static inline double pc_val(const pc_ctx *c, size_t base, size_t v) {
  return c->f32 ? (double)((const float *)c->img)[base + v] : ((const double *)c->img)[base + v];
}

static void pc_swap(double *a, double *b) {
  double t = *a;
  *a = *b;
  *b = t;
}

static double pc_med3(double a, double b, double c) {
  if (a > b) {
    double t = a;
    a = b;
    b = t;
  }
  return c < a ? a : (c > b ? b : c);
}

/* Rearrange x[0..n) (no NaN) so that x[k] is the k-th smallest with nothing
 * larger before it and nothing smaller after it: quickselect with a
 * median-of-three pivot and a three-way partition (runs of equal values
 * cost nothing extra). */
static void pc_select(double *x, size_t n, size_t k) {
  ptrdiff_t lo = 0, hi = (ptrdiff_t)n - 1, kk = (ptrdiff_t)k;
  while (lo < hi) {
    double p = pc_med3(x[lo], x[lo + (hi - lo) / 2], x[hi]);
    ptrdiff_t lt = lo, i = lo, gt = hi; /* [lo,lt) < p, [lt,i) == p, (gt,hi] > p */
    while (i <= gt) {
      if (x[i] < p)
        pc_swap(&x[lt++], &x[i++]);
      else if (x[i] > p)
        pc_swap(&x[i], &x[gt--]);
      else
        i++;
    }
    if (kk < lt)
      hi = lt - 1;
    else if (kk > gt)
      lo = gt + 1;
    else
      return;
  }
}

static double pc_median(double *x, size_t n) {
  size_t k = n / 2;
  pc_select(x, n, k);
  double hi = x[k];
  if (n % 2) return hi;
  double lo = x[0]; /* the largest of x[0..k) */
  for (size_t i = 1; i < k; i++)
    if (x[i] > lo) lo = x[i];
  return (lo + hi) / 2.0;
}

static double pc_label_cell(const pc_ctx *c, size_t t, size_t col, double *scratch) {
  size_t a = c->start[col], n = c->start[col + 1] - a;
  if (n == 0) return NAN;
  const size_t *vx = c->vox + a;
  size_t base = t * c->nvox;
  switch (c->reduce) {
    case ND_REDUCE_MEAN:
    case ND_REDUCE_SUM:
    case ND_REDUCE_STD:
    case ND_REDUCE_VARIANCE: {
      double s = 0.0;
      for (size_t i = 0; i < n; i++) s += pc_val(c, base, vx[i]);
      if (c->reduce == ND_REDUCE_SUM) return s;
      double mean = s / (double)n;
      if (c->reduce == ND_REDUCE_MEAN) return mean;
      double q = 0.0;
      for (size_t i = 0; i < n; i++) {
        double d = pc_val(c, base, vx[i]) - mean;
        q += d * d;
      }
      double var = q / (double)n;
      return c->reduce == ND_REDUCE_VARIANCE ? var : sqrt(var);
    }
    case ND_REDUCE_MIN:
    case ND_REDUCE_MAX: {
      bool mx = c->reduce == ND_REDUCE_MAX;
      double r = pc_val(c, base, vx[0]);
      for (size_t i = 1; i < n && !isnan(r); i++) {
        double v = pc_val(c, base, vx[i]);
        if (isnan(v) || (mx ? v > r : v < r)) r = v;
      }
      return r;
    }
    case ND_REDUCE_MEDIAN: {
      for (size_t i = 0; i < n; i++) {
        double v = pc_val(c, base, vx[i]);
        if (isnan(v)) return NAN;
        scratch[i] = v;
      }
      return pc_median(scratch, n);
    }
  }
  return NAN;
}

static double pc_prob_cell(const pc_ctx *c, size_t t, size_t col) {
  size_t a = c->start[col], n = c->start[col + 1] - a;
  if (n == 0 || !(c->wsum[col] != 0.0)) return NAN;
  size_t base = t * c->nvox;
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += c->w[a + i] * pc_val(c, base, c->vox[a + i]);
  return s / c->wsum[col];
}

static int pc_cells(void *arg, size_t lo, size_t hi) {
  pc_ctx *c = arg;
  double *scratch = NULL;
  if (!c->prob && c->reduce == ND_REDUCE_MEDIAN && c->maxcount > 0) {
    scratch = nd_malloc(c->maxcount * sizeof *scratch);
    if (!scratch) return ND_ENOMEM;
  }
  for (size_t cell = lo; cell < hi; cell++) {
    size_t t = cell / c->ncols, col = cell % c->ncols;
    c->out[cell] = c->prob ? pc_prob_cell(c, t, col) : pc_label_cell(c, t, col, scratch);
  }
  nd_free(scratch);
  return 0;
}

/* ------------------------------------------------- mean and sum by runs */

/* Mean and sum of a label atlas go through runs instead of voxel lists: the
 * atlas (mask applied) as runs of consecutive voxels with the same column,
 * in voxel order. A task owns a group of up to PC_GROUP volumes and
 * walks the runs once, keeping each (volume, column) running sum in the
 * output cell: every cell still sums its voxels in voxel order, starting
 * from 0.0, so the results are those of the voxel lists bit for bit, while
 * the image is read as contiguous runs and the group's volumes give
 * independent additions to overlap. */
#define PC_GROUP 4

typedef struct pr_ctx {
  const void *img;
  bool f32;
  size_t nvox, ncols, nt;
  const nd__runs *r; /* column runs */
  double *out;       /* (t, ncols), zeroed: the running sums */
} pr_ctx;

#define PR_KERNEL(T)                                                           \
  do {                                                                         \
    const T *img_ = (const T *)c->img;                                         \
    for (size_t k = 0; k < r->n; k++) {                                        \
      const T *p = img_ + t0 * c->nvox + r->at[k];                             \
      double *o = c->out + t0 * c->ncols + (size_t)r->val[k];                  \
      size_t n = r->len[k], nv = c->nvox, nc = c->ncols;                       \
      if (g == 4) {                                                            \
        double a0 = o[0], a1 = o[nc], a2 = o[2 * nc], a3 = o[3 * nc];          \
        for (size_t i = 0; i < n; i++) {                                       \
          a0 += (double)p[i];                                                  \
          a1 += (double)p[nv + i];                                             \
          a2 += (double)p[2 * nv + i];                                         \
          a3 += (double)p[3 * nv + i];                                         \
        }                                                                      \
        o[0] = a0, o[nc] = a1, o[2 * nc] = a2, o[3 * nc] = a3;                 \
      } else {                                                                 \
        for (size_t j = 0; j < g; j++) {                                       \
          double a = o[j * nc];                                                \
          for (size_t i = 0; i < n; i++) a += (double)p[j * nv + i];           \
          o[j * nc] = a;                                                       \
        }                                                                      \
      }                                                                        \
    }                                                                          \
  } while (0)

static int pr_groups(void *arg, size_t lo, size_t hi) {
  const pr_ctx *c = arg;
  const nd__runs *r = c->r;
  for (size_t grp = lo; grp < hi; grp++) {
    size_t t0 = grp * PC_GROUP;
    size_t g = c->nt - t0 < PC_GROUP ? c->nt - t0 : PC_GROUP;
    if (c->f32)
      PR_KERNEL(float);
    else
      PR_KERNEL(double);
  }
  return 0;
}

/* The sums by runs, then the means. A single group (a 3D image, or up to
 * PC_GROUP volumes) runs here: the pool could not split it anyway. */
static int pr_reduce(pr_ctx *pr, const size_t *start, bool sum) {
  size_t ncols = pr->ncols, nt = pr->nt, ngroups = (nt + PC_GROUP - 1) / PC_GROUP;
  double *sums = pr->out;
  memset(sums, 0, nt * ncols * sizeof *sums);
  int rc = ngroups == 1 ? pr_groups(pr, 0, 1)
                        : nd_parallel_for(NULL, 0, ngroups, ND_DYNAMIC, 1, pr_groups, pr);
  if (rc) return nd__nerr(rc, "parcellate: %s", nd_strerror(rc));
  for (size_t col = 0; col < ncols; col++) {
    size_t n = start[col + 1] - start[col];
    for (size_t t = 0; t < nt; t++) {
      double *x = &sums[t * ncols + col];
      *x = n == 0 ? NAN : sum ? *x : *x / (double)n;
    }
  }
  return 0;
}

/* ------------------------------------------------------------ the setup */

static int pc_grid_mismatch(const char *what, const nd_array *img, const nd_array *other) {
  char g1[224], g2[224];
  nd__format_grid(img, g1, sizeof g1);
  nd__format_grid(other, g2, sizeof g2);
  return nd__nerr(ND_EINVAL, "parcellate: %s grid differs from the image grid: image %s; %s %s",
                  what, g1, what, g2);
}

/* Column of label l in the sorted labels, or -1 (binary search). */
static int64_t pc_find(const int64_t *labels, size_t n, int64_t l) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (labels[mid] < l)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < n && labels[lo] == l ? (int64_t)lo : -1;
}

#define PC_LUT_MAX ((int64_t)1 << 20) /* 4 MiB of int32 */

/* Label -> column: a direct lookup table for labels below PC_LUT_MAX, else
 * a binary search in the sorted labels. */
typedef struct pc_colmap {
  const int64_t *labels;
  size_t ncols;
  int64_t lmax;
  int32_t *lut; /* NULL: binary search */
} pc_colmap;

static int pc_colmap_init(pc_colmap *m, const int64_t *labels, size_t ncols) {
  *m = (pc_colmap){.labels = labels, .ncols = ncols, .lmax = ncols ? labels[ncols - 1] : 0};
  if (ncols == 0 || m->lmax >= PC_LUT_MAX) return 0;
  m->lut = nd_malloc((size_t)(m->lmax + 1) * sizeof *m->lut);
  if (!m->lut) return ND_ENOMEM;
  for (int64_t l = 0; l <= m->lmax; l++) m->lut[l] = -1;
  for (size_t i = 0; i < ncols; i++) m->lut[labels[i]] = (int32_t)i;
  return 0;
}

/* Column of label l (> 0), or -1 (not a column). */
static inline int64_t pc_colmap_get(const pc_colmap *m, int64_t l) {
  if (m->lut) return l <= m->lmax ? m->lut[l] : -1;
  return pc_find(m->labels, m->ncols, l);
}

/* Turn the atlas's label runs into column runs, in voxel order: runs of a
 * label that is not a column are dropped and, under a mask, a run keeps its
 * voxels where keep is set, as sub-runs (new arrays; without a mask the runs
 * are rewritten in place). */
static int pc_column_runs(nd__runs *r, const pc_colmap *m, const uint8_t *keep) {
  nd__runs out = {0};
  size_t k = 0;
  for (size_t i = 0; i < r->n; i++) {
    int64_t col = pc_colmap_get(m, r->val[i]);
    if (col < 0) continue;
    if (!keep) {
      r->at[k] = r->at[i];
      r->len[k] = r->len[i];
      r->val[k++] = col;
      continue;
    }
    for (size_t a = r->at[i], e = a + r->len[i]; a < e;) {
      while (a < e && !keep[a]) a++;
      size_t b = a;
      while (b < e && keep[b]) b++;
      if (b > a && nd__runs_push(&out, a, b - a, col)) {
        nd__runs_free(&out);
        return nd__nerr(ND_ENOMEM, "parcellate: out of memory for the atlas runs");
      }
      a = b;
    }
  }
  if (!keep) {
    r->n = k;
  } else {
    nd__runs_free(r);
    *r = out;
  }
  return 0;
}

/* The voxel count of each column, as CSR offsets (ncols + 1). */
static size_t *pc_run_counts(const nd__runs *r, size_t ncols) {
  size_t *start = nd_calloc(ncols + 1, sizeof *start);
  if (!start) return NULL;
  for (size_t k = 0; k < r->n; k++) start[r->val[k] + 1] += r->len[k];
  for (size_t i = 0; i < ncols; i++) start[i + 1] += start[i];
  return start;
}

/* The voxel lists (CSR, each in voxel order) of the column runs. */
static size_t *pc_run_voxels(const nd__runs *r, const size_t *start, size_t ncols) {
  size_t total = start[ncols];
  size_t *vox = nd_malloc((total ? total : 1) * sizeof *vox);
  size_t *fill = nd_malloc((ncols ? ncols : 1) * sizeof *fill);
  if (!vox || !fill) {
    nd_free(vox);
    nd_free(fill);
    return NULL;
  }
  memcpy(fill, start, ncols * sizeof *fill);
  for (size_t k = 0; k < r->n; k++) {
    size_t *dst = vox + fill[r->val[k]];
    for (size_t i = 0; i < r->len[k]; i++) dst[i] = r->at[k] + i;
    fill[r->val[k]] += r->len[k];
  }
  nd_free(fill);
  return vox;
}

/* A label atlas's columns (*ownp: its own labels, unless o->labels gives
 * them), the voxel count of each (*startp, CSR offsets) and either the column
 * runs (by_runs) or the voxel lists (*voxp), mask applied. */
static int pc_label_setup(const nd_array *atlas, const nd_parcellate_opts *o,
                          const uint8_t *keep, bool by_runs, int64_t **ownp, size_t *ncolsp,
                          size_t **startp, size_t **voxp, nd__runs *runs) {
  int64_t amax = 0;
  size_t ncols = 0;
  int rc = nd__atlas_runs(atlas, "atlas", runs, &amax);
  /* With the labels given, the atlas's own are not collected. */
  if (rc == 0 && !o->labels)
    rc = nd__runs_labels(runs, amax, nd_array_count(atlas), "atlas", ownp, &ncols);
  if (rc) return rc;
  if (ncols > INT32_MAX) return nd__nerr(ND_EINVAL, "parcellate: too many labels (%zu)", ncols);
  const int64_t *labels = *ownp;
  if (o->labels) {
    labels = nd_array_data(o->labels);
    ncols = nd_array_count(o->labels);
  } else if (ncols == 0) {
    return nd__nerr(ND_ENOTFOUND, "parcellate: the atlas has no labels (every voxel is 0)");
  }
  *ncolsp = ncols;
  pc_colmap map;
  if (pc_colmap_init(&map, labels, ncols))
    return nd__nerr(ND_ENOMEM, "parcellate: out of memory for the label table");
  rc = pc_column_runs(runs, &map, keep);
  nd_free(map.lut);
  if (rc) return rc;
  *startp = pc_run_counts(runs, ncols);
  if (!*startp) return nd__nerr(ND_ENOMEM, "parcellate: out of memory for the column counts");
  if (by_runs) return 0;
  *voxp = pc_run_voxels(runs, *startp, ncols);
  nd__runs_free(runs); /* the voxel lists replace them */
  if (!*voxp) return nd__nerr(ND_ENOMEM, "parcellate: out of memory for the voxel lists");
  return 0;
}

/* Per-map lists of (voxel, weight) with weight != 0 (mask applied). */
static int pc_prob_csr(const nd_array *atlas, const uint8_t *keep, size_t nmaps, size_t nvox,
                       size_t **startp, size_t **voxp, double **wp, double **wsump) {
  const void *ad = nd_array_data(atlas);
  nd_dtype adt = nd_array_dtype(atlas);
  size_t *start = nd_calloc(nmaps + 1, sizeof *start);
  double *wsum = nd_calloc(nmaps ? nmaps : 1, sizeof *wsum);
  if (!start || !wsum) {
    nd_free(start);
    nd_free(wsum);
    return nd__nerr(ND_ENOMEM, "parcellate: out of memory for the map lists");
  }
  for (size_t m = 0; m < nmaps; m++) {
    size_t cnt = 0;
    for (size_t v = 0; v < nvox; v++) {
      double w = nd__elem_f64(ad, adt, m * nvox + v);
      if (!(isfinite(w) && w >= 0)) {
        nd_free(start);
        nd_free(wsum);
        return nd__nerr(ND_EINVAL,
                        "parcellate: probabilistic atlas map %zu voxel %zu has weight %g: "
                        "weights must be finite and non-negative",
                        m, v, w);
      }
      cnt += (w != 0 && (!keep || keep[v]));
    }
    start[m + 1] = start[m] + cnt;
  }
  size_t total = start[nmaps];
  size_t *vox = nd_malloc((total ? total : 1) * sizeof *vox);
  double *w = nd_malloc((total ? total : 1) * sizeof *w);
  if (!vox || !w) {
    nd_free(vox);
    nd_free(w);
    nd_free(start);
    nd_free(wsum);
    return nd__nerr(ND_ENOMEM, "parcellate: out of memory for the map lists");
  }
  for (size_t m = 0; m < nmaps; m++) {
    size_t k = start[m];
    double s = 0.0;
    for (size_t v = 0; v < nvox; v++) {
      double x = nd__elem_f64(ad, adt, m * nvox + v);
      if (x != 0 && (!keep || keep[v])) {
        vox[k] = v;
        w[k++] = x;
        s += x;
      }
    }
    wsum[m] = s;
  }
  *startp = start;
  *voxp = vox;
  *wp = w;
  *wsump = wsum;
  return 0;
}

/* Validate the labels option: int64, 1D, positive, strictly ascending. */
static int pc_check_labels(const nd_array *l) {
  if (nd_array_dtype(l) != ND_I64 || nd_array_ndim(l) != 1)
    return nd__nerr(ND_EINVAL, "parcellate: labels must be a 1D int64 array, got %s with %d dims",
                    nd_dtype_name(nd_array_dtype(l)), nd_array_ndim(l));
  const int64_t *p = nd_array_data(l);
  size_t n = nd_array_count(l);
  if (n > INT32_MAX) return nd__nerr(ND_EINVAL, "parcellate: too many labels (%zu)", n);
  for (size_t i = 0; i < n; i++) {
    if (p[i] <= 0)
      return nd__nerr(ND_EINVAL, "parcellate: labels[%zu] = %lld: labels must be positive", i,
                      (long long)p[i]);
    if (i && p[i] <= p[i - 1])
      return nd__nerr(ND_EINVAL,
                      "parcellate: labels must be strictly ascending (labels[%zu] = %lld after "
                      "%lld)",
                      i, (long long)p[i], (long long)p[i - 1]);
  }
  return 0;
}

int nd_parcellate(const nd_array *img, const nd_array *atlas, const nd_parcellate_opts *o,
                  nd_array **out, nd_array **empty) {
  nd__nerr_clear();
  if (out) *out = NULL;
  if (empty) *empty = NULL;
  if (!out) return nd__nerr(ND_EINVAL, "parcellate: NULL output");
  if (!img || !atlas) return nd__nerr(ND_EINVAL, "parcellate: NULL %s", img ? "atlas" : "image");
  nd_parcellate_opts dflt = {0};
  if (!o) o = &dflt;
  int in = nd_array_ndim(img), an = nd_array_ndim(atlas);
  if (in != 3 && in != 4)
    return nd__nerr(ND_EINVAL, "parcellate: image must be 3D or 4D, got %d dims", in);
  nd_dtype idt = nd_array_dtype(img);
  if (idt != ND_F32 && idt != ND_F64)
    return nd__nerr(ND_EINVAL, "parcellate: image must be f32 or f64, got %s", nd_dtype_name(idt));
  if (an != 3 && an != 4)
    return nd__nerr(ND_EINVAL,
                    "parcellate: atlas must be 3D (labels) or 4D (probabilistic maps), got %d "
                    "dims",
                    an);
  bool prob = an == 4;
  nd_dtype adt = nd_array_dtype(atlas);
  if (prob && adt != ND_F32 && adt != ND_F64)
    return nd__nerr(ND_EINVAL, "parcellate: a probabilistic (4D) atlas must be f32 or f64, got %s",
                    nd_dtype_name(adt));
  if (!nd_grid_equal(img, atlas, 0)) return pc_grid_mismatch("atlas", img, atlas);
  if (!prob && (unsigned)o->reduce >= ND__NREDUCE)
    return nd__nerr(ND_EINVAL, "parcellate: invalid reduce function %d", (int)o->reduce);
  if (prob && o->labels)
    return nd__nerr(ND_EINVAL,
                    "parcellate: labels apply to label atlases; a probabilistic atlas gives one "
                    "column per map");
  if (o->labels) {
    int rc = pc_check_labels(o->labels);
    if (rc) return rc;
  }

  const size_t *is = nd_array_shape(img);
  size_t nt = in == 4 ? is[0] : 1;
  size_t nvox = is[in - 3] * is[in - 2] * is[in - 1];

  /* The mask, as keep flags. */
  uint8_t *keep = NULL;
  if (o->mask) {
    const nd_array *m = o->mask;
    if (nd_array_ndim(m) != 3)
      return nd__nerr(ND_EINVAL, "parcellate: mask must be 3D (z, y, x) on the image grid, got %d dims",
                      nd_array_ndim(m));
    const size_t *ms = nd_array_shape(m);
    bool same_shape = ms[0] == is[in - 3] && ms[1] == is[in - 2] && ms[2] == is[in - 1];
    /* A mask without an affine takes the image's; with one, it must match. */
    bool same_affine = !nd_array_affine(m) || nd_grid_equal(m, img, 0);
    if (!same_shape || !same_affine) return pc_grid_mismatch("mask", img, m);
    keep = nd_malloc(nvox ? nvox : 1);
    if (!keep) return nd__nerr(ND_ENOMEM, "parcellate: out of memory for the mask");
    const void *md = nd_array_data(m);
    nd_dtype mdt = nd_array_dtype(m);
    for (size_t v = 0; v < nvox; v++) keep[v] = nd__elem_f64(md, mdt, v) != 0.0;
  }

  /* Columns and the voxel lists. */
  int64_t *own = NULL;
  size_t ncols = 0, *start = NULL, *vox = NULL;
  double *w = NULL, *wsum = NULL;
  bool by_runs = !prob && (o->reduce == ND_REDUCE_MEAN || o->reduce == ND_REDUCE_SUM);
  nd__runs runs = {0};
  int rc = 0;
  if (prob) {
    ncols = nd_array_shape(atlas)[0];
    rc = pc_prob_csr(atlas, keep, ncols, nvox, &start, &vox, &w, &wsum);
  } else {
    rc = pc_label_setup(atlas, o, keep, by_runs, &own, &ncols, &start, &vox, &runs);
  }
  nd_free(keep);
  nd_array *res = NULL, *emp = NULL;
  if (rc == 0) {
    size_t shape[2] = {nt, ncols};
    rc = nd_array_new(&res, ND_F64, 2, shape);
    if (rc == 0 && empty) rc = nd_array_new(&emp, ND_U8, 1, &ncols);
    if (rc) rc = nd__nerr(rc, "parcellate: cannot allocate the output (%s)", nd_strerror(rc));
  }
  if (rc == 0) {
    pc_ctx c = {.img = nd_array_data(img),
                .f32 = idt == ND_F32,
                .nvox = nvox,
                .ncols = ncols,
                .reduce = o->reduce,
                .prob = prob,
                .start = start,
                .vox = vox,
                .w = w,
                .wsum = wsum,
                .out = nd_array_data_mut(res)};
    for (size_t i = 0; i < ncols; i++) {
      size_t n = start[i + 1] - start[i];
      if (n > c.maxcount) c.maxcount = n;
    }
    size_t ncells = nt * ncols;
    if (by_runs && ncells > 0) {
      pr_ctx pr = {.img = c.img, .f32 = c.f32, .nvox = nvox, .ncols = ncols, .nt = nt,
                   .r = &runs, .out = c.out};
      rc = pr_reduce(&pr, start, o->reduce == ND_REDUCE_SUM);
    } else if (ncells > 0) {
      rc = nd_parallel_for(NULL, 0, ncells, ND_DYNAMIC, 0, pc_cells, &c);
      if (rc) rc = nd__nerr(rc, "parcellate: %s", nd_strerror(rc));
    }
    if (rc == 0 && emp) {
      uint8_t *e = nd_array_data_mut(emp);
      for (size_t i = 0; i < ncols; i++)
        e[i] = start[i + 1] == start[i] || (prob && !(wsum[i] != 0.0));
    }
  }
  nd_free(own);
  nd_free(start);
  nd_free(vox);
  nd__runs_free(&runs);
  nd_free(w);
  nd_free(wsum);
  if (rc) {
    nd_array_release(res);
    nd_array_release(emp);
    return rc;
  }
  *out = res;
  if (empty) *empty = emp;
  return 0;
}
