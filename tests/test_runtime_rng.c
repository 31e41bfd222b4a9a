/* Tests of the counter-based random streams (nd_rng, nd_philox4x32).
 *
 * - nd_philox4x32 against Random123's published known-answer vectors for
 *   Philox4x32-10 (tests/kat_vectors of the Random123 distribution), and
 *   against an independent reference implementation of the published
 *   algorithm (itself checked against the same vectors) on seeded random
 *   counters and keys;
 * - the stream layout documented in runtime.h: block i of key k is
 *   Philox(ctr = (i lo, i hi, k.hi lo, k.hi hi), key = (k.lo lo, k.lo hi));
 * - same key, same stream; different keys, different streams; subkeys;
 * - uniform, below and normal: range and moments for fixed keys (so the
 *   statistics are deterministic, not flaky);
 * - a stream read block by block across threads equals the serial stream.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nidag/runtime.h"
#include "tests/testutil.h"

static uint64_t g_seed;


/* ---------------------------------------------------------------- KAT */

/* Random123 tests/kat_vectors, "philox4x32 10" lines: CTR[4] KEY[2] -> OUT[4]. */
typedef struct kat {
  uint32_t ctr[4], key[2], out[4];
} kat;

static const kat g_kats[] = {
    {{0x00000000, 0x00000000, 0x00000000, 0x00000000},
     {0x00000000, 0x00000000},
     {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};

/* Reference Philox4x32-10 (Salmon et al., SC'11): 10 rounds, the key bumped
 * by the Weyl constants between rounds. */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define PHILOX_ROUNDS 10

static void ref_philox(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int r = 0; r < PHILOX_ROUNDS; r++) {
    if (r > 0) {
      k0 += PHILOX_W0;
      k1 += PHILOX_W1;
    }
    uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n1 = (uint32_t)p1;
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1, n3 = (uint32_t)p0;
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

static void test_reference_matches_kat(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof g_kats / sizeof g_kats[0]; i++) {
    uint32_t out[4];
    ref_philox(g_kats[i].ctr, g_kats[i].key, out);
    assert_memory_equal(out, g_kats[i].out, sizeof out);
  }
}

static void test_philox_kat(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof g_kats / sizeof g_kats[0]; i++) {
    uint32_t out[4] = {0};
    nd_philox4x32(g_kats[i].ctr, g_kats[i].key, out);
    if (memcmp(out, g_kats[i].out, sizeof out) != 0)
      printf("KAT %zu: got %08x %08x %08x %08x, want %08x %08x %08x %08x\n", i, out[0],
             out[1], out[2], out[3], g_kats[i].out[0], g_kats[i].out[1], g_kats[i].out[2],
             g_kats[i].out[3]);
    assert_memory_equal(out, g_kats[i].out, sizeof out);
  }
}

static void test_philox_vs_reference(void **state) {
  (void)state;
  uint64_t s = g_seed;
  for (int i = 0; i < 10000; i++) {
    uint32_t ctr[4], key[2], a[4], b[4];
    for (int j = 0; j < 4; j++) ctr[j] = (uint32_t)splitmix64(&s);
    for (int j = 0; j < 2; j++) key[j] = (uint32_t)splitmix64(&s);
    nd_philox4x32(ctr, key, a);
    ref_philox(ctr, key, b);
    assert_memory_equal(a, b, sizeof a);
  }
}

/* ------------------------------------------------------- stream layout */

static void block_of(nd_hash128 k, uint64_t i, uint32_t out[4]) {
  const uint32_t ctr[4] = {(uint32_t)i, (uint32_t)(i >> 32), (uint32_t)k.hi,
                           (uint32_t)(k.hi >> 32)};
  const uint32_t key[2] = {(uint32_t)k.lo, (uint32_t)(k.lo >> 32)};
  ref_philox(ctr, key, out);
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

/* The 4 words of block i, as a sorted multiset (the order in which
 * nd_rng_u32 hands out a block's words is not part of the contract). */
static void sorted_block(nd_hash128 k, uint64_t i, uint32_t out[4]) {
  block_of(k, i, out);
  qsort(out, 4, sizeof out[0], cmp_u32);
}

static void test_stream_layout(void **state) {
  (void)state;
  const nd_hash128 keys[] = {{0, 0},
                             {0x0123456789abcdefull, 0xfedcba9876543210ull},
                             {UINT64_MAX, UINT64_MAX}};
  for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
    nd_rng r;
    nd_rng_init(&r, keys[k]);
    for (uint64_t b = 0; b < 64; b++) {
      uint32_t got[4], want[4];
      for (int j = 0; j < 4; j++) got[j] = nd_rng_u32(&r);
      qsort(got, 4, sizeof got[0], cmp_u32);
      sorted_block(keys[k], b, want);
      assert_memory_equal(got, want, sizeof got);
    }
    /* Plain data: jumping to a block by setting the documented fields. */
    nd_rng j = r;
    j.block = (uint64_t)1 << 33; /* exercises the counter's high word */
    j.avail = 0;
    uint32_t got[4], want[4];
    for (int w = 0; w < 4; w++) got[w] = nd_rng_u32(&j);
    qsort(got, 4, sizeof got[0], cmp_u32);
    sorted_block(keys[k], (uint64_t)1 << 33, want);
    assert_memory_equal(got, want, sizeof got);
  }
}

/* ---------------------------------------------------- same / different */

#define STREAM_LEN 1000

static void draw(nd_hash128 k, uint64_t *out, size_t n) {
  nd_rng r;
  nd_rng_init(&r, k);
  for (size_t i = 0; i < n; i++) out[i] = nd_rng_u64(&r);
}

static void test_same_key_same_stream(void **state) {
  (void)state;
  uint64_t s = g_seed;
  for (int t = 0; t < 20; t++) {
    nd_hash128 k = {splitmix64(&s), splitmix64(&s)};
    uint64_t a[STREAM_LEN], b[STREAM_LEN];
    draw(k, a, STREAM_LEN);
    draw(k, b, STREAM_LEN);
    assert_memory_equal(a, b, sizeof a);
    /* A copy taken mid-stream (mid-block too) continues identically. */
    nd_rng r1, r2;
    nd_rng_init(&r1, k);
    for (int i = 0; i < 7; i++) (void)nd_rng_u32(&r1);
    r2 = r1;
    for (int i = 0; i < 100; i++) assert_int_equal(nd_rng_u32(&r1), nd_rng_u32(&r2));
  }
}

static size_t positional_matches(const uint64_t *a, const uint64_t *b, size_t n) {
  size_t m = 0;
  for (size_t i = 0; i < n; i++) m += a[i] == b[i];
  return m;
}

static void test_different_keys_differ(void **state) {
  (void)state;
  uint64_t s = g_seed;
  for (int t = 0; t < 20; t++) {
    nd_hash128 k = {splitmix64(&s), splitmix64(&s)};
    /* One-bit changes in each half of the key, and a swapped key. */
    nd_hash128 variants[] = {{k.lo ^ 1, k.hi},
                             {k.lo, k.hi ^ (1ull << 63)},
                             {k.lo ^ (1ull << 40), k.hi},
                             {k.hi, k.lo}};
    uint64_t a[STREAM_LEN], b[STREAM_LEN];
    draw(k, a, STREAM_LEN);
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
      draw(variants[v], b, STREAM_LEN);
      assert_true(a[0] != b[0] || a[1] != b[1]); /* no common prefix */
      assert_true(positional_matches(a, b, STREAM_LEN) <= 1);
    }
  }
}

