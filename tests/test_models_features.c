/* Feature matrices from images: nd_op_stack_rows on constant inputs (row
 * order, dtypes and shapes, empty columns, NaN/Inf and shape errors, params),
 * then nd_features_add end to end on a real cache: values equal to a direct
 * load -> resample -> parcellate -> stack, the documented labels, uncached
 * loads (a rerun loads nothing), incremental reruns after an image changes
 * or an atlas is added, stored loads on request, missing and unreadable
 * images, and equal results on 1 and 2 threads. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "nidag.h"
#include "tests/test_graph_util.h"
#include "tests/testutil.h"

/* ------------------------------------------------ stack_rows on constants */

static nd_array *vec(nd_dtype dt, bool row, const double *v, size_t r) {
  size_t shape[2] = {1, r};
  nd_array *a;
  assert_int_equal(nd_array_new(&a, dt, row ? 2 : 1, row ? shape : shape + 1), ND_OK);
  void *d = nd_array_data_mut(a);
  for (size_t j = 0; j < r; j++) {
    if (dt == ND_F64)
      ((double *)d)[j] = v[j];
    else if (dt == ND_F32)
      ((float *)d)[j] = (float)v[j];
    else
      ((int32_t *)d)[j] = (int32_t)v[j];
  }
  return a;
}

static void *encode(nd_params *p, size_t *len) {
  void *bytes;
  assert_int_equal(nd_params_encode(p, &bytes, len), ND_OK);
  nd_params_free(p);
  return bytes;
}

static void *drop_params(int64_t v, size_t *len) {
  nd_params *p;
  assert_int_equal(nd_params_new(&p), ND_OK);
  assert_int_equal(nd_params_i64(p, "drop_empty", v), ND_OK);
  return encode(p, len);
}

/* A graph stacking the given arrays (the references are taken). Returns
 * nd_graph_run's code; *gout and *node for inspection (free *gout). */
static int run_stack(nd_array **in, size_t n, const void *params, size_t plen, nd_graph **gout,
                     int64_t *node) {
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), ND_OK);
  int64_t ids[8];
  assert_true(n <= 8);
  for (size_t i = 0; i < n; i++) {
    char label[32];
    snprintf(label, sizeof label, "row %zu", i);
    assert_int_equal(nd_graph_const(g, in[i], label, &ids[i]), ND_OK);
    nd_array_release(in[i]);
  }
  assert_int_equal(nd_graph_add(g, &nd_op_stack_rows, params, plen, ids, n, "stack", node),
                   ND_OK);
  nd_graph_run_opts ro = {.targets = node, .ntargets = 1};
  int rc = nd_graph_run(g, &ro, NULL);
  *gout = g;
  return rc;
}

/* Run and expect the node to fail with ND_EINVAL and a message containing
 * every one of the NULL-terminated needles. */
static void expect_stack_fails(nd_array **in, size_t n, const void *params, size_t plen, ...) {
  nd_graph *g;
  int64_t node;
  assert_int_equal(run_stack(in, n, params, plen, &g, &node), ND_ETASK);
  assert_int_equal(nd_graph_state(g, node), ND_GNODE_FAILED);
  const char *msg;
  assert_int_equal(nd_graph_error(g, node, &msg), ND_EINVAL);
  va_list ap;
  va_start(ap, plen);
  for (const char *s; (s = va_arg(ap, const char *)) != NULL;) {
    if (!strstr(msg, s)) fprintf(stderr, "message \"%s\" lacks \"%s\"\n", msg, s);
    assert_non_null(strstr(msg, s));
  }
  va_end(ap);
  nd_array *out;
  assert_int_equal(nd_graph_get(g, node, &out), ND_ENOTFOUND);
  nd_graph_free(g);
}

/* Run and expect success: the (rows, cols) f64 result equal to want. */
static void expect_stack(nd_array **in, size_t n, const void *params, size_t plen,
                         size_t rows, size_t cols, const double *want) {
  nd_graph *g;
  int64_t node;
  int rc = run_stack(in, n, params, plen, &g, &node);
  if (rc) nd_graph_report(g, stderr);
  assert_int_equal(rc, ND_OK);
  assert_int_equal(nd_graph_state(g, node), ND_GNODE_COMPUTED);
  nd_array *out;
  assert_int_equal(nd_graph_get(g, node, &out), ND_OK);
  assert_int_equal(nd_array_dtype(out), ND_F64);
  assert_int_equal(nd_array_ndim(out), 2);
  assert_int_equal(nd_array_dim(out, 0), rows);
  assert_int_equal(nd_array_dim(out, 1), cols);
  assert_null(nd_array_affine(out));
  assert_memory_equal(nd_array_data(out), want, rows * cols * sizeof *want);
  nd_array_release(out);
  nd_graph_free(g);
}

/* Rows come out in input order, whatever each input's dtype (f32, f64) and
 * shape ((R) or (1, R)). */
static void test_stack_rows_order_and_types(void **state) {
  (void)state;
  const double r0[3] = {1.5, -2, 3}, r1[3] = {0.25, 8, -16}, r2[3] = {1e300, 5, 6},
               r3[3] = {-0.5, 0, 7};
  nd_array *in[4] = {vec(ND_F64, false, r0, 3), vec(ND_F32, true, r1, 3),
                     vec(ND_F64, true, r2, 3), vec(ND_F32, false, r3, 3)};
  const double want[12] = {1.5, -2, 3, 0.25, 8, -16, 1e300, 5, 6, -0.5, 0, 7};
  expect_stack(in, 4, NULL, 0, 4, 3, want);

  /* The reverse order gives the reverse rows (a different node). */
  nd_array *rev[4] = {vec(ND_F32, false, r3, 3), vec(ND_F64, true, r2, 3),
                      vec(ND_F32, true, r1, 3), vec(ND_F64, false, r0, 3)};
  const double want_rev[12] = {-0.5, 0, 7, 1e300, 5, 6, 0.25, 8, -16, 1.5, -2, 3};
  expect_stack(rev, 4, NULL, 0, 4, 3, want_rev);

  /* One participant, and f32 values that are not exact in decimal. */
  const double r4[2] = {(double)0.1f, (double)-3.3f};
  nd_array *one[1] = {vec(ND_F32, true, r4, 2)};
  expect_stack(one, 1, NULL, 0, 1, 2, r4);

  /* Two equal inputs (merged into one node by key) still give two rows. */
  nd_array *twin[2] = {vec(ND_F64, false, r0, 3), vec(ND_F64, false, r0, 3)};
  const double want_twin[6] = {1.5, -2, 3, 1.5, -2, 3};
  expect_stack(twin, 2, NULL, 0, 2, 3, want_twin);
}

