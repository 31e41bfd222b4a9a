/* Tests for tensor fits over images (nidag/dti.h: nd_dti_fit_image,
 * nd_dti_maps_save, nd_op_dti_fit, nd_dti_add) on DIPY's small_64D data
 * (tests/data/dti/small64.*): the maps agree with DIPY 1.6 and with the
 * voxel-level fit, a mask leaves the outside at 0, the result is the same
 * for every pool and chunking, the NIfTI files hold the maps in DIPY's
 * layout and are not rewritten when unchanged, and the graph node is cached
 * (a rerun computes nothing; a changed bvec or method recomputes; the
 * chunking is not part of the key). Bad inputs fail with messages naming
 * the problem and leave finished work in the cache. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "nidag.h"
#include "models/dti_int.h" /* nd__dti_fit_block */
#include "tests/test_graph_util.h"
#include "tests/testutil.h"

#ifndef ND_TEST_DATA_DIR
#error "ND_TEST_DATA_DIR must point at tests/data"
#endif

#define DATA ND_TEST_DATA_DIR "/dti/"
#define NX 10 /* small_64D is 10 x 10 x 10 x 65 */
#define NVOL 65
#define NSP (NX * NX * NX)

static char tmpdir[TG_PATH_MAX];

static nd_gradients *table(void) {
  nd_gradients *g = NULL;
  int rc = nd_gradients_read_fsl(DATA "small64.bval", DATA "small64.bvec", &g);
  if (rc) fail_msg("gradients: %s", nd_models_errmsg());
  return g;
}

static nd_array *dwi(nd_dtype dt) {
  nd_array *a = NULL;
  int rc = nd_nifti_load(DATA "small64.nii.gz", dt, &a);
  if (rc) fail_msg("dwi: %s", nd_neuro_errmsg());
  return a;
}

static nd_array *npy(const char *name) {
  char path[512];
  snprintf(path, sizeof path, DATA "%s", name);
  nd_array *a = NULL;
  if (nd_npy_load(path, &a)) fail_msg("%s: %s", path, nd_models_errmsg());
  return a;
}

static const double *map(const nd_array *maps, int m) {
  return (const double *)nd_array_data(maps) + (size_t)m * NSP;
}

static void save_array(const char *path, nd_array *a) {
  assert_int_equal(nd_nifti_save(path, a), ND_OK);
}

