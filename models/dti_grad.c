/* Gradient tables for the tensor fit (nidag/dti.h): construction with DIPY
 * 1.6's gradient_table rules and the FSL bvals/bvecs text reader with the
 * layouts DIPY's read_bvals_bvecs accepts. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/dti_int.h"

/* ------------------------------------------------------------- the table */

void nd_gradients_free(nd_gradients *g) {
  if (!g) return;
  nd_free(g->bvals);
  nd_free(g->bvecs);
  nd_free(g->b0_mask);
  nd_free(g);
}

size_t nd_gradients_count(const nd_gradients *g) { return g ? g->n : 0; }
const double *nd_gradients_bvals(const nd_gradients *g) { return g ? g->bvals : NULL; }
const double *nd_gradients_bvecs(const nd_gradients *g) { return g ? g->bvecs : NULL; }
const bool *nd_gradients_b0_mask(const nd_gradients *g) { return g ? g->b0_mask : NULL; }
double nd_gradients_b0_threshold(const nd_gradients *g) { return g ? g->b0_threshold : 0; }

/* Check volume i and write its DIPY-effective b-value and b-vector. */
static int grad_volume(const double *bvals, const double *bvecs, size_t i, double thr,
                       nd_gradients *g) {
  double b = bvals[i], v[3];
  if (!isfinite(b)) return nd__merr(ND_EINVAL, "volume %zu: b-value %g is not finite", i, b);
  if (b < 0) return nd__merr(ND_EINVAL, "volume %zu: negative b-value %g", i, b);
  bool dwi = b > thr;
  for (int k = 0; k < 3; k++) {
    double c = bvecs[3 * i + k];
    if (isinf(c))
      return nd__merr(ND_EINVAL, "volume %zu: b-vector component %d is infinite", i, k);
    v[k] = isnan(c) ? 0.0 : c; /* DIPY: np.where(np.isnan(bvecs), 0, bvecs) */
  }
  double norm = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
  bool unit = fabs(norm - 1.0) <= ND_DTI_BVEC_ATOL;
  if (dwi && !unit)
    return nd__merr(ND_EINVAL,
                    "volume %zu: b = %g but its b-vector (%g, %g, %g) has norm %g; "
                    "diffusion-weighted directions must be unit vectors within %g",
                    i, b, v[0], v[1], v[2], norm, ND_DTI_BVEC_ATOL);
  g->b0_mask[i] = !dwi;
  g->bvals[i] = unit ? b : 0.0;
  for (int k = 0; k < 3; k++) g->bvecs[3 * i + k] = unit ? v[k] : 0.0;
  return 0;
}

int nd_gradients_new(const double *bvals, const double *bvecs, size_t n,
                     double b0_threshold, nd_gradients **out) {
  nd__merr_clear();
  if (!out) return nd__merr(ND_EINVAL, "gradients: out is NULL");
  *out = NULL;
  if (!bvals || !bvecs) return nd__merr(ND_EINVAL, "gradients: NULL b-values or b-vectors");
  if (n == 0) return nd__merr(ND_EINVAL, "gradients: no volume");
  if (!(b0_threshold >= 0) || !isfinite(b0_threshold))
    return nd__merr(ND_EINVAL, "gradients: b0 threshold %g must be >= 0 and finite",
                    b0_threshold);
  double thr = b0_threshold == 0 ? ND_DTI_B0_THRESHOLD : b0_threshold;
  nd_gradients *g = nd_calloc(1, sizeof *g);
  if (!g) return nd__merr(ND_ENOMEM, "gradients: out of memory");
  g->n = n;
  g->b0_threshold = thr;
  g->bvals = nd_calloc(n, sizeof *g->bvals);
  g->bvecs = nd_calloc(n, 3 * sizeof *g->bvecs);
  g->b0_mask = nd_calloc(n, sizeof *g->b0_mask);
  if (!g->bvals || !g->bvecs || !g->b0_mask) {
    nd_gradients_free(g);
    return nd__merr(ND_ENOMEM, "gradients: out of memory");
  }
  size_t nb0 = 0;
  for (size_t i = 0; i < n; i++) {
    int rc = grad_volume(bvals, bvecs, i, thr, g);
    if (rc) {
      nd_gradients_free(g);
      return rc;
    }
    nb0 += g->b0_mask[i];
  }
  int rc = 0;
  if (nb0 == 0)
    rc = nd__merr(ND_EINVAL, "gradients: no b0 volume (no b-value <= %g)", thr);
  else if (nb0 == n)
    rc = nd__merr(ND_EINVAL, "gradients: no diffusion-weighted volume (every b-value <= %g)",
                  thr);
  if (rc) {
    nd_gradients_free(g);
    return rc;
  }
  *out = g;
  return 0;
}

/* ---------------------------------------------------------- text reader */

/* A numeric text table as np.loadtxt reads it after DIPY's munging (tabs and
 * commas become spaces): rows of equal length, '#' comments, blank lines
 * skipped. */
typedef struct text_table {
  double *v;
  size_t rows, cols;
} text_table;

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, n = 0;
  char *buf = nd_malloc(cap + 1);
  while (buf) {
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (n < cap) break;
    char *nb = nd_realloc(buf, 2 * cap + 1);
    if (!nb) {
      nd_free(buf);
      buf = NULL;
      break;
    }
    buf = nb;
    cap *= 2;
  }
  bool err = ferror(f);
  fclose(f);
  if (!buf || err) {
    nd_free(buf);
    return NULL;
  }
  buf[n] = '\0';
  *len = n;
  return buf;
}

