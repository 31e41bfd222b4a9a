/* NIfTI-1/NIfTI-2 reading (.nii, .nii.gz, .hdr/.img[.gz]) and NIfTI-1
 * writing (.nii, .nii.gz).
 *
 * Reading: the raw header (348 or 540 bytes) is read through zlib, which
 * handles plain and gzipped files alike, and every field we depend on is
 * validated here before nifti_clib or the allocator sees anything: nifti_clib
 * prints to stderr and trusts malformed headers (dims, offsets), its image
 * name search can pick x.nii when asked for x.nii.gz, and its reader zeroes
 * non-finite floats where nibabel keeps NaN. So the data bytes are read with
 * zlib too, in chunks, and converted element by element in the file's byte
 * order (whatever the host's). The affine follows nibabel's get_best_affine:
 * sform if sform_code > 0, else qform (quaternion with nibabel's fixes: qfac
 * -1 only for pixdim[0] == -1, zero zooms taken as 1, negative as their
 * absolute value), else the centred "base" affine of the zooms with x
 * flipped.
 *
 * Writing goes through nifti_clib (nifti_make_new_nim, the quaternion of the
 * affine, nifti_convert_nim2n1hdr), but the bytes are written by zlib into a
 * temporary file renamed over the target, so a full disk or a crash never
 * leaves a half-written image (nifti_image_write ignores write errors). The
 * gzip level is the caller's (nd_nifti_save_gz; 6 for nd_nifti_save). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <nifti/nifti2_io.h>

#include "neuro/neuro_int.h"

#define ND__N1_HDR 348         /* sizeof_hdr of NIfTI-1 */
#define ND__N2_HDR 540         /* sizeof_hdr of NIfTI-2 */
#define ND__N1_MAGIC_AT 344
#define ND__N2_MAGIC_AT 4
#define ND__EXT_FLAG 4         /* the extension flag after a .nii header */
#define ND__MAX_NDIM 7
#define ND__READ_CHUNK ((size_t)1 << 20)
#define ND__WRITE_CHUNK ((size_t)1 << 24)
#define ND__GZ_BUFFER (1u << 20)       /* zlib's input buffer for the data */
#define ND__DIRECT_CHUNK ((size_t)1 << 26) /* gzread straight into the array */
/* deflate expands at most 1032:1; with headers and slack, a .gz of size s
 * cannot hold more than s * ratio + slack bytes, which rejects absurd data
 * sizes in a compressed file before allocating. */
#define ND__GZ_MAX_RATIO 1040u
#define ND__GZ_SLACK ((uint64_t)1 << 16)
#define ND__MAX_OFFSET ((uint64_t)1 << 62)
/* nibabel's quaternion_threshold: -3 float32 eps tolerates rounding. */
#define ND__QUAT_THRESHOLD (-3.0 * (double)FLT_EPSILON)
#define ND__NIFTI1_DIM_MAX 32767

_Static_assert(sizeof(nifti_1_header) == ND__N1_HDR, "nifti_1_header size");

/* ------------------------------------------------------------ once-init */

static pthread_once_t nd__nifti_once = PTHREAD_ONCE_INIT;

static void nd__nifti_init_once(void) { nifti_set_debug_level(0); }

static void nd__nifti_init(void) { pthread_once(&nd__nifti_once, nd__nifti_init_once); }

/* ------------------------------------------------------ raw header fields */

/* A header as read from disk, in the file's byte order. */
typedef struct nd__raw {
  const uint8_t *b;
  bool big; /* the file is big-endian */
} nd__raw;

