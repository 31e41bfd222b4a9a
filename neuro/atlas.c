/* Label atlases: validation, runs of labels and the sorted unique labels.
 *
 * One pass over the atlas validates every value (a non-negative integer;
 * floats finite and at most 2^53) and cuts it into runs of consecutive
 * voxels with the same label, the background dropped. The pass is
 * specialised per dtype, finds the run starts a chunk at a time without
 * data-dependent branches and checks only the first value of a run (see
 * ND__DEFINE_SCAN). Everything else (labels, parcellation columns, voxel
 * lists) works from the runs, far fewer than the voxels in a real atlas
 * (about 36,000 for AICHA's 902,629 voxels on its 2 mm grid).
 *
 * The unique labels come from the runs' labels: with a bitmap when the
 * largest label is below a bound proportional to the voxel count (at least
 * 2^20; linear time, 128 KiB for labels below 2^20), else by sorting them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "neuro/parc_int.h"

#define ND__LABEL_FLOAT_MAX 9007199254740992.0 /* 2^53 */
#define ND__BITMAP_MIN_BITS ((uint64_t)1 << 20)
#define ND__RUNS_MIN_CAP 1024
#define ND__SCAN_CHUNK 64                /* voxels whose run starts are found at once */
#define ND__RUN_SPLIT ((size_t)1 << 31) /* no run crosses a multiple: lengths fit uint32 */
#define ND__GATHER_BYTES 0x0102040810204080ULL /* sum of 2^(56 - 7k), k = 0..7 */

/* ------------------------------------------------------------- the runs */

void nd__runs_free(nd__runs *r) {
  nd_free(r->at);
  nd_free(r->len);
  nd_free(r->val);
  *r = (nd__runs){0};
}

/* Double the capacity of the three arrays. */
static int nd__runs_grow(nd__runs *r) {
  size_t cap = r->cap ? r->cap : ND__RUNS_MIN_CAP / 2;
  if (cap > SIZE_MAX / 2 / sizeof *r->at) return ND_ENOMEM;
  cap *= 2;
  size_t *at = nd_realloc(r->at, cap * sizeof *at);
  if (!at) return ND_ENOMEM;
  r->at = at;
  uint32_t *len = nd_realloc(r->len, cap * sizeof *len);
  if (!len) return ND_ENOMEM;
  r->len = len;
  int64_t *val = nd_realloc(r->val, cap * sizeof *val);
  if (!val) return ND_ENOMEM;
  r->val = val;
  r->cap = cap; /* only once all three have it */
  return 0;
}

int nd__runs_push_slow(nd__runs *r, size_t at, size_t len, int64_t val) {
  while (len > 0) {
    size_t piece = len < UINT32_MAX ? len : UINT32_MAX;
    if (r->n == r->cap && nd__runs_grow(r)) return ND_ENOMEM;
    r->at[r->n] = at;
    r->len[r->n] = (uint32_t)piece;
    r->val[r->n++] = val;
    at += piece;
    len -= piece;
  }
  return 0;
}

/* ------------------------------------------------------------- the scan */

/* Make room for a chunk's runs (and the scratch slot, see below). */
static int nd__runs_reserve(nd__runs *r) {
  while (r->cap - r->n < ND__SCAN_CHUNK + 1)
    if (nd__runs_grow(r)) return ND_ENOMEM;
  return 0;
}

/* The 64 flags f[0..64) (0 or 1 each) as the bits of a word, f[0] the
 * lowest. Eight flags at a time: read as the bytes of a word (written out,
 * the compilers make it one load on little-endian machines), then gathered
 * into its top byte by one multiplication (flag k, at bit 8k, moves to bit
 * 56 + k; the other partial products fall outside that byte without carries
 * into it). */
static inline uint64_t nd__flags64(const uint8_t *f) {
  uint64_t bits = 0;
  for (int b = 0; b < 8; b++, f += 8) {
    uint64_t w = (uint64_t)f[0] | (uint64_t)f[1] << 8 | (uint64_t)f[2] << 16 |
                 (uint64_t)f[3] << 24 | (uint64_t)f[4] << 32 | (uint64_t)f[5] << 40 |
                 (uint64_t)f[6] << 48 | (uint64_t)f[7] << 56;
    bits |= (w * ND__GATHER_BYTES >> 56) << (8 * b);
  }
  return bits;
}

/* nd__scan_NAME(p, n, runs, max, bad): the runs of p[0..n) (element type T),
 * OK(v) saying whether v is a valid label.
 *
 * How it works. A chunk of voxels at a time, a first loop (vectorised by the
 * compiler) flags the voxels whose value differs from the previous one: the
 * run starts (also forced at every multiple of ND__RUN_SPLIT, so that no run
 * is longer). A second loop visits only the flagged voxels, by counting the
 * trailing zeros of the flags, and without a branch that depends on the
 * data: each start closes the open run (its length) and writes its own entry
 * at runs->n, which counts only when the label is non-zero; a background
 * run's entry stays a scratch slot that the next start overwrites. Only a
 * run's first value is checked: the others compare equal to it (for floats
 * -0.0 == 0.0, and a NaN never compares equal, so it starts a run), hence
 * the first invalid value is a run start and *bad is the first offending
 * index. */
