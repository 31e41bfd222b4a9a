/* Fixture for test_cli_dti.sh: writes masks and inspects the maps that
 * `nidag dti` writes, so the shell test needs neither Python nor numpy.
 *
 *   cli_dti_fixture mask DWI OUT half|shifted|small
 *       a uint8 mask: 1 where the voxel index x < nx / 2, else 0. half: on
 *       the DWI's grid; shifted: the same shape, the affine moved by 2 mm in
 *       x; small: one slice fewer in z.
 *   cli_dti_fixture dims FILE
 *       prints "<datatype code> <dim 1> <dim 2> ..." from the NIfTI header.
 *   cli_dti_fixture stats MAP [MASK]
 *       a 3D map: prints "voxels N nonzero K nan M outside O", where nonzero
 *       counts NaN too and outside counts the non-zero voxels where MASK is 0.
 *   cli_dti_fixture compare MAP REF.npy WELL.npy TOL
 *       the largest |MAP - REF| over the voxels where WELL (int64 0/1) is 1;
 *       REF and WELL are numpy (x, y, z) arrays, as DIPY gives them. Prints
 *       "compared N max_abs_diff D" and exits 1 when D > TOL or N == 0.
 *
 * Exit 0 on success, 1 on a failed check or error, 2 on bad usage. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nidag.h"

static int fail(const char *what, const char *msg) {
  fprintf(stderr, "cli_dti_fixture: %s: %s\n", what, msg);
  return 1;
}

static int make_mask(const char *dwi_path, const char *out, const char *kind) {
  nd_nifti_info info;
  if (nd_nifti_header(dwi_path, &info)) return fail(dwi_path, nd_neuro_errmsg());
  if (info.ndim < 3) return fail(dwi_path, "not 3D or 4D");
  size_t nx = (size_t)info.dim[0], ny = (size_t)info.dim[1], nz = (size_t)info.dim[2];
  double aff[16];
  memcpy(aff, info.affine, sizeof aff);
  if (!strcmp(kind, "shifted")) aff[3] += 2.0;
  else if (!strcmp(kind, "small")) nz -= 1;
  else if (strcmp(kind, "half") != 0) return fail(kind, "not half, shifted or small");
  size_t shape[3] = {nz, ny, nx};
  nd_array *m = NULL;
  if (nd_array_new(&m, ND_U8, 3, shape) || nd_array_set_affine(m, aff))
    return fail(out, "out of memory");
  uint8_t *d = nd_array_data_mut(m);
  for (size_t i = 0; i < nx * ny * nz; i++) d[i] = i % nx < nx / 2;
  int rc = nd_nifti_save(out, m);
  nd_array_release(m);
  return rc ? fail(out, nd_neuro_errmsg()) : 0;
}

static int dims(const char *path) {
  nd_nifti_info info;
  if (nd_nifti_header(path, &info)) return fail(path, nd_neuro_errmsg());
  printf("%d", info.datatype);
  for (int k = 0; k < info.ndim; k++) printf(" %lld", (long long)info.dim[k]);
  printf("\n");
  return 0;
}

static int stats(const char *path, const char *mask_path) {
  nd_array *a = NULL, *m = NULL;
  if (nd_nifti_load(path, ND_F64, &a)) return fail(path, nd_neuro_errmsg());
  if (mask_path && nd_nifti_load(mask_path, ND_F64, &m)) {
    nd_array_release(a);
    return fail(mask_path, nd_neuro_errmsg());
  }
  size_t n = nd_array_count(a), nonzero = 0, nan = 0, outside = 0;
  if (m && nd_array_count(m) != n) {
    nd_array_release(a);
    nd_array_release(m);
    return fail(mask_path, "not the map's size");
  }
  const double *x = nd_array_data(a), *y = m ? nd_array_data(m) : NULL;
  for (size_t i = 0; i < n; i++) {
    bool nz = x[i] != 0.0;
    nonzero += nz;
    nan += isnan(x[i]) != 0;
    outside += nz && y && y[i] == 0.0;
  }
  printf("voxels %zu nonzero %zu nan %zu outside %zu\n", n, nonzero, nan, outside);
  nd_array_release(a);
  nd_array_release(m);
  return 0;
}

static int compare(const char *path, const char *ref_path, const char *well_path,
                   const char *tol_s) {
  char *end = NULL;
  double tol = strtod(tol_s, &end);
  if (!end || *end || !(tol >= 0)) return fail(tol_s, "not a tolerance");
  nd_array *a = NULL, *ref = NULL, *well = NULL;
  int status = 1;
  if (nd_nifti_load(path, ND_F64, &a)) {
    fail(path, nd_neuro_errmsg());
  } else if (nd_npy_load(ref_path, &ref) || nd_npy_load(well_path, &well)) {
    fail(ref ? well_path : ref_path, nd_models_errmsg());
  } else if (nd_array_ndim(a) != 3 || nd_array_ndim(ref) != 3 ||
             nd_array_dtype(ref) != ND_F64 || nd_array_dtype(well) != ND_I64 ||
             nd_array_count(well) != nd_array_count(ref)) {
    fail(ref_path, "not 3D f64 maps with an i64 mask");
  } else {
    /* the map is (z, y, x), the references (x, y, z) */
    const size_t *s = nd_array_shape(a), *r = nd_array_shape(ref);
    if (r[0] != s[2] || r[1] != s[1] || r[2] != s[0]) {
      fail(ref_path, "not the map's shape");
    } else {
      const double *x = nd_array_data(a), *y = nd_array_data(ref);
      const int64_t *w = nd_array_data(well);
      size_t nx = s[2], ny = s[1], nz = s[0], count = 0;
      double worst = 0;
      for (size_t i = 0; i < nx; i++)
        for (size_t j = 0; j < ny; j++)
          for (size_t k = 0; k < nz; k++) {
            size_t ri = (i * ny + j) * nz + k, mi = (k * ny + j) * nx + i;
            if (!w[ri]) continue;
            double d = fabs(x[mi] - y[ri]);
            if (!(d <= worst)) worst = d; /* NaN wins */
            count++;
          }
      printf("compared %zu max_abs_diff %.3g\n", count, worst);
      status = count > 0 && worst <= tol ? 0 : 1;
    }
  }
  nd_array_release(a);
  nd_array_release(ref);
  nd_array_release(well);
  return status;
}

int main(int argc, char **argv) {
  if (argc == 5 && !strcmp(argv[1], "mask")) return make_mask(argv[2], argv[3], argv[4]);
  if (argc == 3 && !strcmp(argv[1], "dims")) return dims(argv[2]);
  if ((argc == 3 || argc == 4) && !strcmp(argv[1], "stats"))
    return stats(argv[2], argc == 4 ? argv[3] : NULL);
  if (argc == 6 && !strcmp(argv[1], "compare"))
    return compare(argv[2], argv[3], argv[4], argv[5]);
  fprintf(stderr, "usage: cli_dti_fixture mask DWI OUT half|shifted|small | dims FILE |\n"
                  "       stats MAP [MASK] | compare MAP REF.npy WELL.npy TOL\n");
  return 2;
}