static uint64_t nd__raw_u(const nd__raw *r, size_t off, unsigned n) {
  uint64_t v = 0;
  for (unsigned i = 0; i < n; i++) {
    unsigned k = r->big ? i : n - 1 - i;
    v = (v << 8) | r->b[off + k];
  }
  return v;
}
static int64_t nd__raw_i16(const nd__raw *r, size_t off) {
  return (int16_t)(uint16_t)nd__raw_u(r, off, 2);
}
static int64_t nd__raw_i32(const nd__raw *r, size_t off) {
  return (int32_t)(uint32_t)nd__raw_u(r, off, 4);
}
static int64_t nd__raw_i64(const nd__raw *r, size_t off) {
  return (int64_t)nd__raw_u(r, off, 8);
}
static double nd__raw_f32(const nd__raw *r, size_t off) {
  uint32_t u = (uint32_t)nd__raw_u(r, off, 4);
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
static double nd__raw_f64(const nd__raw *r, size_t off) {
  uint64_t u = nd__raw_u(r, off, 8);
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

/* Field offsets of the two header versions (nifti1.h, nifti2.h). */
typedef struct nd__layout {
  size_t size, dim, dim_w, datatype, pixdim, vox_offset, scl, qform_code,
      sform_code, code_w, quat, srow, real_w;
} nd__layout;

static const nd__layout nd__n1 = {ND__N1_HDR, 40, 2, 70, 76, 108, 112, 252, 254, 2, 256, 280, 4};
static const nd__layout nd__n2 = {ND__N2_HDR, 16, 8, 12, 104, 168, 176, 344, 348, 4, 352, 400, 8};

static int64_t nd__raw_int(const nd__raw *r, size_t off, size_t w) {
  return w == 2 ? nd__raw_i16(r, off) : w == 4 ? nd__raw_i32(r, off) : nd__raw_i64(r, off);
}
static double nd__raw_real(const nd__raw *r, size_t off, size_t w) {
  return w == 4 ? nd__raw_f32(r, off) : nd__raw_f64(r, off);
}

/* ------------------------------------------------------------ datatypes */

/* Bytes per voxel of a supported datatype, 0 otherwise. */
static int nd__dt_size(int dt) {
  switch (dt) {
  case NIFTI_TYPE_UINT8: case NIFTI_TYPE_INT8: return 1;
  case NIFTI_TYPE_UINT16: case NIFTI_TYPE_INT16: return 2;
  case NIFTI_TYPE_UINT32: case NIFTI_TYPE_INT32: case NIFTI_TYPE_FLOAT32: return 4;
  case NIFTI_TYPE_UINT64: case NIFTI_TYPE_INT64: case NIFTI_TYPE_FLOAT64: return 8;
  default: return 0;
  }
}

static int nd__dt_from_nd(nd_dtype dt) {
  switch (dt) {
  case ND_U8: return NIFTI_TYPE_UINT8;
  case ND_I8: return NIFTI_TYPE_INT8;
  case ND_U16: return NIFTI_TYPE_UINT16;
  case ND_I16: return NIFTI_TYPE_INT16;
  case ND_U32: return NIFTI_TYPE_UINT32;
  case ND_I32: return NIFTI_TYPE_INT32;
  case ND_U64: return NIFTI_TYPE_UINT64;
  case ND_I64: return NIFTI_TYPE_INT64;
  case ND_F32: return NIFTI_TYPE_FLOAT32;
  case ND_F64: return NIFTI_TYPE_FLOAT64;
  }
  return 0;
}

/* ---------------------------------------------------------------- header */

/* Everything the reader needs, validated. */
typedef struct nd__nhdr {
  nd_nifti_info info;
  bool big, pair;
  int nbyper;
  uint64_t offset; /* of the data in the data file */
  size_t nvox, nbytes;
  size_t shape[ND__MAX_NDIM]; /* array shape: dims reversed */
} nd__nhdr;

static int nd__parse_dims(const char *path, const nd__raw *r, const nd__layout *L,
                          nd__nhdr *h) {
  int64_t ndim = nd__raw_int(r, L->dim, L->dim_w);
  if (ndim < 1 || ndim > ND__MAX_NDIM)
    return nd__nerr(ND_EFORMAT, "%s: bad header: dim[0] = %lld is outside 1..7", path,
                    (long long)ndim);
  h->info.ndim = (int)ndim;
  size_t nvox = 1;
  bool overflow = false;
  for (int i = 0; i < ndim; i++) {
    int64_t d = nd__raw_int(r, L->dim + (size_t)(i + 1) * L->dim_w, L->dim_w);
    if (d < 1)
      return nd__nerr(ND_EFORMAT, "%s: bad header: dim[%d] = %lld is not positive", path,
                      i + 1, (long long)d);
    h->info.dim[i] = d;
    h->shape[ndim - 1 - i] = (size_t)d;
    if ((uint64_t)d > SIZE_MAX || !nd__mul_size(nvox, (size_t)d, &nvox))
      overflow = true;
  }
  if (overflow)
    return nd__nerr(ND_EOVERFLOW, "%s: bad header: the dims' product overflows", path);
  h->nvox = nvox;
  return ND_OK;
}

static int nd__parse_datatype(const char *path, const nd__raw *r, const nd__layout *L,
                              nd__nhdr *h) {
  int dt = (int)nd__raw_i16(r, L->datatype);
  h->info.datatype = dt;
  h->nbyper = nd__dt_size(dt);
  if (h->nbyper == 0)
    return nd__nerr(ND_EUNSUPPORTED, "%s: unsupported datatype %s (%d)", path,
                    nifti_datatype_string(dt), dt);
  if (!nd__mul_size(h->nvox, (size_t)h->nbyper, &h->nbytes))
    return nd__nerr(ND_EOVERFLOW, "%s: bad header: the data size overflows", path);
  return ND_OK;
}

/* nibabel's centred base affine: zooms of the first three axes (1 when
 * missing), x flipped, voxel (shape - 1) / 2 at the origin. */
static void nd__affine_base(const nd__nhdr *h, const nd__raw *r, const nd__layout *L,
                            double A[16]) {
  memset(A, 0, 16 * sizeof *A);
  for (int i = 0; i < 3; i++) {
    double z = i < h->info.ndim ? nd__raw_real(r, L->pixdim + (size_t)(i + 1) * L->real_w,
                                               L->real_w)
                                : 1.0;
    double n = i < h->info.ndim ? (double)h->info.dim[i] : 1.0;
    double s = i == 0 ? -z : z;
    A[i * 4 + i] = s;
    A[i * 4 + 3] = -(n - 1.0) / 2.0 * s;
  }
  A[15] = 1.0;
}

static int nd__affine_qform(const char *path, const nd__raw *r, const nd__layout *L,
                            double A[16]) {
  size_t w = L->real_w;
  double b = nd__raw_real(r, L->quat, w), c = nd__raw_real(r, L->quat + w, w),
         d = nd__raw_real(r, L->quat + 2 * w, w);
  double w2 = 1.0 - (b * b + c * c + d * d), a;
  if (!(w2 >= ND__QUAT_THRESHOLD))
    return nd__nerr(ND_EFORMAT, "%s: bad header: invalid qform quaternion (%g, %g, %g)",
                    path, b, c, d);
  a = w2 < 0 ? 0.0 : sqrt(w2);
  double R[3][3] = {
      {a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)},
      {2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)},
      {2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b}};
  double z[3];
  for (int j = 0; j < 3; j++) {
    z[j] = fabs(nd__raw_real(r, L->pixdim + (size_t)(j + 1) * w, w));
    if (z[j] == 0.0)
      z[j] = 1.0;
  }
  if (nd__raw_real(r, L->pixdim, w) == -1.0)
    z[2] = -z[2];
  memset(A, 0, 16 * sizeof *A);
  for (int i = 0; i < 3; i++) {
    for (int j = 0; j < 3; j++) A[i * 4 + j] = R[i][j] * z[j];
    A[i * 4 + 3] = nd__raw_real(r, L->quat + (size_t)(3 + i) * w, w);
  }
  A[15] = 1.0;
  return ND_OK;
}

