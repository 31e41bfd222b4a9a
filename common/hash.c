/* XXH3 hashing helpers over the system xxHash: one-shot 128/64-bit digests,
 * hex formatting and parsing, and nd_hasher, a streaming XXH3-128 that feeds
 * integers little-endian and byte strings length-prefixed so a sequence of
 * fields hashes unambiguously. */
#include <stdalign.h>
#include <stdint.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY /* for sizeof(XXH3_state_t) */
#include <xxhash.h>

#include "common/core_int.h"

#define ND__HEX_DIGITS_PER_U64 16
#define ND__BITS_PER_HEX_DIGIT 4
#define ND__HEX_DIGIT_MASK 0xFu
#define ND__BITS_PER_BYTE 8
#define ND__BYTE_MASK 0xFFu
#define ND__HEX_ALPHA_BASE 10 /* value of hex digit 'a' */

/* XXH3_state_t must be 64-byte aligned, and nd_malloc promises only the
 * usual malloc alignment, so the state is carved out of a larger block. */
#define ND__XXH3_ALIGN alignof(XXH3_state_t)

struct nd_hasher {
  XXH3_state_t *state; /* aligned, inside `block` */
  void *block;         /* what nd_malloc returned */
};

nd_hash128 nd_hash128_bytes(const void *data, size_t len) {
  XXH128_hash_t h = XXH3_128bits(data, len);
  return (nd_hash128){.lo = h.low64, .hi = h.high64};
}

nd_hash128 nd_hash128_seeded(const void *data, size_t len, uint64_t seed) {
  XXH128_hash_t h = XXH3_128bits_withSeed(data, len, seed);
  return (nd_hash128){.lo = h.low64, .hi = h.high64};
}

uint64_t nd_hash64_bytes(const void *data, size_t len) {
  return XXH3_64bits(data, len);
}

bool nd_hash128_eq(nd_hash128 a, nd_hash128 b) {
  return a.lo == b.lo && a.hi == b.hi;
}

int nd_hash128_cmp(nd_hash128 a, nd_hash128 b) {
  if (a.hi != b.hi)
    return a.hi < b.hi ? -1 : 1;
  if (a.lo != b.lo)
    return a.lo < b.lo ? -1 : 1;
  return 0;
}

static void nd__hex_u64(uint64_t v, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (int i = ND__HEX_DIGITS_PER_U64 - 1; i >= 0; i--) {
    out[i] = digits[v & ND__HEX_DIGIT_MASK];
    v >>= ND__BITS_PER_HEX_DIGIT;
  }
}

void nd_hash128_hex(nd_hash128 h, char out[ND_HASH128_HEX_LEN + 1]) {
  nd__hex_u64(h.hi, out);
  nd__hex_u64(h.lo, out + ND__HEX_DIGITS_PER_U64);
  out[ND_HASH128_HEX_LEN] = '\0';
}

/* Value of one hex digit, or -1. Not locale-dependent. */
static int nd__hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + ND__HEX_ALPHA_BASE;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + ND__HEX_ALPHA_BASE;
  return -1;
}

static int nd__parse_u64(const char *hex, uint64_t *out) {
  uint64_t v = 0;
  for (int i = 0; i < ND__HEX_DIGITS_PER_U64; i++) {
    int d = nd__hex_value(hex[i]);
    if (d < 0)
      return ND_EFORMAT; /* also stops at a NUL before 16 digits */
    v = (v << ND__BITS_PER_HEX_DIGIT) | (uint64_t)d;
  }
  *out = v;
  return ND_OK;
}

int nd_hash128_parse(const char *hex, nd_hash128 *out) {
  nd_hash128 h;
  if (hex == NULL || out == NULL)
    return ND_EINVAL;
  if (nd__parse_u64(hex, &h.hi) != ND_OK ||
      nd__parse_u64(hex + ND__HEX_DIGITS_PER_U64, &h.lo) != ND_OK ||
      hex[ND_HASH128_HEX_LEN] != '\0')
    return ND_EFORMAT;
  *out = h;
  return ND_OK;
}

/* ---------------------------------------------------------- streaming */

int nd_hasher_new(nd_hasher **out) {
  if (out == NULL)
    return ND_EINVAL;
  *out = NULL;
  nd_hasher *h = nd_malloc(sizeof *h);
  if (h == NULL)
    return ND_ENOMEM;
  h->block = nd_malloc(sizeof(XXH3_state_t) + ND__XXH3_ALIGN - 1);
  if (h->block == NULL) {
    nd_free(h);
    return ND_ENOMEM;
  }
  uintptr_t p = (uintptr_t)h->block;
  p = (p + ND__XXH3_ALIGN - 1) & ~(uintptr_t)(ND__XXH3_ALIGN - 1);
  h->state = (XXH3_state_t *)p;
  memset(h->state, 0, sizeof *h->state);
  XXH3_128bits_reset(h->state);
  *out = h;
  return ND_OK;
}

void nd_hasher_free(nd_hasher *h) {
  if (h == NULL)
    return;
  nd_free(h->block);
  nd_free(h);
}

void nd_hasher_reset(nd_hasher *h) { XXH3_128bits_reset(h->state); }

void nd_hasher_update(nd_hasher *h, const void *data, size_t len) {
  if (len > 0)
    XXH3_128bits_update(h->state, data, len);
}

void nd_hasher_u64(nd_hasher *h, uint64_t v) {
  unsigned char le[sizeof v];
  for (size_t i = 0; i < sizeof v; i++)
    le[i] = (unsigned char)((v >> (ND__BITS_PER_BYTE * i)) & ND__BYTE_MASK);
  nd_hasher_update(h, le, sizeof le);
}

void nd_hasher_lp(nd_hasher *h, const void *data, size_t len) {
  nd_hasher_u64(h, (uint64_t)len);
  nd_hasher_update(h, data, len);
}

void nd_hasher_str(nd_hasher *h, const char *s) {
  if (s == NULL)
    s = "";
  nd_hasher_lp(h, s, strlen(s));
}

nd_hash128 nd_hasher_digest(const nd_hasher *h) {
  XXH128_hash_t d = XXH3_128bits_digest(h->state);
  return (nd_hash128){.lo = d.low64, .hi = d.high64};
}