/* Columns NaN for every participant are dropped by default (and with
 * drop_empty = 1); with drop_empty = 0 they fail the node. */
static void test_stack_rows_drop_empty(void **state) {
  (void)state;
  const double r0[4] = {NAN, 1, NAN, 2}, r1[4] = {NAN, 3, NAN, 4}, r2[4] = {NAN, 5, NAN, 6};
  const double want[6] = {1, 2, 3, 4, 5, 6};
  nd_array *in[3] = {vec(ND_F64, true, r0, 4), vec(ND_F32, false, r1, 4),
                     vec(ND_F64, false, r2, 4)};
  expect_stack(in, 3, NULL, 0, 3, 2, want);

  size_t plen;
  void *p1 = drop_params(1, &plen);
  nd_array *in1[3] = {vec(ND_F64, true, r0, 4), vec(ND_F32, false, r1, 4),
                      vec(ND_F64, false, r2, 4)};
  expect_stack(in1, 3, p1, plen, 3, 2, want);
  nd_free(p1);

  /* An empty params set means the defaults. */
  nd_params *ep;
  assert_int_equal(nd_params_new(&ep), ND_OK);
  size_t elen;
  void *empty = encode(ep, &elen);
  nd_array *in2[3] = {vec(ND_F64, true, r0, 4), vec(ND_F32, false, r1, 4),
                      vec(ND_F64, false, r2, 4)};
  expect_stack(in2, 3, empty, elen, 3, 2, want);
  nd_free(empty);

  void *p0 = drop_params(0, &plen);
  nd_array *in0[3] = {vec(ND_F64, true, r0, 4), vec(ND_F32, false, r1, 4),
                      vec(ND_F64, false, r2, 4)};
  expect_stack_fails(in0, 3, p0, plen, "column 0", "drop_empty", (const char *)NULL);

  /* drop_empty = 0 without empty columns keeps everything. */
  const double a[2] = {1, 2}, b[2] = {3, 4};
  nd_array *full[2] = {vec(ND_F64, false, a, 2), vec(ND_F64, false, b, 2)};
  expect_stack(full, 2, p0, plen, 2, 2, (const double[]){1, 2, 3, 4});
  nd_free(p0);

  /* Every column empty: nothing to stack. */
  const double e[2] = {NAN, NAN};
  nd_array *none[2] = {vec(ND_F64, false, e, 2), vec(ND_F32, false, e, 2)};
  expect_stack_fails(none, 2, NULL, 0, "empty", (const char *)NULL);
}

/* A column NaN for some participants only is data gone wrong: the node
 * fails naming the first such input (whatever drop_empty says). */
static void test_stack_rows_partial_nan(void **state) {
  (void)state;
  const double ok[3] = {1, 2, 3}, bad[3] = {1, NAN, 3};
  nd_array *in[4] = {vec(ND_F64, false, ok, 3), vec(ND_F64, false, ok, 3),
                     vec(ND_F32, true, bad, 3), vec(ND_F64, false, bad, 3)};
  expect_stack_fails(in, 4, NULL, 0, "input 2", "column 1", (const char *)NULL);

  size_t plen;
  void *p0 = drop_params(0, &plen);
  nd_array *in0[3] = {vec(ND_F64, false, bad, 3), vec(ND_F64, false, ok, 3),
                      vec(ND_F64, false, ok, 3)};
  expect_stack_fails(in0, 3, p0, plen, "input 0", "column 1", (const char *)NULL);
  nd_free(p0);
}

static void test_stack_rows_inf(void **state) {
  (void)state;
  const double ok[2] = {1, 2}, pinf[2] = {1, INFINITY}, ninf[2] = {-INFINITY, 2};
  nd_array *in[3] = {vec(ND_F64, false, ok, 2), vec(ND_F64, false, pinf, 2),
                     vec(ND_F64, false, ok, 2)};
  expect_stack_fails(in, 3, NULL, 0, "input 1", "infinite", (const char *)NULL);
  nd_array *in2[2] = {vec(ND_F64, false, ok, 2), vec(ND_F32, true, ninf, 2)};
  expect_stack_fails(in2, 2, NULL, 0, "input 1", "infinite", (const char *)NULL);
}

/* Inputs that are not one participant's region values. */
static void test_stack_rows_bad_inputs(void **state) {
  (void)state;
  const double v[4] = {1, 2, 3, 4};
  nd_array *count[3] = {vec(ND_F64, false, v, 3), vec(ND_F64, false, v, 3),
                        vec(ND_F64, true, v, 4)};
  expect_stack_fails(count, 3, NULL, 0, "input 2", "4 regions", (const char *)NULL);

  nd_array *ints[2] = {vec(ND_F64, false, v, 4), vec(ND_I32, false, v, 4)};
  expect_stack_fails(ints, 2, NULL, 0, "input 1", (const char *)NULL);

  nd_array *two_rows;
  size_t shape[2] = {2, 2};
  assert_int_equal(nd_array_from(&two_rows, ND_F64, 2, shape, v, sizeof v), ND_OK);
  nd_array *rows[2] = {vec(ND_F64, true, v, 2), two_rows};
  expect_stack_fails(rows, 2, NULL, 0, "input 1", (const char *)NULL);

  nd_array *scalar;
  assert_int_equal(nd_array_from(&scalar, ND_F64, 0, NULL, v, sizeof *v), ND_OK);
  nd_array *sc[1] = {scalar};
  expect_stack_fails(sc, 1, NULL, 0, "input 0", (const char *)NULL);

  expect_stack_fails(NULL, 0, NULL, 0, "no inputs", (const char *)NULL);
}

