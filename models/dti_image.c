/* Tensor fits over images (nidag/dti.h): the DWI array to voxel-major
 * signals and back to maps, the maps as NIfTI files, and the graph op.
 *
 * The DWI array is (t, z, y, x), so one voxel's volumes are nsp apart. The
 * fit wants them contiguous, so the masked voxels are gathered block by
 * block (in parallel, each block reading every volume once in order), fitted
 * with nd_dti_fit, and scattered into the (ND_DTI_NMAPS, z, y, x) maps.
 * Gathering and scattering write each output element from one voxel only,
 * so neither depends on the schedule either.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "models/dti_int.h"
#include "nidag/neuro.h"

#define ND__OP_DTI_VERSION 1
#define GATHER_BLOCK 512     /* voxels per gather/scatter chunk */
/* Voxels gathered at a time: bounds the signals' copy (a test lowers it to
 * cover several blocks on small data; see dti_int.h). */
size_t nd__dti_fit_block = 65536;

const char *const nd_dti_file_names[ND_DTI_NFILES] = {"fa", "md", "ad", "rd", "evals", "evecs"};

/* ------------------------------------------------------------ the mask */

/* The flat indices of the voxels to fit, ascending. */
static int voxel_list(const nd_array *dwi, const nd_array *mask, size_t nsp, size_t **idx,
                      size_t *nfit) {
  const size_t *ds = nd_array_shape(dwi);
  if (mask) {
    const size_t *ms = nd_array_shape(mask);
    int mnd = nd_array_ndim(mask);
    if (mnd == 4 && ms[0] == 1) { /* x, y, z, 1: one volume, as some tools write masks */
      ms++;
      mnd = 3;
    }
    if (mnd != 3)
      return nd__merr(ND_EINVAL, "dti: the mask must be a 3D image on the DWI's grid; it has %d "
                                 "dimension%s%s", nd_array_ndim(mask),
                      nd_array_ndim(mask) == 1 ? "" : "s",
                      nd_array_ndim(mask) == 4 ? " and more than one volume" : "");
    if (ms[0] != ds[1] || ms[1] != ds[2] || ms[2] != ds[3])
      return nd__merr(ND_EINVAL,
                      "dti: the mask is not on the DWI's grid: its shape is %zu x %zu x %zu, "
                      "the DWI's volumes are %zu x %zu x %zu (x, y, z)",
                      ms[2], ms[1], ms[0], ds[3], ds[2], ds[1]);
    /* as nd_parcellate: a mask without an affine takes the DWI's */
    if (nd_array_affine(mask) && !nd_grid_equal(mask, dwi, 0))
      return nd__merr(ND_EINVAL, "dti: the mask's affine differs from the DWI's (by more than %g)",
                      ND_GRID_AFFINE_TOL);
  }
  size_t *v = nd_malloc((nsp ? nsp : 1) * sizeof *v), n = 0;
  if (!v) return nd__merr(ND_ENOMEM, "dti: out of memory for %zu voxels", nsp);
  const void *md = mask ? nd_array_data(mask) : NULL;
  nd_dtype mt = mask ? nd_array_dtype(mask) : ND_U8;
  for (size_t i = 0; i < nsp; i++)
    if (!md || nd__elem_f64(md, mt, i) != 0.0) v[n++] = i; /* NaN counts as inside */
  *idx = v;
  *nfit = n;
  return 0;
}

/* -------------------------------------------------- gather and scatter */

typedef struct move_ctx {
  const void *dwi; /* (t, nsp) */
  bool f32;
  size_t nsp, nvol;
  const size_t *idx;
  double *signals; /* (nfit, nvol) */
  const nd_dti_result *r;
  double *maps;    /* (ND_DTI_NMAPS, nsp) */
} move_ctx;

static int gather_chunk(void *ctx, size_t lo, size_t hi) {
  const move_ctx *m = ctx;
  for (size_t t = 0; t < m->nvol; t++) {
    double *out = m->signals + t;
    if (m->f32) {
      const float *vol = (const float *)m->dwi + t * m->nsp;
      for (size_t v = lo; v < hi; v++) out[v * m->nvol] = (double)vol[m->idx[v]];
    } else {
      const double *vol = (const double *)m->dwi + t * m->nsp;
      for (size_t v = lo; v < hi; v++) out[v * m->nvol] = vol[m->idx[v]];
    }
  }
  return 0;
}

