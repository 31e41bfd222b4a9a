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

#endif
