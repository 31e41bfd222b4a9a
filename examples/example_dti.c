/* example_dti: a diffusion tensor fit (DIPY's TensorModel, WLS) as one cached
 * graph node, its maps read back and saved as NIfTI.
 *
 *   example_dti DWI BVAL BVEC OUTPREFIX [CACHE_DIR]   (default ./.nidag-example-dti)
 *   (the maps go to OUTPREFIX{fa,md,ad,rd,evals,evecs}.nii.gz; its folder must exist)
 *
 * nd_dti_add builds file nodes for the three inputs, a load of the DWI (not
 * stored: the image is a file already) and the fit (stored). A first run
 * computes the fit; a second one finds it in the cache and fits nothing. The
 * fit runs on the pool with the chunking chosen below, which never enters the
 * node's key: the maps are the same bits for any chunking. README.md
 * ("Tutorial: a diffusion tensor fit") walks through it. Uses only the public
 * header. */
#include <stdio.h>

#include "nidag.h"

static int fail(const char *what, const char *msg) {
  fprintf(stderr, "example_dti: %s: %s\n", what, msg);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 5 || argc > 6) {
    fprintf(stderr, "usage: example_dti DWI BVAL BVEC OUTPREFIX [CACHE_DIR]\n");
    return 2;
  }
  const char *dwi = argv[1], *bval = argv[2], *bvec = argv[3], *prefix = argv[4];
  const char *cache_dir = argc > 5 ? argv[5] : ".nidag-example-dti";

  /* 1. The gradient table, read here only to report on it (the fit node reads
   *    the files itself); a bad file fails now, with the file named. */
  nd_gradients *tab;
  if (nd_gradients_read_fsl(bval, bvec, &tab) != 0) return fail("table", nd_models_errmsg());
  size_t nvol = nd_gradients_count(tab), nb0 = 0;
  for (size_t i = 0; i < nvol; i++) nb0 += nd_gradients_b0_mask(tab)[i];
  printf("table: %zu volumes, %zu b0\n", nvol, nb0);
  nd_gradients_free(tab);

  /* 2. The graph. The op is a copy of nd_op_dti_fit whose ud says how the
   *    voxels are handed to the workers: dynamically, in 64 chunks. ud is not
   *    part of any key, so the same graph built with the plain op (NULL) has
   *    the same key: the maps do not depend on the chunking. */
  nd_dti_exec ex = {.chunking = ND_DYNAMIC, .chunks = 64};
  nd_op op = nd_op_dti_fit;
  op.ud = &ex;
  nd_dti_opts fo = {.method = ND_DTI_WLS}; /* DIPY's default */
  nd_graph *g, *plain;
  int64_t fit, plain_fit;
  if (nd_graph_new(&g) != 0 || nd_graph_new(&plain) != 0) return fail("graph", "out of memory");
  if (nd_dti_add(g, dwi, bval, bvec, NULL, &fo, &op, &fit) != 0 ||
      nd_dti_add(plain, dwi, bval, bvec, NULL, &fo, NULL, &plain_fit) != 0)
    return fail("graph", nd_models_errmsg());
  nd_hash128 k1, k2;
  char hex[ND_HASH128_HEX_LEN + 1];
  if (nd_graph_key(g, fit, &k1) != 0) return fail("key", nd_errmsg(g));
  if (nd_graph_key(plain, plain_fit, &k2) != 0) return fail("key", nd_errmsg(plain));
  nd_hash128_hex(k1, hex);
  printf("graph: %zu nodes; fit key %s (default chunking: %s)\n", nd_graph_size(g), hex,
         nd_hash128_eq(k1, k2) ? "same key" : "another key");
  nd_graph_free(plain);

  /* 3. Run against the cache: compute the fit unless it is stored. */
  nd_cache *cache;
  if (nd_cache_open(&cache, &(nd_cache_opts){.dir = cache_dir}) != 0)
    return fail("cache", nd_cache_open_errmsg());
  nd_graph_stats st;
  nd_graph_run_opts ro = {.cache = cache, .targets = &fit, .ntargets = 1};
  if (nd_graph_run(g, &ro, &st) != 0) return fail("run", nd_errmsg(g));
  printf("run: computed %zu, cache hits %zu, %.3f s\n", st.computed, st.hits, st.run_seconds);

  /* 4. The maps: one float64 array (16, z, y, x); map m of voxel i is
   *    x[m * nsp + i], nsp = z * y * x. Voxels with MD > 0 were fitted (outside
   *    a mask every map is 0; a failed voxel is NaN, and NaN > 0 is false). */
  nd_array *maps;
  if (nd_graph_get(g, fit, &maps) != 0) return fail("maps", nd_errmsg(g));
  size_t nz = nd_array_dim(maps, 1), ny = nd_array_dim(maps, 2), nx = nd_array_dim(maps, 3);
  size_t nsp = nz * ny * nx, n = 0, best = 0;
  const double *m = nd_array_data(maps);
  const double *fa = m + ND_DTI_MAP_FA * nsp, *md = m + ND_DTI_MAP_MD * nsp;
  double sum_fa = 0, sum_md = 0;
  for (size_t i = 0; i < nsp; i++) {
    if (!(md[i] > 0)) continue;
    if (n == 0 || fa[i] > fa[best]) best = i;
    n++;
    sum_fa += fa[i];
    sum_md += md[i];
  }
  printf("maps: (%d, %zu, %zu, %zu)\n", ND_DTI_NMAPS, nz, ny, nx);
  if (n == 0) return fail("maps", "no voxel has MD > 0");
  printf("summary: %zu voxels with MD > 0, mean FA %.4f, mean MD %.4e mm^2/s\n", n,
         sum_fa / (double)n, sum_md / (double)n);
  /* The principal eigenvector is column 0 of the 3 x 3 evecs: its component
   *    i is map ND_DTI_MAP_EVECS + 3 * i + 0. */
  double v[3], l[3];
  for (int i = 0; i < 3; i++) {
    v[i] = m[(size_t)(ND_DTI_MAP_EVECS + 3 * i) * nsp + best];
    l[i] = m[(size_t)(ND_DTI_MAP_EVALS + i) * nsp + best];
  }
  printf("largest FA: %.4f at voxel x=%zu y=%zu z=%zu, principal eigenvector "
         "(%.4f, %.4f, %.4f)\n",
         fa[best], best % nx, best / nx % ny, best / (nx * ny), v[0], v[1], v[2]);
  printf("  its eigenvalues: %.4e %.4e %.4e mm^2/s\n", l[0], l[1], l[2]);

  /* 5. Save as DIPY's dipy_fit_dti does (float32 NIfTI on the DWI's grid). A
   *    file that holds its map already is left untouched. */
  if (nd_dti_maps_save(maps, prefix, NULL) != 0) return fail("save", nd_models_errmsg());
  for (int f = 0; f < ND_DTI_NFILES; f++)
    printf("file: %s%s.nii.gz\n", prefix, nd_dti_file_names[f]);

  nd_array_release(maps);
  nd_graph_free(g);
  int rc = nd_cache_close(cache); /* flushes what the run stored */
  return rc != 0 ? fail("cache", nd_strerror(rc)) : 0;
}
