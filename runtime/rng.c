/* Counter-based random streams: Philox4x32-10 (Salmon, Moraes, Dror and
 * Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011).
 *
 * Block i of a stream is Philox applied to the counter (i, key.hi) under the
 * key key.lo, so any block can be computed directly from (key, i): values
 * never depend on which thread draws them or in which order streams are
 * used. Sub-streams get their own keys by hashing (key, index) with XXH3-128,
 * as nodes derive theirs from their content keys.
 */
#include <math.h>
#include <string.h>

#include "nidag/runtime.h"

/* The Philox4x32 multipliers and Weyl key increments (from the paper). */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define PHILOX_ROUNDS 10
#define TWO_PI 6.283185307179586476925286766559

static inline void philox_round(uint32_t c[4], const uint32_t k[2]) {
  uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
  uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
  uint32_t out[4] = {(uint32_t)(p1 >> 32) ^ c[1] ^ k[0], (uint32_t)p1,
                     (uint32_t)(p0 >> 32) ^ c[3] ^ k[1], (uint32_t)p0};
  memcpy(c, out, sizeof out);
}

void nd_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
  uint32_t k[2] = {key[0], key[1]};
  for (int r = 0; r < PHILOX_ROUNDS; r++) {
    if (r > 0) {
      k[0] += PHILOX_W0;
      k[1] += PHILOX_W1;
    }
    philox_round(c, k);
  }
  memcpy(out, c, sizeof c);
}

void nd_rng_init(nd_rng *r, nd_hash128 key) {
  memset(r, 0, sizeof *r);
  r->key = key;
}

nd_hash128 nd_rng_subkey(nd_hash128 key, uint64_t index) {
  unsigned char buf[24];
  for (int i = 0; i < 8; i++) {
    buf[i] = (unsigned char)(key.lo >> (8 * i));
    buf[8 + i] = (unsigned char)(key.hi >> (8 * i));
    buf[16 + i] = (unsigned char)(index >> (8 * i));
  }
  return nd_hash128_bytes(buf, sizeof buf);
}

static void refill(nd_rng *r) {
  uint32_t ctr[4] = {(uint32_t)r->block, (uint32_t)(r->block >> 32), (uint32_t)r->key.hi,
                     (uint32_t)(r->key.hi >> 32)};
  uint32_t key[2] = {(uint32_t)r->key.lo, (uint32_t)(r->key.lo >> 32)};
  nd_philox4x32(ctr, key, r->buf);
  r->block++;
  r->avail = 4;
}

uint32_t nd_rng_u32(nd_rng *r) {
  if (r->avail == 0) refill(r);
  return r->buf[4 - r->avail--];
}

uint64_t nd_rng_u64(nd_rng *r) {
  uint64_t lo = nd_rng_u32(r);
  return lo | (uint64_t)nd_rng_u32(r) << 32;
}

double nd_rng_uniform(nd_rng *r) { return (double)(nd_rng_u64(r) >> 11) * 0x1.0p-53; }

uint64_t nd_rng_below(nd_rng *r, uint64_t n) {
  if (n == 0) return 0;
  /* Reject the top partial copy of [0, n) so every residue is equally likely. */
  uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t v;
  do v = nd_rng_u64(r);
  while (v >= limit);
  return v % n;
}

double nd_rng_normal(nd_rng *r) {
  /* Box-Muller with u1 in (0, 1]; the second variate is discarded so that
   * the stream position after k draws does not depend on earlier calls. */
  double u1 = 1.0 - nd_rng_uniform(r);
  double u2 = nd_rng_uniform(r);
  return sqrt(-2.0 * log(u1)) * cos(TWO_PI * u2);
}
