/* NumPy .npy files: feature matrices and targets written by Python tools,
 * and the reference data of the scikit-learn agreement tests.
 *
 * Layout: the magic "\x93NUMPY", a major and minor version byte, the header
 * length (u16 LE for 1.0, u32 LE for 2.0/3.0), then an ASCII Python dict
 * literal {'descr': '<f8', 'fortran_order': False, 'shape': (r, c), }
 * padded with spaces and a newline, then the raw data in C order. The dict
 * is parsed by looking up its three keys rather than by a general parser:
 * numpy always writes exactly these keys. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "models/models_int.h"

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_MAX_HEADER (1u << 20)
#define NPY_ALIGN 64

typedef struct npy_type {
  const char *code; /* without the byte-order character */
  nd_dtype dt;
} npy_type;

static const npy_type NPY_TYPES[] = {
    {"f8", ND_F64}, {"f4", ND_F32}, {"i8", ND_I64}, {"i4", ND_I32}, {"i2", ND_I16},
    {"i1", ND_I8},  {"u8", ND_U64}, {"u4", ND_U32}, {"u2", ND_U16}, {"u1", ND_U8},
};
#define NPY_NTYPES (sizeof NPY_TYPES / sizeof NPY_TYPES[0])

/* The value text after 'key': in the header dict, or NULL. */
static const char *npy_field(const char *hdr, const char *key) {
  char pat[32];
  snprintf(pat, sizeof pat, "'%s'", key);
  const char *p = strstr(hdr, pat);
  if (!p) return NULL;
  p += strlen(pat);
  while (*p == ' ') p++;
  if (*p != ':') return NULL;
  p++;
  while (*p == ' ') p++;
  return p;
}

static int npy_parse_descr(const char *path, const char *v, nd_dtype *dt) {
  if (!v || *v != '\'') return nd__merr(ND_EFORMAT, "'%s': .npy header has no 'descr'", path);
  if (v[1] == '\0') /* the header ends at the quote: no byte order, no code */
    return nd__merr(ND_EFORMAT, "'%s': .npy header has a malformed 'descr'", path);
  char order = v[1];
  const char *code = v + 2;
  const char *end = strchr(code, '\'');
  if (!end) return nd__merr(ND_EFORMAT, "'%s': .npy header has a malformed 'descr'", path);
  size_t len = (size_t)(end - code);
  for (size_t i = 0; i < NPY_NTYPES; i++) {
    if (strlen(NPY_TYPES[i].code) != len || memcmp(NPY_TYPES[i].code, code, len) != 0) continue;
    bool one_byte = nd_dtype_size(NPY_TYPES[i].dt) == 1;
    if (order == '>' && !one_byte)
      return nd__merr(ND_EFORMAT, "'%s': big-endian .npy data is not supported", path);
    if (order != '<' && order != '|' && order != '=' && order != '>')
      return nd__merr(ND_EFORMAT, "'%s': .npy 'descr' has a bad byte order", path);
    *dt = NPY_TYPES[i].dt;
    return 0;
  }
  return nd__merr(ND_EUNSUPPORTED, "'%s': .npy dtype '%.*s' is not supported", path,
                  (int)(end - v - 1), v + 1);
}

static int npy_parse_shape(const char *path, const char *v, int *ndim, size_t *shape) {
  if (!v || *v != '(') return nd__merr(ND_EFORMAT, "'%s': .npy header has no 'shape'", path);
  v++;
  int n = 0;
  for (;;) {
    while (*v == ' ' || *v == ',') v++;
    if (*v == ')') break;
    if (!isdigit((unsigned char)*v))
      return nd__merr(ND_EFORMAT, "'%s': .npy header has a malformed 'shape'", path);
    if (n == ND_MAX_DIMS)
      return nd__merr(ND_EUNSUPPORTED, "'%s': more than %d dimensions", path, ND_MAX_DIMS);
    errno = 0;
    char *end;
    unsigned long long d = strtoull(v, &end, 10);
    if (errno != 0 || (size_t)d != d)
      return nd__merr(ND_EOVERFLOW, "'%s': .npy dimension out of range", path);
    shape[n++] = (size_t)d;
    v = end;
  }
  *ndim = n;
  return 0;
}

