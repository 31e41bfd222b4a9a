/* cmocka suite for nd_array: construction for every dtype, scalars, size
 * overflow, immutability once shared, the affine, equality and hashing, and
 * the canonical encoding: golden bytes, round trips, and a hostile-input
 * sweep of the decoder (every truncation, every header byte corrupted,
 * trailing bytes, bad versions, inconsistent sizes), plus seeded random
 * round-trip and mutation tests (seed printed; NIDAG_TEST_SEED overrides). */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "nidag/core.h"

static const nd_dtype all_dtypes[] = {ND_U8,  ND_I8,  ND_U16, ND_I16, ND_U32,
                                      ND_I32, ND_U64, ND_I64, ND_F32, ND_F64};
#define N_DTYPES (sizeof all_dtypes / sizeof all_dtypes[0])
#define DATA_ALIGN 64
#define FIXED_HEADER 20 /* magic 4 + version 2 + dtype 1 + flags 1 + ndim 4 + nbytes 8 */
#define AFFINE_BYTES (16 * 8)
#define VERSION_OFFSET 4
#define DTYPE_OFFSET 6
#define FLAGS_OFFSET 7
#define NDIM_OFFSET 8
#define SHAPE_OFFSET 12

static const double identity[16] = {1, 0, 0, 0, 0, 1, 0, 0,
                                    0, 0, 1, 0, 0, 0, 0, 1};

/* ------------------------------------------------------------- helpers */

/* splitmix64: small, seedable, good enough for test data. */
static uint64_t rng_state;
static uint64_t rng_next(void) {
  uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}
static size_t rng_below(size_t n) { return (size_t)(rng_next() % n); }

static void fill_random(nd_array *a) {
  unsigned char *d = nd_array_data_mut(a);
  assert_true(d != NULL || nd_array_nbytes(a) == 0);
  for (size_t i = 0; i < nd_array_nbytes(a); i++)
    d[i] = (unsigned char)rng_next();
}

static nd_array *make(nd_dtype dt, int ndim, const size_t *shape,
                      const double *aff) {
  nd_array *a;
  assert_int_equal(nd_array_new(&a, dt, ndim, shape), ND_OK);
  fill_random(a);
  if (aff != NULL)
    assert_int_equal(nd_array_set_affine(a, aff), ND_OK);
  return a;
}

/* Decode from an exact-size heap copy so ASan catches any overread. */
static int decode_exact(const void *buf, size_t len, nd_array **out) {
  void *copy = malloc(len == 0 ? 1 : len);
  assert_non_null(copy);
  memcpy(copy, buf, len);
  int rc = nd_array_decode(copy, len, out);
  free(copy);
  if (rc != ND_OK)
    assert_null(*out);
  return rc;
}

static void encode(const nd_array *a, unsigned char **buf, size_t *len) {
  assert_int_equal(nd_array_encode(a, (void **)buf, len), ND_OK);
  assert_int_equal(*len, nd_array_encoded_size(a));
}

/* Round trip, equality, and hash == XXH3-128 of the encoding. */
static void check_roundtrip(const nd_array *a) {
  unsigned char *buf;
  size_t len;
  encode(a, &buf, &len);
  nd_array *b;
  assert_int_equal(decode_exact(buf, len, &b), ND_OK);
  assert_true(nd_array_equal(a, b));
  assert_true(nd_array_equal(b, a));
  nd_hash128 ha, hb;
  assert_int_equal(nd_array_hash(a, &ha), ND_OK);
  assert_int_equal(nd_array_hash(b, &hb), ND_OK);
  assert_true(nd_hash128_eq(ha, hb));
  assert_true(nd_hash128_eq(ha, nd_hash128_bytes(buf, len)));
  unsigned char *buf2;
  size_t len2;
  encode(b, &buf2, &len2);
  assert_memory_equal(buf, buf2, len);
  nd_free(buf2);
  nd_free(buf);
  nd_array_release(b);
}

static size_t header_len(const nd_array *a) {
  return nd_array_encoded_size(a) - nd_array_nbytes(a);
}

/* ------------------------------------------------------- construction */

