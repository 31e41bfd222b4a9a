/* Label atlases: validation and the sorted unique labels.
 *
 * One pass validates every value (a non-negative integer; floats finite and
 * at most 2^53) and finds the largest label. Labels up to a bound
 * proportional to the voxel count (at least 2^20) are then collected with a
 * bitmap in a second pass (linear time, 128 KiB for labels below 2^20);
 * larger, sparse label values are gathered and sorted. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "neuro/parc_int.h"

#define ND__LABEL_FLOAT_MAX 9007199254740992.0 /* 2^53 */
#define ND__BITMAP_MIN_BITS ((uint64_t)1 << 20)

/* The array coordinates of flat index i, "[a, b, c]". */
static void nd__format_index(const nd_array *a, size_t i, char *buf, size_t cap) {
  int nd = nd_array_ndim(a);
  const size_t *s = nd_array_shape(a);
  size_t idx[ND_MAX_DIMS];
  for (int d = nd - 1; d >= 0; d--) {
    idx[d] = s[d] ? i % s[d] : 0;
    i = s[d] ? i / s[d] : 0;
  }
  size_t len = 0;
  len += (size_t)snprintf(buf + len, cap - len, "[");
  for (int d = 0; d < nd && len < cap; d++)
    len += (size_t)snprintf(buf + len, cap - len, d ? ", %zu" : "%zu", idx[d]);
  if (len < cap) snprintf(buf + len, cap - len, "]");
}

static int nd__bad_value(const nd_array *a, const char *what, size_t i, double v) {
  char where[128];
  nd__format_index(a, i, where, sizeof where);
  return nd__nerr(ND_EINVAL,
                  "%s: voxel %zu %s has value %.17g: labels must be non-negative integers%s",
                  what, i, where, v,
                  nd_array_dtype(a) == ND_F32 || nd_array_dtype(a) == ND_F64
                      ? " (finite, at most 2^53)"
                      : " (fitting int64)");
}

static int nd__cmp_i64(const void *pa, const void *pb) {
  int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
  return (a > b) - (a < b);
}

/* Validate and find the maximum. *bad gets the first offending index. */
static bool nd__validate_max(const void *data, nd_dtype dt, size_t n, uint64_t *maxp,
                             size_t *bad) {
  uint64_t mx = 0;
#define ND__SCAN_SIGNED(T)                                          \
  {                                                                 \
    const T *p = data;                                              \
    for (size_t i = 0; i < n; i++) {                                \
      if (p[i] < 0) {                                               \
        *bad = i;                                                   \
        return false;                                               \
      }                                                             \
      if ((uint64_t)p[i] > mx) mx = (uint64_t)p[i];                 \
    }                                                               \
  }                                                                 \
  break;
#define ND__SCAN_UNSIGNED(T)                                        \
  {                                                                 \
    const T *p = data;                                              \
    for (size_t i = 0; i < n; i++)                                  \
      if ((uint64_t)p[i] > mx) mx = (uint64_t)p[i];                 \
  }                                                                 \
  break;
#define ND__SCAN_FLOAT(T)                                           \
  {                                                                 \
    const T *p = data;                                              \
    for (size_t i = 0; i < n; i++) {                                \
      double v = (double)p[i]; /* a cast, not floor(): no libm call */\
      if (!(v >= 0 && v <= ND__LABEL_FLOAT_MAX) ||                  \
          (double)(uint64_t)v != v) {                               \
        *bad = i;                                                   \
        return false;                                               \
      }                                                             \
      if ((uint64_t)v > mx) mx = (uint64_t)v;                       \
    }                                                               \
  }                                                                 \
  break;
  switch (dt) {
    case ND_U8: ND__SCAN_UNSIGNED(uint8_t)
    case ND_U16: ND__SCAN_UNSIGNED(uint16_t)
    case ND_U32: ND__SCAN_UNSIGNED(uint32_t)
    case ND_U64: {
      const uint64_t *p = data;
      for (size_t i = 0; i < n; i++) {
        if (p[i] > (uint64_t)INT64_MAX) {
          *bad = i;
          return false;
        }
        if (p[i] > mx) mx = p[i];
      }
      break;
    }
    case ND_I8: ND__SCAN_SIGNED(int8_t)
    case ND_I16: ND__SCAN_SIGNED(int16_t)
    case ND_I32: ND__SCAN_SIGNED(int32_t)
    case ND_I64: ND__SCAN_SIGNED(int64_t)
    case ND_F32: ND__SCAN_FLOAT(float)
    case ND_F64: ND__SCAN_FLOAT(double)
  }
#undef ND__SCAN_SIGNED
#undef ND__SCAN_UNSIGNED
#undef ND__SCAN_FLOAT
  *maxp = mx;
  return true;
}

