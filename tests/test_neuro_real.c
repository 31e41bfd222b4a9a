/* cmocka suite: the neuro layer on REAL atlases (Debian's mricron-data,
 * /usr/share/mricron/templates) against reference values from an independent
 * implementation (nibabel + numpy + scipy.ndimage), produced by
 * scripts/neuro_reference.py into tests/data/neuro/ (see its README.md for
 * every record and formula).
 *
 *  - nd_nifti_header / nd_nifti_load: shapes, affines (<= 1e-6), labels
 *    (nd_atlas_labels) and per-label voxel counts of aal, HarvardOxford,
 *    brodmann, AICHAmc and JHU.
 *  - nd_resample_nearest onto real and synthetic grids (exact .5 ties, an
 *    oblique grid, a coarse grid where labels vanish): per-label counts, a
 *    whole-volume checksum and 300 sample voxels, exactly.
 *  - nd_parcellate with every reduction on a synthetic image (formula below,
 *    the same as the script's): mean/sum/std/variance within 1e-9 relative,
 *    min/max/median exactly (the median of an even count is the two middle
 *    values' (lo + hi) / 2.0, as scipy computes it); 4D means; a mask; vanished labels (NaN + the empty flags); a
 *    probabilistic atlas; the grid-mismatch refusal.
 *  - nd_connectivity: r and Fisher z, with and without the diagonal, within
 *    1e-12 of numpy; a constant column gives NaN.
 *
 * The whole suite is skipped (with a message) when the templates are missing.
 * The synthetic data uses only + - * / on small integers, evaluated in the
 * order written; this file is compiled with -ffp-contract=off so the doubles
 * are bit-identical to numpy's. */
#include <inttypes.h>
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

#include "nidag/core.h"
#include "nidag/neuro.h"

#ifndef ND_TEST_DATA_DIR
#error "ND_TEST_DATA_DIR must name tests/data (set by tests/CMakeLists.txt)"
#endif
#define REF_DIR ND_TEST_DATA_DIR "/neuro"
#ifndef ND_TEST_TEMPLATES_DIR
#define ND_TEST_TEMPLATES_DIR "/usr/share/mricron/templates"
#endif
#define TEMPLATES ND_TEST_TEMPLATES_DIR


#include "tests/neuro_templates.h"

/* ------------------------------------------------------ reference files */

typedef struct rec {
  int n;
  char **t;
} rec;

typedef struct ref {
  char *buf;
  rec *r;
  size_t n;
} ref;