static int scatter_chunk(void *ctx, size_t lo, size_t hi) {
  const move_ctx *m = ctx;
  const nd_dti_result *r = m->r;
  const double *scalar[4] = {r->fa, r->md, r->ad, r->rd};
  for (int k = 0; k < 4; k++) {
    double *map = m->maps + (size_t)k * m->nsp;
    for (size_t v = lo; v < hi; v++) map[m->idx[v]] = scalar[k][v];
  }
  for (int k = 0; k < 3; k++) {
    double *map = m->maps + (size_t)(ND_DTI_MAP_EVALS + k) * m->nsp;
    for (size_t v = lo; v < hi; v++) map[m->idx[v]] = r->evals[3 * v + (size_t)k];
  }
  for (int k = 0; k < 9; k++) {
    double *map = m->maps + (size_t)(ND_DTI_MAP_EVECS + k) * m->nsp;
    for (size_t v = lo; v < hi; v++) map[m->idx[v]] = r->evecs[9 * v + (size_t)k];
  }
  return 0;
}

/* -------------------------------------------------------------- the fit */

static int check_dwi(const nd_gradients *g, const nd_array *dwi) {
  if (nd_array_ndim(dwi) != 4)
    return nd__merr(ND_EINVAL, "dti: the DWI image must be 4D (x, y, z, volumes); it has %d "
                               "dimension%s", nd_array_ndim(dwi), nd_array_ndim(dwi) == 1 ? "" : "s");
  nd_dtype dt = nd_array_dtype(dwi);
  if (dt != ND_F32 && dt != ND_F64)
    return nd__merr(ND_EINVAL, "dti: the DWI array must be f32 or f64, not %s", nd_dtype_name(dt));
  size_t nvol = nd_array_dim(dwi, 0);
  if (nvol != g->n)
    return nd__merr(ND_EINVAL,
                    "dti: the DWI image has %zu volumes but the gradient table has %zu entries",
                    nvol, g->n);
  return 0;
}

int nd_dti_fit_image(const nd_gradients *g, const nd_array *dwi, const nd_array *mask,
                     const nd_dti_opts *o, nd_array **maps, nd_dti_image_report *rep) {
  nd__merr_clear();
  if (maps) *maps = NULL;
  if (rep) memset(rep, 0, sizeof *rep);
  if (!g || !dwi || !maps) return nd__merr(ND_EINVAL, "dti: NULL gradients, DWI or maps");
  int rc = check_dwi(g, dwi);
  if (rc) return rc;
  nd_dti_opts opts = o ? *o : (nd_dti_opts){0};
  nd_pool *pool = opts.pool;
  if (!pool && (rc = nd_pool_global(&pool)) != 0)
    return nd__merr(rc, "dti: cannot start the global pool");
  opts.pool = pool;
  const size_t *ds = nd_array_shape(dwi);
  size_t nvol = ds[0], nsp = ds[1] * ds[2] * ds[3], nfit = 0, *idx = NULL;
  if ((rc = voxel_list(dwi, mask, nsp, &idx, &nfit)) != 0) return rc;
  nd_array *out = NULL;
  double *signals = NULL;
  nd_dti_result r = {0};
  size_t shape[4] = {ND_DTI_NMAPS, ds[1], ds[2], ds[3]};
  if ((rc = nd_array_new(&out, ND_F64, 4, shape)) != 0) {
    rc = nd__merr(rc, "dti: cannot allocate the maps (%zu voxels)", nsp);
    goto done;
  }
  if (nd_array_affine(dwi) && (rc = nd_array_set_affine(out, nd_array_affine(dwi))) != 0) {
    rc = nd__merr(rc, "dti: cannot set the maps' affine");
    goto done;
  }
  /* Blocks of nd__dti_fit_block voxels: gather, fit, scatter. Only one block's
   * signals exist at a time, and each block is cut into its share of the
   * requested chunks, so chunks keep about the size asked for. */
  size_t fit_block = nd__dti_fit_block ? nd__dti_fit_block : 1;
  size_t block = nfit < fit_block ? nfit : fit_block, nfailed = 0;
  size_t chunks_all = opts.chunks ? opts.chunks : ND_DEFAULT_CHUNKS;
  if (block > 0 && !(signals = nd_malloc(block * nvol * sizeof *signals))) {
    rc = nd__merr(ND_ENOMEM, "dti: out of memory for %zu voxels x %zu volumes", block, nvol);
    goto done;
  }
  move_ctx m = {.dwi = nd_array_data(dwi), .f32 = nd_array_dtype(dwi) == ND_F32, .nsp = nsp,
                .nvol = nvol, .signals = signals, .maps = nd_array_data_mut(out)};
  size_t b0 = 0;
  do { /* at least once: a fit of no voxel still gives the eigenvalue floor */
    size_t nb = nfit - b0 < block ? nfit - b0 : block;
    m.idx = idx + b0;
    if (nb > 0 && (rc = nd_parallel_for(pool, 0, nb, ND_DYNAMIC, GATHER_BLOCK, gather_chunk,
                                        &m)) != 0) {
      rc = nd__merr(rc, "dti: gathering the voxels failed");
      goto done;
    }
    /* this block's share of the chunks, rounded up (1 at least) */
    opts.chunks = nfit ? (size_t)(((double)chunks_all * (double)nb + (double)nfit - 1) /
                                  (double)nfit)
                       : 1;
    if (opts.chunks < 1) opts.chunks = 1;
    nd_dti_result_free(&r);
    if ((rc = nd_dti_fit(g, signals, nb, nvol, &opts, &r)) != 0) goto done;
    m.r = &r;
    if (nb > 0 && (rc = nd_parallel_for(pool, 0, nb, ND_DYNAMIC, GATHER_BLOCK, scatter_chunk,
                                        &m)) != 0) {
      rc = nd__merr(rc, "dti: writing the maps failed");
      goto done;
    }
    nfailed += r.n_failed;
    b0 += nb;
  } while (b0 < nfit);
  if (rep) {
    rep->nvox = nsp;
    rep->nvox_fit = nfit;
    rep->n_failed = nfailed;
    rep->min_diffusivity = r.min_diffusivity;
  }
  *maps = out;
  out = NULL;
done:
  nd_dti_result_free(&r);
  nd_free(signals);
  nd_free(idx);
  nd_array_release(out);
  return rc;
}