static int nd__parse_affine(const char *path, const nd__raw *r, const nd__layout *L,
                            nd__nhdr *h) {
  double *A = h->info.affine;
  if (nd__raw_int(r, L->sform_code, L->code_w) > 0) {
    h->info.affine_source = ND_AFFINE_SFORM;
    memset(A, 0, 16 * sizeof *A);
    for (size_t i = 0; i < 12; i++)
      A[i] = nd__raw_real(r, L->srow + i * L->real_w, L->real_w);
    A[15] = 1.0;
  } else if (nd__raw_int(r, L->qform_code, L->code_w) > 0) {
    h->info.affine_source = ND_AFFINE_QFORM;
    int rc = nd__affine_qform(path, r, L, A);
    if (rc != ND_OK)
      return rc;
  } else {
    h->info.affine_source = ND_AFFINE_PIXDIM;
    nd__affine_base(h, r, L, A);
  }
  for (int i = 0; i < 16; i++)
    if (!isfinite(A[i]))
      return nd__nerr(ND_EFORMAT, "%s: bad header: the affine has a non-finite entry", path);
  return ND_OK;
}

static int nd__parse_rest(const char *path, const nd__raw *r, const nd__layout *L,
                          nd__nhdr *h) {
  for (int i = 0; i < h->info.ndim; i++)
    h->info.pixdim[i] = nd__raw_real(r, L->pixdim + (size_t)(i + 1) * L->real_w, L->real_w);
  h->info.scl_slope = nd__raw_real(r, L->scl, L->real_w);
  h->info.scl_inter = nd__raw_real(r, L->scl + L->real_w, L->real_w);
  double slope = h->info.scl_slope;
  if (slope != 0.0 && isfinite(slope) && !isfinite(h->info.scl_inter))
    return nd__nerr(ND_EFORMAT, "%s: bad header: scl_slope is valid but scl_inter is not",
                    path);
  /* vox_offset: a float in NIfTI-1 (nibabel truncates it), an int64 in 2. */
  double off = h->info.version == 1 ? nd__raw_f32(r, L->vox_offset)
                                    : (double)nd__raw_i64(r, L->vox_offset);
  if (!(off >= 0.0 && off < (double)ND__MAX_OFFSET))
    return nd__nerr(ND_EFORMAT, "%s: bad header: vox_offset %g is invalid", path, off);
  h->offset = (uint64_t)off;
  /* A single file's data cannot start inside the header and extension flag;
   * nibabel and nifti_clib both move such an offset past them. */
  if (!h->pair && h->offset < L->size + ND__EXT_FLAG)
    h->offset = L->size + ND__EXT_FLAG;
  return nd__parse_affine(path, r, L, h);
}

/* Parse and validate the n bytes read from the start of a header file. */
static int nd__parse_header(const char *path, const uint8_t *buf, size_t n, nd__nhdr *h) {
  memset(h, 0, sizeof *h);
  if (n < 4)
    return nd__nerr(ND_EFORMAT, "%s: not a NIfTI file (%zu bytes)", path, n);
  nd__raw r = {buf, false};
  const nd__layout *L = NULL;
  for (int big = 0; big < 2 && L == NULL; big++) {
    r.big = big;
    uint64_t s = nd__raw_u(&r, 0, 4);
    L = s == ND__N1_HDR ? &nd__n1 : s == ND__N2_HDR ? &nd__n2 : NULL;
  }
  if (L == NULL)
    return nd__nerr(ND_EFORMAT, "%s: not a NIfTI file (bad sizeof_hdr)", path);
  h->big = r.big;
  h->info.version = L == &nd__n1 ? 1 : 2;
  if (n < L->size)
    return nd__nerr(ND_EFORMAT, "%s: truncated NIfTI-%d header (%zu of %zu bytes)", path,
                    h->info.version, n, L->size);
  const char *m = (const char *)buf + (h->info.version == 1 ? ND__N1_MAGIC_AT : ND__N2_MAGIC_AT);
  const char *one = h->info.version == 1 ? "n+1" : "n+2";
  const char *two = h->info.version == 1 ? "ni1" : "ni2";
  if (memcmp(m, one, 4) != 0 && memcmp(m, two, 4) != 0)
    return nd__nerr(ND_EFORMAT, "%s: not a NIfTI file (bad magic)", path);
  h->pair = memcmp(m, two, 4) == 0;
  int rc = nd__parse_dims(path, &r, L, h);
  if (rc == ND_OK)
    rc = nd__parse_datatype(path, &r, L, h);
  if (rc == ND_OK)
    rc = nd__parse_rest(path, &r, L, h);
  return rc;
}