static void test_dtypes(void **state) {
  (void)state;
  static const char *names[] = {"u8",  "i8",  "u16", "i16", "u32",
                                "i32", "u64", "i64", "f32", "f64"};
  static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 8, 8, 4, 8};
  for (size_t i = 0; i < N_DTYPES; i++) {
    assert_int_equal(nd_dtype_size(all_dtypes[i]), sizes[i]);
    assert_string_equal(nd_dtype_name(all_dtypes[i]), names[i]);
  }
  assert_int_equal(nd_dtype_size((nd_dtype)0), 0);
  assert_int_equal(nd_dtype_size((nd_dtype)11), 0);
  assert_string_equal(nd_dtype_name((nd_dtype)0), "invalid");
  assert_string_equal(nd_dtype_name((nd_dtype)-3), "invalid");
}

static void test_new_every_dtype(void **state) {
  (void)state;
  const size_t shape[] = {2, 3, 4};
  for (size_t i = 0; i < N_DTYPES; i++) {
    nd_array *a;
    assert_int_equal(nd_array_new(&a, all_dtypes[i], 3, shape), ND_OK);
    assert_int_equal(nd_array_dtype(a), all_dtypes[i]);
    assert_int_equal(nd_array_ndim(a), 3);
    assert_memory_equal(nd_array_shape(a), shape, sizeof shape);
    assert_int_equal(nd_array_dim(a, 0), 2);
    assert_int_equal(nd_array_dim(a, 2), 4);
    assert_int_equal(nd_array_dim(a, 3), 0);
    assert_int_equal(nd_array_dim(a, -1), 0);
    assert_int_equal(nd_array_count(a), 24);
    assert_int_equal(nd_array_nbytes(a), 24 * nd_dtype_size(all_dtypes[i]));
    assert_null(nd_array_affine(a));
    const unsigned char *d = nd_array_data(a);
    assert_int_equal((uintptr_t)d % DATA_ALIGN, 0);
    for (size_t k = 0; k < nd_array_nbytes(a); k++)
      assert_int_equal(d[k], 0);
    assert_ptr_equal(nd_array_data_mut(a), d);
    nd_array_release(a);
  }
}

static void test_scalar_and_empty(void **state) {
  (void)state;
  nd_array *a;
  assert_int_equal(nd_array_new(&a, ND_F64, 0, NULL), ND_OK);
  assert_int_equal(nd_array_ndim(a), 0);
  assert_int_equal(nd_array_count(a), 1);
  assert_int_equal(nd_array_nbytes(a), sizeof(double));
  assert_int_equal(nd_array_dim(a, 0), 0);
  *(double *)nd_array_data_mut(a) = 2.5;
  check_roundtrip(a);
  nd_array_release(a);

  /* A zero extent makes an empty array whatever the other extents. */
  const size_t empty[] = {0, SIZE_MAX, SIZE_MAX};
  assert_int_equal(nd_array_new(&a, ND_I64, 3, empty), ND_OK);
  assert_int_equal(nd_array_count(a), 0);
  assert_int_equal(nd_array_nbytes(a), 0);
  check_roundtrip(a);
  nd_array_release(a);
}

static void test_new_invalid(void **state) {
  (void)state;
  const size_t shape[ND_MAX_DIMS + 1] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  nd_array *a = (nd_array *)&a; /* must be reset to NULL */
  assert_int_equal(nd_array_new(&a, (nd_dtype)0, 1, shape), ND_EINVAL);
  assert_null(a);
  assert_int_equal(nd_array_new(&a, (nd_dtype)11, 1, shape), ND_EINVAL);
  assert_int_equal(nd_array_new(&a, ND_U8, -1, shape), ND_EINVAL);
  assert_int_equal(nd_array_new(&a, ND_U8, ND_MAX_DIMS + 1, shape), ND_EINVAL);
  assert_int_equal(nd_array_new(&a, ND_U8, 1, NULL), ND_EINVAL);
  assert_int_equal(nd_array_new(NULL, ND_U8, 1, shape), ND_EINVAL);
  assert_int_equal(nd_array_new(&a, ND_U8, ND_MAX_DIMS, shape), ND_OK);
  nd_array_release(a);
}