static char *tmp_path(const char *name) {
  static char paths[8][TG_PATH_MAX + 64];
  static int k;
  char *p = paths[k++ % 8];
  snprintf(p, sizeof paths[0], "%s/%s", tmpdir, name);
  return p;
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

/* ------------------------------------------------------------ the fit */

/* The maps equal the voxel-level fit bit for bit and DIPY to 1e-6 (x, y, z
 * reference order against the (m, z, y, x) maps). */
static void test_image_matches_voxel_fit_and_dipy(void **state) {
  (void)state;
  nd_gradients *g = table();
  nd_array *d = dwi(ND_F64), *maps = NULL;
  nd_dti_image_report rep;
  assert_int_equal(nd_dti_fit_image(g, d, NULL, NULL, &maps, &rep), ND_OK);
  assert_int_equal(rep.nvox, NSP);
  assert_int_equal(rep.nvox_fit, NSP);
  assert_int_equal(rep.n_failed, 0);
  const size_t *shape = nd_array_shape(maps);
  assert_int_equal(nd_array_ndim(maps), 4);
  assert_int_equal(shape[0], ND_DTI_NMAPS);
  assert_int_equal(shape[1] * shape[2] * shape[3], NSP);
  assert_non_null(nd_array_affine(maps));
  assert_memory_equal(nd_array_affine(maps), nd_array_affine(d), 16 * sizeof(double));

  /* voxel-major signals by hand */
  double *sig = malloc(NSP * NVOL * sizeof *sig);
  assert_non_null(sig);
  const double *dd = nd_array_data(d);
  for (size_t v = 0; v < NSP; v++)
    for (size_t t = 0; t < NVOL; t++) sig[v * NVOL + t] = dd[t * NSP + v];
  nd_dti_result r;
  assert_int_equal(nd_dti_fit(g, sig, NSP, NVOL, NULL, &r), ND_OK);
  assert_memory_equal(map(maps, ND_DTI_MAP_FA), r.fa, NSP * sizeof(double));
  assert_memory_equal(map(maps, ND_DTI_MAP_MD), r.md, NSP * sizeof(double));
  for (size_t v = 0; v < NSP; v++) {
    for (int k = 0; k < 3; k++)
      assert_true(map(maps, ND_DTI_MAP_EVALS + k)[v] == r.evals[3 * v + (size_t)k]);
    for (int k = 0; k < 9; k++)
      assert_true(map(maps, ND_DTI_MAP_EVECS + k)[v] == r.evecs[9 * v + (size_t)k]);
  }
  assert_true(rep.min_diffusivity == r.min_diffusivity);

  nd_array *fa = npy("small64_wls_fa.npy"), *md = npy("small64_wls_md.npy"),
           *ok = npy("small64_wls_well_defined.npy");
  const double *rfa = nd_array_data(fa), *rmd = nd_array_data(md);
  const int64_t *good = nd_array_data(ok);
  double wfa = 0, wmd = 0;
  size_t compared = 0;
  for (size_t x = 0; x < NX; x++)
    for (size_t y = 0; y < NX; y++)
      for (size_t z = 0; z < NX; z++) {
        size_t ref = (x * NX + y) * NX + z, v = (z * NX + y) * NX + x;
        if (!good[ref]) continue;
        compared++;
        wfa = fmax(wfa, fabs(map(maps, ND_DTI_MAP_FA)[v] - rfa[ref]));
        wmd = fmax(wmd, fabs(map(maps, ND_DTI_MAP_MD)[v] - rmd[ref]));
      }
  printf("# small_64D maps vs DIPY: %zu voxels, max |dFA| %.3g, |dMD| %.3g\n", compared, wfa,
         wmd);
  assert_true(compared > 900);
  assert_true(wfa <= 1e-6);
  assert_true(wmd <= 1e-6);
  nd_array_release(fa);
  nd_array_release(md);
  nd_array_release(ok);
  nd_dti_result_free(&r);
  free(sig);
  nd_array_release(maps);
  nd_array_release(d);
  nd_gradients_free(g);
}

/* The same maps for f32 and f64 input (integer data), any pool, chunking
 * and chunk count. */
static void test_image_independent_of_schedule(void **state) {
  (void)state;
  nd_gradients *g = table();
  nd_array *d64 = dwi(ND_F64), *d32 = dwi(ND_F32), *ref = NULL;
  assert_int_equal(nd_dti_fit_image(g, d64, NULL, NULL, &ref, NULL), ND_OK);
  nd_pool *pools[2];
  const unsigned threads[2] = {1, 2};
  assert_int_equal(nd_test_open_pools(pools, threads, 2), 0);
  const nd_chunking how[3] = {ND_STATIC, ND_DYNAMIC, ND_GUIDED};
  const size_t chunks[4] = {1, 3, 64, 5000};
  for (int p = 0; p < 2; p++)
    for (int h = 0; h < 3; h++)
      for (int c = 0; c < 4; c++)
        for (int m = 0; m < 2; m++) {
          nd_dti_opts o = {.pool = pools[p], .chunking = how[h], .chunks = chunks[c]};
          nd_array *maps = NULL;
          assert_int_equal(nd_dti_fit_image(g, m ? d32 : d64, NULL, &o, &maps, NULL), ND_OK);
          assert_true(nd_array_equal(maps, ref));
          nd_array_release(maps);
        }
  /* blocks of 97 voxels (11 blocks, the last one short), with and without a
   * mask: the same maps */
  size_t saved_block = nd__dti_fit_block;
  nd__dti_fit_block = 97;
  for (int p = 0; p < 2; p++) {
    nd_dti_opts o = {.pool = pools[p], .chunking = ND_DYNAMIC, .chunks = 10};
    nd_array *maps = NULL;
    nd_dti_image_report rep;
    assert_int_equal(nd_dti_fit_image(g, d64, NULL, &o, &maps, &rep), ND_OK);
    assert_true(nd_array_equal(maps, ref));
    assert_int_equal(rep.nvox_fit, NSP);
    assert_true(rep.min_diffusivity > 0);
    nd_array_release(maps);
  }
  /* failed voxels in two blocks are counted across blocks */
  double *dd = nd_array_data_mut(d64);
  assert_non_null(dd);
  dd[5 * NSP + 300] = NAN;  /* volume 5 of voxel 300 (block 3) */
  dd[7 * NSP + 700] = NAN;  /* volume 7 of voxel 700 (block 7) */
  nd_array *maps = NULL;
  nd_dti_image_report rep;
  assert_int_equal(nd_dti_fit_image(g, d64, NULL, NULL, &maps, &rep), ND_OK);
  assert_int_equal(rep.n_failed, 2);
  assert_true(isnan(map(maps, ND_DTI_MAP_FA)[300]) && isnan(map(maps, ND_DTI_MAP_MD)[700]));
  assert_true(map(maps, ND_DTI_MAP_FA)[301] == map(ref, ND_DTI_MAP_FA)[301]);
  nd_array_release(maps);
  nd__dti_fit_block = saved_block;
  nd_test_close_pools(pools, 2);
  nd_array_release(ref);
  nd_array_release(d32);
  nd_array_release(d64);
  nd_gradients_free(g);
}

/* A mask: voxels outside are 0 in every map, voxels inside equal the
 * unmasked fit; any numeric dtype; an all-zero mask fits nothing. */
static void test_image_mask(void **state) {
  (void)state;
  nd_gradients *g = table();
  nd_array *d = dwi(ND_F64), *full = NULL, *mask = NULL, *maps = NULL;
  assert_int_equal(nd_dti_fit_image(g, d, NULL, NULL, &full, NULL), ND_OK);
  const size_t ms[3] = {NX, NX, NX};
  for (int dt = 0; dt < 2; dt++) {
    assert_int_equal(nd_array_new(&mask, dt ? ND_F32 : ND_I16, 3, ms), ND_OK);
    void *md = nd_array_data_mut(mask);
    size_t inside = 0;
    for (size_t v = 0; v < NSP; v++) {
      bool in = (v * 7) % 3 == 0;
      inside += in;
      if (dt)
        ((float *)md)[v] = in ? 0.5f : 0.0f;
      else
        ((int16_t *)md)[v] = in ? -3 : 0;
    }
    nd_dti_image_report rep;
    assert_int_equal(nd_dti_fit_image(g, d, mask, NULL, &maps, &rep), ND_OK);
    assert_int_equal(rep.nvox_fit, inside);
    for (int m = 0; m < ND_DTI_NMAPS; m++)
      for (size_t v = 0; v < NSP; v++) {
        double want = (v * 7) % 3 == 0 ? map(full, m)[v] : 0.0;
        if (!(map(maps, m)[v] == want)) fail_msg("map %d voxel %zu", m, v);
      }
    nd_array_release(maps);
    nd_array_release(mask);
  }
  /* x, y, z, 1: a mask with one volume is the same mask */
  const size_t ms4[4] = {1, NX, NX, NX};
  assert_int_equal(nd_array_new(&mask, ND_U8, 4, ms4), ND_OK);
  ((uint8_t *)nd_array_data_mut(mask))[5] = 1;
  nd_dti_image_report rep;
  assert_int_equal(nd_dti_fit_image(g, d, mask, NULL, &maps, &rep), ND_OK);
  assert_int_equal(rep.nvox_fit, 1);
  assert_true(map(maps, ND_DTI_MAP_FA)[5] == map(full, ND_DTI_MAP_FA)[5]);
  nd_array_release(maps);
  nd_array_release(mask);
  assert_int_equal(nd_array_new(&mask, ND_U8, 3, ms), ND_OK);
  assert_int_equal(nd_dti_fit_image(g, d, mask, NULL, &maps, &rep), ND_OK);
  assert_int_equal(rep.nvox_fit, 0);
  for (size_t i = 0; i < nd_array_count(maps); i++)
    assert_true(((const double *)nd_array_data(maps))[i] == 0.0);
  nd_array_release(maps);
  nd_array_release(mask);
  nd_array_release(full);
  nd_array_release(d);
  nd_gradients_free(g);
}

static void test_image_errors(void **state) {
  (void)state;
  nd_gradients *g = table();
  nd_array *d = dwi(ND_F64), *maps = (nd_array *)1, *bad = NULL;
  /* a mask of another shape */
  const size_t s3[3] = {NX, NX, NX + 1};
  assert_int_equal(nd_array_new(&bad, ND_U8, 3, s3), ND_OK);
  assert_int_equal(nd_dti_fit_image(g, d, bad, NULL, &maps, NULL), ND_EINVAL);
  assert_null(maps);
  assert_non_null(strstr(nd_models_errmsg(), "mask"));
  nd_array_release(bad);
  /* a mask with another affine */
  const size_t s3b[3] = {NX, NX, NX};
  assert_int_equal(nd_array_new(&bad, ND_U8, 3, s3b), ND_OK);
  double aff[16];
  memcpy(aff, nd_array_affine(d), sizeof aff);
  aff[3] += 2.0;
  assert_int_equal(nd_array_set_affine(bad, aff), ND_OK);
  assert_int_equal(nd_dti_fit_image(g, d, bad, NULL, &maps, NULL), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "affine"));
  nd_array_release(bad);
  /* a 3D image as DWI */
  assert_int_equal(nd_array_new(&bad, ND_F64, 3, s3b), ND_OK);
  assert_int_equal(nd_dti_fit_image(g, bad, NULL, NULL, &maps, NULL), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "4D"));
  nd_array_release(bad);
  /* a volume count that is not the table's */
  const size_t s4[4] = {NVOL - 1, NX, NX, NX};
  assert_int_equal(nd_array_new(&bad, ND_F64, 4, s4), ND_OK);
  assert_int_equal(nd_dti_fit_image(g, bad, NULL, NULL, &maps, NULL), ND_EINVAL);
  assert_non_null(strstr(nd_models_errmsg(), "64 volumes"));
  nd_array_release(bad);
  /* an integer DWI array */
  const size_t s4b[4] = {NVOL, NX, NX, NX};
  assert_int_equal(nd_array_new(&bad, ND_I16, 4, s4b), ND_OK);
  assert_int_equal(nd_dti_fit_image(g, bad, NULL, NULL, &maps, NULL), ND_EINVAL);
  nd_array_release(bad);
  assert_int_equal(nd_dti_fit_image(NULL, d, NULL, NULL, &maps, NULL), ND_EINVAL);
  assert_int_equal(nd_dti_fit_image(g, d, NULL, NULL, NULL, NULL), ND_EINVAL);
  nd_array_release(d);
  nd_gradients_free(g);
}

