/* nidag diffusion tensor imaging: gradient tables and voxel-wise tensor
 * fitting with the semantics of DIPY 1.6's TensorModel (fit_method "WLS",
 * its default, or "OLS"/"LS").
 *
 * Errors: functions return 0 or a negative ND_E* code; the calling thread's
 * last failure (naming the file or volume) is in nd_models_errmsg().
 */
#ifndef NIDAG_DTI_H
#define NIDAG_DTI_H

#include <stdbool.h>
#include <stddef.h>

#include "nidag/core.h"
#include "nidag/graph.h"
#include "nidag/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------- gradient table */

/* DIPY's default b0 threshold: volumes with b <= this are b0 volumes. */
#define ND_DTI_B0_THRESHOLD 50.0
/* DIPY's tolerance on the norm of diffusion-weighted b-vectors. */
#define ND_DTI_BVEC_ATOL 1e-2

typedef struct nd_gradients nd_gradients;

/* A gradient table from n b-values and n b-vectors (bvecs row-major n x 3),
 * as DIPY's gradient_table(bvals, bvecs, b0_threshold) builds it:
 *  - volume i is a b0 volume when bvals[i] <= b0_threshold (0: 50);
 *  - NaN b-vector components become 0;
 *  - a b-vector whose norm is not 1 within ND_DTI_BVEC_ATOL is set to zero
 *    and its b-value to 0 (allowed on b0 volumes only).
 * Stricter than DIPY: it also refuses non-finite b-values, infinite b-vector
 * components, a table without b0 volume and one without diffusion-weighted
 * volume. Errors (ND_EINVAL, message naming the volume): n == 0, NULL
 * arrays, a negative or non-finite b_threshold, a negative or non-finite
 * b-value, an infinite b-vector component, a diffusion-weighted volume whose
 * b-vector is not a unit vector, no b0 volume, no diffusion-weighted volume;
 * ND_ENOMEM. *out is a new table (nd_gradients_free), NULL on error. */
int nd_gradients_new(const double *bvals, const double *bvecs, size_t n,
                     double b0_threshold, nd_gradients **out);

/* Read FSL text files (DIPY's read_bvals_bvecs, then nd_gradients_new with
 * the default b0 threshold). Values are separated by spaces, tabs or commas;
 * '#' starts a comment; blank lines are skipped. bvals: one row (or one
 * column) of N numbers. bvecs: 3 rows of N numbers (FSL) or N rows of 3;
 * a 3 x 3 file is read as 3 rows of one vector each, as DIPY does.
 * Errors: ND_EIO (cannot read a file), ND_EFORMAT (a token that is not a
 * number, ragged rows, a bvals file of several rows and columns, a bvecs
 * file with neither 3 rows nor 3 columns, counts that differ between the
 * files), the errors of nd_gradients_new; each message names the file. */
int nd_gradients_read_fsl(const char *bval_path, const char *bvec_path,
                          nd_gradients **out);

void nd_gradients_free(nd_gradients *g); /* NULL-safe */

/* Accessors. The arrays belong to g and live as long as it does. bvals and
 * bvecs are the table as DIPY stores it (after the zeroing described at
 * nd_gradients_new); bvecs is row-major n x 3. b0_mask[i] is true for b0
 * volumes (b <= threshold). */
size_t nd_gradients_count(const nd_gradients *g);
const double *nd_gradients_bvals(const nd_gradients *g);
const double *nd_gradients_bvecs(const nd_gradients *g);
const bool *nd_gradients_b0_mask(const nd_gradients *g);
double nd_gradients_b0_threshold(const nd_gradients *g);

/* ---------------------------------------------------------- tensor fit */

/* DIPY's MIN_POSITIVE_SIGNAL: signals are floored at this before the log. */
#define ND_DTI_MIN_SIGNAL 1e-4
/* DIPY's eigenvalue floor is ND_DTI_EVAL_TOL / max(B), the largest entry of
 * the (un-negated) B matrix, its constant column of ones included. */
#define ND_DTI_EVAL_TOL 1e-6

typedef enum nd_dti_method {
  ND_DTI_WLS = 0, /* DIPY's default: OLS, then least squares weighted by the
                     OLS-predicted signal (weights squared) */
  ND_DTI_OLS,     /* least squares on the log signal (pseudo-inverse) */
} nd_dti_method;

/* Zero is the default for every field. */
typedef struct nd_dti_opts {
  nd_dti_method method;
  nd_pool *pool;          /* NULL: the global pool */
  nd_chunking chunking;   /* how voxels are handed to workers */
  size_t chunks;          /* number of voxel chunks; 0: ND_DEFAULT_CHUNKS */
  double min_signal;      /* > 0; 0: ND_DTI_MIN_SIGNAL */
} nd_dti_opts;

/* Per-voxel results; every array is owned by the result (nd_dti_result_free)
 * and has nvox rows. */
