/* Helpers shared by the test suites: the seeded generator every randomised
 * test uses, and the NIDAG_TEST_SEED convention (print the seed; the
 * environment overrides the suite's fixed default). */
#ifndef NIDAG_TESTUTIL_H
#define NIDAG_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "nidag/runtime.h"

/* SplitMix64: a small, well-mixed generator for test data. */
static inline uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* The suite's seed: $NIDAG_TEST_SEED if set, else `fallback`. Printed so a
 * failing run can be replayed. */
static inline uint64_t nd_test_seed(const char *suite, uint64_t fallback) {
  const char *env = getenv("NIDAG_TEST_SEED");
  uint64_t seed = env ? strtoull(env, NULL, 0) : fallback;
  printf("%s: seed %llu (set NIDAG_TEST_SEED to override)\n", suite,
         (unsigned long long)seed);
  return seed;
}

/* Open one pool per entry of threads[]; 0 on success, -1 (pools opened so
 * far are closed) on failure. */
static inline int nd_test_open_pools(nd_pool **pools, const unsigned *threads, size_t n) {
  for (size_t i = 0; i < n; i++) {
    nd_runtime_opts o = {0};
    o.threads = threads[i];
    if (nd_pool_open(&pools[i], &o) != 0) {
      while (i > 0) nd_pool_close(pools[--i]);
      return -1;
    }
  }
  return 0;
}

static inline void nd_test_close_pools(nd_pool **pools, size_t n) {
  for (size_t i = 0; i < n; i++) nd_pool_close(pools[i]);
}

#endif /* NIDAG_TESTUTIL_H */
