/* cmocka suite for the core layer's errors, allocation hook and hashing:
 * every error code's name and message, per-handle messages, counting and
 * fault-injecting allocators (every constructor fails cleanly with
 * ND_ENOMEM at each possible allocation), and XXH3 helpers checked against
 * xxHash itself. Array tests live in test_array.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "common/core_int.h"

/* ------------------------------------------------------------- errors */

typedef struct code_info {
  int code;
  const char *name;
  const char *msg;
} code_info;

static const code_info all_codes[] = {
#define CODE_INFO(name, value, msg) {value, "ND_" #name, msg},
    ND_ERRNO_MAP(CODE_INFO)
#undef CODE_INFO
};
#define N_CODES (sizeof all_codes / sizeof all_codes[0])

static void test_strerror_every_code(void **state) {
  (void)state;
  assert_true(N_CODES >= 17); /* append-only: ND_ESTATE is -16 */
  for (size_t i = 0; i < N_CODES; i++) {
    assert_string_equal(nd_strerror(all_codes[i].code), all_codes[i].msg);
    assert_string_equal(nd_errname(all_codes[i].code), all_codes[i].name);
  }
  assert_string_equal(nd_errname(ND_EINVAL), "ND_EINVAL");
  assert_string_equal(nd_strerror(ND_ENOMEM), "out of memory");
  assert_string_equal(nd_errname(0), "ND_OK");
}

static void test_strerror_unknown(void **state) {
  (void)state;
  const int unknown[] = {1, 42, -17, -1000, INT32_MIN, INT32_MAX};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    assert_non_null(nd_strerror(unknown[i]));
    assert_string_equal(nd_strerror(unknown[i]), "unknown error");
    assert_string_equal(nd_errname(unknown[i]), "ND_EUNKNOWN");
  }
}

/* A stand-in for a public handle: nd__errbuf first, as every handle has. */
typedef struct fake_handle {
  nd__errbuf err;
  int payload;
} fake_handle;

static void test_errmsg_handle(void **state) {
  (void)state;
  fake_handle h;
  memset(&h, 0, sizeof h);
  assert_string_equal(nd_errmsg(NULL), "");
  assert_string_equal(nd_errmsg(&h), "");
  assert_int_equal(nd__seterr(&h.err, ND_EIO, "cannot open %s", "sub-03.nii"),
                   ND_EIO);
  assert_int_equal(h.err.code, ND_EIO);
  assert_string_equal(nd_errmsg(&h), "cannot open sub-03.nii");
  nd__clearerr(&h.err);
  assert_int_equal(h.err.code, ND_OK);
  assert_string_equal(nd_errmsg(&h), "");
  /* A code with a stale message still reads as "no error" once cleared. */
  nd__seterr(&h.err, ND_EFORMAT, "bad");
  h.err.code = ND_OK;
  assert_string_equal(nd_errmsg(&h), "");
  nd__clearerr(NULL); /* no crash */
  assert_int_equal(nd__seterr(NULL, ND_EIO, "x"), ND_EIO);
}

static void test_errmsg_truncated(void **state) {
  (void)state;
  fake_handle h;
  memset(&h, 0, sizeof h);
  char longmsg[ND__ERRMSG_MAX * 2];
  memset(longmsg, 'x', sizeof longmsg - 1);
  longmsg[sizeof longmsg - 1] = '\0';
  h.payload = 0x5a5a;
  nd__seterr(&h.err, ND_ECORRUPT, "%s", longmsg);
  assert_int_equal(strlen(nd_errmsg(&h)), ND__ERRMSG_MAX - 1);
  assert_int_equal(h.payload, 0x5a5a);
}

/* ----------------------------------------------------------- allocators */

/* Counts calls and live blocks; fails the allocation numbered fail_at
 * (0-based) and every later one when fail_at >= 0 and sticky is set. */
typedef struct counting {
  long mallocs, reallocs, frees, live;
  long calls;   /* malloc + realloc calls, the fault injection clock */
  long fail_at; /* -1: never fail */
} counting;

static void *count_malloc(void *ud, size_t size) {
  counting *c = ud;
  c->mallocs++;
  if (c->fail_at >= 0 && c->calls++ == c->fail_at)
    return NULL;
  void *p = malloc(size == 0 ? 1 : size);
  if (p != NULL)
    c->live++;
  return p;
}

static void *count_realloc(void *ud, void *ptr, size_t size) {
  counting *c = ud;
  c->reallocs++;
  if (c->fail_at >= 0 && c->calls++ == c->fail_at)
    return NULL;
  void *p = realloc(ptr, size == 0 ? 1 : size);
  if (p != NULL && ptr == NULL)
    c->live++;
  return p;
}