static int cmp_hash(const void *a, const void *b) {
  return nd_hash128_cmp(*(const nd_hash128 *)a, *(const nd_hash128 *)b);
}

#define N_SUBKEYS 10000

static void test_subkeys(void **state) {
  (void)state;
  const nd_hash128 k = {0x1111222233334444ull, 0x5555666677778888ull};
  const nd_hash128 k2 = {0x1111222233334445ull, 0x5555666677778888ull};
  nd_hash128 *sk = malloc((2 * N_SUBKEYS + 1) * sizeof *sk);
  assert_non_null(sk);
  for (uint64_t i = 0; i < N_SUBKEYS; i++) {
    sk[i] = nd_rng_subkey(k, i);
    assert_true(nd_hash128_eq(sk[i], nd_rng_subkey(k, i))); /* a pure function */
    sk[N_SUBKEYS + i] = nd_rng_subkey(k2, i);
  }
  sk[2 * N_SUBKEYS] = k;
  qsort(sk, 2 * N_SUBKEYS + 1, sizeof *sk, cmp_hash);
  for (size_t i = 1; i < 2 * N_SUBKEYS + 1; i++) assert_false(nd_hash128_eq(sk[i - 1], sk[i]));
  /* Sub-streams differ from each other and from the parent stream. */
  uint64_t a[STREAM_LEN], b[STREAM_LEN], c[STREAM_LEN];
  draw(k, a, STREAM_LEN);
  draw(nd_rng_subkey(k, 0), b, STREAM_LEN);
  draw(nd_rng_subkey(k, 1), c, STREAM_LEN);
  assert_true(positional_matches(a, b, STREAM_LEN) <= 1);
  assert_true(positional_matches(b, c, STREAM_LEN) <= 1);
  free(sk);
}