/* ------------------------------------------------------------ the files */

static ino_t inode(const char *path) {
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  return st.st_ino;
}

static void test_maps_save(void **state) {
  (void)state;
  nd_gradients *g = table();
  nd_array *d = dwi(ND_F64), *maps = NULL;
  assert_int_equal(nd_dti_fit_image(g, d, NULL, NULL, &maps, NULL), ND_OK);
  char prefix[TG_PATH_MAX + 16];
  snprintf(prefix, sizeof prefix, "%s/sub-01_", tmpdir);
  assert_int_equal(nd_dti_maps_save(maps, prefix, NULL), ND_OK);
  char path[ND_DTI_NFILES][TG_PATH_MAX + 64];
  for (int f = 0; f < ND_DTI_NFILES; f++)
    snprintf(path[f], sizeof path[f], "%s%s.nii.gz", prefix, nd_dti_file_names[f]);
  /* fa: 3D float32 on the DWI's grid, the maps rounded to float */
  {
    nd_nifti_info info;
    assert_int_equal(nd_nifti_header(path[0], &info), ND_OK);
    assert_int_equal(info.ndim, 3);
    assert_int_equal(info.datatype, 16); /* NIFTI_TYPE_FLOAT32 */
    nd_nifti_info din;
    assert_int_equal(nd_nifti_header(DATA "small64.nii.gz", &din), ND_OK);
    for (int k = 0; k < 3; k++) assert_int_equal(info.dim[k], din.dim[k]);
    for (int k = 0; k < 12; k++) assert_true(fabs(info.affine[k] - din.affine[k]) < 1e-6);
    nd_nifti_info ein;
    assert_int_equal(nd_nifti_header(path[5], &ein), ND_OK);
    assert_int_equal(ein.ndim, 5);
    assert_int_equal(ein.dim[3], 3);
    assert_int_equal(ein.dim[4], 3);
  }
  for (int f = 0; f < 4; f++) {
    nd_array *a = NULL;
    assert_int_equal(nd_nifti_load(path[f], ND_F64, &a), ND_OK);
    assert_int_equal(nd_array_count(a), NSP);
    const double *x = nd_array_data(a), *m = map(maps, f);
    for (size_t v = 0; v < NSP; v++) assert_true(x[v] == (double)(float)m[v]);
    nd_array_release(a);
  }
  /* evals: volume k is eigenvalue k; evecs: NIfTI (x, y, z, i, j) */
  nd_array *ev = NULL, *vec = NULL;
  assert_int_equal(nd_nifti_load(path[4], ND_F64, &ev), ND_OK);
  assert_int_equal(nd_nifti_load(path[5], ND_F64, &vec), ND_OK);
  assert_int_equal(nd_array_ndim(vec), 5);
  for (size_t v = 0; v < NSP; v++) {
    for (size_t k = 0; k < 3; k++)
      assert_true(((const double *)nd_array_data(ev))[k * NSP + v] ==
                  (double)(float)map(maps, ND_DTI_MAP_EVALS + (int)k)[v]);
    for (size_t i = 0; i < 3; i++)
      for (size_t j = 0; j < 3; j++)
        assert_true(((const double *)nd_array_data(vec))[(j * 3 + i) * NSP + v] ==
                    (double)(float)map(maps, ND_DTI_MAP_EVECS + (int)(3 * i + j))[v]);
  }
  nd_array_release(ev);
  nd_array_release(vec);
  /* unchanged: not rewritten (same inode); changed: replaced */
  ino_t before[ND_DTI_NFILES];
  for (int f = 0; f < ND_DTI_NFILES; f++) before[f] = inode(path[f]);
  assert_int_equal(nd_dti_maps_save(maps, prefix, ".nii.gz"), ND_OK);
  for (int f = 0; f < ND_DTI_NFILES; f++) assert_true(inode(path[f]) == before[f]);
  nd_array *m2 = NULL;
  nd_dti_opts ols = {.method = ND_DTI_OLS};
  assert_int_equal(nd_dti_fit_image(g, d, NULL, &ols, &m2, NULL), ND_OK);
  assert_int_equal(nd_dti_maps_save(m2, prefix, NULL), ND_OK);
  assert_true(inode(path[0]) != before[0]);
  nd_array_release(m2);
  /* .nii, and errors */
  assert_int_equal(nd_dti_maps_save(maps, prefix, ".nii"), ND_OK);
  snprintf(path[0], sizeof path[0], "%sfa.nii", prefix);
  assert_int_equal(access(path[0], F_OK), 0);
  assert_int_equal(nd_dti_maps_save(maps, prefix, ".img"), ND_EINVAL);
  assert_int_equal(nd_dti_maps_save(maps, "", NULL), ND_EINVAL);
  assert_int_equal(nd_dti_maps_save(d, prefix, NULL), ND_EINVAL);
  assert_int_equal(nd_dti_maps_save(maps, tmp_path("no/such/dir/x_"), NULL), ND_EIO);
  assert_non_null(strstr(nd_models_errmsg(), "no/such/dir"));
  nd_array_release(maps);
  nd_array_release(d);
  nd_gradients_free(g);
}