static void count_free(void *ud, void *ptr) {
  counting *c = ud;
  c->frees++;
  if (ptr != NULL)
    c->live--;
  free(ptr);
}

static void install(counting *c, long fail_at) {
  memset(c, 0, sizeof *c);
  c->fail_at = fail_at;
  nd_allocator a = {count_malloc, count_realloc, count_free, c};
  assert_int_equal(nd_set_allocator(&a), ND_OK);
}

static int restore_allocator(void **state) {
  (void)state;
  return nd_set_allocator(NULL);
}

static void test_set_allocator_invalid(void **state) {
  (void)state;
  nd_allocator a = {count_malloc, count_realloc, NULL, NULL};
  assert_int_equal(nd_set_allocator(&a), ND_EINVAL);
  a.free_fn = count_free;
  a.malloc_fn = NULL;
  assert_int_equal(nd_set_allocator(&a), ND_EINVAL);
  a.malloc_fn = count_malloc;
  a.realloc_fn = NULL;
  assert_int_equal(nd_set_allocator(&a), ND_EINVAL);
  assert_int_equal(nd_set_allocator(NULL), ND_OK);
  void *p = nd_malloc(8); /* the C library again */
  assert_non_null(p);
  nd_free(p);
}

static void test_allocator_counts(void **state) {
  (void)state;
  counting c;
  install(&c, -1);
  void *p = nd_malloc(16);
  assert_non_null(p);
  p = nd_realloc(p, 4096);
  assert_non_null(p);
  char *s = nd_strdup("parcellation");
  assert_string_equal(s, "parcellation");
  assert_null(nd_strdup(NULL));
  nd_free(NULL); /* no-op: not counted */
  assert_int_equal(c.frees, 0);
  assert_int_equal(c.live, 2);
  nd_free(s);
  nd_free(p);
  assert_int_equal(c.mallocs, 2);
  assert_int_equal(c.reallocs, 1);
  assert_int_equal(c.frees, 2);
  assert_int_equal(c.live, 0);
}

static void test_calloc_checked(void **state) {
  (void)state;
  counting c;
  install(&c, -1);
  unsigned char *p = nd_calloc(7, 9);
  assert_non_null(p);
  for (size_t i = 0; i < 63; i++)
    assert_int_equal(p[i], 0);
  nd_free(p);
  assert_null(nd_calloc(SIZE_MAX / 2 + 1, 2));
  assert_null(nd_calloc(2, SIZE_MAX));
  assert_int_equal(c.mallocs, 1); /* overflow never reaches the hook */
  assert_int_equal(c.live, 0);
}

/* Run `op` with the Nth allocation failing for N = 0, 1, 2, ... until it
 * succeeds: each failure must be ND_ENOMEM and leave nothing allocated. */
typedef int (*alloc_op)(void);

static void check_fault_injection(alloc_op op, const char *what) {
  counting c;
  for (long n = 0;; n++) {
    install(&c, n);
    int rc = op();
    if (rc == ND_OK) {
      assert_int_equal(c.live, 0);
      printf("# %s: succeeds after %ld injected failures\n", what, n);
      break;
    }
    assert_int_equal(rc, ND_ENOMEM);
    assert_int_equal(c.live, 0);
    assert_true(n < 64);
  }
  nd_set_allocator(NULL);
}

/* Each op constructs, uses and frees, returning the first error. */
static int op_hasher(void) {
  nd_hasher *h;
  int rc = nd_hasher_new(&h);
  if (rc != ND_OK) {
    assert_null(h);
    return rc;
  }
  nd_hasher_str(h, "x");
  nd_hasher_free(h);
  return ND_OK;
}

static int op_strdup(void) {
  char *s = nd_strdup("abc");
  if (s == NULL)
    return ND_ENOMEM;
  nd_free(s);
  return ND_OK;
}

static int op_array_new(void) {
  const size_t shape[] = {3, 4};
  nd_array *a;
  int rc = nd_array_new(&a, ND_F32, 2, shape);
  if (rc != ND_OK) {
    assert_null(a);
    return rc;
  }
  nd_array_release(a);
  return ND_OK;
}

static int op_array_from(void) {
  const size_t shape[] = {4};
  const int32_t v[] = {1, 2, 3, 4};
  nd_array *a;
  int rc = nd_array_from(&a, ND_I32, 1, shape, v, sizeof v);
  if (rc != ND_OK) {
    assert_null(a);
    return rc;
  }
  nd_array_release(a);
  return ND_OK;
}