static void test_stack_rows_bad_params(void **state) {
  (void)state;
  const double v[2] = {1, 2};
  size_t plen;

  void *two = drop_params(2, &plen);
  nd_array *a[1] = {vec(ND_F64, false, v, 2)};
  expect_stack_fails(a, 1, two, plen, "drop_empty", (const char *)NULL);
  nd_free(two);

  void *neg = drop_params(-1, &plen);
  nd_array *b[1] = {vec(ND_F64, false, v, 2)};
  expect_stack_fails(b, 1, neg, plen, "drop_empty", (const char *)NULL);
  nd_free(neg);

  nd_params *p;
  assert_int_equal(nd_params_new(&p), ND_OK);
  assert_int_equal(nd_params_str(p, "drop_empty", "yes"), ND_OK);
  void *str = encode(p, &plen);
  nd_array *c[1] = {vec(ND_F64, false, v, 2)};
  expect_stack_fails(c, 1, str, plen, "drop_empty", (const char *)NULL);
  nd_free(str);

  assert_int_equal(nd_params_new(&p), ND_OK);
  assert_int_equal(nd_params_i64(p, "drop_empty", 1), ND_OK);
  assert_int_equal(nd_params_i64(p, "extra", 1), ND_OK);
  void *extra = encode(p, &plen);
  nd_array *d[1] = {vec(ND_F64, false, v, 2)};
  expect_stack_fails(d, 1, extra, plen, "drop_empty", (const char *)NULL);
  nd_free(extra);

  assert_int_equal(nd_params_new(&p), ND_OK);
  assert_int_equal(nd_params_i64(p, "drop_emtpy", 0), ND_OK);
  void *typo = encode(p, &plen);
  nd_array *e[1] = {vec(ND_F64, false, v, 2)};
  expect_stack_fails(e, 1, typo, plen, "drop_empty", (const char *)NULL);
  nd_free(typo);

  /* Not nd_params bytes at all. */
  nd_graph *g;
  int64_t node;
  nd_array *f[1] = {vec(ND_F64, false, v, 2)};
  assert_int_equal(run_stack(f, 1, "garbage", 7, &g, &node), ND_ETASK);
  const char *msg;
  assert_int_not_equal(nd_graph_error(g, node, &msg), ND_OK);
  assert_non_null(strstr(msg, "params"));
  nd_graph_free(g);
}

/* ------------------------------------------------- features from images */

#define NPART 6
#define NATL 3
#define GRID 8
#define CHANGED 3 /* the participant whose image is rewritten */

static const char *const atlas_names[NATL] = {"coarse", "fine", "third"};
static const char *const ids[NPART] = {"sub-01", "sub-02", "sub-03",
                                       "sub-04", "sub-05", "sub-06"};

typedef struct fixture {
  char dir[TG_PATH_MAX];
  char cache[TG_PATH_MAX];
  char grid[TG_PATH_MAX];
  char img[NPART][TG_PATH_MAX];
  char atlas[NATL][TG_PATH_MAX];
  const char *img_p[NPART], *atlas_p[NATL];
  nd_cache *c;
} fixture;

static const double grid_affine[16] = {2, 0, 0, -8, 0, 2, 0, -8, 0, 0, 2, -8, 0, 0, 0, 1};

/* Participant p's 3D f32 image (z, y, x) = GRID^3 on the 2 mm grid;
 * variant 1 is a rewrite with different content. */
static void write_image(const char *path, unsigned p, unsigned variant) {
  size_t shape[3] = {GRID, GRID, GRID};
  nd_array *a;
  assert_int_equal(nd_array_new(&a, ND_F32, 3, shape), ND_OK);
  float *x = nd_array_data_mut(a);
  for (size_t i = 0; i < (size_t)GRID * GRID * GRID; i++)
    x[i] = (float)(p + 1) * (float)(i % 13) + (float)(i / 64) +
           (float)variant * 0.25f * (float)(i % 5);
  assert_int_equal(nd_array_set_affine(a, grid_affine), ND_OK);
  assert_int_equal(nd_nifti_save(path, a), ND_OK);
  nd_array_release(a);
}

/* The grid reference: the images' grid, content irrelevant. */
static void write_grid(const char *path) {
  size_t shape[3] = {GRID, GRID, GRID};
  nd_array *a;
  assert_int_equal(nd_array_new(&a, ND_U8, 3, shape), ND_OK);
  memset(nd_array_data_mut(a), 1, (size_t)GRID * GRID * GRID);
  assert_int_equal(nd_array_set_affine(a, grid_affine), ND_OK);
  assert_int_equal(nd_nifti_save(path, a), ND_OK);
  nd_array_release(a);
}

/* Atlas 0: 4 labels on the image grid. Atlas 1: a 1 mm grid of twice the
 * size (resampled), 4 labels plus label 9 on one even voxel, which the 2 mm
 * grid never samples (source index 2v + 1), so it vanishes. Atlas 2: 4 other
 * labels on the image grid. */