/* --------------------------------------------------------- distributions */

#define N_STAT 1000000

static void test_uniform(void **state) {
  (void)state;
  nd_rng r;
  nd_rng_init(&r, (nd_hash128){42, 4242});
  double sum = 0, sum2 = 0, lo = 1, hi = 0;
  const double two53 = 9007199254740992.0;
  for (int i = 0; i < N_STAT; i++) {
    double u = nd_rng_uniform(&r);
    assert_true(u >= 0.0 && u < 1.0);
    assert_true(u * two53 == floor(u * two53)); /* a multiple of 2^-53 */
    sum += u;
    sum2 += u * u;
    lo = u < lo ? u : lo;
    hi = u > hi ? u : hi;
  }
  double mean = sum / N_STAT, var = sum2 / N_STAT - mean * mean;
  printf("  uniform: mean %.6f var %.6f min %.3g max %.9f\n", mean, var, lo, hi);
  /* sd of the mean is 0.289/1000; these bounds are > 6 sd. */
  assert_true(fabs(mean - 0.5) < 0.002);
  assert_true(fabs(var - 1.0 / 12.0) < 0.001);
  assert_true(lo < 1e-4 && hi > 1 - 1e-4);
}

static void test_below(void **state) {
  (void)state;
  nd_rng r;
  nd_rng_init(&r, (nd_hash128){7, 77});
  assert_int_equal(nd_rng_below(&r, 0), 0);
  for (int i = 0; i < 1000; i++) assert_int_equal(nd_rng_below(&r, 1), 0);

  /* Small n: each of 7 buckets ~ N/7 (sd ~ 350; bound is 6 sd). */
  enum { NB = 7 };
  size_t hist[NB] = {0};
  for (int i = 0; i < N_STAT; i++) {
    uint64_t v = nd_rng_below(&r, NB);
    assert_true(v < NB);
    hist[v]++;
  }
  for (int b = 0; b < NB; b++) {
    double dev = fabs((double)hist[b] - (double)N_STAT / NB);
    assert_true(dev < 2100.0);
  }

  /* n = 3 * 2^62: an unbiased draw is >= 2^63 with probability 1/3; the
   * naive u64 % n gives 1/4. 200k draws: sd of the fraction ~0.001. */
  const uint64_t n = 3ull << 62;
  size_t upper = 0;
  const int draws = 200000;
  for (int i = 0; i < draws; i++) {
    uint64_t v = nd_rng_below(&r, n);
    assert_true(v < n);
    upper += v >= (1ull << 63);
  }
  double frac = (double)upper / draws;
  printf("  below(3*2^62): fraction >= 2^63 = %.4f (unbiased 0.3333, modulo 0.25)\n", frac);
  assert_true(fabs(frac - 1.0 / 3.0) < 0.01);

  for (int i = 0; i < 10000; i++) {
    assert_true(nd_rng_below(&r, UINT64_MAX) < UINT64_MAX);
    assert_true(nd_rng_below(&r, (1ull << 63) + 1) < (1ull << 63) + 1);
    assert_true(nd_rng_below(&r, 2) < 2);
  }
}