static void test_overflow(void **state) {
  (void)state;
  nd_array *a;
  const size_t s1[] = {SIZE_MAX, 2};
  assert_int_equal(nd_array_new(&a, ND_U8, 2, s1), ND_EOVERFLOW);
  assert_null(a);
  const size_t s2[] = {SIZE_MAX / 2 + 1};
  assert_int_equal(nd_array_new(&a, ND_U16, 1, s2), ND_EOVERFLOW);
  const size_t s3[] = {(size_t)1 << 32, (size_t)1 << 32};
  assert_int_equal(nd_array_new(&a, ND_U8, 2, s3), ND_EOVERFLOW);
  const size_t s4[] = {SIZE_MAX / 8 + 1};
  assert_int_equal(nd_array_new(&a, ND_F64, 1, s4), ND_EOVERFLOW);
  const size_t s5[] = {SIZE_MAX - 8}; /* fits, but not with a header */
  assert_int_equal(nd_array_new(&a, ND_U8, 1, s5), ND_EOVERFLOW);
  /* Overflow of the intermediate product, however the dims are ordered. */
  const size_t s6[] = {SIZE_MAX, SIZE_MAX, 1};
  assert_int_equal(nd_array_new(&a, ND_U8, 3, s6), ND_EOVERFLOW);
  assert_int_equal(nd_array_from(&a, ND_U8, 3, s6, "", 0), ND_EOVERFLOW);
}

static void test_from(void **state) {
  (void)state;
  const size_t shape[] = {2, 2};
  const float v[] = {1.0f, -2.0f, 3.5f, 0.0f};
  nd_array *a;
  assert_int_equal(nd_array_from(&a, ND_F32, 2, shape, v, sizeof v), ND_OK);
  assert_memory_equal(nd_array_data(a), v, sizeof v);
  assert_ptr_not_equal(nd_array_data(a), v);
  nd_array_release(a);
  assert_int_equal(nd_array_from(&a, ND_F32, 2, shape, v, sizeof v - 1),
                   ND_EINVAL);
  assert_null(a);
  assert_int_equal(nd_array_from(&a, ND_F32, 2, shape, v, sizeof v + 4),
                   ND_EINVAL);
  assert_int_equal(nd_array_from(&a, ND_F32, 2, shape, NULL, sizeof v),
                   ND_EINVAL);
  const size_t empty[] = {0};
  assert_int_equal(nd_array_from(&a, ND_F32, 1, empty, NULL, 0), ND_OK);
  nd_array_release(a);
}

/* ------------------------------------------------------- immutability */

static void test_immutable_once_shared(void **state) {
  (void)state;
  const size_t shape[] = {4};
  nd_array *a;
  assert_int_equal(nd_array_new(&a, ND_U32, 1, shape), ND_OK);
  assert_non_null(nd_array_data_mut(a));
  assert_int_equal(nd_array_set_affine(a, identity), ND_OK);
  assert_int_equal(nd_array_set_affine(a, NULL), ND_OK);
  assert_ptr_equal(nd_array_retain(a), a);
  assert_null(nd_array_data_mut(a));
  assert_int_equal(nd_array_set_affine(a, identity), ND_ESTATE);
  assert_int_equal(nd_array_set_affine(a, NULL), ND_ESTATE);
  nd_array_release(a);
  /* Back to one reference: still frozen (it may have been hashed). */
  assert_null(nd_array_data_mut(a));
  assert_int_equal(nd_array_set_affine(a, identity), ND_ESTATE);
  assert_null(nd_array_affine(a));
  assert_non_null(nd_array_data(a));
  nd_array_release(a);
  assert_null(nd_array_retain(NULL));
  nd_array_release(NULL);
  assert_null(nd_array_data_mut(NULL));
  assert_int_equal(nd_array_set_affine(NULL, identity), ND_EINVAL);
  /* nd_errmsg on an array is safe and empty. */
  assert_int_equal(nd_array_new(&a, ND_U8, 0, NULL), ND_OK);
  assert_string_equal(nd_errmsg(a), "");
  nd_array_release(a);
}

#define RC_THREADS 4
#define RC_ITERS 20000