/* ------------------------------------------------------------------ files */

static bool nd__ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

static bool nd__is_file(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* path with its suffix `from` (present) replaced by `to`; the first of the
 * candidates that is a regular file, or NULL. nd_free the result. */
static char *nd__sibling(const char *path, const char *from, const char *const *to, int nto) {
  size_t base = strlen(path) - strlen(from);
  for (int i = 0; i < nto; i++) {
    size_t n = base + strlen(to[i]) + 1;
    char *p = nd_malloc(n);
    if (p == NULL)
      return NULL;
    memcpy(p, path, base);
    memcpy(p + base, to[i], strlen(to[i]) + 1);
    if (nd__is_file(p))
      return p;
    nd_free(p);
  }
  return NULL;
}

/* The file holding the header: path itself, or for x.img[.gz] its x.hdr. */
static int nd__header_path(const char *path, char **out) {
  struct stat st;
  *out = NULL;
  if (stat(path, &st) != 0)
    return nd__nerr(ND_EIO, "%s: cannot open: %s", path, strerror(errno));
  if (S_ISDIR(st.st_mode))
    return nd__nerr(ND_EIO, "%s: cannot read: is a directory", path);
  static const char *const from_img[] = {".hdr", ".hdr.gz"};
  static const char *const from_imggz[] = {".hdr.gz", ".hdr"};
  if (nd__ends_with(path, ".img"))
    *out = nd__sibling(path, ".img", from_img, 2);
  else if (nd__ends_with(path, ".img.gz"))
    *out = nd__sibling(path, ".img.gz", from_imggz, 2);
  else
    *out = nd_strdup(path);
  if (*out == NULL)
    return nd__ends_with(path, ".img") || nd__ends_with(path, ".img.gz")
               ? nd__nerr(ND_EIO, "%s: no .hdr file next to the image", path)
               : nd__nerr(ND_ENOMEM, "%s: out of memory", path);
  return ND_OK;
}

/* The file holding the data of a pair: x.hdr[.gz] -> x.img[.gz]. */
static int nd__image_path(const char *path, const char *hpath, char **out) {
  static const char *const from_hdr[] = {".img", ".img.gz"};
  static const char *const from_hdrgz[] = {".img.gz", ".img"};
  *out = NULL;
  if (nd__ends_with(hpath, ".hdr"))
    *out = nd__sibling(hpath, ".hdr", from_hdr, 2);
  else if (nd__ends_with(hpath, ".hdr.gz"))
    *out = nd__sibling(hpath, ".hdr.gz", from_hdrgz, 2);
  if (*out == NULL)
    return nd__nerr(ND_EIO, "%s: a NIfTI pair header without its .img file", path);
  return ND_OK;
}

static int nd__gz_open(const char *path, const char *shown, gzFile *out) {
  *out = gzopen(path, "rb");
  if (*out == NULL)
    return nd__nerr(errno == ENOMEM ? ND_ENOMEM : ND_EIO, "%s: cannot open: %s", shown,
                    errno ? strerror(errno) : "zlib error");
  return ND_OK;
}

/* Read up to n bytes; *got is what was read (short only at the end or on
 * a compressed stream's error, which *bad reports). */
static void nd__gz_read(gzFile f, void *buf, size_t n, size_t *got, bool *bad) {
  *got = 0;
  *bad = false;
  while (*got < n) {
    size_t want = n - *got < ND__READ_CHUNK ? n - *got : ND__READ_CHUNK;
    int k = gzread(f, (uint8_t *)buf + *got, (unsigned)want);
    if (k < 0) {
      *bad = true;
      return;
    }
    if (k == 0)
      return;
    *got += (size_t)k;
  }
}

static int nd__read_header_file(const char *path, const char *hpath, nd__nhdr *h) {
  gzFile f;
  int rc = nd__gz_open(hpath, path, &f);
  if (rc != ND_OK)
    return rc;
  uint8_t buf[ND__N2_HDR];
  size_t got;
  bool bad;
  nd__gz_read(f, buf, sizeof buf, &got, &bad);
  gzclose(f);
  if (bad && got < ND__N1_HDR)
    return nd__nerr(ND_EFORMAT, "%s: truncated or corrupt compressed header", path);
  return nd__parse_header(path, buf, got, h);
}

/* Check the data file can hold offset + nbytes: exactly for a plain file,
 * through deflate's maximum ratio for a compressed one. */
static int nd__check_size(const char *path, const char *dpath, gzFile f, const nd__nhdr *h) {
  struct stat st;
  if (stat(dpath, &st) != 0)
    return nd__nerr(ND_EIO, "%s: cannot stat: %s", dpath, strerror(errno));
  uint64_t size = (uint64_t)st.st_size, need = h->offset + (uint64_t)h->nbytes;
  if (need < h->offset)
    return nd__nerr(ND_EOVERFLOW, "%s: bad header: vox_offset + data size overflows", path);
  if (gzdirect(f)) {
    if (size < need)
      return nd__nerr(ND_EFORMAT,
                      "%s: truncated: the data needs %llu bytes but the file has %llu", path,
                      (unsigned long long)need, (unsigned long long)size);
  } else if (size < (UINT64_MAX - ND__GZ_SLACK) / ND__GZ_MAX_RATIO &&
             need > size * ND__GZ_MAX_RATIO + ND__GZ_SLACK) {
    return nd__nerr(ND_EFORMAT,
                    "%s: truncated: the data needs %llu bytes, more than a %llu-byte "
                    "compressed file can hold",
                    path, (unsigned long long)need, (unsigned long long)size);
  }
  return ND_OK;
}

/* Read and validate the header of path, and open its data file (*data, not
 * yet positioned) when data is not NULL. */
static int nd__open(const char *path, nd__nhdr *h, gzFile *data) {
  char *hpath = NULL, *ipath = NULL;
  gzFile f = NULL;
  int rc = nd__header_path(path, &hpath);
  if (rc == ND_OK)
    rc = nd__read_header_file(path, hpath, h);
  if (rc == ND_OK && h->pair)
    rc = nd__image_path(path, hpath, &ipath);
  const char *dpath = ipath ? ipath : hpath;
  if (rc == ND_OK)
    rc = nd__gz_open(dpath, path, &f);
  /* A large input buffer (before the first read, which gzdirect does):
   * zlib's default of 8 KiB makes a read(2) per 8 KiB of the data. */
  if (rc == ND_OK && data != NULL)
    (void)gzbuffer(f, ND__GZ_BUFFER);
  if (rc == ND_OK)
    rc = nd__check_size(path, dpath, f, h);
  if ((rc != ND_OK || data == NULL) && f != NULL) {
    gzclose(f);
    f = NULL;
  }
  if (data != NULL)
    *data = f;
  nd_free(hpath);
  nd_free(ipath);
  return rc;
}

int nd_nifti_header(const char *path, nd_nifti_info *info) {
  nd__nerr_clear();
  if (path == NULL || info == NULL)
    return nd__nerr(ND_EINVAL, "nd_nifti_header: NULL argument");
  nd__nifti_init();
  nd__nhdr h;
  int rc = nd__open(path, &h, NULL);
  if (rc == ND_OK)
    *info = h.info;
  return rc;
}

/* ------------------------------------------------------------- conversion */

typedef struct nd__conv {
  int datatype, nbyper;
  bool swap;          /* file order differs from the host's */
  bool scale;
  double slope, inter;
  bool f32;           /* output ND_F32, else ND_F64 */
} nd__conv;

static uint64_t nd__load_elem(const uint8_t *p, int nb, bool swap) {
  uint8_t t[8];
  if (swap) {
    for (int i = 0; i < nb; i++) t[i] = p[nb - 1 - i];
    p = t;
  }
  uint64_t v = 0;
  uint16_t u16;
  uint32_t u32;
  switch (nb) {
  case 1: v = p[0]; break;
  case 2: memcpy(&u16, p, 2); v = u16; break;
  case 4: memcpy(&u32, p, 4); v = u32; break;
  default: memcpy(&v, p, 8); break;
  }
  return v;
}

static double nd__elem_value(uint64_t u, int dt) {
  float f;
  double d;
  switch (dt) {
  case NIFTI_TYPE_UINT8: case NIFTI_TYPE_UINT16: case NIFTI_TYPE_UINT32:
  case NIFTI_TYPE_UINT64: return (double)u;
  case NIFTI_TYPE_INT8: return (double)(int8_t)(uint8_t)u;
  case NIFTI_TYPE_INT16: return (double)(int16_t)(uint16_t)u;
  case NIFTI_TYPE_INT32: return (double)(int32_t)(uint32_t)u;
  case NIFTI_TYPE_INT64: return (double)(int64_t)u;
  case NIFTI_TYPE_FLOAT32: {
    uint32_t u32 = (uint32_t)u;
    memcpy(&f, &u32, 4);
    return f;
  }
  default: memcpy(&d, &u, 8); return d;
  }
}

/* The element-by-element conversion: any datatype, either byte order. */
static void nd__convert_generic(const nd__conv *c, const uint8_t *src, size_t n, void *dst,
                                size_t at) {
  float *o32 = (float *)dst + at;
  double *o64 = (double *)dst + at;
  for (size_t i = 0; i < n; i++) {
    double v = nd__elem_value(nd__load_elem(src + i * (size_t)c->nbyper, c->nbyper, c->swap),
                              c->datatype);
    if (c->scale)
      v = v * c->slope + c->inter;
    if (c->f32)
      o32[i] = (float)v;
    else
      o64[i] = v;
  }
}

/* The same conversion for a file in the host's byte order, one tight loop
 * per (file type, output type, scaling): v = (double)x, scaled, then stored
 * as float or double, exactly as the generic path computes it. */
#define ND__CONV_LOOP(T, OUT)                                                    \
  do {                                                                           \
    OUT *o_ = (OUT *)dst + at;                                                   \
    if (c->scale) {                                                              \
      const double sl_ = c->slope, in_ = c->inter;                               \
      for (size_t i_ = 0; i_ < n; i_++) {                                        \
        T x_;                                                                    \
        memcpy(&x_, src + i_ * sizeof(T), sizeof x_);                            \
        o_[i_] = (OUT)((double)x_ * sl_ + in_);                                  \
      }                                                                          \
    } else {                                                                     \
      for (size_t i_ = 0; i_ < n; i_++) {                                        \
        T x_;                                                                    \
        memcpy(&x_, src + i_ * sizeof(T), sizeof x_);                            \
        o_[i_] = (OUT)(double)x_;                                                \
      }                                                                          \
    }                                                                            \
  } while (0)

#define ND__CONV_TYPE(T)         \
  do {                           \
    if (c->f32)                  \
      ND__CONV_LOOP(T, float);   \
    else                         \
      ND__CONV_LOOP(T, double);  \
  } while (0)

/* Convert n elements from src into dst starting at element index at. */
static void nd__convert(const nd__conv *c, const uint8_t *src, size_t n, void *dst, size_t at) {
  if (c->swap) {
    nd__convert_generic(c, src, n, dst, at);
    return;
  }
  switch (c->datatype) {
  case NIFTI_TYPE_UINT8: ND__CONV_TYPE(uint8_t); break;
  case NIFTI_TYPE_INT8: ND__CONV_TYPE(int8_t); break;
  case NIFTI_TYPE_UINT16: ND__CONV_TYPE(uint16_t); break;
  case NIFTI_TYPE_INT16: ND__CONV_TYPE(int16_t); break;
  case NIFTI_TYPE_UINT32: ND__CONV_TYPE(uint32_t); break;
  case NIFTI_TYPE_INT32: ND__CONV_TYPE(int32_t); break;
  case NIFTI_TYPE_UINT64: ND__CONV_TYPE(uint64_t); break;
  case NIFTI_TYPE_INT64: ND__CONV_TYPE(int64_t); break;
  case NIFTI_TYPE_FLOAT32: ND__CONV_TYPE(float); break;
  case NIFTI_TYPE_FLOAT64: ND__CONV_TYPE(double); break;
  default: nd__convert_generic(c, src, n, dst, at); break;
  }
}

static bool nd__host_big(void) {
  const uint16_t one = 1;
  uint8_t b;
  memcpy(&b, &one, 1);
  return b == 0;
}

/* Read the data (positioned at its offset) into the array, converting. */
static int nd__read_data(const char *path, gzFile f, const nd__nhdr *h, const nd__conv *c,
                         void *dst) {
  /* The file holds exactly the output's bytes (float32 -> f32 or float64 ->
   * f64, host order, no scaling): read them straight into the array. */
  if (!c->swap && !c->scale &&
      (c->f32 ? c->datatype == NIFTI_TYPE_FLOAT32 : c->datatype == NIFTI_TYPE_FLOAT64)) {
    size_t done = 0;
    bool bad = false;
    while (done < h->nbytes && !bad) {
      size_t want = h->nbytes - done < ND__DIRECT_CHUNK ? h->nbytes - done : ND__DIRECT_CHUNK;
      size_t got;
      nd__gz_read(f, (uint8_t *)dst + done, want, &got, &bad);
      done += got;
      if (got < want)
        break;
    }
    if (done < h->nbytes)
      return nd__nerr(ND_EFORMAT, "%s: truncated%s: the data ends before its %zu bytes", path,
                      bad ? " or corrupt" : "", h->nbytes);
    return ND_OK;
  }
  size_t chunk_elems = ND__READ_CHUNK / (size_t)h->nbyper;
  size_t cap = h->nbytes < ND__READ_CHUNK ? h->nbytes : ND__READ_CHUNK;
  uint8_t *buf = nd_malloc(cap ? cap : 1);
  if (buf == NULL)
    return nd__nerr(ND_ENOMEM, "%s: out of memory", path);
  int rc = ND_OK;
  for (size_t at = 0; at < h->nvox && rc == ND_OK; at += chunk_elems) {
    size_t n = h->nvox - at < chunk_elems ? h->nvox - at : chunk_elems;
    size_t got;
    bool bad;
    nd__gz_read(f, buf, n * (size_t)h->nbyper, &got, &bad);
    if (got < n * (size_t)h->nbyper)
      rc = nd__nerr(ND_EFORMAT, "%s: truncated%s: the data ends before its %zu bytes", path,
                    bad ? " or corrupt" : "", h->nbytes);
    else
      nd__convert(c, buf, n, dst, at);
  }
  nd_free(buf);
  return rc;
}

static int nd__seek(const char *path, gzFile f, uint64_t offset) {
  if (offset > (uint64_t)LONG_MAX)
    return nd__nerr(ND_EFORMAT, "%s: bad header: vox_offset too large", path);
  /* gzseek of a compressed stream past its end fails or leaves the stream at
   * its end; either way the read that follows comes up short. */
  if (gzseek(f, (z_off_t)offset, SEEK_SET) < 0 && gzdirect(f))
    return nd__nerr(ND_EIO, "%s: cannot seek to the data at %llu", path,
                    (unsigned long long)offset);
  return ND_OK;
}

#define ND__HUGE_MIN ((size_t)64 << 20) /* images at least this big ask for huge pages */
#define ND__HUGE_PAGE ((uintptr_t)2 << 20)

/* Ask for transparent huge pages on a big image's buffer: filling 1.4 GB of
 * fresh 4 KiB pages costs a fault each, which bounds .nii loads. Only a hint
 * (ignored where THP is off). */
static void nd__advise_huge(void *p, size_t n) {
#ifdef MADV_HUGEPAGE
  if (n < ND__HUGE_MIN) return;
  uintptr_t lo = ((uintptr_t)p + ND__HUGE_PAGE - 1) & ~(ND__HUGE_PAGE - 1);
  uintptr_t hi = ((uintptr_t)p + n) & ~(ND__HUGE_PAGE - 1);
  if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#else
  (void)p, (void)n;
#endif
}

int nd_nifti_load(const char *path, nd_dtype dtype, nd_array **out) {
  nd__nerr_clear();
  if (out != NULL)
    *out = NULL;
  if (path == NULL || out == NULL)
    return nd__nerr(ND_EINVAL, "nd_nifti_load: NULL argument");
  if (dtype != ND_F32 && dtype != ND_F64)
    return nd__nerr(ND_EINVAL, "%s: load dtype must be f32 or f64, not %s", path,
                    nd_dtype_name(dtype));
  nd__nifti_init();
  nd__nhdr h;
  gzFile f = NULL;
  int rc = nd__open(path, &h, &f);
  if (rc != ND_OK)
    return rc;
  size_t outbytes;
  nd_array *a = NULL;
  if (!nd__mul_size(h.nvox, nd_dtype_size(dtype), &outbytes))
    rc = nd__nerr(ND_EOVERFLOW, "%s: the image is too large for %s", path, nd_dtype_name(dtype));
  if (rc == ND_OK)
    rc = nd__seek(path, f, h.offset);
  if (rc == ND_OK) {
    /* Not zeroed: every element is written below, or the array is dropped. */
    rc = nd__array_new_uninit(&a, dtype, h.info.ndim, h.shape);
    if (rc != ND_OK)
      rc = nd__nerr(rc, "%s: cannot allocate the image: %s", path, nd_strerror(rc));
    else
      nd__advise_huge(nd_array_data_mut(a), nd_array_nbytes(a));
  }
  if (rc == ND_OK) {
    nd__conv c = {.datatype = h.info.datatype, .nbyper = h.nbyper,
                  .swap = h.big != nd__host_big(),
                  .scale = h.info.scl_slope != 0.0 && isfinite(h.info.scl_slope),
                  .slope = h.info.scl_slope, .inter = h.info.scl_inter,
                  .f32 = dtype == ND_F32};
    rc = nd__read_data(path, f, &h, &c, nd_array_data_mut(a));
  }
  if (rc == ND_OK && nd_array_set_affine(a, h.info.affine) != ND_OK)
    rc = nd__nerr(ND_EFORMAT, "%s: bad header: invalid affine", path);
  gzclose(f);
  if (rc != ND_OK) {
    nd_array_release(a);
    return rc;
  }
  *out = a;
  return ND_OK;
}

/* ------------------------------------------------------------------ save */

/* Fill a NIfTI-1 header for a: dims reversed, the affine (identity when a
 * has none) as sform and qform, pixdim from its column norms. */
static int nd__make_header(const char *path, const nd_array *a, nifti_1_header *hdr) {
  int ndim = nd_array_ndim(a);
  const size_t *shape = nd_array_shape(a);
  int64_t dims[8] = {ndim, 1, 1, 1, 1, 1, 1, 1};
  for (int i = 0; i < ndim; i++) {
    if (shape[ndim - 1 - i] < 1 || shape[ndim - 1 - i] > ND__NIFTI1_DIM_MAX)
      return nd__nerr(ND_ERANGE, "%s: axis %d has %zu elements; NIfTI-1 allows 1..%d", path,
                      ndim - 1 - i, shape[ndim - 1 - i], ND__NIFTI1_DIM_MAX);
    dims[i + 1] = (int64_t)shape[ndim - 1 - i];
  }
  const double *A = nd__affine_or_identity(a);
  nifti_image *nim = nifti_make_new_nim(dims, nd__dt_from_nd(nd_array_dtype(a)), 0);
  if (nim == NULL)
    return nd__nerr(ND_ENOMEM, "%s: cannot build the NIfTI header", path);
  nim->nifti_type = NIFTI_FTYPE_NIFTI1_1;
  nim->iname_offset = ND__N1_HDR + ND__EXT_FLAG;
  nim->scl_slope = 0.0;
  nim->scl_inter = 0.0;
  nim->xyz_units = NIFTI_UNITS_MM;
  nifti_dmat44 M;
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4; j++) M.m[i][j] = A[i * 4 + j];
  double *pix[3] = {&nim->dx, &nim->dy, &nim->dz};
  for (int j = 0; j < 3; j++) {
    double n = sqrt(A[j] * A[j] + A[4 + j] * A[4 + j] + A[8 + j] * A[8 + j]);
    *pix[j] = nim->pixdim[j + 1] = n;
  }
  double dx, dy, dz;
  nifti_dmat44_to_quatern(M, &nim->quatern_b, &nim->quatern_c, &nim->quatern_d,
                          &nim->qoffset_x, &nim->qoffset_y, &nim->qoffset_z, &dx, &dy, &dz,
                          &nim->qfac);
  nim->qform_code = NIFTI_XFORM_SCANNER_ANAT;
  nim->sform_code = NIFTI_XFORM_SCANNER_ANAT;
  nim->sto_xyz = M;
  int bad = nifti_convert_nim2n1hdr(nim, hdr);
  nifti_image_free(nim);
  if (bad)
    return nd__nerr(ND_EINVAL, "%s: cannot build the NIfTI-1 header", path);
  return ND_OK;
}