/* ------------------------------------------------------------ the files */

static int check_maps(const nd_array *maps) {
  if (!maps || nd_array_dtype(maps) != ND_F64 || nd_array_ndim(maps) != 4 ||
      nd_array_dim(maps, 0) != ND_DTI_NMAPS)
    return nd__merr(ND_EINVAL, "dti: maps must be an f64 array of shape (%d, z, y, x)",
                    ND_DTI_NMAPS);
  return 0;
}

/* Whether the file at path already holds a: a float32 NIfTI of a's shape
 * whose values are a's bytes and whose affine is a's up to the float32
 * rounding of NIfTI-1's sform. Reading it back is several times cheaper than
 * compressing it again; any error means "no". */
static bool file_holds(const char *path, const nd_array *a) {
  nd_nifti_info info;
  if (nd_nifti_header(path, &info) != 0 || info.datatype != 16 /* float32 */ ||
      info.ndim != nd_array_ndim(a))
    return false;
  for (int k = 0; k < info.ndim; k++)
    if ((size_t)info.dim[k] != nd_array_dim(a, info.ndim - 1 - k)) return false;
  nd_array *old = NULL;
  if (nd_nifti_load(path, ND_F32, &old) != 0) return false;
  bool same = nd_array_nbytes(old) == nd_array_nbytes(a) &&
              memcmp(nd_array_data(old), nd_array_data(a), nd_array_nbytes(a)) == 0;
  const double *x = nd_array_affine(old), *y = nd_array_affine(a);
  if (same && (!x) != (!y)) same = false;
  for (int k = 0; same && x && k < 16; k++)
    if (!(fabs(x[k] - y[k]) <= 1e-6 * fmax(1.0, fabs(y[k])))) same = false;
  nd_array_release(old);
  return same;
}

/* Save a to path, unless the file holds a already; through a temporary file
 * in the same directory, so a changed file is replaced whole. */