static void *retain_release_worker(void *arg) {
  nd_array *a = arg;
  for (int i = 0; i < RC_ITERS; i++) {
    nd_array_retain(a);
    nd_array_release(a);
  }
  nd_array_release(a); /* the reference the main thread gave us */
  return NULL;
}

static void test_refcount_threads(void **state) {
  (void)state;
  nd_array *a;
  assert_int_equal(nd_array_new(&a, ND_U8, 0, NULL), ND_OK);
  pthread_t t[RC_THREADS];
  for (int i = 0; i < RC_THREADS; i++) {
    nd_array_retain(a);
    assert_int_equal(pthread_create(&t[i], NULL, retain_release_worker, a), 0);
  }
  for (int i = 0; i < RC_THREADS; i++)
    pthread_join(t[i], NULL);
  /* Still alive (ours remains) and frozen; ASan checks the single free. */
  assert_null(nd_array_data_mut(a));
  assert_int_equal(nd_array_count(a), 1);
  nd_array_release(a);
}

/* -------------------------------------------------------------- affine */

static void test_affine(void **state) {
  (void)state;
  const size_t shape[] = {2, 2, 2};
  nd_array *a;
  assert_int_equal(nd_array_new(&a, ND_F32, 3, shape), ND_OK);
  double aff[16];
  memcpy(aff, identity, sizeof aff);
  aff[3] = -90.0;
  assert_int_equal(nd_array_set_affine(a, aff), ND_OK);
  assert_memory_equal(nd_array_affine(a), aff, sizeof aff);
  const double bad[] = {NAN, INFINITY, -INFINITY};
  for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++)
    for (int i = 0; i < 16; i += 5) {
      double x[16];
      memcpy(x, identity, sizeof x);
      x[i] = bad[b];
      assert_int_equal(nd_array_set_affine(a, x), ND_EINVAL);
      assert_memory_equal(nd_array_affine(a), aff, sizeof aff); /* kept */
    }
  assert_int_equal(nd_array_set_affine(a, NULL), ND_OK);
  assert_null(nd_array_affine(a));
  nd_array_release(a);
}

/* ----------------------------------------------------- equal and hash */

static void assert_differ(const nd_array *a, const nd_array *b) {
  nd_hash128 ha, hb;
  assert_false(nd_array_equal(a, b));
  assert_int_equal(nd_array_hash(a, &ha), ND_OK);
  assert_int_equal(nd_array_hash(b, &hb), ND_OK);
  assert_false(nd_hash128_eq(ha, hb));
}

static void test_equal_and_hash(void **state) {
  (void)state;
  const size_t s23[] = {2, 3}, s32[] = {3, 2}, s6[] = {6};
  const int32_t v[] = {1, 2, 3, 4, 5, 6};
  nd_array *a, *b, *c, *d, *e, *f;
  nd_array_from(&a, ND_I32, 2, s23, v, sizeof v);
  nd_array_from(&b, ND_I32, 2, s23, v, sizeof v);
  nd_array_from(&c, ND_I32, 2, s32, v, sizeof v);
  nd_array_from(&d, ND_I32, 1, s6, v, sizeof v);
  nd_array_from(&e, ND_U32, 2, s23, v, sizeof v);
  nd_array_from(&f, ND_I32, 2, s23, v, sizeof v);
  assert_true(nd_array_equal(a, b));
  assert_true(nd_array_equal(a, a));
  assert_true(nd_array_equal(NULL, NULL));
  assert_false(nd_array_equal(a, NULL));
  assert_false(nd_array_equal(NULL, a));
  assert_differ(a, c); /* shape */
  assert_differ(a, d); /* ndim */
  assert_differ(a, e); /* dtype */
  ((int32_t *)nd_array_data_mut(f))[5] = 7;
  assert_differ(a, f); /* data */
  nd_array_set_affine(b, identity);
  assert_differ(a, b); /* affine presence */
  double aff[16];
  memcpy(aff, identity, sizeof aff);
  aff[1] = -0.0; /* bytes differ from +0.0: a different value */
  nd_array_set_affine(a, aff);
  assert_differ(a, b); /* affine value */
  nd_array_set_affine(a, identity);
  assert_true(nd_array_equal(a, b));
  nd_hash128 h;
  assert_int_equal(nd_array_hash(NULL, &h), ND_EINVAL);
  assert_int_equal(nd_array_hash(a, NULL), ND_EINVAL);
  nd_array *all[] = {a, b, c, d, e, f};
  for (size_t i = 0; i < 6; i++)
    nd_array_release(all[i]);
}