typedef struct nd_dti_result {
  size_t nvox;
  double *fa, *md, *ad, *rd; /* nvox each */
  double *evals;             /* nvox x 3, descending, floored */
  double *evecs;             /* nvox x 9, row-major 3 x 3 per voxel whose
                                column j is the unit eigenvector of evals[j]
                                (DIPY's evecs[..., :, j]), its component of
                                largest magnitude positive (the first such
                                on ties); DIPY's signs are LAPACK's, so
                                columns may differ from DIPY's in sign */
  double min_diffusivity;    /* the eigenvalue floor that was applied */
  size_t n_failed;           /* voxels whose outputs are NaN: a NaN or +Inf
                                signal, or a numerical failure (an
                                overflowing weight, a non-finite tensor,
                                the SVD or the eigensolver not
                                converging) */
} nd_dti_result;

/* Fit a tensor in each of nvox voxels. signals is voxel-major: voxel v's nvol
 * volumes are signals[v * nvol .. v * nvol + nvol - 1], in the order of g.
 * Per voxel, as DIPY 1.6 TensorModel.fit without mask:
 *  - y = log(max(S, min_signal));
 *  - design matrix X = -B with columns (Bxx, 2Bxy, Byy, 2Bxz, 2Byz, Bzz, 1)
 *    from b * g g^T, so beta = (Dxx, Dxy, Dyy, Dxz, Dyz, Dzz, -log S0);
 *  - OLS: beta = pinv(X) y; WLS: w = exp(U U^T y) with U from the reduced
 *    SVD of X (DIPY's weights: the OLS-predicted log signal X pinv(X) y
 *    when X has full column rank), beta = pinv(diag(w) X) (w * y), solved
 *    through the normal equations by Cholesky when they are well
 *    conditioned and through numpy's pinv otherwise. pinv is numpy's:
 *    singular values at or below 1e-15 times the largest are dropped, so a
 *    table of fewer than 7 volumes, or a rank-deficient one, gives DIPY's
 *    minimum-norm solution;
 *  - eigenvalues of D, by cyclic Jacobi rotations (not LAPACK; they agree
 *    with DIPY's to rounding), sorted descending by a stable sort (equal
 *    eigenvalues keep the order of the rotated diagonal; their
 *    eigenvectors are then some orthonormal basis of their eigenspace, the
 *    same for the same D; D = 0 gives the identity), then clipped from
 *    below at min_diffusivity;
 *  - FA = sqrt(0.5 ((l1-l2)^2 + (l2-l3)^2 + (l3-l1)^2) / (l1^2+l2^2+l3^2)),
 *    MD = mean, AD = l1, RD = (l2+l3)/2.
 * Degenerate voxels: an all-zero (or all non-positive) signal is floored
 * like any other, which gives D = 0, every eigenvalue = min_diffusivity,
 * FA = 0 and MD = AD = RD = min_diffusivity, as DIPY. A voxel with any NaN
 * or +Inf signal (where DIPY's fit as a whole would fail or give NaN) gets
 * NaN for every output and is counted in n_failed. The result does not
 * depend on the pool, its thread count, the chunking or the chunk count.
 * Errors: ND_EINVAL (NULL g/out, NULL signals with nvox > 0, nvol different
 * from the table's count, min_signal negative or not finite, bad method or
 * chunking), ND_ENOMEM, ND_ESYS or the pool's errors. *out is zeroed on
 * error. */
int nd_dti_fit(const nd_gradients *g, const double *signals, size_t nvox,
               size_t nvol, const nd_dti_opts *o, nd_dti_result *out);

/* Free the result's arrays and zero it. NULL-safe. */
void nd_dti_result_free(nd_dti_result *r);


/* ------------------------------------------------------- images and maps */

/* The maps of a DWI fit, stacked along the leading axis of one float64
 * array of shape (ND_DTI_NMAPS, z, y, x): FA, MD, AD, RD, the 3 eigenvalues
 * (descending) and the 9 eigenvector components, evecs row-major as in
 * nd_dti_result (map ND_DTI_MAP_EVECS + 3 * i + j is component i of the
 * eigenvector of eigenvalue j). */
enum {
  ND_DTI_MAP_FA = 0,
  ND_DTI_MAP_MD = 1,
  ND_DTI_MAP_AD = 2,
  ND_DTI_MAP_RD = 3,
  ND_DTI_MAP_EVALS = 4, /* 3 maps */
  ND_DTI_MAP_EVECS = 7, /* 9 maps */
  ND_DTI_NMAPS = 16
};

/* What a fit over an image did. */
typedef struct nd_dti_image_report {
  size_t nvox;            /* voxels of the grid (z * y * x) */
  size_t nvox_fit;        /* voxels fitted (inside the mask) */
  size_t n_failed;        /* fitted voxels whose maps are NaN (nd_dti_result) */
  double min_diffusivity; /* the eigenvalue floor that was applied */
} nd_dti_image_report;

