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

#endif