static void test_normal(void **state) {
  (void)state;
  nd_rng r;
  nd_rng_init(&r, (nd_hash128){0xabcdef, 0x123456});
  double sum = 0, sum2 = 0, sum4 = 0;
  size_t within1 = 0;
  for (int i = 0; i < N_STAT; i++) {
    double x = nd_rng_normal(&r);
    assert_true(isfinite(x));
    sum += x;
    sum2 += x * x;
    sum4 += x * x * x * x;
    within1 += fabs(x) < 1.0;
  }
  double mean = sum / N_STAT, var = sum2 / N_STAT - mean * mean;
  double kurt = sum4 / N_STAT / (var * var);
  double f1 = (double)within1 / N_STAT;
  printf("  normal: mean %.5f var %.5f kurtosis %.4f P(|x|<1) %.5f\n", mean, var, kurt, f1);
  assert_true(fabs(mean) < 0.006);         /* sd 0.001 */
  assert_true(fabs(var - 1.0) < 0.01);     /* sd 0.0014 */
  assert_true(fabs(kurt - 3.0) < 0.05);    /* sd ~0.005 */
  assert_true(fabs(f1 - 0.682689) < 0.003); /* sd 0.0005 */
}

/* --------------------------------------------------------------- threads */

#define N_THREADS 4
#define N_STREAMS 16
#define DRAWS_PER_STREAM 20000
#define N_BLOCKS 4096

typedef struct thread_job {
  nd_hash128 key;
  int t;
  uint64_t (*streams)[DRAWS_PER_STREAM];
  uint32_t (*blocks)[4];
} thread_job;

static void *thread_main(void *arg) {
  thread_job *j = arg;
  /* Each thread draws whole sub-streams: streams t, t+T, ... */
  for (int s = j->t; s < N_STREAMS; s += N_THREADS) {
    nd_rng r;
    nd_rng_init(&r, nd_rng_subkey(j->key, (uint64_t)s));
    for (int i = 0; i < DRAWS_PER_STREAM; i++) j->streams[s][i] = nd_rng_u64(&r);
  }
  /* And blocks t, t+T, ... of the parent stream, by jumping. */
  nd_rng r;
  nd_rng_init(&r, j->key);
  for (int b = j->t; b < N_BLOCKS; b += N_THREADS) {
    r.block = (uint64_t)b;
    r.avail = 0;
    for (int w = 0; w < 4; w++) j->blocks[b][w] = nd_rng_u32(&r);
  }
  return NULL;
}

static void test_threads_match_serial(void **state) {
  (void)state;
  const nd_hash128 key = {g_seed, ~g_seed};
  uint64_t(*par)[DRAWS_PER_STREAM] = calloc(N_STREAMS, sizeof *par);
  uint64_t(*ser)[DRAWS_PER_STREAM] = calloc(N_STREAMS, sizeof *ser);
  uint32_t(*pblocks)[4] = calloc(N_BLOCKS, sizeof *pblocks);
  assert_non_null(par);
  assert_non_null(ser);
  assert_non_null(pblocks);
  pthread_t th[N_THREADS];
  thread_job jobs[N_THREADS];
  for (int t = 0; t < N_THREADS; t++) {
    jobs[t] = (thread_job){key, t, par, pblocks};
    assert_int_equal(pthread_create(&th[t], NULL, thread_main, &jobs[t]), 0);
  }
  for (int t = 0; t < N_THREADS; t++) assert_int_equal(pthread_join(th[t], NULL), 0);

  for (int s = 0; s < N_STREAMS; s++) {
    nd_rng r;
    nd_rng_init(&r, nd_rng_subkey(key, (uint64_t)s));
    for (int i = 0; i < DRAWS_PER_STREAM; i++) ser[s][i] = nd_rng_u64(&r);
  }
  assert_memory_equal(par, ser, N_STREAMS * sizeof *par);
  /* The serial parent stream, word by word, equals the jumped blocks. */
  nd_rng r;
  nd_rng_init(&r, key);
  for (int b = 0; b < N_BLOCKS; b++)
    for (int w = 0; w < 4; w++) assert_int_equal(nd_rng_u32(&r), pblocks[b][w]);
  free(par);
  free(ser);
  free(pblocks);
}

int main(void) {
  g_seed = nd_test_seed("test_runtime_rng", 0x5eed0006u);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reference_matches_kat),
      cmocka_unit_test(test_philox_kat),
      cmocka_unit_test(test_philox_vs_reference),
      cmocka_unit_test(test_stream_layout),
      cmocka_unit_test(test_same_key_same_stream),
      cmocka_unit_test(test_different_keys_differ),
      cmocka_unit_test(test_subkeys),
      cmocka_unit_test(test_uniform),
      cmocka_unit_test(test_below),
      cmocka_unit_test(test_normal),
      cmocka_unit_test(test_threads_match_serial),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