int nd__atlas_scan(const nd_array *atlas, const char *what, int64_t **labels, size_t *nlabels) {
  if (labels) *labels = NULL;
  *nlabels = 0;
  if (!atlas) return nd__nerr(ND_EINVAL, "%s: NULL array", what);
  const void *data = nd_array_data(atlas);
  nd_dtype dt = nd_array_dtype(atlas);
  size_t n = nd_array_count(atlas);
  if (nd_array_ndim(atlas) == 0) n = 0; /* a scalar is not an atlas */
  uint64_t mx = 0;
  size_t bad = 0;
  if (!nd__validate_max(data, dt, n, &mx, &bad))
    return nd__bad_value(atlas, what, bad, nd__elem_f64(data, dt, bad));
  if (mx == 0 || !labels) return 0;

  uint64_t bitmap_bits = n / 8 * 64; /* bitmap no larger than the atlas in bytes */
  if (bitmap_bits < ND__BITMAP_MIN_BITS) bitmap_bits = ND__BITMAP_MIN_BITS;
  int64_t *out = NULL;
  size_t cnt = 0;
  if (mx < bitmap_bits) {
    size_t words = (size_t)(mx / 64 + 1);
    uint64_t *bits = nd_calloc(words, sizeof *bits);
    if (!bits) return nd__nerr(ND_ENOMEM, "%s: out of memory for the label bitmap", what);
    for (size_t i = 0; i < n; i++) {
      uint64_t l = (uint64_t)nd__elem_label(data, dt, i);
      bits[l >> 6] |= (uint64_t)1 << (l & 63);
    }
    bits[0] &= ~(uint64_t)1; /* background */
    for (size_t w = 0; w < words; w++) cnt += (size_t)__builtin_popcountll(bits[w]);
    out = nd_malloc(cnt * sizeof *out);
    if (!out) {
      nd_free(bits);
      return nd__nerr(ND_ENOMEM, "%s: out of memory for %zu labels", what, cnt);
    }
    size_t k = 0;
    for (size_t w = 0; w < words; w++)
      for (uint64_t b = bits[w]; b; b &= b - 1)
        out[k++] = (int64_t)(w * 64 + (size_t)__builtin_ctzll(b));
    nd_free(bits);
  } else {
    size_t nz = 0;
    for (size_t i = 0; i < n; i++) nz += nd__elem_label(data, dt, i) != 0;
    out = nd_malloc(nz * sizeof *out);
    if (!out) return nd__nerr(ND_ENOMEM, "%s: out of memory for %zu labelled voxels", what, nz);
    for (size_t i = 0; i < n; i++) {
      int64_t l = nd__elem_label(data, dt, i);
      if (l) out[cnt++] = l;
    }
    qsort(out, cnt, sizeof *out, nd__cmp_i64);
    size_t k = 0;
    for (size_t i = 0; i < cnt; i++)
      if (k == 0 || out[i] != out[k - 1]) out[k++] = out[i];
    cnt = k;
  }
  *labels = out;
  *nlabels = cnt;
  return 0;
}

int nd_atlas_labels(const nd_array *atlas, nd_array **labels) {
  nd__nerr_clear();
  if (!labels) return nd__nerr(ND_EINVAL, "nd_atlas_labels: NULL output");
  *labels = NULL;
  if (!atlas) return nd__nerr(ND_EINVAL, "nd_atlas_labels: NULL atlas");
  int64_t *l = NULL;
  size_t n = 0;
  int rc = nd__atlas_scan(atlas, "atlas", &l, &n);
  if (rc) return rc;
  if (n == 0) {
    nd_free(l);
    return nd__nerr(ND_ENOTFOUND, "atlas: no labels (every voxel is 0)");
  }
  size_t shape[1] = {n};
  rc = nd_array_from(labels, ND_I64, 1, shape, l, n * sizeof *l);
  nd_free(l);
  if (rc) return nd__nerr(rc, "atlas: cannot allocate the labels array (%zu labels)", n);
  return 0;
}