/* ------------------------------------------------------------ encoding */

static void test_golden_u16(void **state) {
  (void)state;
  const size_t shape[] = {2};
  const uint16_t v[] = {0x0102, 0xA0B0};
  const unsigned char expect[] = {
      'N',  'D',  'A',  'R',                    /* magic */
      0x01, 0x00,                               /* version 1 */
      0x03,                                     /* dtype u16 */
      0x00,                                     /* flags */
      0x01, 0x00, 0x00, 0x00,                   /* ndim 1 */
      0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* shape[0] 2 */
      0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* nbytes 4 */
      0x02, 0x01, 0xB0, 0xA0,                   /* data, little-endian */
  };
  nd_array *a;
  assert_int_equal(nd_array_from(&a, ND_U16, 1, shape, v, sizeof v), ND_OK);
  unsigned char buf[sizeof expect];
  size_t written = 99;
  assert_int_equal(nd_array_encode_into(a, buf, sizeof buf - 1, &written),
                   ND_ERANGE);
  assert_int_equal(written, 0);
  assert_int_equal(nd_array_encode_into(a, buf, sizeof buf, &written), ND_OK);
  assert_int_equal(written, sizeof expect);
  assert_memory_equal(buf, expect, sizeof expect);
  nd_array *b;
  assert_int_equal(decode_exact(expect, sizeof expect, &b), ND_OK);
  assert_true(nd_array_equal(a, b));
  assert_int_equal(((const uint16_t *)nd_array_data(b))[1], 0xA0B0);
  nd_array_release(a);
  nd_array_release(b);
}

static void test_golden_scalar_affine(void **state) {
  (void)state;
  /* f64 scalar 1.0 with a diagonal affine (2, 2, 2, 1). */
  const unsigned char one[8] = {0, 0, 0, 0, 0, 0, 0xF0, 0x3F};
  const unsigned char two[8] = {0, 0, 0, 0, 0, 0, 0x00, 0x40};
  const unsigned char zero[8] = {0};
  unsigned char expect[FIXED_HEADER + AFFINE_BYTES + 8];
  const unsigned char head[] = {'N', 'D', 'A', 'R', 0x01, 0x00, 0x0A, 0x01,
                                0x00, 0x00, 0x00, 0x00}; /* f64, affine, ndim 0 */
  unsigned char *p = expect;
  memcpy(p, head, sizeof head);
  p += sizeof head;
  for (int i = 0; i < 16; i++, p += 8)
    memcpy(p, i == 15 ? one : (i % 5 == 0 ? two : zero), 8);
  const unsigned char nbytes[8] = {0x08, 0, 0, 0, 0, 0, 0, 0};
  memcpy(p, nbytes, 8);
  memcpy(p + 8, one, 8);

  double aff[16] = {0};
  aff[0] = aff[5] = aff[10] = 2.0;
  aff[15] = 1.0;
  nd_array *a;
  assert_int_equal(nd_array_new(&a, ND_F64, 0, NULL), ND_OK);
  *(double *)nd_array_data_mut(a) = 1.0;
  assert_int_equal(nd_array_set_affine(a, aff), ND_OK);
  unsigned char *buf;
  size_t len;
  encode(a, &buf, &len);
  assert_int_equal(len, sizeof expect);
  assert_memory_equal(buf, expect, sizeof expect);
  nd_free(buf);
  nd_array_release(a);
}