/* new -> encode -> decode -> hash: every allocating array entry point. */
static int op_array_roundtrip(void) {
  const size_t shape[] = {2, 2};
  nd_array *a = NULL, *b = NULL;
  void *buf = NULL;
  size_t len = 0;
  nd_hash128 h;
  int rc = nd_array_new(&a, ND_U16, 2, shape);
  if (rc == ND_OK)
    rc = nd_array_encode(a, &buf, &len);
  if (rc == ND_OK)
    rc = nd_array_decode(buf, len, &b);
  if (rc == ND_OK)
    rc = nd_array_hash(b, &h);
  nd_free(buf);
  nd_array_release(a);
  nd_array_release(b);
  return rc;
}

static void test_fault_injection(void **state) {
  (void)state;
  check_fault_injection(op_hasher, "nd_hasher_new");
  check_fault_injection(op_strdup, "nd_strdup");
  check_fault_injection(op_array_new, "nd_array_new");
  check_fault_injection(op_array_from, "nd_array_from");
  check_fault_injection(op_array_roundtrip, "array encode/decode/hash");
}

/* -------------------------------------------------------------- hashing */

static nd_hash128 ref128(const void *p, size_t n) {
  XXH128_hash_t h = XXH3_128bits(p, n);
  return (nd_hash128){.lo = h.low64, .hi = h.high64};
}

static void test_hash_known(void **state) {
  (void)state;
  /* Published XXH3-128 of the empty string (xxHash's sanity tests). */
  nd_hash128 empty = nd_hash128_bytes("", 0);
  assert_true(empty.hi == UINT64_C(0x99aa06d3014798d8));
  assert_true(empty.lo == UINT64_C(0x6001c324468d497f));
  assert_true(nd_hash128_eq(empty, ref128("", 0)));
  assert_true(nd_hash128_eq(nd_hash128_bytes("abc", 3), ref128("abc", 3)));
  assert_false(nd_hash128_eq(nd_hash128_bytes("abc", 3), empty));
  assert_true(nd_hash64_bytes("abc", 3) == XXH3_64bits("abc", 3));
  XXH128_hash_t s = XXH3_128bits_withSeed("abc", 3, 7);
  nd_hash128 seeded = nd_hash128_seeded("abc", 3, 7);
  assert_true(seeded.lo == s.low64 && seeded.hi == s.high64);
  assert_false(nd_hash128_eq(seeded, nd_hash128_bytes("abc", 3)));
}

static void test_hash_cmp(void **state) {
  (void)state;
  nd_hash128 a = {.lo = 5, .hi = 1}, b = {.lo = 1, .hi = 2};
  nd_hash128 c = {.lo = 6, .hi = 1};
  assert_true(nd_hash128_cmp(a, b) < 0);
  assert_true(nd_hash128_cmp(b, a) > 0);
  assert_true(nd_hash128_cmp(a, c) < 0);
  assert_true(nd_hash128_cmp(c, a) > 0);
  assert_int_equal(nd_hash128_cmp(a, a), 0);
  assert_true(nd_hash128_eq(a, a));
  assert_false(nd_hash128_eq(a, c));
}

#define STREAM_LEN 5000

static void test_hasher_streaming(void **state) {
  (void)state;
  static unsigned char buf[STREAM_LEN];
  for (size_t i = 0; i < sizeof buf; i++)
    buf[i] = (unsigned char)(i * 131u + 7u);
  nd_hasher *h;
  assert_int_equal(nd_hasher_new(&h), ND_OK);
  assert_true(nd_hash128_eq(nd_hasher_digest(h), ref128("", 0)));
  const size_t steps[] = {1, 3, 64, 255, 1000, 4999};
  for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
    nd_hasher_reset(h);
    for (size_t off = 0; off < sizeof buf; off += steps[s]) {
      size_t n = sizeof buf - off < steps[s] ? sizeof buf - off : steps[s];
      nd_hasher_update(h, buf + off, n);
    }
    assert_true(nd_hash128_eq(nd_hasher_digest(h), ref128(buf, sizeof buf)));
  }
  nd_hasher_reset(h);
  nd_hasher_update(h, NULL, 0);
  assert_true(nd_hash128_eq(nd_hasher_digest(h), ref128("", 0)));
  nd_hasher_free(h);
  nd_hasher_free(NULL);
}

static nd_hash128 hash_two(const char *x, const char *y) {
  nd_hasher *h;
  assert_int_equal(nd_hasher_new(&h), ND_OK);
  nd_hasher_lp(h, x, strlen(x));
  nd_hasher_str(h, y);
  nd_hash128 d = nd_hasher_digest(h);
  nd_hasher_free(h);
  return d;
}

