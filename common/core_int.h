/* Private helpers shared by every layer: the per-handle error buffer and
 * printf-style error recording, checked size arithmetic, little-endian
 * bytes, the clocks and allocation helpers. Not part of the public API. */
#ifndef NIDAG_CORE_INT_H
#define NIDAG_CORE_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "nidag/core.h"

#define ND__ERRMSG_MAX 512

/* First member of every public handle struct, so nd_errmsg(handle) can find
 * it. Keep it first. */
typedef struct nd__errbuf {
  int code;
  char msg[ND__ERRMSG_MAX];
} nd__errbuf;

/* Record code and a formatted message on a handle's errbuf; returns code so
 * callers can `return nd__seterr(&h->err, ND_EIO, "cannot open %s", path);`.
 * The message is truncated to fit. */
int nd__seterr(nd__errbuf *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int nd__vseterr(nd__errbuf *e, int code, const char *fmt, va_list ap);
void nd__clearerr(nd__errbuf *e);

/* Overflow-checked size arithmetic: returns 0 on overflow (and *out untouched). */
static inline int nd__mul_size(size_t a, size_t b, size_t *out) {
  return !__builtin_mul_overflow(a, b, out);
}
static inline int nd__add_size(size_t a, size_t b, size_t *out) {
  return !__builtin_add_overflow(a, b, out);
}

/* Little-endian byte order for the on-disk formats (the cache records, the
 * params encoding, the array header): the low n bytes of v at p, and back. */
static inline void nd__le_put(uint8_t *p, uint64_t v, unsigned n) {
  for (unsigned i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint64_t nd__le_get(const uint8_t *p, unsigned n) {
  uint64_t v = 0;
  for (unsigned i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* Clocks (clock.c). nd__now_ns: CLOCK_MONOTONIC, for durations and
 * deadlines; nd__wall_ns: CLOCK_REALTIME, for times stored on disk. */
#define ND__NS_PER_S 1000000000LL
#define ND__NS_PER_US 1000LL
uint64_t nd__now_ns(void);
int64_t nd__wall_ns(void);
static inline int64_t nd__ts_ns(struct timespec t) {
  return (int64_t)t.tv_sec * ND__NS_PER_S + t.tv_nsec;
}

/* Grow *buf (an array of elements of size sz, *cap of them) to hold at least
 * need, doubling from 64 elements; *buf and *cap are untouched on error.
 * ND_EOVERFLOW or ND_ENOMEM. */
int nd__grow(void **buf, size_t *cap, size_t need, size_t sz);

/* A copy of the formatted string from the allocation hook (nd_free), cut to
 * ND__ERRMSG_MAX - 1 characters; NULL on OOM. */
char *nd__vstrdupf(const char *fmt, va_list ap);

/* Zeroed memory aligned to `align` (a power of two) from the
 * allocation hook; release with nd__aligned_free. NULL on overflow or OOM. */
void *nd__aligned_calloc(size_t align, size_t size);
void nd__aligned_free(void *p);

/* nd_array_new without zeroing the data, for producers that write every
 * byte before the array is shared (a NIfTI load: zeroing 1.4 GB first cost
 * a fifth of the load). */
int nd__array_new_uninit(nd_array **out, nd_dtype dt, int ndim, const size_t *shape);

/* Element i of data (dtype dt) as a double (neuro's atlases and masks,
 * the tensor fit's masks). */
static inline double nd__elem_f64(const void *data, nd_dtype dt, size_t i) {
  switch (dt) {
    case ND_U8: return ((const uint8_t *)data)[i];
    case ND_I8: return ((const int8_t *)data)[i];
    case ND_U16: return ((const uint16_t *)data)[i];
    case ND_I16: return ((const int16_t *)data)[i];
    case ND_U32: return ((const uint32_t *)data)[i];
    case ND_I32: return ((const int32_t *)data)[i];
    case ND_U64: return (double)((const uint64_t *)data)[i];
    case ND_I64: return (double)((const int64_t *)data)[i];
    case ND_F32: return ((const float *)data)[i];
    case ND_F64: return ((const double *)data)[i];
  }
  return 0.0;
}

#endif /* NIDAG_CORE_INT_H */
