/* libFuzzer target for the .npy reader: the input bytes become a .npy file
 * (unique per process, under /tmp) that nd_npy_load reads. Any input must
 * either load, with exactly as many data bytes as the file holds after its
 * header, or fail with a documented error code and a message naming the
 * file; it must never crash, leak or read out of bounds. __builtin_trap()
 * marks a broken invariant. */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "nidag/models.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok) {
  if (!ok)
    __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char path[64];
  snprintf(path, sizeof path, "/tmp/nd_fuzz_npy_%ld.npy", (long)getpid());
  FILE *f = fopen(path, "wb");
  if (f == NULL)
    return 0;
  size_t wrote = size ? fwrite(data, 1, size, f) : 0;
  if (fclose(f) != 0 || wrote != size) {
    remove(path);
    return 0;
  }
  nd_array *a = NULL;
  int rc = nd_npy_load(path, &a);
  if (rc == 0) {
    check(a != NULL && nd_array_nbytes(a) <= size);
    /* the data are the file's last bytes */
    check(memcmp(nd_array_data(a), data + size - nd_array_nbytes(a), nd_array_nbytes(a)) == 0);
    nd_array_release(a);
  } else {
    check(a == NULL);
    check(rc == ND_EIO || rc == ND_EFORMAT || rc == ND_EUNSUPPORTED || rc == ND_EOVERFLOW ||
          rc == ND_ENOMEM);
    check(strstr(nd_models_errmsg(), path) != NULL);
  }
  remove(path);
  return 0;
}