static void write_atlas(const char *path, unsigned k) {
  size_t n = k == 1 ? 2 * GRID : GRID;
  size_t shape[3] = {n, n, n};
  nd_array *a;
  assert_int_equal(nd_array_new(&a, ND_I16, 3, shape), ND_OK);
  int16_t *l = nd_array_data_mut(a);
  for (size_t z = 0; z < n; z++)
    for (size_t y = 0; y < n; y++)
      for (size_t x = 0; x < n; x++) {
        size_t hx = x * 2 / n, hy = y * 2 / n, hz = z * 2 / n;
        l[(z * n + y) * n + x] =
            (int16_t)(k == 2 ? 11 + hy + 2 * hx : 1 + hx + 2 * hz + (k == 1 ? 4 : 0));
      }
  if (k == 1) l[0] = 9;
  double s = k == 1 ? 1.0 : 2.0, o = k == 1 ? -8.5 : -8.0;
  const double aff[16] = {s, 0, 0, o, 0, s, 0, o, 0, 0, s, o, 0, 0, 0, 1};
  assert_int_equal(nd_array_set_affine(a, aff), ND_OK);
  assert_int_equal(nd_nifti_save(path, a), ND_OK);
  nd_array_release(a);
}

static void open_cache(fixture *f) {
  nd_cache_opts co = {.dir = f->cache, .no_sync = true};
  int rc = nd_cache_open(&f->c, &co);
  if (rc) fprintf(stderr, "cache: %s\n", nd_cache_open_errmsg());
  assert_int_equal(rc, ND_OK);
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_non_null(tg_mkdtemp(f->dir));
  snprintf(f->cache, sizeof f->cache, "%s/cache", f->dir);
  snprintf(f->grid, sizeof f->grid, "%s/grid.nii.gz", f->dir);
  write_grid(f->grid);
  for (unsigned p = 0; p < NPART; p++) {
    snprintf(f->img[p], sizeof f->img[p], "%s/%s.nii.gz", f->dir, ids[p]);
    write_image(f->img[p], p, 0);
    f->img_p[p] = f->img[p];
  }
  for (unsigned k = 0; k < NATL; k++) {
    snprintf(f->atlas[k], sizeof f->atlas[k], "%s/atlas-%s.nii.gz", f->dir, atlas_names[k]);
    write_atlas(f->atlas[k], k);
    f->atlas_p[k] = f->atlas[k];
  }
  open_cache(f);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  assert_int_equal(nd_cache_close(f->c), ND_OK);
  tg_rm_rf(f->dir);
  free(f);
  return 0;
}

typedef struct built {
  nd_graph *g;
  size_t natlas;
  int64_t features[NATL], loads[NPART], parc[NATL * NPART]; /* parc[a * NPART + i] */
} built;

static nd_features_spec spec_of(const fixture *f, size_t natlas) {
  nd_features_spec s = {.images = f->img_p,
                        .ids = ids,
                        .n = NPART,
                        .atlases = f->atlas_p,
                        .atlas_names = atlas_names,
                        .natlas = natlas,
                        .grid = f->grid};
  return s;
}

static void build_spec(const nd_features_spec *s, built *b) {
  assert_int_equal(nd_graph_new(&b->g), ND_OK);
  b->natlas = s->natlas;
  int rc = nd_features_add(b->g, s, b->features, b->loads, b->parc);
  if (rc) fprintf(stderr, "features: %s\n", nd_models_errmsg());
  assert_int_equal(rc, ND_OK);
}

static void build(const fixture *f, size_t natlas, built *b) {
  nd_features_spec s = spec_of(f, natlas);
  build_spec(&s, b);
}

static int run_on(built *b, nd_cache *c, nd_pool *pool, nd_graph_stats *st) {
  nd_graph_run_opts ro = {.cache = c, .pool = pool, .targets = b->features,
                          .ntargets = b->natlas};
  return nd_graph_run(b->g, &ro, st);
}

static void run_ok(built *b, nd_cache *c, nd_graph_stats *st) {
  int rc = run_on(b, c, NULL, st);
  if (rc) nd_graph_report(b->g, stderr);
  assert_int_equal(rc, ND_OK);
}

/* The node labelled exactly `label` (there must be one). */
static int64_t node_labelled(const nd_graph *g, const char *label) {
  int64_t found = -1;
  for (size_t i = 0; i < nd_graph_size(g); i++) {
    const char *l = nd_graph_label(g, (int64_t)i);
    if (l && strcmp(l, label) == 0) {
      assert_int_equal(found, -1);
      found = (int64_t)i;
    }
  }
  if (found < 0) fprintf(stderr, "no node labelled \"%s\"\n", label);
  assert_true(found >= 0);
  return found;
}

static nd_graph_node_state state_of(const nd_graph *g, const char *fmt, const char *name) {
  char label[300];
  snprintf(label, sizeof label, fmt, name);
  return nd_graph_state(g, node_labelled(g, label));
}

/* Atlas k's feature matrix computed directly: load, resample onto the grid,
 * parcellate each participant, stack, drop columns NaN for everyone. */