static void ref_load(const char *name, ref *out) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", REF_DIR, name);
  FILE *f = fopen(path, "rb");
  if (!f) {
    print_error("cannot open reference file %s (regenerate with "
                "/usr/bin/python3 scripts/neuro_reference.py)\n", path);
    fail();
  }
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  long len = ftell(f);
  assert_true(len > 0);
  rewind(f);
  out->buf = malloc((size_t)len + 1);
  assert_non_null(out->buf);
  assert_int_equal(fread(out->buf, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  out->buf[len] = '\0';
  size_t cap = 64;
  out->r = malloc(cap * sizeof *out->r);
  out->n = 0;
  assert_non_null(out->r);
  char *save = NULL;
  for (char *line = strtok_r(out->buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    if (line[0] == '#' || line[0] == '\0') continue;
    int tcap = 8, n = 0;
    char **t = malloc((size_t)tcap * sizeof *t);
    assert_non_null(t);
    char *s2 = NULL;
    for (char *w = strtok_r(line, " \t\r", &s2); w; w = strtok_r(NULL, " \t\r", &s2)) {
      if (n == tcap) {
        tcap *= 2;
        t = realloc(t, (size_t)tcap * sizeof *t);
        assert_non_null(t);
      }
      t[n++] = w;
    }
    if (n == 0) {
      free(t);
      continue;
    }
    if (out->n == cap) {
      cap *= 2;
      out->r = realloc(out->r, cap * sizeof *out->r);
      assert_non_null(out->r);
    }
    out->r[out->n].n = n;
    out->r[out->n].t = t;
    out->n++;
  }
}

static void ref_free(ref *r) {
  for (size_t i = 0; i < r->n; i++) free(r->r[i].t);
  free(r->r);
  free(r->buf);
  memset(r, 0, sizeof *r);
}

/* Does record r have type `type` and (when non-NULL) fields 1, 2 equal? */
static bool rec_is(const rec *r, const char *type, const char *a, const char *b) {
  if (strcmp(r->t[0], type) != 0) return false;
  if (a && (r->n < 2 || strcmp(r->t[1], a) != 0)) return false;
  if (b && (r->n < 3 || strcmp(r->t[2], b) != 0)) return false;
  return true;
}

static double num(const rec *r, int i) {
  assert_true(i < r->n);
  char *end;
  double v = strtod(r->t[i], &end);
  assert_true(*end == '\0');
  return v;
}

static long long inum(const rec *r, int i) {
  assert_true(i < r->n);
  char *end;
  long long v = strtoll(r->t[i], &end, 10);
  assert_true(*end == '\0');
  return v;
}

static uint64_t unum(const rec *r, int i) {
  assert_true(i < r->n);
  char *end;
  unsigned long long v = strtoull(r->t[i], &end, 10);
  assert_true(*end == '\0');
  return (uint64_t)v;
}

/* ---------------------------------------------------------- comparisons */

static int g_fail_count;
static double g_max_rel; /* the largest relative difference seen (reported) */

static void near_rel(const char *what, const char *atlas, long long label, double got,
                     double want, double rel) {
  double tol = rel * fabs(want) + 1e-13;
  if (isfinite(want) && want != 0 && fabs(got - want) / fabs(want) > g_max_rel)
    g_max_rel = fabs(got - want) / fabs(want);
  bool ok = (isnan(want) && isnan(got)) || fabs(got - want) <= tol;
  if (!ok) {
    if (g_fail_count++ < 20)
      print_error("%s %s label %lld: got %.17g, want %.17g (diff %.3g)\n", atlas, what, label,
                  got, want, got - want);
  }
}

static void exact(const char *what, const char *atlas, long long label, double got, double want) {
  if (!(got == want || (isnan(got) && isnan(want)))) {
    if (g_fail_count++ < 20)
      print_error("%s %s label %lld: got %.17g, want %.17g exactly\n", atlas, what, label, got,
                  want);
  }
}

/* ------------------------------------------------------- atlas handling */

typedef struct atlas_ent {
  const char *name;
  nd_array *a;
} atlas_ent;

static atlas_ent g_atlases[] = {{"aal", NULL}, {"ho", NULL}, {"brodmann", NULL},
                                {"aicha", NULL}, {"jhu", NULL}};
#define N_ATLASES (sizeof g_atlases / sizeof g_atlases[0])

static const char *atlas_file(const char *name) {
  if (!strcmp(name, "aal")) return "aal.nii.gz";
  if (!strcmp(name, "ho")) return "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz";
  if (!strcmp(name, "brodmann")) return "brodmann.nii.gz";
  if (!strcmp(name, "aicha")) return "AICHAmc.nii.gz";
  if (!strcmp(name, "jhu")) return "JHU-WhiteMatter-labels-2mm.nii.gz";
  return NULL;
}

/* The atlas loaded once (f32; labels are small integers) and kept for the
 * suite; borrowed. */
static nd_array *atlas(const char *name) {
  for (size_t i = 0; i < N_ATLASES; i++) {
    if (strcmp(g_atlases[i].name, name) != 0) continue;
    if (!g_atlases[i].a) {
      char path[512];
      snprintf(path, sizeof path, "%s/%s", TEMPLATES, atlas_file(name));
      CHECK_OK(nd_nifti_load(path, ND_F32, &g_atlases[i].a));
    }
    return g_atlases[i].a;
  }
  print_error("unknown atlas %s\n", name);
  fail();
  return NULL;
}

static int release_atlases(void **state) {
  (void)state;
  for (size_t i = 0; i < N_ATLASES; i++) {
    nd_array_release(g_atlases[i].a);
    g_atlases[i].a = NULL;
  }
  return 0;
}

/* A u8 "like" array for a grid record (grid name nx ny nz affine16). */
static nd_array *grid_like(const ref *rs, const char *gname) {
  for (size_t q = 0; q < rs->n; q++) {
    const rec *r = &rs->r[q];
    if (!rec_is(r, "grid", gname, NULL)) continue;
    assert_int_equal(r->n, 5 + 16);
    size_t shape[3] = {(size_t)inum(r, 4), (size_t)inum(r, 3), (size_t)inum(r, 2)};
    double aff[16];
    for (int e = 0; e < 16; e++) aff[e] = num(r, 5 + e);
    nd_array *a;
    CHECK_OK(nd_array_new(&a, ND_U8, 3, shape));
    CHECK_OK(nd_array_set_affine(a, aff));
    return a;
  }
  print_error("no grid %s in resample.tsv\n", gname);
  fail();
  return NULL;
}

/* Target of a resampling case: an atlas's grid or a synthetic grid. New
 * reference. */
static nd_array *target_like(const ref *rs, const char *tgt) {
  if (atlas_file(tgt)) return nd_array_retain(atlas(tgt));
  return grid_like(rs, tgt);
}

static double elem(const nd_array *a, size_t i) {
  switch (nd_array_dtype(a)) {
    case ND_F32: return ((const float *)nd_array_data(a))[i];
    case ND_F64: return ((const double *)nd_array_data(a))[i];
    case ND_U8: return ((const uint8_t *)nd_array_data(a))[i];
    case ND_I16: return ((const int16_t *)nd_array_data(a))[i];
    case ND_I32: return ((const int32_t *)nd_array_data(a))[i];
    case ND_I64: return (double)((const int64_t *)nd_array_data(a))[i];
    default:
      print_error("unexpected dtype %s\n", nd_dtype_name(nd_array_dtype(a)));
      fail();
  }
  return 0;
}

#define MAX_LABEL 1024

/* Voxel count per label (labels < MAX_LABEL) of a 3D label array. */
static void count_labels(const nd_array *a, long long *counts) {
  memset(counts, 0, MAX_LABEL * sizeof *counts);
  size_t n = nd_array_count(a);
  for (size_t i = 0; i < n; i++) {
    double v = elem(a, i);
    assert_true(v >= 0 && v < MAX_LABEL && v == floor(v));
    counts[(size_t)v]++;
  }
}

/* The checksum of resample.tsv: sum of label[v] * splitmix64(v) mod 2^64. */
static uint64_t mix64(uint64_t v) {
  uint64_t z = v + UINT64_C(0x9E3779B97F4A7C15);
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

static uint64_t label_checksum(const nd_array *a) {
  uint64_t h = 0;
  size_t n = nd_array_count(a);
  for (size_t i = 0; i < n; i++) h += (uint64_t)elem(a, i) * mix64((uint64_t)i);
  return h;
}

/* ------------------------------------------------------ synthetic data */

/* v(i, j, k), see README.md; i = x, j = y, k = z. */
static double img_v(long i, long j, long k) {
  double x = (double)i / 90.0;
  double y = (double)j / 108.0;
  double z = (double)k / 90.0;
  double a = 4.0 * x;
  a = a * (1.0 - x);
  double b = 0.5 * y;
  b = b * y;
  double s = a + b;
  s = s - 0.3 * z;
  return s + 0.001 * (double)((i * j) % 17);
}

static double img_w(long i, long j, long k) {
  return (double)((i + 2 * j + 3 * k) % 11) / 10.0 - 0.5;
}

/* The 3D image (nt == 0) or 4D image (nt volumes) on the grid of `like`. */
static nd_array *make_image(const nd_array *like, int nt) {
  size_t nz = nd_array_dim(like, 0), ny = nd_array_dim(like, 1), nx = nd_array_dim(like, 2);
  size_t shape[4];
  int nd = 0;
  if (nt > 0) shape[nd++] = (size_t)nt;
  shape[nd++] = nz;
  shape[nd++] = ny;
  shape[nd++] = nx;
  nd_array *a;
  CHECK_OK(nd_array_new(&a, ND_F64, nd, shape));
  double *d = nd_array_data_mut(a);
  size_t vol = nx * ny * nz;
  for (size_t k = 0; k < nz; k++)
    for (size_t j = 0; j < ny; j++)
      for (size_t i = 0; i < nx; i++) {
        size_t p = (k * ny + j) * nx + i;
        double v = img_v((long)i, (long)j, (long)k);
        if (nt == 0) {
          d[p] = v;
        } else {
          double w = img_w((long)i, (long)j, (long)k);
          for (int t = 0; t < nt; t++) {
            double c = 0.1 * (double)t;
            d[(size_t)t * vol + p] = v + c * w;
          }
        }
      }
  CHECK_OK(nd_array_set_affine(a, nd_array_affine(like)));
  return a;
}

/* --------------------------------------------------------- a. atlases */

static void test_atlases(void **state) {
  (void)state;
  REQUIRE_TEMPLATES();
  ref rs;
  ref_load("atlases.tsv", &rs);
  int natl = 0;
  g_fail_count = 0;
  for (size_t q = 0; q < rs.n; q++) {
    const rec *r = &rs.r[q];
    if (!rec_is(r, "atlas", NULL, NULL)) continue;
    natl++;
    assert_int_equal(r->n, 6 + 16);
    const char *name = r->t[1];
    char path[512];
    snprintf(path, sizeof path, "%s/%s", TEMPLATES, r->t[2]);
    long long nx = inum(r, 3), ny = inum(r, 4), nz = inum(r, 5);
    double aff[16];
    for (int e = 0; e < 16; e++) aff[e] = num(r, 6 + e);

    nd_nifti_info info;
    CHECK_OK(nd_nifti_header(path, &info));
    assert_int_equal(info.ndim, 3);
    assert_int_equal(info.dim[0], nx);
    assert_int_equal(info.dim[1], ny);
    assert_int_equal(info.dim[2], nz);
    assert_int_equal(info.datatype, 2); /* uint8 */
    assert_int_equal(info.affine_source, ND_AFFINE_SFORM);
    for (int e = 0; e < 16; e++) assert_true(fabs(info.affine[e] - aff[e]) <= 1e-6);

    nd_array *a = atlas(name);
    assert_int_equal(nd_array_ndim(a), 3);
    assert_int_equal(nd_array_dim(a, 0), nz);
    assert_int_equal(nd_array_dim(a, 1), ny);
    assert_int_equal(nd_array_dim(a, 2), nx);
    assert_int_equal(nd_array_dtype(a), ND_F32);
    const double *got = nd_array_affine(a);
    assert_non_null(got);
    for (int e = 0; e < 16; e++) {
      if (fabs(got[e] - aff[e]) > 1e-6) {
        print_error("%s affine[%d]: got %.17g, want %.17g\n", name, e, got[e], aff[e]);
        fail();
      }
    }

    /* Labels and counts. */
    long long counts[MAX_LABEL];
    count_labels(a, counts);
    nd_array *labels;
    CHECK_OK(nd_atlas_labels(a, &labels));
    assert_int_equal(nd_array_dtype(labels), ND_I64);
    assert_int_equal(nd_array_ndim(labels), 1);
    const int64_t *lab = nd_array_data(labels);
    size_t nlab = nd_array_count(labels), seen = 0;
    for (size_t p = 0; p < rs.n; p++) {
      const rec *l = &rs.r[p];
      if (!rec_is(l, "label", name, NULL)) continue;
      long long want = inum(l, 2), cnt = inum(l, 3);
      assert_true(seen < nlab);
      if (lab[seen] != want) {
        print_error("%s label #%zu: got %" PRId64 ", want %lld\n", name, seen, lab[seen], want);
        fail();
      }
      if (counts[want] != cnt) {
        print_error("%s label %lld: %lld voxels, want %lld\n", name, want, counts[want], cnt);
        fail();
      }
      seen++;
    }
    assert_int_equal(seen, nlab);
    nd_array_release(labels);
  }
  assert_int_equal(natl, 5);
  ref_free(&rs);
}

/* -------------------------------------------------------- b. resampling */

static void test_resample(void **state) {
  (void)state;
  REQUIRE_TEMPLATES();
  ref rs;
  ref_load("resample.tsv", &rs);
  int ncases = 0;
  for (size_t q = 0; q < rs.n; q++) {
    const rec *r = &rs.r[q];
    if (!rec_is(r, "case", NULL, NULL)) continue;
    ncases++;
    const char *src = r->t[1], *tgt = r->t[2];
    nd_array *a = atlas(src);
    nd_array *like = target_like(&rs, tgt);
    nd_array *out = NULL;
    CHECK_OK(nd_resample_nearest(a, like, &out));
    assert_int_equal(nd_array_ndim(out), 3);
    assert_int_equal(nd_array_dim(out, 0), inum(r, 5));
    assert_int_equal(nd_array_dim(out, 1), inum(r, 4));
    assert_int_equal(nd_array_dim(out, 2), inum(r, 3));
    assert_int_equal(nd_array_dtype(out), nd_array_dtype(a));
    assert_non_null(nd_array_affine(out));
    assert_memory_equal(nd_array_affine(out), nd_array_affine(like), 16 * sizeof(double));
    assert_true(nd_grid_equal(out, like, 0));

    size_t nx = nd_array_dim(out, 2), ny = nd_array_dim(out, 1);
    int bad_samples = 0;
    for (size_t p = 0; p < rs.n; p++) {
      const rec *s = &rs.r[p];
      if (!rec_is(s, "sample", src, tgt)) continue;
      size_t i = (size_t)inum(s, 3), j = (size_t)inum(s, 4), k = (size_t)inum(s, 5);
      double got = elem(out, (k * ny + j) * nx + i), want = (double)inum(s, 6);
      if (got != want && bad_samples++ < 10)
        print_error("%s -> %s voxel (%zu, %zu, %zu): got %g, want %g\n", src, tgt, i, j, k, got,
                    want);
    }
    long long counts[MAX_LABEL];
    count_labels(out, counts);
    int bad_counts = 0;
    for (size_t p = 0; p < rs.n; p++) {
      const rec *c = &rs.r[p];
      if (rec_is(c, "count", src, tgt)) {
        long long lb = inum(c, 3), want = inum(c, 4);
        if (counts[lb] != want && bad_counts++ < 10)
          print_error("%s -> %s label %lld: %lld voxels, want %lld\n", src, tgt, lb, counts[lb],
                      want);
        counts[lb] = 0;
      } else if (rec_is(c, "absent", src, tgt)) {
        long long lb = inum(c, 3);
        if (counts[lb] != 0 && bad_counts++ < 10)
          print_error("%s -> %s label %lld should vanish, has %lld voxels\n", src, tgt, lb,
                      counts[lb]);
      }
    }
    for (size_t lb = 1; lb < MAX_LABEL; lb++)
      if (counts[lb] != 0 && bad_counts++ < 10)
        print_error("%s -> %s: unexpected label %zu (%lld voxels)\n", src, tgt, lb, counts[lb]);
    uint64_t h = label_checksum(out), want_h = unum(r, 6);
    if (h != want_h)
      print_error("%s -> %s: checksum %" PRIu64 ", want %" PRIu64 "\n", src, tgt, h, want_h);
    assert_int_equal(bad_samples, 0);
    assert_int_equal(bad_counts, 0);
    assert_true(h == want_h);
    nd_array_release(out);
    nd_array_release(like);
  }
  assert_int_equal(ncases, 12);
  ref_free(&rs);
}

/* ----------------------------------------------------- c. parcellation */

/* The atlas of a parcellate.tsv name on its grid (new reference) and the
 * grid the image lives on (new reference). */
static void parc_atlas(const ref *rs, const char *name, nd_array **at, nd_array **grid) {
  if (!strcmp(name, "aicha")) {
    *at = nd_array_retain(atlas("aicha"));
    *grid = nd_array_retain(atlas("aicha"));
    return;
  }
  const char *us = strchr(name, '_');
  char src[32];
  const char *tgt;
  if (us) {
    snprintf(src, sizeof src, "%.*s", (int)(us - name), name);
    tgt = us + 1;
  } else {
    snprintf(src, sizeof src, "%s", name);
    tgt = "aicha";
  }
  *grid = target_like(rs, tgt);
  CHECK_OK(nd_resample_nearest(atlas(src), *grid, at));
}

static const char *const stat_names[] = {"mean", "median", "sum", "min", "max", "std",
                                         "variance"};
static const nd_reduce_fn stat_fns[] = {ND_REDUCE_MEAN, ND_REDUCE_MEDIAN, ND_REDUCE_SUM,
                                        ND_REDUCE_MIN,  ND_REDUCE_MAX,    ND_REDUCE_STD,
                                        ND_REDUCE_VARIANCE};

static nd_array *labels_array(const int64_t *v, size_t n) {
  nd_array *a;
  size_t shape[1] = {n};
  CHECK_OK(nd_array_from(&a, ND_I64, 1, shape, v, n * sizeof *v));
  return a;
}

static void test_parcellate(void **state) {
  (void)state;
  REQUIRE_TEMPLATES();
  ref rs, rp;
  ref_load("resample.tsv", &rs);
  ref_load("parcellate.tsv", &rp);
  g_max_rel = 0;
  static const char *const names[] = {"aicha", "aal", "ho", "brodmann", "jhu", "aicha_g6",
                                      "jhu_g6"};
  g_fail_count = 0;

  /* Formula check: the image's sum over the AICHAmc grid. */
  {
    nd_array *img = make_image(atlas("aicha"), 0);
    const double *d = nd_array_data(img);
    double s = 0;
    for (size_t i = 0; i < nd_array_count(img); i++) s += d[i];
    for (size_t q = 0; q < rp.n; q++)
      if (rec_is(&rp.r[q], "image3d_sum", NULL, NULL))
        assert_true(fabs(s - num(&rp.r[q], 1)) <= 1e-9 * fabs(s));
    nd_array_release(img);
  }

  for (size_t an = 0; an < sizeof names / sizeof names[0]; an++) {
    const char *name = names[an];
    nd_array *at, *grid;
    parc_atlas(&rs, name, &at, &grid);
    nd_array *img = make_image(grid, 0);
    nd_array *img4 = make_image(grid, 5);

    /* Reference rows, ascending label order. */
    size_t nref = 0;
    for (size_t q = 0; q < rp.n; q++) nref += rec_is(&rp.r[q], "stat", name, NULL);
    assert_true(nref > 0);

    for (size_t f = 0; f < 7; f++) {
      nd_parcellate_opts o = {0};
      o.reduce = stat_fns[f];
      nd_array *out = NULL, *empty = NULL;
      CHECK_OK(nd_parcellate(img, at, &o, &out, &empty));
      assert_int_equal(nd_array_dtype(out), ND_F64);
      assert_int_equal(nd_array_ndim(out), 2);
      assert_int_equal(nd_array_dim(out, 0), 1);
      assert_int_equal(nd_array_dim(out, 1), nref);
      assert_int_equal(nd_array_count(empty), nref);
      const uint8_t *em = nd_array_data(empty);
      for (size_t c = 0; c < nref; c++) assert_int_equal(em[c], 0);
      const double *v = nd_array_data(out);
      size_t c = 0;
      for (size_t q = 0; q < rp.n; q++) {
        const rec *r = &rp.r[q];
        if (!rec_is(r, "stat", name, NULL)) continue;
        long long lb = inum(r, 2);
        double want = num(r, 4 + (int)f);
        switch (stat_fns[f]) {
          /* Values of the image itself, or (median of an even count) the
           * two middle values' (lo + hi) / 2.0 as scipy computes it. */
          case ND_REDUCE_MIN:
          case ND_REDUCE_MAX:
          case ND_REDUCE_MEDIAN: exact(stat_names[f], name, lb, v[c], want); break;
          default: near_rel(stat_names[f], name, lb, v[c], want, 1e-9); break;
        }
        c++;
      }
      nd_array_release(out);
      nd_array_release(empty);
    }

    /* 4D: the mean of each volume. */
    {
      nd_parcellate_opts o = {0};
      nd_array *out = NULL;
      CHECK_OK(nd_parcellate(img4, at, &o, &out, NULL));
      assert_int_equal(nd_array_ndim(out), 2);
      assert_int_equal(nd_array_dim(out, 0), 5);
      assert_int_equal(nd_array_dim(out, 1), nref);
      const double *v = nd_array_data(out);
      size_t c = 0;
      for (size_t q = 0; q < rp.n; q++) {
        const rec *r = &rp.r[q];
        if (!rec_is(r, "mean4d", name, NULL)) continue;
        for (int t = 0; t < 5; t++)
          near_rel("mean4d", name, inum(r, 2), v[(size_t)t * nref + c], num(r, 3 + t), 1e-9);
        c++;
      }
      assert_int_equal(c, nref);
      nd_array_release(out);
    }

    /* Explicit columns: the original atlas's labels, so the ones that
     * vanished on this grid are NaN and flagged (aicha_g6, jhu_g6), plus a
     * label no atlas has (1000). */
    {
      const char *src = strchr(name, '_') ? (strcmp(name, "aicha_g6") ? "jhu" : "aicha") : name;
      nd_array *orig;
      CHECK_OK(nd_atlas_labels(atlas(src), &orig));
      size_t norig = nd_array_count(orig);
      int64_t *cols = calloc(norig + 1, sizeof *cols);
      assert_non_null(cols);
      memcpy(cols, nd_array_data(orig), norig * sizeof *cols);
      cols[norig] = 1000;
      nd_array *lab = labels_array(cols, norig + 1);
      nd_parcellate_opts o = {0};
      o.reduce = ND_REDUCE_MEAN;
      o.labels = lab;
      nd_array *out = NULL, *empty = NULL;
      CHECK_OK(nd_parcellate(img, at, &o, &out, &empty));
      assert_int_equal(nd_array_dim(out, 1), norig + 1);
      assert_int_equal(nd_array_count(empty), norig + 1);
      const double *v = nd_array_data(out);
      const uint8_t *em = nd_array_data(empty);
      size_t nabsent = 0;
      for (size_t c = 0; c < norig + 1; c++) {
        bool absent = c == norig;
        double want = NAN;
        for (size_t q = 0; q < rp.n; q++) {
          const rec *r = &rp.r[q];
          if (rec_is(r, "absent", name, NULL) && inum(r, 2) == cols[c]) absent = true;
          if (rec_is(r, "stat", name, NULL) && inum(r, 2) == cols[c]) want = num(r, 4);
        }
        if (absent) {
          nabsent++;
          assert_true(isnan(v[c]));
          assert_int_equal(em[c], 1);
        } else {
          assert_int_equal(em[c], 0);
          near_rel("mean(labels)", name, (long long)cols[c], v[c], want, 1e-9);
        }
      }
      assert_int_equal(nabsent, nd_array_count(orig) + 1 - nref);
      nd_array_release(out);
      nd_array_release(empty);
      nd_array_release(lab);
      nd_array_release(orig);
      free(cols);
    }

    /* Mask (aicha): (i + j + k) % 4 != 0. */
    if (!strcmp(name, "aicha")) {
      size_t nz = nd_array_dim(grid, 0), ny = nd_array_dim(grid, 1), nx = nd_array_dim(grid, 2);
      size_t shape[3] = {nz, ny, nx};
      nd_array *mask;
      CHECK_OK(nd_array_new(&mask, ND_U8, 3, shape));
      uint8_t *m = nd_array_data_mut(mask);
      for (size_t k = 0; k < nz; k++)
        for (size_t j = 0; j < ny; j++)
          for (size_t i = 0; i < nx; i++) m[(k * ny + j) * nx + i] = (i + j + k) % 4 != 0;
      CHECK_OK(nd_array_set_affine(mask, nd_array_affine(grid)));
      nd_parcellate_opts o = {0};
      o.mask = mask;
      nd_array *out = NULL, *empty = NULL;
      CHECK_OK(nd_parcellate(img, at, &o, &out, &empty));
      assert_int_equal(nd_array_dim(out, 1), nref);
      const double *v = nd_array_data(out);
      const uint8_t *em = nd_array_data(empty);
      size_t c = 0;
      for (size_t q = 0; q < rp.n; q++) {
        const rec *r = &rp.r[q];
        if (!rec_is(r, "masked", name, NULL)) continue;
        near_rel("masked mean", name, inum(r, 2), v[c], num(r, 4), 1e-9);
        assert_int_equal(em[c], 0);
        c++;
      }
      assert_int_equal(c, nref); /* no label vanishes under this mask */
      nd_array_release(out);
      nd_array_release(empty);
      nd_array_release(mask);
    }

    nd_array_release(img);
    nd_array_release(img4);
    nd_array_release(at);
    nd_array_release(grid);
  }
  print_message("parcellation: largest relative difference from scipy %.3g\n", g_max_rel);
  if (g_fail_count) print_error("%d parcellation values differ\n", g_fail_count);
  assert_int_equal(g_fail_count, 0);
  ref_free(&rs);
  ref_free(&rp);
}

static void test_parcellate_grid_mismatch(void **state) {
  (void)state;
  REQUIRE_TEMPLATES();
  nd_array *img = make_image(atlas("aicha"), 0);
  nd_array *out = NULL;
  nd_parcellate_opts o = {0};
  int rc = nd_parcellate(img, atlas("aal"), &o, &out, NULL);
  assert_int_equal(rc, ND_EINVAL);
  assert_null(out);
  assert_true(strlen(nd_neuro_errmsg()) > 0);
  print_message("grid mismatch message: %s\n", nd_neuro_errmsg());
  nd_array_release(img);
}

static void test_parcellate_probabilistic(void **state) {
  (void)state;
  REQUIRE_TEMPLATES();
  ref rp;
  ref_load("parcellate.tsv", &rp);
  nd_array *aicha = atlas("aicha");
  long long la[3] = {0}, lb[3] = {0};
  int nmaps = 0;
  for (size_t q = 0; q < rp.n; q++) {
    const rec *r = &rp.r[q];
    if (!rec_is(r, "probmap", NULL, NULL)) continue;
    long long m = inum(r, 1);
    assert_true(m >= 0 && m < 3);
    la[m] = inum(r, 2);
    lb[m] = inum(r, 3);
    nmaps++;
  }
  assert_int_equal(nmaps, 3);
  size_t nz = nd_array_dim(aicha, 0), ny = nd_array_dim(aicha, 1), nx = nd_array_dim(aicha, 2);
  size_t vol = nx * ny * nz;
  size_t shape[4] = {3, nz, ny, nx};
  nd_array *w;
  CHECK_OK(nd_array_new(&w, ND_F64, 4, shape));
  double *d = nd_array_data_mut(w);
  for (int m = 0; m < 3; m++)
    for (size_t k = 0; k < nz; k++)
      for (size_t j = 0; j < ny; j++)
        for (size_t i = 0; i < nx; i++) {
          size_t p = (k * ny + j) * nx + i;
          long long l = (long long)elem(aicha, p);
          double x = (double)i / 90.0, y = (double)j / 108.0, z = (double)k / 90.0;
          double a = 0.5 * x;
          a = a * y;
          double b = 0.25 * z;
          b = b * (double)m;
          double wt = (1.0 + a) + b;
          d[(size_t)m * vol + p] = (l == la[m] || l == lb[m]) ? wt : 0.0;
        }
  CHECK_OK(nd_array_set_affine(w, nd_array_affine(aicha)));
  nd_array *img = make_image(aicha, 0), *img4 = make_image(aicha, 5);
  nd_parcellate_opts o = {0};
  nd_array *out = NULL, *out4 = NULL, *empty = NULL;
  CHECK_OK(nd_parcellate(img, w, &o, &out, &empty));
  CHECK_OK(nd_parcellate(img4, w, &o, &out4, NULL));
  assert_int_equal(nd_array_dim(out, 0), 1);
  assert_int_equal(nd_array_dim(out, 1), 3);
  assert_int_equal(nd_array_dim(out4, 0), 5);
  assert_int_equal(nd_array_dim(out4, 1), 3);
  assert_int_equal(nd_array_count(empty), 3);
  g_fail_count = 0;
  const double *v = nd_array_data(out), *v4 = nd_array_data(out4);
  for (size_t q = 0; q < rp.n; q++) {
    const rec *r = &rp.r[q];
    if (!rec_is(r, "prob", NULL, NULL)) continue;
    long long m = inum(r, 1);
    assert_int_equal(((const uint8_t *)nd_array_data(empty))[m], 0);
    near_rel("weighted mean", "prob", m, v[m], num(r, 2), 1e-9);
    for (int t = 0; t < 5; t++)
      near_rel("weighted mean 4D", "prob", m, v4[(size_t)t * 3 + (size_t)m], num(r, 3 + t), 1e-9);
  }
  assert_int_equal(g_fail_count, 0);
  nd_array_release(out);
  nd_array_release(out4);
  nd_array_release(empty);
  nd_array_release(img);
  nd_array_release(img4);
  nd_array_release(w);
  ref_free(&rp);
}

/* ----------------------------------------------------- d. connectivity */

static nd_array *make_series(const char *name, size_t nt, size_t nr) {
  size_t shape[2] = {nt, nr};
  nd_array *a;
  CHECK_OK(nd_array_new(&a, ND_F64, 2, shape));
  double *d = nd_array_data_mut(a);
  for (size_t t = 0; t < nt; t++)
    for (size_t r = 0; r < nr; r++) {
      long lt = (long)t, lr = (long)r;
      double v;
      if (!strcmp(name, "main")) {
        double c = 0.02 * (double)lt;
        v = (double)((lt * (2 * lr + 3) * 37 + lr * lr * 11) % 101) / 101.0 +
            c * (double)(lr % 4);
      } else {
        v = r == 2 ? 3.0 : (double)((lt * (lr + 1) * 5) % 7) / 7.0;
      }
      d[t * nr + r] = v;
    }
  return a;
}

static void test_connectivity(void **state) {
  (void)state;
  /* Independent of the templates. */
  ref rc;
  ref_load("connectivity.tsv", &rc);
  int nseries = 0;
  for (size_t q = 0; q < rc.n; q++) {
    const rec *s = &rc.r[q];
    if (!rec_is(s, "series", NULL, NULL)) continue;
    nseries++;
    const char *name = s->t[1];
    size_t nt = (size_t)inum(s, 2), nr = (size_t)inum(s, 3);
    nd_array *ts = make_series(name, nt, nr);
    static const char *const kinds[] = {"r_diag", "r_nodiag", "z_diag", "z_nodiag"};
    for (int kd = 0; kd < 4; kd++) {
      bool fz = kd >= 2, diag = kd % 2 == 0;
      nd_array *out = NULL;
      CHECK_OK(nd_connectivity(ts, fz, diag, &out));
      size_t want_n = diag ? nr * (nr + 1) / 2 : nr * (nr - 1) / 2;
      assert_int_equal(nd_array_dtype(out), ND_F64);
      assert_int_equal(nd_array_ndim(out), 1);
      assert_int_equal(nd_array_count(out), want_n);
      const double *v = nd_array_data(out);
      const rec *r = NULL;
      for (size_t p = 0; p < rc.n; p++)
        if (rec_is(&rc.r[p], kinds[kd], name, NULL)) r = &rc.r[p];
      assert_non_null(r);
      assert_int_equal((size_t)r->n, want_n + 2);
      size_t e = 0;
      for (size_t a = 0; a < nr; a++)
        for (size_t b = 0; b < (diag ? a + 1 : a); b++, e++) {
          double want = num(r, 2 + (int)e), got = v[e];
          bool ok;
          if (a == b && isnan(want))
            ok = true; /* the constant column's own diagonal: unspecified */
          else if (isnan(want))
            ok = isnan(got);
          else if (isinf(want))
            ok = isinf(got) && (got > 0) == (want > 0);
          else
            ok = fabs(got - want) <= 1e-12;
          if (!ok) {
            print_error("%s %s (%zu, %zu): got %.17g, want %.17g\n", kinds[kd], name, a, b, got,
                        want);
            fail();
          }
        }
      nd_array_release(out);
    }
    nd_array_release(ts);
  }
  assert_int_equal(nseries, 2);
  ref_free(&rc);
}

int main(void) {
  g_have_templates = access(TEMPLATES "/AICHAmc.nii.gz", R_OK) == 0 &&
                     access(TEMPLATES "/aal.nii.gz", R_OK) == 0;
  if (!g_have_templates)
    printf("neuro_real: %s is missing (Debian package mricron-data); the atlas tests are "
           "skipped\n", TEMPLATES);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_atlases),
      cmocka_unit_test(test_resample),
      cmocka_unit_test(test_parcellate),
      cmocka_unit_test(test_parcellate_grid_mismatch),
      cmocka_unit_test(test_parcellate_probabilistic),
      cmocka_unit_test(test_connectivity),
  };
  return cmocka_run_group_tests(tests, NULL, release_atlases);
}