static int nd__gz_write(gzFile f, const void *buf, size_t n) {
  const uint8_t *p = buf;
  while (n > 0) {
    size_t k = n < ND__WRITE_CHUNK ? n : ND__WRITE_CHUNK;
    if (gzwrite(f, p, (unsigned)k) != (int)k)
      return -1;
    p += k;
    n -= k;
  }
  return 0;
}

/* Write header, extension flag and data to a temporary file next to path,
 * then rename it over path. */
static int nd__write_file(const char *path, const nifti_1_header *hdr, const nd_array *a,
                          bool gz, int level) {
  size_t n = strlen(path) + sizeof ".tmp.XXXXXX";
  char *tmp = nd_malloc(n);
  if (tmp == NULL)
    return nd__nerr(ND_ENOMEM, "%s: out of memory", path);
  snprintf(tmp, n, "%s.tmp.XXXXXX", path);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    int rc = nd__nerr(ND_EIO, "%s: cannot create: %s", path, strerror(errno));
    nd_free(tmp);
    return rc;
  }
  (void)fchmod(fd, S_IRUSR | S_IWUSR | S_IRGRP | S_IROTH);
  char mode[8] = "wbT"; /* T: plain, no gzip wrapper */
  if (gz)
    snprintf(mode, sizeof mode, "wb%d", level);
  gzFile f = gzdopen(fd, mode);
  int rc = ND_OK;
  if (f == NULL) {
    close(fd);
    rc = nd__nerr(ND_EIO, "%s: cannot open for writing", path);
  } else {
    static const uint8_t ext[ND__EXT_FLAG] = {0};
    errno = 0;
    int bad = nd__gz_write(f, hdr, sizeof *hdr) || nd__gz_write(f, ext, sizeof ext) ||
              nd__gz_write(f, nd_array_data(a), nd_array_nbytes(a));
    int errno_w = errno;
    if (gzclose(f) != Z_OK || bad)
      rc = nd__nerr(ND_EIO, "%s: write failed: %s", path,
                    errno_w ? strerror(errno_w) : "zlib error");
  }
  if (rc == ND_OK && rename(tmp, path) != 0)
    rc = nd__nerr(ND_EIO, "%s: cannot rename the written file: %s", path, strerror(errno));
  if (rc != ND_OK)
    unlink(tmp);
  nd_free(tmp);
  return rc;
}