static nd_array *direct(const fixture *f, size_t k, nd_reduce_fn reduce) {
  nd_array *grid, *atlas, *res, *rows[NPART];
  assert_int_equal(nd_nifti_load(f->grid, ND_F32, &grid), ND_OK);
  assert_int_equal(nd_nifti_load(f->atlas[k], ND_F32, &atlas), ND_OK);
  assert_int_equal(nd_resample_nearest(atlas, grid, &res), ND_OK);
  nd_parcellate_opts o = {.reduce = reduce};
  size_t cols = 0;
  for (size_t i = 0; i < NPART; i++) {
    nd_array *img;
    assert_int_equal(nd_nifti_load(f->img[i], ND_F32, &img), ND_OK);
    assert_int_equal(nd_parcellate(img, res, &o, &rows[i], NULL), ND_OK);
    assert_int_equal(nd_array_ndim(rows[i]), 2);
    assert_int_equal(nd_array_dim(rows[i], 0), 1);
    cols = nd_array_dim(rows[i], 1);
    nd_array_release(img);
  }
  bool keep[64];
  size_t kept = 0;
  assert_true(cols <= 64);
  for (size_t j = 0; j < cols; j++) {
    keep[j] = false;
    for (size_t i = 0; i < NPART; i++)
      if (!isnan(((const double *)nd_array_data(rows[i]))[j])) keep[j] = true;
    kept += keep[j];
  }
  size_t shape[2] = {NPART, kept};
  nd_array *out;
  assert_int_equal(nd_array_new(&out, ND_F64, 2, shape), ND_OK);
  double *d = nd_array_data_mut(out);
  for (size_t i = 0; i < NPART; i++) {
    const double *r = nd_array_data(rows[i]);
    for (size_t j = 0, c = 0; j < cols; j++)
      if (keep[j]) d[i * kept + c++] = r[j];
    nd_array_release(rows[i]);
  }
  nd_array_release(grid);
  nd_array_release(atlas);
  nd_array_release(res);
  return out;
}

static void check_features(const fixture *f, built *b, nd_reduce_fn reduce) {
  for (size_t k = 0; k < b->natlas; k++) {
    nd_array *got, *want = direct(f, k, reduce);
    assert_int_equal(nd_graph_get(b->g, b->features[k], &got), ND_OK);
    assert_true(nd_array_equal(got, want));
    nd_array_release(got);
    nd_array_release(want);
  }
}

/* Whether node's value is in the cache. */
static int stored(nd_graph *g, nd_cache *c, int64_t node) {
  nd_hash128 k;
  assert_int_equal(nd_graph_key(g, node, &k), ND_OK);
  return nd_cache_has(c, k);
}

static void check_labels(const built *b) {
  char want[300];
  for (size_t i = 0; i < NPART; i++) {
    snprintf(want, sizeof want, "load %s", ids[i]);
    assert_string_equal(nd_graph_label(b->g, b->loads[i]), want);
    for (size_t a = 0; a < b->natlas; a++) {
      snprintf(want, sizeof want, "parcellate %s %s", ids[i], atlas_names[a]);
      assert_string_equal(nd_graph_label(b->g, b->parc[a * NPART + i]), want);
    }
  }
  for (size_t a = 0; a < b->natlas; a++) {
    snprintf(want, sizeof want, "features %s", atlas_names[a]);
    assert_string_equal(nd_graph_label(b->g, b->features[a]), want);
  }
}

/* First run: everything computes once and equals the direct computation;
 * a rerun in a fresh graph computes nothing and runs no load. */
static void test_features_end_to_end(void **state) {
  fixture *f = *state;
  built b;
  build(f, 2, &b);
  check_labels(&b);
  nd_graph_stats st;
  run_ok(&b, f->c, &st);
  /* 6 image loads, the grid, 2 atlas loads, 2 resamples, 12 parcellations,
   * 2 stacks. */
  assert_int_equal(st.computed, NPART + 1 + 2 + 2 + 2 * NPART + 2);
  assert_int_equal(st.failed + st.skipped, 0);
  for (size_t i = 0; i < NPART; i++)
    assert_int_equal(nd_graph_state(b.g, b.loads[i]), ND_GNODE_COMPUTED);
  assert_int_equal(state_of(b.g, "resample %s", "fine"), ND_GNODE_COMPUTED);
  assert_int_equal(state_of(b.g, "load %s", "grid"), ND_GNODE_COMPUTED);
  check_features(f, &b, ND_REDUCE_MEAN);
  /* The parcellations are stored, the loads are not. */
  for (size_t i = 0; i < NPART; i++) {
    assert_int_equal(stored(b.g, f->c, b.loads[i]), 0);
    for (size_t a = 0; a < 2; a++) assert_int_equal(stored(b.g, f->c, b.parc[a * NPART + i]), 1);
  }
  assert_int_equal(stored(b.g, f->c, node_labelled(b.g, "load grid")), 0);
  assert_int_equal(stored(b.g, f->c, node_labelled(b.g, "resample fine")), 1);

  /* The coarse atlas has 4 labels; the fine one 4 too: its label 9 vanished
   * on the 2 mm grid and gives no column at all. */
  nd_array *m;
  assert_int_equal(nd_graph_get(b.g, b.features[1], &m), ND_OK);
  assert_int_equal(nd_array_dim(m, 0), NPART);
  assert_int_equal(nd_array_dim(m, 1), 4);
  nd_array_release(m);
  nd_graph_free(b.g);

  /* A fresh graph: the stacks are hits, nothing below them is visited. */
  build(f, 2, &b);
  run_ok(&b, f->c, &st);
  assert_int_equal(st.computed, 0);
  assert_int_equal(st.hits, 2);
  for (size_t i = 0; i < NPART; i++) {
    assert_int_not_equal(nd_graph_state(b.g, b.loads[i]), ND_GNODE_COMPUTED);
    assert_int_equal(nd_graph_state(b.g, b.loads[i]), ND_GNODE_UNUSED);
  }
  for (size_t j = 0; j < 2 * NPART; j++)
    assert_int_equal(nd_graph_state(b.g, b.parc[j]), ND_GNODE_UNUSED);
  for (size_t a = 0; a < 2; a++)
    assert_int_equal(nd_graph_state(b.g, b.features[a]), ND_GNODE_HIT);
  check_features(f, &b, ND_REDUCE_MEAN);
  nd_graph_free(b.g);
}