/* Fit every voxel of a 4D DWI array (as nd_nifti_load gives it: shape
 * (t, z, y, x), float32 or float64, t == the table's count) inside mask
 * (NULL: every voxel; else a 3D array (z, y, x), or 4D with one volume, of
 * any numeric dtype, non-zero meaning inside, on the DWI's grid: the same
 * shape and, when the mask has an affine, the DWI's within
 * ND_GRID_AFFINE_TOL, as nd_parcellate asks of its masks). *maps is a new
 * float64 array (ND_DTI_NMAPS, z, y, x) with the DWI's affine. Voxels outside the mask are
 * 0 in every map (as DIPY's fit with a mask); failed voxels are NaN. rep may
 * be NULL. The result does not depend on the pool, the chunking or the chunk
 * count. Errors (ND_EINVAL naming the problem): a DWI that is not 4D, a
 * volume count different from the table's, a mask of another shape or grid,
 * or the errors of nd_dti_fit. */
int nd_dti_fit_image(const nd_gradients *g, const nd_array *dwi, const nd_array *mask,
                     const nd_dti_opts *o, nd_array **maps, nd_dti_image_report *rep);

/* Write the maps as NIfTI on the DWI's grid, float32 as DIPY's dipy_fit_dti
 * workflow saves them, to PREFIX<name>.nii.gz (ext NULL or ".nii.gz") or
 * PREFIX<name>.nii (ext ".nii"), for <name> in:
 *   fa, md, ad, rd   3D maps;
 *   evals            4D, 3 volumes (descending eigenvalues);
 *   evecs            5D (x, y, z, 3, 3) as DIPY's evecs[x, y, z, i, j]:
 *                    component i of the eigenvector of eigenvalue j.
 * A prefix is used as given: "out/sub-01_" gives out/sub-01_fa.nii.gz. A
 * file that holds the map already (float32, the same dimensions and values,
 * the affine equal up to float32 rounding) is left untouched; it is read
 * back to check, which is several times cheaper than compressing it again.
 * Other files are written to a temporary name and renamed. Errors: ND_EINVAL (maps
 * that are not a float64 (ND_DTI_NMAPS, z, y, x) array, a NULL or empty
 * prefix, another ext), the errors of nd_nifti_save (message naming the
 * file). */
int nd_dti_maps_save(const nd_array *maps, const char *prefix, const char *ext);

/* The names above in order ("fa", "md", "ad", "rd", "evals", "evecs"). */
#define ND_DTI_NFILES 6
extern const char *const nd_dti_file_names[ND_DTI_NFILES];

/* ------------------------------------------------------------ graph op */

/* How the op's voxels are handed to workers (never part of a key: the maps
 * do not depend on it). Point a copy of nd_op_dti_fit's ud at one. */
typedef struct nd_dti_exec {
  nd_chunking chunking;
  size_t chunks; /* 0: ND_DEFAULT_CHUNKS */
} nd_dti_exec;

/* nd_op_dti_fit: inputs dwi (a 4D f32 or f64 array from nd_op_nifti_load),
 * bval file, bvec file[, mask (a 3D array)]. params (nd_params): "method"
 * str "wls" (default) | "ols", "min_signal" f64 (default ND_DTI_MIN_SIGNAL),
 * "b0_threshold" f64 (default ND_DTI_B0_THRESHOLD). Output: the maps of
 * nd_dti_fit_image, fitted on the op's pool. ud: NULL (dynamic chunking,
 * ND_DEFAULT_CHUNKS) or an nd_dti_exec. A node fails on a bad table (the
 * message names the bval/bvec file and the volume) or a DWI/table/mask
 * mismatch (the message names the bval and bvec files and the problem; the
 * DWI and mask are arrays here, so their files are named by the labels of
 * their load nodes, which nd_dti_add sets to "load dwi PATH" and "load mask
 * PATH"). */
extern const nd_op nd_op_dti_fit;

/* Add the nodes of one fit to g: file nodes for the paths, loads (not
 * stored: the images are on disk already), the fit (stored). The DWI loads
 * as f32 when that holds its values exactly (integers of 16 bits or less,
 * or float32, without scaling: the header is read here), else as f64; the
 * maps are the same either way, and an f32 DWI takes half the memory. The
 * fit gathers and fits the voxels in blocks of 65536, so besides the DWI
 * and the maps it holds one block's signals. mask may be NULL.
 * opts: method and min_signal as in nd_dti_opts (pool and chunking are not
 * part of the graph: pass an op whose ud is an nd_dti_exec to choose the
 * chunking; op NULL: nd_op_dti_fit). *out is the fit node. Errors: ND_EINVAL
 * (NULL arguments, bad method or min_signal), the graph's errors. */
int nd_dti_add(nd_graph *g, const char *dwi, const char *bval, const char *bvec,
               const char *mask, const nd_dti_opts *opts, const nd_op *op, int64_t *out);

#ifdef __cplusplus
}
#endif

#endif /* NIDAG_DTI_H */