static void test_roundtrip_every_dtype(void **state) {
  (void)state;
  const size_t shape[] = {3, 1, 5};
  for (size_t i = 0; i < N_DTYPES; i++)
    for (int ndim = 0; ndim <= 3; ndim++) {
      nd_array *a = make(all_dtypes[i], ndim, shape, NULL);
      check_roundtrip(a);
      nd_array_release(a);
      a = make(all_dtypes[i], ndim, shape, identity);
      check_roundtrip(a);
      nd_array_release(a);
    }
  /* f64 data is bytes: NaN payloads round-trip and compare equal. */
  const size_t two[] = {2};
  const double nan2[] = {NAN, -NAN};
  nd_array *n;
  assert_int_equal(nd_array_from(&n, ND_F64, 1, two, nan2, sizeof nan2), ND_OK);
  check_roundtrip(n);
  nd_array_release(n);
}

static void test_encode_args(void **state) {
  (void)state;
  nd_array *a = make(ND_U8, 0, NULL, NULL);
  void *buf = (void *)&buf;
  size_t len = 5, written = 5;
  assert_int_equal(nd_array_encode(NULL, &buf, &len), ND_EINVAL);
  assert_int_equal(nd_array_encode(a, NULL, &len), ND_EINVAL);
  assert_int_equal(nd_array_encode(a, &buf, NULL), ND_EINVAL);
  assert_int_equal(nd_array_encode_into(NULL, NULL, 0, &written), ND_EINVAL);
  assert_int_equal(nd_array_encode_into(a, NULL, 0, &written), ND_ERANGE);
  assert_int_equal(nd_array_encode_into(a, NULL, 5, &written), ND_EINVAL);
  assert_int_equal(nd_array_encoded_size(NULL), 0);
  nd_array *out = (nd_array *)&out;
  assert_int_equal(nd_array_decode(NULL, 4, &out), ND_EINVAL);
  assert_null(out);
  assert_int_equal(nd_array_decode(NULL, 0, &out), ND_EFORMAT);
  assert_int_equal(nd_array_decode("NDAR", 4, NULL), ND_EINVAL);
  nd_array_release(a);
}

/* ------------------------------------------------------ hostile input */

static nd_array *sample(int which) {
  const size_t shape[] = {2, 3, 1};
  switch (which) {
  case 0:
    return make(ND_I16, 3, shape, NULL);
  case 1:
    return make(ND_F32, 2, shape, identity);
  case 2:
    return make(ND_F64, 0, NULL, identity);
  default:
    return make(ND_U8, 1, shape, NULL);
  }
}
#define N_SAMPLES 4

static void test_every_truncation_fails(void **state) {
  (void)state;
  for (int s = 0; s < N_SAMPLES; s++) {
    nd_array *a = sample(s);
    unsigned char *buf;
    size_t len;
    encode(a, &buf, &len);
    for (size_t n = 0; n < len; n++) {
      nd_array *b;
      int rc = decode_exact(buf, n, &b);
      assert_true(rc == ND_EFORMAT);
    }
    nd_free(buf);
    nd_array_release(a);
  }
}

static void test_trailing_byte_fails(void **state) {
  (void)state;
  for (int s = 0; s < N_SAMPLES; s++) {
    nd_array *a = sample(s);
    size_t len = nd_array_encoded_size(a);
    unsigned char *buf = malloc(len + 1);
    assert_int_equal(nd_array_encode_into(a, buf, len + 1, &len), ND_OK);
    buf[len] = 0;
    nd_array *b;
    assert_int_equal(decode_exact(buf, len + 1, &b), ND_EFORMAT);
    free(buf);
    nd_array_release(a);
  }
}

/* A corrupted input either fails or is a valid, different array whose own
 * encoding is exactly the corrupted bytes (the format is canonical). */
static void check_mutant(const nd_array *orig, const unsigned char *buf,
                         size_t len) {
  nd_array *b;
  int rc = decode_exact(buf, len, &b);
  if (rc != ND_OK) {
    assert_true(rc == ND_EFORMAT || rc == ND_EVERSION || rc == ND_EOVERFLOW);
    return;
  }
  assert_false(nd_array_equal(orig, b));
  unsigned char *again;
  size_t len2;
  encode(b, &again, &len2);
  assert_int_equal(len2, len);
  assert_memory_equal(again, buf, len);
  nd_free(again);
  nd_array_release(b);
}