static int save_if_changed(const nd_array *a, const char *path) {
  char tmp[4096];
  /* the extension is the path's end (".nii.gz" or ".nii"), never an earlier
   * ".nii" in a directory name */
  size_t len = strlen(path);
  const char *ext = path + len - (len >= 7 && strcmp(path + len - 7, ".nii.gz") == 0 ? 7 : 4);
  static _Atomic unsigned counter; /* two saves of one path in one process */
  int n = snprintf(tmp, sizeof tmp, "%.*s.tmp%ld-%u%s", (int)(ext - path), path, (long)getpid(),
                   atomic_fetch_add(&counter, 1u), ext);
  if (n < 0 || (size_t)n >= sizeof tmp) return nd__merr(ND_EINVAL, "%s: path too long", path);
  if (file_holds(path, a)) return 0;
  int rc = nd_nifti_save(tmp, a);
  if (rc) {
    unlink(tmp);
    return nd__merr(rc, "%s: cannot write it: %s", path, nd_neuro_errmsg());
  }
  if (rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    return nd__merr(ND_EIO, "%s: cannot write: %s", path, strerror(e));
  }
  return 0;
}

int nd_dti_maps_save(const nd_array *maps, const char *prefix, const char *ext) {
  nd__merr_clear();
  int rc = check_maps(maps);
  if (rc) return rc;
  if (!prefix || !*prefix) return nd__merr(ND_EINVAL, "dti: the output prefix is empty");
  if (!ext) ext = ".nii.gz";
  if (strcmp(ext, ".nii.gz") != 0 && strcmp(ext, ".nii") != 0)
    return nd__merr(ND_EINVAL, "dti: unknown extension '%s' (.nii.gz or .nii)", ext);
  const size_t *ms = nd_array_shape(maps);
  size_t nsp = ms[1] * ms[2] * ms[3];
  const double *src = nd_array_data(maps);
  /* per file: first map, number of maps, and the shape before (z, y, x) */
  static const struct { int first, count, ndim_extra; size_t extra[2]; } files[ND_DTI_NFILES] = {
      {ND_DTI_MAP_FA, 1, 0, {0, 0}},    {ND_DTI_MAP_MD, 1, 0, {0, 0}},
      {ND_DTI_MAP_AD, 1, 0, {0, 0}},    {ND_DTI_MAP_RD, 1, 0, {0, 0}},
      {ND_DTI_MAP_EVALS, 3, 1, {3, 0}}, {ND_DTI_MAP_EVECS, 9, 2, {3, 3}}};
  for (int f = 0; f < ND_DTI_NFILES && !rc; f++) {
    size_t shape[5];
    int nd = 0;
    for (int k = 0; k < files[f].ndim_extra; k++) shape[nd++] = files[f].extra[k];
    for (int k = 1; k < 4; k++) shape[nd++] = ms[k];
    nd_array *a = NULL;
    if ((rc = nd_array_new(&a, ND_F32, nd, shape)) != 0) {
      rc = nd__merr(rc, "dti: cannot allocate the %s map", nd_dti_file_names[f]);
      break;
    }
    if (nd_array_affine(maps) && (rc = nd_array_set_affine(a, nd_array_affine(maps))) != 0)
      rc = nd__merr(rc, "dti: the maps' affine is not usable");
    float *dst = nd_array_data_mut(a);
    /* NIfTI (x, y, z, i, j) is the array (j, i, z, y, x): volume i + 3 j is
     * component i of eigenvector j, which is map EVECS + 3 i + j. */
    for (int vol = 0; !rc && vol < files[f].count; vol++) {
      int map = files[f].first + vol;
      if (f == ND_DTI_NFILES - 1) map = ND_DTI_MAP_EVECS + 3 * (vol % 3) + vol / 3;
      const double *s = src + (size_t)map * nsp;
      float *d = dst + (size_t)vol * nsp;
      for (size_t i = 0; i < nsp; i++) d[i] = (float)s[i];
    }
    char path[4096];
    int n = snprintf(path, sizeof path, "%s%s%s", prefix, nd_dti_file_names[f], ext);
    if (!rc && (n < 0 || (size_t)n >= sizeof path))
      rc = nd__merr(ND_EINVAL, "dti: the output prefix is too long");
    if (!rc) rc = save_if_changed(a, path);
    nd_array_release(a);
  }
  return rc;
}

/* ------------------------------------------------------------- the op */

typedef struct op_settings {
  nd_dti_method method;
  double min_signal, b0_threshold;
} op_settings;

static int encode_settings(const op_settings *s, void **bytes, size_t *len) {
  nd_params *p = NULL;
  int rc = nd_params_new(&p);
  if (!rc) rc = nd_params_str(p, "method", s->method == ND_DTI_OLS ? "ols" : "wls");
  if (!rc) rc = nd_params_f64(p, "min_signal", s->min_signal);
  if (!rc) rc = nd_params_f64(p, "b0_threshold", s->b0_threshold);
  if (!rc) rc = nd_params_encode(p, bytes, len);
  nd_params_free(p);
  return rc;
}