/* ------------------------------------------------------------ the graph */

typedef struct run_out {
  nd_graph_stats st;
  nd_array *maps;
  nd_hash128 key;
  int rc;
} run_out;

static run_out run_graph(nd_cache *c, const char *bval, const char *bvec, const char *mask,
                         nd_dti_method method, const nd_op *op) {
  run_out r = {0};
  nd_graph *g = NULL;
  assert_int_equal(nd_graph_new(&g), ND_OK);
  int64_t node = -1;
  nd_dti_opts o = {.method = method};
  assert_int_equal(nd_dti_add(g, DATA "small64.nii.gz", bval, bvec, mask, &o, op, &node),
                   ND_OK);
  nd_graph_run_opts ro = {.cache = c, .targets = &node, .ntargets = 1};
  r.rc = nd_graph_run(g, &ro, &r.st);
  if (r.rc == ND_OK) {
    assert_int_equal(nd_graph_get(g, node, &r.maps), ND_OK);
    assert_int_equal(nd_graph_key(g, node, &r.key), ND_OK);
  } else {
    const char *msg = NULL;
    nd_graph_error(g, node, &msg);
    printf("# expected failure: %s\n", msg);
    assert_non_null(strstr(msg, "small64-bad"));
  }
  nd_graph_free(g);
  return r;
}