/* Rewriting one image recomputes exactly its parcellations and the stacks. */
static void test_features_changed_image(void **state) {
  fixture *f = *state;
  built b;
  build(f, 2, &b);
  run_ok(&b, f->c, NULL);
  nd_graph_free(b.g);

  write_image(f->img[CHANGED], CHANGED, 1);
  build(f, 2, &b);
  nd_graph_stats st;
  run_ok(&b, f->c, &st);
  /* its load, its 2 parcellations, the 2 stacks */
  assert_int_equal(st.computed, 1 + 2 + 2);
  for (size_t i = 0; i < NPART; i++) {
    nd_graph_node_state want_load = i == CHANGED ? ND_GNODE_COMPUTED : ND_GNODE_UNUSED;
    assert_int_equal(nd_graph_state(b.g, b.loads[i]), want_load);
    for (size_t a = 0; a < 2; a++) {
      nd_graph_node_state s = nd_graph_state(b.g, b.parc[a * NPART + i]);
      if (i == CHANGED) {
        assert_int_equal(s, ND_GNODE_COMPUTED);
      } else {
        assert_int_not_equal(s, ND_GNODE_COMPUTED);
        assert_int_equal(s, ND_GNODE_HIT);
      }
    }
  }
  for (size_t a = 0; a < 2; a++)
    assert_int_equal(nd_graph_state(b.g, b.features[a]), ND_GNODE_COMPUTED);
  /* The resampled atlases come from the cache; no atlas or grid is loaded. */
  assert_int_equal(state_of(b.g, "resample %s", "fine"), ND_GNODE_HIT);
  assert_int_equal(state_of(b.g, "load atlas %s", "fine"), ND_GNODE_UNUSED);
  assert_int_equal(state_of(b.g, "load %s", "grid"), ND_GNODE_UNUSED);
  check_features(f, &b, ND_REDUCE_MEAN);
  nd_graph_free(b.g);
}

/* A third atlas in a new graph computes its resample, its parcellations and
 * its stack; the images are loaded again (loads are not stored) and the old
 * atlases' parcellations are not visited. */
static void test_features_added_atlas(void **state) {
  fixture *f = *state;
  built b;
  build(f, 2, &b);
  run_ok(&b, f->c, NULL);
  nd_graph_free(b.g);

  build(f, 3, &b);
  check_labels(&b);
  nd_graph_stats st;
  run_ok(&b, f->c, &st);
  /* 6 image loads, the grid, the third atlas's load and resample, its 6
   * parcellations and its stack. */
  assert_int_equal(st.computed, NPART + 1 + 1 + 1 + NPART + 1);
  assert_int_equal(st.hits, 2);
  for (size_t i = 0; i < NPART; i++) {
    assert_int_equal(nd_graph_state(b.g, b.loads[i]), ND_GNODE_COMPUTED);
    for (size_t a = 0; a < 2; a++) {
      nd_graph_node_state s = nd_graph_state(b.g, b.parc[a * NPART + i]);
      assert_true(s == ND_GNODE_HIT || s == ND_GNODE_UNUSED);
      assert_int_equal(s, ND_GNODE_UNUSED);
    }
    assert_int_equal(nd_graph_state(b.g, b.parc[2 * NPART + i]), ND_GNODE_COMPUTED);
  }
  assert_int_equal(nd_graph_state(b.g, b.features[0]), ND_GNODE_HIT);
  assert_int_equal(nd_graph_state(b.g, b.features[1]), ND_GNODE_HIT);
  assert_int_equal(nd_graph_state(b.g, b.features[2]), ND_GNODE_COMPUTED);
  assert_int_equal(state_of(b.g, "resample %s", "third"), ND_GNODE_COMPUTED);
  assert_int_equal(state_of(b.g, "load atlas %s", "third"), ND_GNODE_COMPUTED);
  for (size_t a = 0; a < 2; a++) {
    assert_int_equal(state_of(b.g, "resample %s", atlas_names[a]), ND_GNODE_UNUSED);
    assert_int_equal(state_of(b.g, "load atlas %s", atlas_names[a]), ND_GNODE_UNUSED);
  }
  check_features(f, &b, ND_REDUCE_MEAN);
  nd_graph_free(b.g);
}

/* cache_loads stores the loads (with the same keys as uncached loads): a
 * later graph needing them with another reduction reads them as hits. */
static void test_features_cache_loads(void **state) {
  fixture *f = *state;
  nd_features_spec s = spec_of(f, 1);
  built plain, b;
  build_spec(&s, &plain);
  s.cache_loads = true;
  build_spec(&s, &b);
  for (size_t i = 0; i < NPART; i++) {
    nd_hash128 k0, k1;
    assert_int_equal(nd_graph_key(plain.g, plain.loads[i], &k0), ND_OK);
    assert_int_equal(nd_graph_key(b.g, b.loads[i], &k1), ND_OK);
    assert_true(nd_hash128_eq(k0, k1));
  }
  nd_graph_free(plain.g);
  run_ok(&b, f->c, NULL);
  for (size_t i = 0; i < NPART; i++) assert_int_equal(stored(b.g, f->c, b.loads[i]), 1);
  nd_graph_free(b.g);

  s.reduce = "median";
  build_spec(&s, &b);
  nd_graph_stats st;
  run_ok(&b, f->c, &st);
  for (size_t i = 0; i < NPART; i++) {
    assert_int_equal(nd_graph_state(b.g, b.loads[i]), ND_GNODE_HIT);
    assert_int_equal(nd_graph_state(b.g, b.parc[i]), ND_GNODE_COMPUTED);
  }
  /* The resampled atlas is stored either way. */
  assert_int_equal(state_of(b.g, "resample %s", "coarse"), ND_GNODE_HIT);
  assert_int_equal(st.computed, NPART + 1);
  check_features(f, &b, ND_REDUCE_MEDIAN);
  nd_graph_free(b.g);
}

/* A missing image fails its participant's load (the message names the
 * path); an unreadable one fails its load with the reader's message; every
 * other participant's parcellations still compute and are stored. */