/* Strict: every field optional (the defaults), anything else an error. */
static int decode_settings(nd_op_ctx *ctx, op_settings *s) {
  *s = (op_settings){ND_DTI_WLS, ND_DTI_MIN_SIGNAL, ND_DTI_B0_THRESHOLD};
  size_t len = 0;
  const void *bytes = nd_op_params(ctx, &len);
  if (!bytes || len == 0) return 0;
  nd_params *p = NULL;
  int rc = nd_params_decode(bytes, len, &p);
  if (rc) return nd_op_fail(ctx, rc, "dti: params that are not nd_params");
  for (size_t i = 0; !rc && i < nd_params_count(p); i++) {
    const char *name = NULL;
    nd_param_type type;
    const void *val;
    size_t vn;
    nd_params_field(p, i, &name, &type, &val, &vn);
    if (strcmp(name, "method") == 0) {
      const char *m = NULL;
      if (nd_params_get_str(p, name, &m) || (strcmp(m, "wls") && strcmp(m, "ols")))
        rc = nd_op_fail(ctx, ND_EINVAL, "dti: params: method must be \"wls\" or \"ols\"");
      else
        s->method = strcmp(m, "ols") == 0 ? ND_DTI_OLS : ND_DTI_WLS;
    } else if (strcmp(name, "min_signal") == 0 || strcmp(name, "b0_threshold") == 0) {
      double v = 0;
      bool ms = name[0] == 'm';
      if (nd_params_get_f64(p, name, &v) || !isfinite(v) || (ms ? !(v > 0) : !(v >= 0)))
        rc = nd_op_fail(ctx, ND_EINVAL, "dti: params: %s must be a finite number %s", name,
                        ms ? "> 0" : ">= 0");
      else if (ms)
        s->min_signal = v;
      else
        s->b0_threshold = v;
    } else {
      rc = nd_op_fail(ctx, ND_EINVAL, "dti: params: unknown field '%s'", name);
    }
  }
  nd_params_free(p);
  return rc;
}

static int dti_op_fn(nd_op_ctx *ctx) {
  size_t nin = nd_op_ninputs(ctx);
  if (nin != 3 && nin != 4)
    return nd_op_fail(ctx, ND_EINVAL, "dti: %zu inputs (dwi, bval, bvec[, mask])", nin);
  const char *bval = nd_op_input_path(ctx, 1), *bvec = nd_op_input_path(ctx, 2);
  nd_array *dwi = nd_op_input(ctx, 0), *mask = nin == 4 ? nd_op_input(ctx, 3) : NULL;
  if (!dwi || !bval || !bvec || (nin == 4 && !mask))
    return nd_op_fail(ctx, ND_EINVAL,
                      "dti: inputs must be the DWI array, the bval and bvec files and an "
                      "optional mask array");
  op_settings s;
  int rc = decode_settings(ctx, &s);
  if (rc) return rc;
  nd_gradients *g = NULL;
  if ((rc = nd__gradients_read_fsl(bval, bvec, s.b0_threshold, &g)) != 0)
    return nd_op_fail(ctx, rc, "%s", nd_models_errmsg());
  const nd_dti_exec *ex = nd_op_userdata(ctx);
  nd_dti_opts o = {.method = s.method, .pool = nd_op_pool(ctx), .min_signal = s.min_signal,
                   .chunking = ex ? ex->chunking : ND_DYNAMIC, .chunks = ex ? ex->chunks : 0};
  nd_array *maps = NULL;
  rc = nd_dti_fit_image(g, dwi, mask, &o, &maps, NULL);
  nd_gradients_free(g);
  if (rc) return nd_op_fail(ctx, rc, "%s (gradients from %s and %s)", nd_models_errmsg(), bval, bvec);
  return nd_op_set_output(ctx, maps);
}

/* What the op allocates beyond its input (the load's cost, the DWI's
 * bytes): the maps, 128 bytes a voxel, which is no more than the DWI's own
 * bytes for 32 or more float32 volumes (typical DWIs have 60-300), plus one
 * block's signals and results (at most 65536 voxels x (t + 32) doubles,
 * 150 MB at t = 256). The load's cost is the estimate. */