static void test_graph_cached(void **state) {
  (void)state;
  nd_cache *c = NULL;
  nd_cache_opts co = {.dir = tmp_path("cache"), .no_sync = true};
  assert_int_equal(nd_cache_open(&c, &co), ND_OK);
  const char *bval = DATA "small64.bval", *bvec = DATA "small64.bvec";

  run_out a = run_graph(c, bval, bvec, NULL, ND_DTI_WLS, NULL);
  assert_int_equal(a.rc, ND_OK);
  assert_int_equal(a.st.computed, 2); /* the load (not stored) and the fit */
  nd_gradients *g = table();
  nd_array *d = dwi(ND_F64), *direct = NULL;
  assert_int_equal(nd_dti_fit_image(g, d, NULL, NULL, &direct, NULL), ND_OK);
  assert_true(nd_array_equal(a.maps, direct));

  /* a rerun: the fit is a hit, nothing computed, the same maps */
  run_out b = run_graph(c, bval, bvec, NULL, ND_DTI_WLS, NULL);
  assert_int_equal(b.rc, ND_OK);
  assert_int_equal(b.st.computed, 0);
  assert_int_equal(b.st.hits, 1);
  assert_true(nd_array_equal(b.maps, direct));

  /* another chunking through the op's ud: the same key, still a hit */
  nd_dti_exec ex = {.chunking = ND_STATIC, .chunks = 7};
  nd_op op = nd_op_dti_fit;
  op.ud = &ex;
  run_out e = run_graph(c, bval, bvec, NULL, ND_DTI_WLS, &op);
  assert_int_equal(e.st.computed, 0);
  assert_memory_equal(&e.key, &a.key, sizeof a.key);

  /* OLS: another key, computed */
  run_out o = run_graph(c, bval, bvec, NULL, ND_DTI_OLS, NULL);
  assert_int_equal(o.rc, ND_OK);
  assert_int_equal(o.st.computed, 2);
  assert_false(nd_array_equal(o.maps, a.maps));

  /* the same bvecs written differently (N x 3, other spacing) give the same
   * table but another file digest: recomputed, equal maps */
  char *text = malloc(NVOL * 96);
  assert_non_null(text);
  size_t len = 0;
  FILE *f = fopen(bvec, "r");
  assert_non_null(f);
  len = fread(text, 1, NVOL * 96 - 1, f);
  fclose(f);
  text[len] = 0;
  char *bvec2 = tmp_path("small64-copy.bvec");
  write_text(bvec2, text);
  FILE *ap = fopen(bvec2, "a");
  fputs("# a comment changes the digest, not the table\n", ap);
  fclose(ap);
  run_out h = run_graph(c, bval, bvec2, NULL, ND_DTI_WLS, NULL);
  assert_int_equal(h.st.computed, 2); /* the load (never stored) and the fit */
  assert_true(nd_array_equal(h.maps, direct));

  /* a mask file: a new node, outside voxels 0 */
  const size_t ms[3] = {NX, NX, NX};
  nd_array *mask = NULL;
  assert_int_equal(nd_array_new(&mask, ND_U8, 3, ms), ND_OK);
  assert_int_equal(nd_array_set_affine(mask, nd_array_affine(d)), ND_OK);
  uint8_t *mb = nd_array_data_mut(mask);
  for (size_t v = 0; v < NSP; v++) mb[v] = v < NSP / 2;
  char *mpath = tmp_path("mask.nii.gz");
  save_array(mpath, mask);
  run_out m = run_graph(c, bval, bvec, mpath, ND_DTI_WLS, NULL);
  assert_int_equal(m.rc, ND_OK);
  for (size_t v = 0; v < NSP; v++)
    assert_true(map(m.maps, ND_DTI_MAP_FA)[v] ==
                (v < NSP / 2 ? map(direct, ND_DTI_MAP_FA)[v] : 0.0));

  /* a bad bval file (one value short): the node fails naming the file; the
   * good results stay cached */
  char *badval = tmp_path("small64-bad.bval");
  f = fopen(bval, "r");
  assert_non_null(f);
  len = fread(text, 1, NVOL * 96 - 1, f);
  fclose(f);
  text[len] = 0;
  char *last = strrchr(text, ' ');
  assert_non_null(last);
  *last = '\n';
  last[1] = 0;
  write_text(badval, text);
  run_out x = run_graph(c, badval, bvec, NULL, ND_DTI_WLS, NULL);
  assert_int_equal(x.rc, ND_ETASK);
  assert_int_equal(x.st.failed, 1);
  run_out y = run_graph(c, bval, bvec, NULL, ND_DTI_WLS, NULL);
  assert_int_equal(y.st.computed, 0);

  free(text);
  nd_array_release(mask);
  nd_array_release(direct);
  nd_array_release(d);
  nd_gradients_free(g);
  run_out *all[] = {&a, &b, &e, &o, &h, &m, &y};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) nd_array_release(all[i]->maps);
  assert_int_equal(nd_cache_close(c), ND_OK);
}