int nd_nifti_save(const char *path, const nd_array *a) {
  return nd_nifti_save_gz(path, a, ND_NIFTI_GZ_LEVEL_DEFAULT);
}

int nd_nifti_save_gz(const char *path, const nd_array *a, int level) {
  nd__nerr_clear();
  if (path == NULL || a == NULL)
    return nd__nerr(ND_EINVAL, "nd_nifti_save: NULL argument");
  if (level == 0)
    level = ND_NIFTI_GZ_LEVEL_DEFAULT;
  if (level < 1 || level > 9)
    return nd__nerr(ND_EINVAL, "%s: gzip level %d is outside 1..9", path, level);
  bool gz = nd__ends_with(path, ".nii.gz");
  if (!gz && !nd__ends_with(path, ".nii"))
    return nd__nerr(ND_EINVAL, "%s: the name must end in .nii or .nii.gz", path);
  int ndim = nd_array_ndim(a);
  if (ndim < 1 || ndim > ND__MAX_NDIM)
    return nd__nerr(ND_EINVAL, "%s: NIfTI holds 1 to 7 dims, not %d", path, ndim);
  nd__nifti_init();
  nifti_1_header hdr;
  int rc = nd__make_header(path, a, &hdr);
  if (rc == ND_OK)
    rc = nd__write_file(path, &hdr, a, gz, level);
  return rc;
}
