/* Private parts of the tensor fit (dti_grad.c, dti.c). */
#ifndef NIDAG_DTI_INT_H
#define NIDAG_DTI_INT_H

#include "models/models_int.h"
#include "nidag/dti.h"

struct nd_gradients {
  size_t n;
  double b0_threshold;
  double *bvals;  /* n, as DIPY stores them (non-unit vectors' b set to 0) */
  double *bvecs;  /* n x 3 row-major, non-unit vectors zeroed */
  bool *b0_mask;  /* n */
};

/* nd_gradients_read_fsl with a b0 threshold (0: ND_DTI_B0_THRESHOLD). */
int nd__gradients_read_fsl(const char *bval_path, const char *bvec_path, double b0_threshold,
                           nd_gradients **out);

/* The eigen-decomposition of the symmetric 3 x 3 row-major m (its upper
 * triangle is read) by cyclic Jacobi rotations (dti.c): evals descending
 * (equal ones in the order of m's diagonal after the rotations), column j of
 * the row-major evecs the unit eigenvector of evals[j], its component of
 * largest magnitude positive (the first such on ties). No floor is applied.
 * Returns -1 (outputs undefined) when an entry is not finite or the
 * rotations do not converge, else 0. Deterministic. */
int nd__dti_eigh3(const double m[9], double evals[3], double evecs[9]);

/* Voxels nd_dti_fit_image gathers and fits at a time (65536); only tests
 * change it, before any fit runs. */
extern size_t nd__dti_fit_block;

/* The fit's own log and exp on one value (dti.c), exposed for the tests. */
double nd__dti_log(double x);
double nd__dti_exp(double x);

#endif