static void test_features_missing_image(void **state) {
  fixture *f = *state;
  const size_t missing = 1, garbage = 4;
  assert_int_equal(unlink(f->img[missing]), 0);
  assert_int_equal(tg_write_str(f->img[garbage], "not a NIfTI image\n"), 0);
  built b;
  build(f, 2, &b);
  nd_graph_stats st;
  assert_int_equal(run_on(&b, f->c, NULL, &st), ND_ETASK);

  const char *msg;
  assert_int_not_equal(nd_graph_error(b.g, b.loads[missing], &msg), ND_OK);
  assert_non_null(strstr(msg, f->img[missing]));
  assert_int_equal(nd_graph_state(b.g, b.loads[missing]), ND_GNODE_SKIPPED);
  assert_int_not_equal(nd_graph_error(b.g, b.loads[garbage], &msg), ND_OK);
  assert_non_null(strstr(msg, f->img[garbage]));
  assert_int_equal(nd_graph_state(b.g, b.loads[garbage]), ND_GNODE_FAILED);
  for (size_t i = 0; i < NPART; i++)
    for (size_t a = 0; a < 2; a++) {
      nd_graph_node_state want =
          i == missing || i == garbage ? ND_GNODE_SKIPPED : ND_GNODE_COMPUTED;
      assert_int_equal(nd_graph_state(b.g, b.parc[a * NPART + i]), want);
    }
  for (size_t a = 0; a < 2; a++) {
    assert_int_equal(nd_graph_state(b.g, b.features[a]), ND_GNODE_SKIPPED);
    nd_array *out;
    assert_int_equal(nd_graph_get(b.g, b.features[a], &out), ND_ENOTFOUND);
  }
  char *report = tg_report(b.g, NULL);
  assert_non_null(strstr(report, f->img[missing]));
  assert_non_null(strstr(report, f->img[garbage]));
  free(report);
  nd_graph_free(b.g);

  /* Repaired: only the two participants' parcellations and the stacks run. */
  write_image(f->img[missing], (unsigned)missing, 0);
  write_image(f->img[garbage], (unsigned)garbage, 0);
  build(f, 2, &b);
  run_ok(&b, f->c, &st);
  assert_int_equal(st.computed, 2 + 2 * 2 + 2);
  for (size_t i = 0; i < NPART; i++)
    for (size_t a = 0; a < 2; a++) {
      nd_graph_node_state want =
          i == missing || i == garbage ? ND_GNODE_COMPUTED : ND_GNODE_HIT;
      assert_int_equal(nd_graph_state(b.g, b.parc[a * NPART + i]), want);
    }
  check_features(f, &b, ND_REDUCE_MEAN);
  nd_graph_free(b.g);
}

/* A NaN voxel in one participant's image makes its region NaN for that
 * participant only: the stack fails naming that input. */
static void test_features_nan_image(void **state) {
  fixture *f = *state;
  size_t shape[3] = {GRID, GRID, GRID};
  nd_array *a;
  assert_int_equal(nd_array_new(&a, ND_F32, 3, shape), ND_OK);
  float *x = nd_array_data_mut(a);
  for (size_t i = 0; i < (size_t)GRID * GRID * GRID; i++) x[i] = (float)i;
  x[0] = NAN;
  assert_int_equal(nd_array_set_affine(a, grid_affine), ND_OK);
  assert_int_equal(nd_nifti_save(f->img[2], a), ND_OK);
  nd_array_release(a);

  built b;
  build(f, 1, &b);
  assert_int_equal(run_on(&b, f->c, NULL, NULL), ND_ETASK);
  const char *msg;
  assert_int_equal(nd_graph_state(b.g, b.features[0]), ND_GNODE_FAILED);
  assert_int_equal(nd_graph_error(b.g, b.features[0], &msg), ND_EINVAL);
  assert_non_null(strstr(msg, "input 2"));
  for (size_t i = 0; i < NPART; i++)
    assert_int_equal(nd_graph_state(b.g, b.parc[i]), ND_GNODE_COMPUTED);
  nd_graph_free(b.g);
}

/* Defaults: ids and atlas names NULL label by path; grid NULL is image 0,
 * whose load keeps its "load <id>" label. */
static void test_features_defaults(void **state) {
  fixture *f = *state;
  nd_features_spec s = {.images = f->img_p, .ids = ids, .n = NPART, .atlases = f->atlas_p,
                        .natlas = 2};
  built b;
  build_spec(&s, &b);
  char want[2 * TG_PATH_MAX];
  for (size_t i = 0; i < NPART; i++) {
    snprintf(want, sizeof want, "load %s", ids[i]);
    assert_string_equal(nd_graph_label(b.g, b.loads[i]), want);
    snprintf(want, sizeof want, "parcellate %s %s", ids[i], f->atlas[1]);
    assert_string_equal(nd_graph_label(b.g, b.parc[NPART + i]), want);
  }
  snprintf(want, sizeof want, "features %s", f->atlas[0]);
  assert_string_equal(nd_graph_label(b.g, b.features[0]), want);
  nd_graph_run_opts ro = {.targets = b.features, .ntargets = 2};
  assert_int_equal(nd_graph_run(b.g, &ro, NULL), ND_OK);
  check_features(f, &b, ND_REDUCE_MEAN); /* image 0 is on the grid file's grid */
  nd_graph_free(b.g);

  s.ids = NULL;
  build_spec(&s, &b);
  snprintf(want, sizeof want, "load %s", f->img[2]);
  assert_string_equal(nd_graph_label(b.g, b.loads[2]), want);
  snprintf(want, sizeof want, "load %s", f->img[0]);
  assert_string_equal(nd_graph_label(b.g, b.loads[0]), want);
  nd_graph_free(b.g);

  /* loads and extractions may be NULL. */
  assert_int_equal(nd_graph_new(&b.g), ND_OK);
  assert_int_equal(nd_features_add(b.g, &s, b.features, NULL, NULL), ND_OK);
  nd_graph_free(b.g);
}