static size_t dti_cost(const void *params, size_t params_len, const char *const *in_paths,
                       const size_t *in_costs, size_t ninputs) {
  (void)params;
  (void)params_len;
  (void)in_paths;
  return ninputs > 0 ? in_costs[0] : 0;
}

const nd_op nd_op_dti_fit = {.name = "nd.dti_fit",
                             .version = ND__OP_DTI_VERSION,
                             .fn = dti_op_fn,
                             .mem_cost = 256u << 20,
                             .cost_fn = dti_cost};

/* ------------------------------------------------------------ the nodes */

/* The load op with storing turned off (the file is on disk already). */
static nd_op load_nocache(void) {
  nd_op op = nd_op_nifti_load;
  op.flags |= ND_OP_NO_CACHE;
  return op;
}

static nd_op load_op; /* one struct for every graph: an op must outlive its graphs */
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static void load_init(void) { load_op = load_nocache(); }

/* Whether float32 holds every value of the image at path exactly: integers
 * of 16 bits or less, or float32, without scaling. Half the memory of f64
 * for the same maps. An unreadable header says no (the load then reports
 * the problem). */
static bool f32_exact(const char *path) {
  nd_nifti_info info;
  if (nd_nifti_header(path, &info) != 0) return false;
  bool scaled = info.scl_slope != 0 && isfinite(info.scl_slope) &&
                !(info.scl_slope == 1 && info.scl_inter == 0);
  switch (info.datatype) {
  case 2:   /* uint8 */
  case 4:   /* int16 */
  case 16:  /* float32 */
  case 256: /* int8 */
  case 512: /* uint16 */
    return !scaled;
  }
  return false;
}

static int add_load(nd_graph *g, const nd_op *load, const char *path, const char *what,
                    const char *dtype, int64_t *out) {
  nd_params *p = NULL;
  void *bytes = NULL;
  size_t len = 0;
  int64_t file = -1;
  char label[512];
  int rc = nd_params_new(&p);
  if (!rc) rc = nd_params_str(p, "dtype", dtype);
  if (!rc) rc = nd_params_encode(p, &bytes, &len);
  nd_params_free(p);
  if (!rc) rc = nd_graph_file(g, path, NULL, &file);
  snprintf(label, sizeof label, "load %s %s", what, path);
  if (!rc) rc = nd_graph_add(g, load, bytes, len, &file, 1, label, out);
  nd_free(bytes);
  return rc;
}

int nd_dti_add(nd_graph *g, const char *dwi, const char *bval, const char *bvec,
               const char *mask, const nd_dti_opts *opts, const nd_op *op, int64_t *out) {
  nd__merr_clear();
  if (!g || !dwi || !bval || !bvec || !out)
    return nd__merr(ND_EINVAL, "dti: NULL graph, path or out");
  nd_dti_opts o = opts ? *opts : (nd_dti_opts){0};
  if (o.method != ND_DTI_WLS && o.method != ND_DTI_OLS)
    return nd__merr(ND_EINVAL, "dti: unknown method %d", (int)o.method);
  if (!(o.min_signal >= 0) || !isfinite(o.min_signal))
    return nd__merr(ND_EINVAL, "dti: min_signal %g must be > 0 (or 0 for the default)",
                    o.min_signal);
  pthread_once(&load_once, load_init);
  op_settings s = {o.method, o.min_signal > 0 ? o.min_signal : ND_DTI_MIN_SIGNAL,
                   ND_DTI_B0_THRESHOLD};
  void *bytes = NULL;
  size_t len = 0;
  int64_t in[4];
  char label[512];
  int rc = encode_settings(&s, &bytes, &len);
  if (!rc) rc = add_load(g, &load_op, dwi, "dwi", f32_exact(dwi) ? "f32" : "f64", &in[0]);
  if (!rc) rc = nd_graph_file(g, bval, NULL, &in[1]);
  if (!rc) rc = nd_graph_file(g, bvec, NULL, &in[2]);
  if (!rc && mask) rc = add_load(g, &load_op, mask, "mask", "f64", &in[3]);
  snprintf(label, sizeof label, "dti %s %s", s.method == ND_DTI_OLS ? "ols" : "wls", dwi);
  if (!rc) rc = nd_graph_add(g, op ? op : &nd_op_dti_fit, bytes, len, in, mask ? 4 : 3, label, out);
  nd_free(bytes);
  if (rc) return nd__merr(rc, "dti: building the graph: %s", nd_errmsg(g));
  return 0;
}
