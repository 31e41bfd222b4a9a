/* libFuzzer target for the FSL bvals/bvecs reader (nd_gradients_read_fsl).
 * The input is split at its first NUL byte (none: the bvecs file is empty):
 * the bytes before become the bvals file and the bytes after the bvecs file
 * (unique per process, under /tmp). Any input must either give a table that
 * keeps the reader's promises (at least one b0 and one diffusion-weighted
 * volume, every diffusion-weighted b-vector a unit vector within
 * ND_DTI_BVEC_ATOL, finite non-negative b-values) or fail with a documented
 * error code and a message naming a file; it must never crash, leak or read
 * out of bounds. __builtin_trap() marks a broken invariant. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "nidag/dti.h"
#include "nidag/models.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok) {
  if (!ok)
    __builtin_trap();
}

static int write_file(const char *path, const uint8_t *data, size_t size) {
  FILE *f = fopen(path, "wb");
  if (f == NULL)
    return -1;
  size_t wrote = size ? fwrite(data, 1, size, f) : 0;
  return (fclose(f) != 0 || wrote != size) ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char bval[64], bvec[64];
  snprintf(bval, sizeof bval, "/tmp/nd_fuzz_grad_%ld.bval", (long)getpid());
  snprintf(bvec, sizeof bvec, "/tmp/nd_fuzz_grad_%ld.bvec", (long)getpid());
  const uint8_t *nul = size ? memchr(data, 0, size) : NULL;
  size_t n1 = nul ? (size_t)(nul - data) : size;
  size_t n2 = nul ? size - n1 - 1 : 0;
  if (write_file(bval, data, n1) != 0 || write_file(bvec, nul ? nul + 1 : data, n2) != 0) {
    remove(bval);
    remove(bvec);
    return 0;
  }
  nd_gradients *g = NULL;
  int rc = nd_gradients_read_fsl(bval, bvec, &g);
  if (rc == 0) {
    check(g != NULL);
    size_t n = nd_gradients_count(g), nb0 = 0;
    const double *b = nd_gradients_bvals(g), *v = nd_gradients_bvecs(g);
    const bool *b0 = nd_gradients_b0_mask(g);
    check(n > 0);
    for (size_t i = 0; i < n; i++) {
      check(isfinite(b[i]) && b[i] >= 0);
      if (b0[i]) {
        nb0++;
        continue;
      }
      double norm = sqrt(v[3 * i] * v[3 * i] + v[3 * i + 1] * v[3 * i + 1] +
                         v[3 * i + 2] * v[3 * i + 2]);
      check(fabs(norm - 1.0) <= ND_DTI_BVEC_ATOL);
    }
    check(nb0 > 0 && nb0 < n);
    nd_gradients_free(g);
  } else {
    check(g == NULL);
    check(rc == ND_EIO || rc == ND_EFORMAT || rc == ND_EINVAL || rc == ND_ENOMEM);
    const char *msg = nd_models_errmsg();
    check(strstr(msg, bval) != NULL || strstr(msg, bvec) != NULL);
  }
  remove(bval);
  remove(bvec);
  return 0;
}