#define ND__DEFINE_SCAN(NAME, T, OK)                                                   \
  static int nd__scan_##NAME(const T *p, size_t n, nd__runs *r, int64_t *maxp,        \
                             size_t *bad) {                                           \
    uint8_t f[ND__SCAN_CHUNK];                                                        \
    int64_t mx = 0;                                                                   \
    size_t open = 0; /* the entry of the open run (the scratch slot: background) */ \
    if (n == 0) return 0;                                                             \
    if (nd__runs_reserve(r)) return ND_ENOMEM;                                        \
    r->at[0] = 0;                                                                     \
    for (size_t c0 = 0; c0 < n; c0 += ND__SCAN_CHUNK) {                               \
      size_t m = n - c0 < ND__SCAN_CHUNK ? n - c0 : ND__SCAN_CHUNK;                   \
      uint8_t any = c0 % ND__RUN_SPLIT == 0;                                          \
      if (c0 > 0 && m == ND__SCAN_CHUNK) {                                            \
        for (size_t k = 0; k < ND__SCAN_CHUNK; k++) {                                 \
          f[k] = p[c0 + k] != p[c0 + k - 1];                                          \
          any |= f[k];                                                                \
        }                                                                             \
        if (!any) continue; /* inside a run */                                        \
      } else {                                                                        \
        memset(f, 0, sizeof f);                                                       \
        for (size_t k = 0; k < m; k++)                                                \
          f[k] = c0 + k == 0 || p[c0 + k] != p[c0 + k - 1];                           \
      }                                                                               \
      f[0] |= c0 % ND__RUN_SPLIT == 0;                                                \
      if (nd__runs_reserve(r)) return ND_ENOMEM;                                      \
      size_t *at = r->at, nr = r->n;                                                  \
      uint32_t *len = r->len;                                                         \
      int64_t *val = r->val;                                                          \
      for (uint64_t bits = nd__flags64(f); bits; bits &= bits - 1) {                  \
        size_t i = c0 + (size_t)__builtin_ctzll(bits);                                \
        T v = p[i];                                                                   \
        if (!(OK(v))) {                                                               \
          r->n = nr;                                                                  \
          *bad = i;                                                                   \
          return ND_EINVAL;                                                           \
        }                                                                             \
        int64_t l = (int64_t)v;                                                       \
        len[open] = (uint32_t)(i - at[open]);                                         \
        at[nr] = i;                                                                   \
        val[nr] = l;                                                                  \
        open = nr;                                                                    \
        nr += l != 0;                                                                 \
        mx = l > mx ? l : mx;                                                         \
      }                                                                               \
      r->n = nr;                                                                      \
    }                                                                                 \
    r->len[open] = (uint32_t)(n - r->at[open]);                                       \
    *maxp = mx;                                                                       \
    return 0;                                                                         \
  }

#define ND__OK_UNSIGNED(v) ((void)(v), 1)
#define ND__OK_SIGNED(v) ((v) >= 0)
#define ND__OK_U64(v) ((v) <= (uint64_t)INT64_MAX)
/* In [0, 2^53] and integral; a cast, not floor(): no libm call. */
#define ND__OK_FLOAT(v)                                             \
  ((double)(v) >= 0 && (double)(v) <= ND__LABEL_FLOAT_MAX &&        \
   (double)(int64_t)(v) == (double)(v))

ND__DEFINE_SCAN(u8, uint8_t, ND__OK_UNSIGNED)
ND__DEFINE_SCAN(u16, uint16_t, ND__OK_UNSIGNED)
ND__DEFINE_SCAN(u32, uint32_t, ND__OK_UNSIGNED)
ND__DEFINE_SCAN(u64, uint64_t, ND__OK_U64)
ND__DEFINE_SCAN(i8, int8_t, ND__OK_SIGNED)
ND__DEFINE_SCAN(i16, int16_t, ND__OK_SIGNED)
ND__DEFINE_SCAN(i32, int32_t, ND__OK_SIGNED)
ND__DEFINE_SCAN(i64, int64_t, ND__OK_SIGNED)
ND__DEFINE_SCAN(f32, float, ND__OK_FLOAT)
ND__DEFINE_SCAN(f64, double, ND__OK_FLOAT)

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