static int npy_read_header(FILE *f, const char *path, char **hdr_out) {
  unsigned char pre[NPY_MAGIC_LEN + 2];
  if (fread(pre, 1, sizeof pre, f) != sizeof pre || memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
    return nd__merr(ND_EFORMAT, "'%s': not a .npy file (bad magic)", path);
  uint32_t hlen;
  if (pre[6] == 1) {
    unsigned char b[2];
    if (fread(b, 1, 2, f) != 2) return nd__merr(ND_EFORMAT, "'%s': truncated .npy header", path);
    hlen = (uint32_t)b[0] | (uint32_t)b[1] << 8;
  } else if (pre[6] == 2 || pre[6] == 3) {
    unsigned char b[4];
    if (fread(b, 1, 4, f) != 4) return nd__merr(ND_EFORMAT, "'%s': truncated .npy header", path);
    hlen = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
  } else {
    return nd__merr(ND_EFORMAT, "'%s': .npy format version %d is not supported", path, pre[6]);
  }
  if (hlen == 0 || hlen > NPY_MAX_HEADER)
    return nd__merr(ND_EFORMAT, "'%s': .npy header length %u is out of range", path, hlen);
  char *hdr = nd_malloc((size_t)hlen + 1);
  if (!hdr) return nd__merr(ND_ENOMEM, "'%s': out of memory", path);
  if (fread(hdr, 1, hlen, f) != hlen) {
    nd_free(hdr);
    return nd__merr(ND_EFORMAT, "'%s': truncated .npy header", path);
  }
  hdr[hlen] = '\0';
  *hdr_out = hdr;
  return 0;
}

/* The data must be exactly what the shape promises: checked before
 * allocating, so a corrupt shape cannot ask for terabytes. */
static int npy_check_size(FILE *f, const char *path, nd_dtype dt, int ndim, const size_t *shape) {
  size_t want = nd_dtype_size(dt);
  for (int i = 0; i < ndim; i++)
    if (!nd__mul_size(want, shape[i], &want))
      return nd__merr(ND_EOVERFLOW, "'%s': .npy shape overflows", path);
  long here = ftell(f);
  struct stat st;
  if (here < 0 || fstat(fileno(f), &st) != 0)
    return nd__merr(ND_EIO, "'%s': cannot stat: %s", path, strerror(errno));
  uint64_t have = (uint64_t)st.st_size - (uint64_t)here;
  if (have < want)
    return nd__merr(ND_EFORMAT, "'%s': truncated .npy data (%llu bytes, the shape needs %zu)",
                    path, (unsigned long long)have, want);
  if (have > want)
    return nd__merr(ND_EFORMAT, "'%s': %llu bytes after the .npy data the shape describes",
                    path, (unsigned long long)(have - want));
  return 0;
}

int nd_npy_load(const char *path, nd_array **out) {
  if (!path || !out) return nd__merr(ND_EINVAL, "nd_npy_load: NULL argument");
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return nd__merr(ND_EIO, "'%s': cannot open: %s", path, strerror(errno));
  char *hdr = NULL;
  int rc = npy_read_header(f, path, &hdr);
  nd_dtype dt = ND_F64;
  int ndim = 0;
  size_t shape[ND_MAX_DIMS];
  if (rc == 0) rc = npy_parse_descr(path, npy_field(hdr, "descr"), &dt);
  if (rc == 0) {
    const char *fo = npy_field(hdr, "fortran_order");
    if (!fo || strncmp(fo, "False", 5) != 0)
      rc = nd__merr(ND_EFORMAT, "'%s': Fortran-order .npy data is not supported", path);
  }
  if (rc == 0) rc = npy_parse_shape(path, npy_field(hdr, "shape"), &ndim, shape);
  nd_free(hdr);
  if (rc == 0) rc = npy_check_size(f, path, dt, ndim, shape);
  nd_array *a = NULL;
  if (rc == 0 && (rc = nd_array_new(&a, dt, ndim, shape)) != 0)
    rc = nd__merr(rc, "'%s': cannot allocate the array (%s)", path, nd_strerror(rc));
  if (rc == 0) {
    size_t nbytes = nd_array_nbytes(a);
    if (fread(nd_array_data_mut(a), 1, nbytes, f) != nbytes)
      rc = nd__merr(ND_EFORMAT, "'%s': truncated .npy data (expected %zu bytes)", path, nbytes);
  }
  fclose(f);
  if (rc != 0) {
    nd_array_release(a);
    return rc;
  }
  *out = a;
  return 0;
}

static const char *npy_code(nd_dtype dt) {
  for (size_t i = 0; i < NPY_NTYPES; i++)
    if (NPY_TYPES[i].dt == dt) return NPY_TYPES[i].code;
  return NULL;
}

int nd_npy_save(const char *path, const nd_array *a) {
  if (!path || !a) return nd__merr(ND_EINVAL, "nd_npy_save: NULL argument");
  const char *code = npy_code(nd_array_dtype(a));
  if (!code) return nd__merr(ND_EUNSUPPORTED, "'%s': dtype not supported by .npy", path);
  char dict[512];
  int len = snprintf(dict, sizeof dict, "{'descr': '%c%s', 'fortran_order': False, 'shape': (",
                     nd_dtype_size(nd_array_dtype(a)) == 1 ? '|' : '<', code);
  int ndim = nd_array_ndim(a);
  for (int i = 0; i < ndim; i++)
    len += snprintf(dict + len, sizeof dict - (size_t)len, "%zu%s", nd_array_dim(a, i),
                    ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
  len += snprintf(dict + len, sizeof dict - (size_t)len, "), }");
  /* pad so that magic + version + length + dict + '\n' is a multiple of 64 */
  size_t total = NPY_MAGIC_LEN + 2 + 2 + (size_t)len + 1;
  size_t pad = (NPY_ALIGN - total % NPY_ALIGN) % NPY_ALIGN;
  size_t hlen = (size_t)len + pad + 1;
  FILE *f = fopen(path, "wb");
  if (!f) return nd__merr(ND_EIO, "'%s': cannot create: %s", path, strerror(errno));
  unsigned char pre[NPY_MAGIC_LEN + 4] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                          (unsigned char)(hlen & 0xff),
                                          (unsigned char)(hlen >> 8)};
  bool ok = fwrite(pre, 1, sizeof pre, f) == sizeof pre &&
            fwrite(dict, 1, (size_t)len, f) == (size_t)len;
  for (size_t i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
  ok = ok && fputc('\n', f) != EOF;
  ok = ok && fwrite(nd_array_data(a), 1, nd_array_nbytes(a), f) == nd_array_nbytes(a);
  ok = (fclose(f) == 0) && ok;
  if (!ok) return nd__merr(ND_EIO, "'%s': write failed", path);
  return 0;
}