static int is_sep(char c) { return c == ' ' || c == '\t' || c == ',' || c == '\r'; }

static int parse_table(const char *path, text_table *t) {
  memset(t, 0, sizeof *t);
  size_t len = 0;
  errno = 0;
  char *text = slurp(path, &len);
  if (!text)
    return nd__merr(ND_EIO, "%s: cannot read: %s", path,
                    errno ? strerror(errno) : "out of memory");
  size_t cap = 64, count = 0, line_no = 0;
  t->v = nd_malloc(cap * sizeof *t->v);
  int rc = t->v ? 0 : nd__merr(ND_ENOMEM, "%s: out of memory", path);
  char *p = text;
  while (!rc && *p) {
    char *eol = strchr(p, '\n');
    if (!eol) eol = p + strlen(p);
    char *hash = memchr(p, '#', (size_t)(eol - p));
    char *end = hash ? hash : eol;
    line_no++;
    size_t row_count = 0;
    while (!rc) {
      while (p < end && is_sep(*p)) p++;
      if (p >= end) break;
      char *tok_end = p;
      while (tok_end < end && !is_sep(*tok_end)) tok_end++;
      char saved = *tok_end;
      *tok_end = '\0';
      char *q;
      double x = strtod(p, &q);
      if (q != tok_end || q == p) {
        rc = nd__merr(ND_EFORMAT, "%s: line %zu: '%.32s' is not a number", path, line_no, p);
        break;
      }
      *tok_end = saved;
      if (count == cap) {
        double *nv = nd_realloc(t->v, 2 * cap * sizeof *nv);
        if (!nv) {
          rc = nd__merr(ND_ENOMEM, "%s: out of memory", path);
          break;
        }
        t->v = nv;
        cap *= 2;
      }
      t->v[count++] = x;
      row_count++;
      p = tok_end;
    }
    if (!rc && row_count > 0) {
      if (t->rows == 0) t->cols = row_count;
      else if (row_count != t->cols)
        rc = nd__merr(ND_EFORMAT, "%s: line %zu has %zu values but the first row has %zu",
                      path, line_no, row_count, t->cols);
      t->rows++;
    }
    p = *eol ? eol + 1 : eol;
  }
  nd_free(text);
  if (!rc && t->rows == 0) rc = nd__merr(ND_EFORMAT, "%s: no values", path);
  if (rc) {
    nd_free(t->v);
    t->v = NULL;
  }
  return rc;
}

int nd_gradients_read_fsl(const char *bval_path, const char *bvec_path, nd_gradients **out) {
  nd__merr_clear();
  return nd__gradients_read_fsl(bval_path, bvec_path, 0, out);
}

int nd__gradients_read_fsl(const char *bval_path, const char *bvec_path, double b0_threshold,
                           nd_gradients **out) {
  if (!out) return nd__merr(ND_EINVAL, "gradients: out is NULL");
  *out = NULL;
  if (!bval_path || !bvec_path) return nd__merr(ND_EINVAL, "gradients: NULL path");
  text_table tb, tv;
  int rc = parse_table(bval_path, &tb);
  if (rc) return rc;
  rc = parse_table(bvec_path, &tv);
  if (rc) {
    nd_free(tb.v);
    return rc;
  }
  double *vecs = NULL;
  size_t nb = tb.rows * tb.cols, nv = 0;
  if (tb.rows > 1 && tb.cols > 1) {
    rc = nd__merr(ND_EFORMAT, "%s: a bvals file has one row (or one column); this one is %zu x %zu",
                  bval_path, tb.rows, tb.cols);
  } else if (tv.cols == 3 || (tv.rows == 3 && tv.cols == 1)) {
    /* N rows of 3 (DIPY keeps (N, 3) as is; a lone column of 3 is one vector) */
    nv = tv.rows * tv.cols / 3;
    vecs = tv.v;
    tv.v = NULL;
  } else if (tv.rows == 3) { /* FSL: 3 rows of N */
    nv = tv.cols;
    vecs = nd_malloc(3 * nv * sizeof *vecs);
    if (!vecs) rc = nd__merr(ND_ENOMEM, "%s: out of memory", bvec_path);
    for (size_t i = 0; !rc && i < nv; i++)
      for (size_t k = 0; k < 3; k++) vecs[3 * i + k] = tv.v[k * nv + i];
  } else {
    rc = nd__merr(ND_EFORMAT, "%s: a bvecs file has 3 rows or 3 columns; this one is %zu x %zu",
                  bvec_path, tv.rows, tv.cols);
  }
  if (!rc && nb != nv)
    rc = nd__merr(ND_EFORMAT, "%s has %zu b-values but %s has %zu b-vectors", bval_path, nb,
                  bvec_path, nv);
  if (!rc) {
    rc = nd_gradients_new(tb.v, vecs, nb, b0_threshold, out);
    if (rc) {
      char prefix[512];
      snprintf(prefix, sizeof prefix, "%s, %s", bval_path, bvec_path);
      rc = nd__merr_prefix(rc, prefix);
    }
  }
  nd_free(vecs);
  nd_free(tb.v);
  nd_free(tv.v);
  return rc;
}