int nd__atlas_runs(const nd_array *atlas, const char *what, nd__runs *runs, int64_t *max) {
  *runs = (nd__runs){0};
  *max = 0;
  if (!atlas) return nd__nerr(ND_EINVAL, "%s: NULL array", what);
  const void *d = nd_array_data(atlas);
  nd_dtype dt = nd_array_dtype(atlas);
  size_t n = nd_array_count(atlas);
  if (nd_array_ndim(atlas) == 0) n = 0; /* a scalar is not an atlas */
  size_t bad = 0;
  int rc = 0;
  switch (dt) {
    case ND_U8: rc = nd__scan_u8(d, n, runs, max, &bad); break;
    case ND_U16: rc = nd__scan_u16(d, n, runs, max, &bad); break;
    case ND_U32: rc = nd__scan_u32(d, n, runs, max, &bad); break;
    case ND_U64: rc = nd__scan_u64(d, n, runs, max, &bad); break;
    case ND_I8: rc = nd__scan_i8(d, n, runs, max, &bad); break;
    case ND_I16: rc = nd__scan_i16(d, n, runs, max, &bad); break;
    case ND_I32: rc = nd__scan_i32(d, n, runs, max, &bad); break;
    case ND_I64: rc = nd__scan_i64(d, n, runs, max, &bad); break;
    case ND_F32: rc = nd__scan_f32(d, n, runs, max, &bad); break;
    case ND_F64: rc = nd__scan_f64(d, n, runs, max, &bad); break;
  }
  if (rc == 0) return 0;
  nd__runs_free(runs);
  *max = 0;
  if (rc == ND_EINVAL) return nd__bad_value(atlas, what, bad, nd__elem_f64(d, dt, bad));
  return nd__nerr(rc, "%s: out of memory for the label runs", what);
}

/* ----------------------------------------------------------- the labels */

static int nd__cmp_i64(const void *pa, const void *pb) {
  int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
  return (a > b) - (a < b);
}

/* The labels below a small max, through a bitmap of the runs' labels. */
static int nd__labels_bitmap(const nd__runs *r, int64_t max, const char *what, int64_t **out,
                             size_t *n) {
  size_t words = (size_t)((uint64_t)max / 64 + 1), cnt = 0;
  uint64_t *bits = nd_calloc(words, sizeof *bits);
  if (!bits) return nd__nerr(ND_ENOMEM, "%s: out of memory for the label bitmap", what);
  for (size_t i = 0; i < r->n; i++) {
    uint64_t l = (uint64_t)r->val[i];
    bits[l >> 6] |= (uint64_t)1 << (l & 63);
  }
  for (size_t w = 0; w < words; w++) cnt += (size_t)__builtin_popcountll(bits[w]);
  int64_t *l = nd_malloc(cnt * sizeof *l);
  if (!l) {
    nd_free(bits);
    return nd__nerr(ND_ENOMEM, "%s: out of memory for %zu labels", what, cnt);
  }
  size_t k = 0;
  for (size_t w = 0; w < words; w++)
    for (uint64_t b = bits[w]; b; b &= b - 1)
      l[k++] = (int64_t)(w * 64 + (size_t)__builtin_ctzll(b));
  nd_free(bits);
  *out = l;
  *n = cnt;
  return 0;
}

/* Large, sparse labels: the runs' labels sorted, duplicates dropped. */
static int nd__labels_sorted(const nd__runs *r, const char *what, int64_t **out, size_t *n) {
  int64_t *l = nd_malloc(r->n * sizeof *l);
  if (!l) return nd__nerr(ND_ENOMEM, "%s: out of memory for %zu label runs", what, r->n);
  memcpy(l, r->val, r->n * sizeof *l);
  qsort(l, r->n, sizeof *l, nd__cmp_i64);
  size_t k = 0;
  for (size_t i = 0; i < r->n; i++)
    if (k == 0 || l[i] != l[k - 1]) l[k++] = l[i];
  *out = l;
  *n = k;
  return 0;
}

int nd__runs_labels(const nd__runs *runs, int64_t max, size_t nvox, const char *what,
                    int64_t **labels, size_t *n) {
  *labels = NULL;
  *n = 0;
  if (runs->n == 0) return 0;
  uint64_t bitmap_bits = nvox / 8 * 64; /* bitmap no larger than the atlas in bytes */
  if (bitmap_bits < ND__BITMAP_MIN_BITS) bitmap_bits = ND__BITMAP_MIN_BITS;
  if ((uint64_t)max < bitmap_bits) return nd__labels_bitmap(runs, max, what, labels, n);
  return nd__labels_sorted(runs, what, labels, n);
}

int nd_atlas_labels(const nd_array *atlas, nd_array **labels) {
  nd__nerr_clear();
  if (!labels) return nd__nerr(ND_EINVAL, "nd_atlas_labels: NULL output");
  *labels = NULL;
  if (!atlas) return nd__nerr(ND_EINVAL, "nd_atlas_labels: NULL atlas");
  nd__runs runs;
  int64_t max = 0, *l = NULL;
  size_t n = 0;
  int rc = nd__atlas_runs(atlas, "atlas", &runs, &max);
  if (rc == 0) rc = nd__runs_labels(&runs, max, nd_array_count(atlas), "atlas", &l, &n);
  nd__runs_free(&runs);
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
