/* libFuzzer target for nd_array_decode, the cache's value decoder. Any input
 * must either be rejected with a documented error (and no array), or decode
 * to an array whose canonical encoding is exactly the input and whose hash
 * is the XXH3-128 of the input. __builtin_trap() marks a broken invariant. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nidag/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok) {
  if (!ok)
    __builtin_trap();
}

static void check_valid(const nd_array *a, const uint8_t *data, size_t size) {
  check(nd_array_encoded_size(a) == size);
  check(nd_array_count(a) * nd_dtype_size(nd_array_dtype(a)) ==
        nd_array_nbytes(a));
  void *buf = NULL;
  size_t len = 0;
  check(nd_array_encode(a, &buf, &len) == ND_OK);
  check(len == size && memcmp(buf, data, size) == 0);
  nd_free(buf);
  nd_hash128 h;
  check(nd_array_hash(a, &h) == ND_OK);
  check(nd_hash128_eq(h, nd_hash128_bytes(data, size)));
  check(nd_array_equal(a, a));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  nd_array *a = (nd_array *)&a; /* the decoder must reset it on error */
  int rc = nd_array_decode(data, size, &a);
  if (rc != ND_OK) {
    check(a == NULL);
    check(rc == ND_EFORMAT || rc == ND_EVERSION || rc == ND_EOVERFLOW ||
          rc == ND_ENOMEM || (rc == ND_EINVAL && data == NULL && size > 0));
    return 0;
  }
  check_valid(a, data, size);
  nd_array_release(a);
  return 0;
}