/* Bad params through the op are refused naming the field. */
static void test_op_params(void **state) {
  (void)state;
  nd_graph *g = NULL;
  assert_int_equal(nd_graph_new(&g), ND_OK);
  int64_t in[3], node;
  nd_array *d = dwi(ND_F64);
  assert_int_equal(nd_graph_const(g, d, "dwi", &in[0]), ND_OK);
  assert_int_equal(nd_graph_file(g, DATA "small64.bval", NULL, &in[1]), ND_OK);
  assert_int_equal(nd_graph_file(g, DATA "small64.bvec", NULL, &in[2]), ND_OK);
  nd_params *p = NULL;
  void *bytes = NULL;
  size_t len = 0;
  assert_int_equal(nd_params_new(&p), ND_OK);
  assert_int_equal(nd_params_str(p, "method", "nls"), ND_OK);
  assert_int_equal(nd_params_encode(p, &bytes, &len), ND_OK);
  nd_params_free(p);
  assert_int_equal(nd_graph_add(g, &nd_op_dti_fit, bytes, len, in, 3, "fit", &node), ND_OK);
  nd_free(bytes);
  nd_graph_run_opts ro = {.targets = &node, .ntargets = 1};
  assert_int_equal(nd_graph_run(g, &ro, NULL), ND_ETASK);
  const char *msg = NULL;
  assert_int_equal(nd_graph_error(g, node, &msg), ND_EINVAL);
  assert_non_null(strstr(msg, "method"));
  nd_graph_free(g);
  nd_array_release(d);
  /* nd_dti_add's own checks */
  assert_int_equal(nd_graph_new(&g), ND_OK);
  nd_dti_opts bad = {.method = (nd_dti_method)7};
  assert_int_equal(nd_dti_add(g, "a", "b", "c", NULL, &bad, NULL, &node), ND_EINVAL);
  bad = (nd_dti_opts){.min_signal = -1};
  assert_int_equal(nd_dti_add(g, "a", "b", "c", NULL, &bad, NULL, &node), ND_EINVAL);
  assert_int_equal(nd_dti_add(g, NULL, "b", "c", NULL, NULL, NULL, &node), ND_EINVAL);
  nd_graph_free(g);
}

static int setup(void **state) {
  (void)state;
  return tg_mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[TG_PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_image_matches_voxel_fit_and_dipy),
      cmocka_unit_test(test_image_independent_of_schedule),
      cmocka_unit_test(test_image_mask),
      cmocka_unit_test(test_image_errors),
      cmocka_unit_test(test_maps_save),
      cmocka_unit_test(test_graph_cached),
      cmocka_unit_test(test_op_params),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