static void test_features_bad_spec(void **state) {
  fixture *f = *state;
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), ND_OK);
  int64_t feats[NATL];
  nd_features_spec ok = spec_of(f, 2);
  assert_int_equal(nd_features_add(NULL, &ok, feats, NULL, NULL), ND_EINVAL);
  assert_int_equal(nd_features_add(g, NULL, feats, NULL, NULL), ND_EINVAL);
  assert_int_equal(nd_features_add(g, &ok, NULL, NULL, NULL), ND_EINVAL);
  nd_features_spec s = ok;
  s.n = 0;
  assert_int_equal(nd_features_add(g, &s, feats, NULL, NULL), ND_EINVAL);
  s = ok;
  s.natlas = 0;
  assert_int_equal(nd_features_add(g, &s, feats, NULL, NULL), ND_EINVAL);
  s = ok;
  s.images = NULL;
  assert_int_equal(nd_features_add(g, &s, feats, NULL, NULL), ND_EINVAL);
  s = ok;
  s.atlases = NULL;
  assert_int_equal(nd_features_add(g, &s, feats, NULL, NULL), ND_EINVAL);

  const char *imgs[NPART];
  memcpy(imgs, f->img_p, sizeof imgs);
  imgs[4] = NULL;
  s = ok;
  s.images = imgs;
  assert_int_equal(nd_features_add(g, &s, feats, NULL, NULL), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "image 4"));

  const char *atl[2] = {f->atlas[0], NULL};
  s = ok;
  s.atlases = atl;
  assert_int_equal(nd_features_add(g, &s, feats, NULL, NULL), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "atlas 1"));

  const char *bad_ids[NPART] = {"a", "b", NULL, "d", "e", "f"};
  s = ok;
  s.ids = bad_ids;
  assert_int_equal(nd_features_add(g, &s, feats, NULL, NULL), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "id"));

  const char *bad_names[2] = {"x", NULL};
  s = ok;
  s.atlas_names = bad_names;
  assert_int_equal(nd_features_add(g, &s, feats, NULL, NULL), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "name"));

  /* A spec refused up front adds nothing. */
  assert_int_equal(nd_graph_size(g), 0);
  nd_graph_free(g);

  /* An unknown reduction is the parcellate op's to refuse, when it runs. */
  built b;
  s = spec_of(f, 1);
  s.reduce = "bogus";
  build_spec(&s, &b);
  nd_graph_run_opts ro = {.targets = b.features, .ntargets = 1};
  assert_int_equal(nd_graph_run(b.g, &ro, NULL), ND_ETASK);
  const char *msg;
  assert_int_equal(nd_graph_state(b.g, b.parc[0]), ND_GNODE_FAILED);
  assert_int_equal(nd_graph_error(b.g, b.parc[0], &msg), ND_EINVAL);
  assert_non_null(strstr(msg, "bogus"));
  assert_int_equal(nd_graph_state(b.g, b.features[0]), ND_GNODE_SKIPPED);
  nd_graph_free(b.g);
}

/* The same matrices on 1 and 2 threads, each into its own cache. */
static void test_features_threads(void **state) {
  fixture *f = *state;
  const unsigned threads[2] = {1, 2};
  nd_pool *pools[2];
  assert_int_equal(nd_test_open_pools(pools, threads, 2), 0);
  nd_array *got[2][NATL];
  for (size_t t = 0; t < 2; t++) {
    char dir[TG_PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/cache-t%u", f->dir, threads[t]);
    nd_cache_opts co = {.dir = dir, .no_sync = true};
    nd_cache *c;
    assert_int_equal(nd_cache_open(&c, &co), ND_OK);
    built b;
    build(f, NATL, &b);
    nd_graph_stats st;
    int rc = run_on(&b, c, pools[t], &st);
    if (rc) nd_graph_report(b.g, stderr);
    assert_int_equal(rc, ND_OK);
    assert_int_equal(st.computed, NPART + 1 + 3 * 2 + 3 * NPART + 3);
    for (size_t k = 0; k < NATL; k++)
      assert_int_equal(nd_graph_get(b.g, b.features[k], &got[t][k]), ND_OK);
    nd_graph_free(b.g);
    assert_int_equal(nd_cache_close(c), ND_OK);
  }
  for (size_t k = 0; k < NATL; k++) {
    nd_array *want = direct(f, k, ND_REDUCE_MEAN);
    assert_true(nd_array_equal(got[0][k], got[1][k]));
    assert_true(nd_array_equal(got[0][k], want));
    nd_array_release(want);
    nd_array_release(got[0][k]);
    nd_array_release(got[1][k]);
  }
  nd_test_close_pools(pools, 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stack_rows_order_and_types),
      cmocka_unit_test(test_stack_rows_drop_empty),
      cmocka_unit_test(test_stack_rows_partial_nan),
      cmocka_unit_test(test_stack_rows_inf),
      cmocka_unit_test(test_stack_rows_bad_inputs),
      cmocka_unit_test(test_stack_rows_bad_params),
      cmocka_unit_test_setup_teardown(test_features_end_to_end, setup, teardown),
      cmocka_unit_test_setup_teardown(test_features_changed_image, setup, teardown),
      cmocka_unit_test_setup_teardown(test_features_added_atlas, setup, teardown),
      cmocka_unit_test_setup_teardown(test_features_cache_loads, setup, teardown),
      cmocka_unit_test_setup_teardown(test_features_missing_image, setup, teardown),
      cmocka_unit_test_setup_teardown(test_features_nan_image, setup, teardown),
      cmocka_unit_test_setup_teardown(test_features_defaults, setup, teardown),
      cmocka_unit_test_setup_teardown(test_features_bad_spec, setup, teardown),
      cmocka_unit_test_setup_teardown(test_features_threads, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