static void test_header_corruption(void **state) {
  (void)state;
  const unsigned char flips[] = {0x01, 0x02, 0x04, 0x10, 0x80, 0xFF};
  for (int s = 0; s < N_SAMPLES; s++) {
    nd_array *a = sample(s);
    unsigned char *buf;
    size_t len;
    encode(a, &buf, &len);
    for (size_t i = 0; i < header_len(a); i++)
      for (size_t f = 0; f < sizeof flips; f++) {
        buf[i] ^= flips[f];
        check_mutant(a, buf, len);
        buf[i] ^= flips[f];
      }
    nd_free(buf);
    nd_array_release(a);
  }
}

static void put_le(unsigned char *p, uint64_t v, size_t width) {
  for (size_t i = 0; i < width; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static void test_specific_rejections(void **state) {
  (void)state;
  nd_array *a = sample(1); /* f32 2x3 with affine */
  unsigned char *good;
  size_t len;
  encode(a, &good, &len);
  unsigned char *buf = malloc(len);
  nd_array *b;
#define MUTATE(stmt, expect_rc)                                                \
  do {                                                                         \
    memcpy(buf, good, len);                                                    \
    stmt;                                                                      \
    assert_int_equal(decode_exact(buf, len, &b), expect_rc);                   \
  } while (0)
  MUTATE(buf[0] = 'X', ND_EFORMAT);                                 /* magic */
  MUTATE(put_le(buf + VERSION_OFFSET, 2, 2), ND_EVERSION);          /* future */
  MUTATE(put_le(buf + VERSION_OFFSET, 0, 2), ND_EVERSION);
  MUTATE(put_le(buf + VERSION_OFFSET, 0x0100, 2), ND_EVERSION);     /* BE 1 */
  MUTATE(buf[DTYPE_OFFSET] = 0, ND_EFORMAT);
  MUTATE(buf[DTYPE_OFFSET] = 11, ND_EFORMAT);
  MUTATE(buf[FLAGS_OFFSET] |= 0x02, ND_EFORMAT);                    /* unknown */
  MUTATE(buf[FLAGS_OFFSET] = 0x80 | 0x01, ND_EFORMAT);
  MUTATE(put_le(buf + NDIM_OFFSET, ND_MAX_DIMS + 1, 4), ND_EFORMAT);
  MUTATE(put_le(buf + NDIM_OFFSET, UINT32_MAX, 4), ND_EFORMAT);
  MUTATE(put_le(buf + SHAPE_OFFSET, 4, 8), ND_EFORMAT);             /* nbytes */
  MUTATE(put_le(buf + SHAPE_OFFSET, UINT64_MAX, 8), ND_EOVERFLOW);
  size_t aff0 = SHAPE_OFFSET + 2 * 8;
  const uint64_t nan_bits = UINT64_C(0x7FF8000000000000);
  const uint64_t inf_bits = UINT64_C(0x7FF0000000000000);
  MUTATE(put_le(buf + aff0, nan_bits, 8), ND_EFORMAT);
  MUTATE(put_le(buf + aff0 + 15 * 8, inf_bits, 8), ND_EFORMAT);
  size_t nb = aff0 + AFFINE_BYTES;
  MUTATE(put_le(buf + nb, 23, 8), ND_EFORMAT);
  MUTATE(put_le(buf + nb, 25, 8), ND_EFORMAT);
  MUTATE(put_le(buf + nb, UINT64_MAX, 8), ND_EFORMAT);
  MUTATE(buf[FLAGS_OFFSET] = 0, ND_EFORMAT); /* affine bytes now misread */
#undef MUTATE
  free(buf);
  nd_free(good);
  nd_array_release(a);
}

/* A header that is valid except that it declares far more data than is
 * present must be refused without trying to allocate it. */
static long big_allocs;
static void *spy_malloc(void *ud, size_t n) {
  (void)ud;
  if (n > 1024)
    big_allocs++;
  return malloc(n);
}
static void *spy_realloc(void *ud, void *p, size_t n) {
  (void)ud;
  if (n > 1024)
    big_allocs++;
  return realloc(p, n);
}
static void spy_free(void *ud, void *p) {
  (void)ud;
  free(p);
}

static void test_huge_declared_size(void **state) {
  (void)state;
  unsigned char buf[FIXED_HEADER + 8];
  memcpy(buf, "NDAR", 4);
  put_le(buf + VERSION_OFFSET, 1, 2);
  buf[DTYPE_OFFSET] = ND_U8;
  buf[FLAGS_OFFSET] = 0;
  put_le(buf + NDIM_OFFSET, 1, 4);
  const uint64_t huge = UINT64_C(1) << 60;
  put_le(buf + SHAPE_OFFSET, huge, 8);
  put_le(buf + SHAPE_OFFSET + 8, huge, 8);
  nd_allocator spy = {spy_malloc, spy_realloc, spy_free, NULL};
  big_allocs = 0;
  nd_set_allocator(&spy);
  nd_array *b;
  int rc = decode_exact(buf, sizeof buf, &b);
  nd_set_allocator(NULL);
  assert_int_equal(rc, ND_EFORMAT);
  assert_int_equal(big_allocs, 0);
}

/* ------------------------------------------------------ seeded random */

#define RANDOM_ITERS 400
#define RANDOM_MUTATIONS 8

static void seed_rng(void) {
  const char *env = getenv("NIDAG_TEST_SEED");
  uint64_t seed = env != NULL ? strtoull(env, NULL, 0)
                              : (uint64_t)time(NULL) ^ (uint64_t)clock();
  rng_state = seed;
  printf("# test_array: NIDAG_TEST_SEED=%" PRIu64 "\n", seed);
}

static nd_array *random_array(void) {
  size_t shape[ND_MAX_DIMS];
  int ndim = (int)rng_below(5);
  for (int i = 0; i < ndim; i++)
    shape[i] = rng_below(6);
  nd_dtype dt = all_dtypes[rng_below(N_DTYPES)];
  double aff[16];
  for (int i = 0; i < 16; i++)
    aff[i] = (double)(int64_t)rng_below(2001) / 8.0 - 125.0;
  return make(dt, ndim, shape, rng_below(2) ? aff : NULL);
}

static void test_random_roundtrip_and_mutation(void **state) {
  (void)state;
  for (int it = 0; it < RANDOM_ITERS; it++) {
    nd_array *a = random_array();
    check_roundtrip(a);
    unsigned char *buf;
    size_t len;
    encode(a, &buf, &len);
    for (int m = 0; m < RANDOM_MUTATIONS; m++) {
      size_t i = rng_below(len);
      unsigned char flip = (unsigned char)(1u + rng_below(255));
      buf[i] ^= flip;
      if (i < header_len(a))
        check_mutant(a, buf, len);
      else { /* a data byte: always valid, never equal */
        nd_array *b;
        assert_int_equal(decode_exact(buf, len, &b), ND_OK);
        assert_false(nd_array_equal(a, b));
        nd_array_release(b);
      }
      buf[i] ^= flip;
    }
    nd_array *b;
    size_t cut = rng_below(len);
    assert_int_equal(decode_exact(buf, cut, &b), ND_EFORMAT);
    nd_free(buf);
    nd_array_release(a);
  }
}

int main(void) {
  seed_rng();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dtypes),
      cmocka_unit_test(test_new_every_dtype),
      cmocka_unit_test(test_scalar_and_empty),
      cmocka_unit_test(test_new_invalid),
      cmocka_unit_test(test_overflow),
      cmocka_unit_test(test_from),
      cmocka_unit_test(test_immutable_once_shared),
      cmocka_unit_test(test_refcount_threads),
      cmocka_unit_test(test_affine),
      cmocka_unit_test(test_equal_and_hash),
      cmocka_unit_test(test_golden_u16),
      cmocka_unit_test(test_golden_scalar_affine),
      cmocka_unit_test(test_roundtrip_every_dtype),
      cmocka_unit_test(test_encode_args),
      cmocka_unit_test(test_every_truncation_fails),
      cmocka_unit_test(test_trailing_byte_fails),
      cmocka_unit_test(test_header_corruption),
      cmocka_unit_test(test_specific_rejections),
      cmocka_unit_test(test_huge_declared_size),
      cmocka_unit_test(test_random_roundtrip_and_mutation),
  };
  return cmocka_run_group_tests_name("array", tests, NULL, NULL);
}