static void test_hasher_framing(void **state) {
  (void)state;
  assert_false(nd_hash128_eq(hash_two("ab", "c"), hash_two("a", "bc")));
  assert_false(nd_hash128_eq(hash_two("", "abc"), hash_two("abc", "")));
  assert_true(nd_hash128_eq(hash_two("ab", "c"), hash_two("ab", "c")));

  /* lp = u64 little-endian length, then the bytes. */
  const unsigned char expect[] = {3, 0, 0, 0, 0, 0, 0, 0, 'a', 'b', 'c'};
  nd_hasher *h;
  assert_int_equal(nd_hasher_new(&h), ND_OK);
  nd_hasher_str(h, "abc");
  assert_true(nd_hash128_eq(nd_hasher_digest(h), ref128(expect, sizeof expect)));

  /* NULL string hashes as "": an eight-byte zero length. */
  const unsigned char zero8[8] = {0};
  nd_hasher_reset(h);
  nd_hasher_str(h, NULL);
  assert_true(nd_hash128_eq(nd_hasher_digest(h), ref128(zero8, sizeof zero8)));

  /* u64 is little-endian whatever the host. */
  const unsigned char le[] = {0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01};
  nd_hasher_reset(h);
  nd_hasher_u64(h, UINT64_C(0x0102030405060708));
  assert_true(nd_hash128_eq(nd_hasher_digest(h), ref128(le, sizeof le)));
  nd_hasher_free(h);
}

static void test_hex(void **state) {
  (void)state;
  char hex[ND_HASH128_HEX_LEN + 1];
  nd_hash128 h = {.lo = UINT64_C(0x0123456789abcdef),
                  .hi = UINT64_C(0xfedcba9876543210)};
  nd_hash128_hex(h, hex);
  assert_string_equal(hex, "fedcba98765432100123456789abcdef");
  nd_hash128 back;
  assert_int_equal(nd_hash128_parse(hex, &back), ND_OK);
  assert_true(nd_hash128_eq(h, back));
  assert_int_equal(nd_hash128_parse("FEDCBA98765432100123456789ABCDEF", &back),
                   ND_OK);
  assert_true(nd_hash128_eq(h, back));
  nd_hash128 zero = {0, 0};
  nd_hash128_hex(zero, hex);
  assert_string_equal(hex, "00000000000000000000000000000000");
  nd_hash128 e = nd_hash128_bytes("", 0);
  nd_hash128_hex(e, hex);
  assert_string_equal(hex, "99aa06d3014798d86001c324468d497f");
}

static void test_hex_parse_errors(void **state) {
  (void)state;
  nd_hash128 out = {.lo = 1, .hi = 2};
  const char *bad[] = {
      "",
      "0",
      "fedcba98765432100123456789abcde",   /* 31 digits */
      "fedcba98765432100123456789abcdef0", /* 33 digits */
      "fedcba9876543210",                  /* 16 digits */
      "gedcba98765432100123456789abcdef",
      "fedcba98765432100123456789abcdeg",
      " fedcba98765432100123456789abcdef",
      "fedcba9876543210 0123456789abcdef",
      "0xdcba98765432100123456789abcdef",
      "fedcba98765432100123456789abcde-",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(nd_hash128_parse(bad[i], &out), ND_EFORMAT);
  assert_true(out.lo == 1 && out.hi == 2); /* untouched on error */
  assert_int_equal(nd_hash128_parse(NULL, &out), ND_EINVAL);
  assert_int_equal(
      nd_hash128_parse("00000000000000000000000000000000", NULL), ND_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_strerror_every_code),
      cmocka_unit_test(test_strerror_unknown),
      cmocka_unit_test(test_errmsg_handle),
      cmocka_unit_test(test_errmsg_truncated),
      cmocka_unit_test_teardown(test_set_allocator_invalid, restore_allocator),
      cmocka_unit_test_teardown(test_allocator_counts, restore_allocator),
      cmocka_unit_test_teardown(test_calloc_checked, restore_allocator),
      cmocka_unit_test_teardown(test_fault_injection, restore_allocator),
      cmocka_unit_test(test_hash_known),
      cmocka_unit_test(test_hash_cmp),
      cmocka_unit_test(test_hasher_streaming),
      cmocka_unit_test(test_hasher_framing),
      cmocka_unit_test(test_hex),
      cmocka_unit_test(test_hex_parse_errors),
  };
  return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
