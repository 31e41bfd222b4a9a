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
                                column j is the eigenvector of evals[j]
                                (DIPY's evecs[..., :, j]); signs as LAPACK
                                dsyevd gives them */
  double min_diffusivity;    /* the eigenvalue floor that was applied */
  size_t n_failed;           /* voxels whose outputs are NaN: a NaN or +Inf
                                signal, or a numerical failure (an
                                overflowing weight, LAPACK not converging) */
} nd_dti_result;

/* Fit a tensor in each of nvox voxels. signals is voxel-major: voxel v's nvol
 * volumes are signals[v * nvol .. v * nvol + nvol - 1], in the order of g.
 * Per voxel, as DIPY 1.6 TensorModel.fit without mask:
 *  - y = log(max(S, min_signal));
 *  - design matrix X = -B with columns (Bxx, 2Bxy, Byy, 2Bxz, 2Byz, Bzz, 1)
 *    from b * g g^T, so beta = (Dxx, Dxy, Dyy, Dxz, Dyz, Dzz, -log S0);
 *  - OLS: beta = pinv(X) y; WLS: w = exp(X beta_ols), beta =
 *    pinv(diag(w) X) (w * y). pinv is numpy's: singular values at or below
 *    1e-15 times the largest are dropped;
 *  - eigenvalues of D descending (ties: the later LAPACK one first), then
 *    clipped from below at min_diffusivity;
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

#ifdef __cplusplus
}
#endif

#endif /* NIDAG_DTI_H */
