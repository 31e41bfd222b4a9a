/* Voxel-wise diffusion tensor fit (nidag/dti.h) with DIPY 1.6 TensorModel
 * semantics.
 *
 * How it works. The design matrix X (n x 7) and its pseudo-inverse are built
 * once, through an SVD exactly as numpy's pinv does it (dgesdd, singular
 * values <= 1e-15 * max dropped), so a rank-deficient table behaves as in
 * DIPY instead of failing. OLS is then one 7 x n product per voxel. WLS
 * needs the pseudo-inverse of diag(w) X, which differs per voxel, so each
 * voxel runs its own small SVD in preallocated scratch. Voxels are
 * independent, so nd_parallel_for can cut them any way: every result is
 * computed by the same instructions whatever the thread or chunk count.
 *
 * Scratch: one slot per possible claimer (the pool's threads plus the
 * calling thread). A chunk takes a free slot with a compare-and-swap and
 * gives it back at its end, so nothing is allocated per voxel or per chunk
 * and no slot is shared, whichever thread runs the chunk.
 */
#include <lapacke.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "models/dti_int.h"

#define NCOEF 7               /* 6 tensor elements + the constant column */
#define PINV_RCOND 1e-15      /* numpy.linalg.pinv's default */
#define EIG_WORK (1 + 6 * 3 + 2 * 9) /* dsyevd's lwork for N = 3, jobz 'V' */
#define EIG_IWORK (3 + 5 * 3)        /* dsyevd's liwork for N = 3 */
#define SVD_IWORK (8 * NCOEF)        /* dgesdd's iwork */

typedef struct slot {
  _Atomic int busy;
  double *a, *u, *s, *vt, *work, *y, *w; /* views into mem */
  double *mem;
} slot;

typedef struct fit_ctx {
  size_t n;             /* volumes */
  const double *x;      /* design matrix, column-major n x 7 */
  const double *xr;     /* the same, row-major n x 7 */
  const double *pinv;   /* pinv(X), row-major 7 x n */
  const double *signals;
  double min_signal, min_diffusivity;
  nd_dti_method method;
  lapack_int svd_lwork;
  slot *slots;
  size_t nslots;
  nd_dti_result *out;
  _Atomic size_t failed;
} fit_ctx;

/* ------------------------------------------------------ design matrix */

/* DIPY's design_matrix: -B with B's columns (Bxx, 2Bxy, Byy, 2Bxz, 2Byz,
 * Bzz, 1), each product in DIPY's order. Returns max(B), which sets the
 * eigenvalue floor. */
static double design_matrix(const nd_gradients *g, double *x) {
  size_t n = g->n;
  double bmax = 1.0; /* the constant column */
  for (size_t i = 0; i < n; i++) {
    const double *v = g->bvecs + 3 * i;
    double b = g->bvals[i];
    double row[NCOEF] = {v[0] * v[0] * 1. * b, v[0] * v[1] * 2. * b, v[1] * v[1] * 1. * b,
                         v[0] * v[2] * 2. * b, v[1] * v[2] * 2. * b, v[2] * v[2] * 1. * b,
                         1.0};
    for (int j = 0; j < NCOEF; j++) {
      if (row[j] > bmax) bmax = row[j];
      x[(size_t)j * n + i] = -row[j];
    }
  }
  return bmax;
}

/* pinv of the column-major m x 7 matrix a (destroyed), as numpy computes
 * it, applied to rhs: out = V diag(1/s) U^T rhs. Returns the LAPACK info. */
static int pinv_solve(size_t m, double *a, double *s, double *u, double *vt, double *work,
                      lapack_int lwork, lapack_int *iwork, const double *rhs, double *out) {
  lapack_int info = LAPACKE_dgesdd_work(LAPACK_COL_MAJOR, 'S', (lapack_int)m, NCOEF, a,
                                        (lapack_int)m, s, u, (lapack_int)m, vt, NCOEF, work,
                                        lwork, iwork);
  if (info != 0) return (int)info;
  double cutoff = PINV_RCOND * s[0], t[NCOEF];
  for (int j = 0; j < NCOEF; j++) {
    double acc = 0;
    if (s[j] > cutoff) {
      const double *uj = u + (size_t)j * m;
      for (size_t i = 0; i < m; i++) acc += uj[i] * rhs[i];
      acc /= s[j];
    }
    t[j] = acc;
  }
  for (int k = 0; k < NCOEF; k++) {
    double acc = 0;
    for (int j = 0; j < NCOEF; j++) acc += vt[k * NCOEF + j] * t[j]; /* V[k][j] = VT[j][k] */
    out[k] = acc;
  }
  return 0;
}

/* ------------------------------------------------------------ per voxel */

static void put_nan(nd_dti_result *r, size_t v) {
  r->fa[v] = r->md[v] = r->ad[v] = r->rd[v] = NAN;
  for (int k = 0; k < 3; k++) r->evals[3 * v + k] = NAN;
  for (int k = 0; k < 9; k++) r->evecs[9 * v + k] = NAN;
}

/* Eigen-decompose the tensor of beta and write the voxel's outputs (DIPY's
 * decompose_tensor and the scalar maps). */
static int put_tensor(const fit_ctx *c, const double *beta, size_t v) {
  double t[9] = {beta[0], beta[1], beta[3], beta[1], beta[2],
                 beta[4], beta[3], beta[4], beta[5]}; /* symmetric */
  double w[3], work[EIG_WORK];
  lapack_int iwork[EIG_IWORK];
  for (int k = 0; k < 9; k++)
    if (!isfinite(t[k])) return -1;
  if (LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'L', 3, t, 3, w, work, EIG_WORK, iwork,
                          EIG_IWORK) != 0)
    return -1;
  nd_dti_result *r = c->out;
  double *ev = r->evals + 3 * v, *vec = r->evecs + 9 * v;
  /* LAPACK's order is ascending; DIPY's argsort()[::-1] reverses it. */
  for (int k = 0; k < 3; k++) {
    double e = w[2 - k];
    ev[k] = e < c->min_diffusivity ? c->min_diffusivity : e;
    for (int i = 0; i < 3; i++) vec[3 * i + k] = t[3 * (2 - k) + i];
  }
  double e1 = ev[0], e2 = ev[1], e3 = ev[2];
  double all_zero = (e1 == 0 && e2 == 0 && e3 == 0) ? 1.0 : 0.0;
  double num = (e1 - e2) * (e1 - e2) + (e2 - e3) * (e2 - e3) + (e3 - e1) * (e3 - e1);
  double den = e1 * e1 + e2 * e2 + e3 * e3 + all_zero;
  r->fa[v] = sqrt(0.5 * num / den);
  r->md[v] = (e1 + e2 + e3) / 3.0;
  r->ad[v] = e1;
  r->rd[v] = (e2 + e3) / 2.0;
  return 0;
}

/* WLS through the normal equations (X^T W^2 X) beta = X^T W^2 y, with the
 * system scaled to unit diagonal and a hand-written Cholesky. Returns -1
 * (caller falls back to the SVD) when a pivot is not clearly positive. */
#define CHOL_PIVOT_TOL 1e-10
static int wls_normal(const double *xr, size_t n, const double *w, const double *y,
                      double *beta) {
  double a[NCOEF][NCOEF] = {{0}}, b[NCOEF] = {0};
  for (size_t i = 0; i < n; i++) {
    const double *r = xr + i * NCOEF;
    double w2 = w[i] * w[i], wr[NCOEF];
    for (int k = 0; k < NCOEF; k++) wr[k] = w2 * r[k];
    for (int k = 0; k < NCOEF; k++) {
      for (int j = 0; j <= k; j++) a[k][j] += wr[k] * r[j];
      b[k] += wr[k] * y[i];
    }
  }
  double d[NCOEF];
  for (int k = 0; k < NCOEF; k++) {
    if (!(a[k][k] > 0) || !isfinite(a[k][k])) return -1;
    d[k] = 1.0 / sqrt(a[k][k]);
  }
  for (int k = 0; k < NCOEF; k++) {
    for (int j = 0; j < k; j++) a[k][j] *= d[k] * d[j];
    a[k][k] = 1.0;
    b[k] *= d[k];
  }
  /* in-place Cholesky, lower triangle: a = L L^T */
  for (int k = 0; k < NCOEF; k++) {
    for (int j = 0; j < k; j++) {
      double acc = a[k][j];
      for (int m = 0; m < j; m++) acc -= a[k][m] * a[j][m];
      a[k][j] = acc / a[j][j];
    }
    double p = a[k][k];
    for (int m = 0; m < k; m++) p -= a[k][m] * a[k][m];
    if (!(p > CHOL_PIVOT_TOL)) return -1; /* unit diagonal: relative to 1 */
    a[k][k] = sqrt(p);
  }
  double z[NCOEF];
  for (int k = 0; k < NCOEF; k++) {
    double acc = b[k];
    for (int m = 0; m < k; m++) acc -= a[k][m] * z[m];
    z[k] = acc / a[k][k];
  }
  for (int k = NCOEF - 1; k >= 0; k--) {
    double acc = z[k];
    for (int m = k + 1; m < NCOEF; m++) acc -= a[m][k] * z[m];
    z[k] = acc / a[k][k];
  }
  for (int k = 0; k < NCOEF; k++) {
    beta[k] = z[k] * d[k];
    if (!isfinite(beta[k])) return -1;
  }
  return 0;
}

static int fit_voxel(const fit_ctx *c, slot *sl, size_t v) {
  size_t n = c->n;
  const double *sig = c->signals + v * n;
  double *y = sl->y, beta[NCOEF];
  for (size_t i = 0; i < n; i++) {
    double s = sig[i];
    if (isnan(s) || s == INFINITY) return -1; /* np.maximum keeps NaN */
    y[i] = log(s < c->min_signal ? c->min_signal : s);
  }
  for (int k = 0; k < NCOEF; k++) { /* OLS: pinv(X) y */
    const double *p = c->pinv + (size_t)k * n;
    double acc = 0;
    for (size_t i = 0; i < n; i++) acc += p[i] * y[i];
    beta[k] = acc;
  }
  if (c->method == ND_DTI_WLS) {
    /* w = exp(X beta_ols); solve pinv(diag(w) X) (w * y) */
    double *w = sl->w;
    for (size_t i = 0; i < n; i++) {
      const double *r = c->xr + i * NCOEF;
      double acc = 0;
      for (int k = 0; k < NCOEF; k++) acc += r[k] * beta[k];
      w[i] = exp(acc);
      if (!isfinite(w[i])) return -1;
    }
    if (wls_normal(c->xr, n, w, y, beta) == 0) return put_tensor(c, beta, v);
    for (int k = 0; k < NCOEF; k++)
      for (size_t i = 0; i < n; i++) sl->a[(size_t)k * n + i] = c->x[(size_t)k * n + i] * w[i];
    for (size_t i = 0; i < n; i++) w[i] *= y[i];
    lapack_int iwork[SVD_IWORK];
    if (pinv_solve(n, sl->a, sl->s, sl->u, sl->vt, sl->work, c->svd_lwork, iwork, w, beta))
      return -1;
  }
  return put_tensor(c, beta, v);
}

static slot *take_slot(fit_ctx *c) {
  for (;;)
    for (size_t i = 0; i < c->nslots; i++) {
      int expect = 0;
      if (atomic_compare_exchange_strong(&c->slots[i].busy, &expect, 1)) return &c->slots[i];
    }
}

static int fit_chunk(void *ctx, size_t lo, size_t hi) {
  fit_ctx *c = ctx;
  slot *sl = take_slot(c);
  size_t failed = 0;
  for (size_t v = lo; v < hi; v++)
    if (fit_voxel(c, sl, v)) {
      put_nan(c->out, v);
      failed++;
    }
  atomic_store(&sl->busy, 0);
  if (failed) atomic_fetch_add(&c->failed, failed);
  return 0;
}

/* ----------------------------------------------------------- the fit */

void nd_dti_result_free(nd_dti_result *r) {
  if (!r) return;
  nd_free(r->fa);
  nd_free(r->md);
  nd_free(r->ad);
  nd_free(r->rd);
  nd_free(r->evals);
  nd_free(r->evecs);
  memset(r, 0, sizeof *r);
}

static int result_alloc(nd_dti_result *r, size_t nvox) {
  size_t m = nvox ? nvox : 1;
  r->nvox = nvox;
  r->fa = nd_malloc(m * sizeof(double));
  r->md = nd_malloc(m * sizeof(double));
  r->ad = nd_malloc(m * sizeof(double));
  r->rd = nd_malloc(m * sizeof(double));
  r->evals = nd_calloc(m, 3 * sizeof(double));
  r->evecs = nd_calloc(m, 9 * sizeof(double));
  if (r->fa && r->md && r->ad && r->rd && r->evals && r->evecs) return 0;
  nd_dti_result_free(r);
  return nd__merr(ND_ENOMEM, "dti: out of memory for %zu voxels", nvox);
}

static int check_args(const nd_gradients *g, const double *signals, size_t nvox, size_t nvol,
                      const nd_dti_opts *o, nd_dti_result *out) {
  if (!g || !out) return nd__merr(ND_EINVAL, "dti: NULL gradients or result");
  if (!signals && nvox > 0) return nd__merr(ND_EINVAL, "dti: NULL signals");
  if (nvol != g->n)
    return nd__merr(ND_EINVAL, "dti: the signals have %zu volumes but the gradient table has %zu",
                    nvol, g->n);
  if (nvox > 0 && nvol > SIZE_MAX / sizeof(double) / nvox)
    return nd__merr(ND_EOVERFLOW, "dti: %zu voxels x %zu volumes overflow", nvox, nvol);
  if (o->method != ND_DTI_WLS && o->method != ND_DTI_OLS)
    return nd__merr(ND_EINVAL, "dti: unknown method %d", (int)o->method);
  if ((unsigned)o->chunking > (unsigned)ND_GUIDED)
    return nd__merr(ND_EINVAL, "dti: unknown chunking %d", (int)o->chunking);
  if (!(o->min_signal >= 0) || !isfinite(o->min_signal))
    return nd__merr(ND_EINVAL, "dti: min_signal %g must be > 0 (or 0 for the default)",
                    o->min_signal);
  return 0;
}

/* The design matrix, its pseudo-inverse and the WLS workspace size. */
static int setup(fit_ctx *c, const nd_gradients *g, double *x, double *pinv) {
  size_t n = g->n;
  c->min_diffusivity = ND_DTI_EVAL_TOL / design_matrix(g, x);
  double *a = nd_malloc(n * NCOEF * sizeof *a), *u = nd_malloc(n * NCOEF * sizeof *u);
  double s[NCOEF], vt[NCOEF * NCOEF], q;
  lapack_int iwork[SVD_IWORK];
  int rc = ND_ENOMEM;
  if (!a || !u) goto done;
  if (LAPACKE_dgesdd_work(LAPACK_COL_MAJOR, 'S', (lapack_int)n, NCOEF, a, (lapack_int)n, s, u,
                          (lapack_int)n, vt, NCOEF, &q, -1, iwork) != 0) {
    rc = ND_ESYS;
    goto done;
  }
  c->svd_lwork = (lapack_int)q + 1;
  double *work = nd_malloc((size_t)c->svd_lwork * sizeof *work);
  if (!work) goto done;
  /* pinv(X) column by column of the identity, through the same routine the
   * voxels use, so OLS and WLS share one code path */
  double *e = nd_calloc(n, sizeof *e), col[NCOEF];
  rc = e ? 0 : ND_ENOMEM;
  for (size_t i = 0; !rc && i < n; i++) {
    memcpy(a, x, n * NCOEF * sizeof *a);
    e[i] = 1;
    if (pinv_solve(n, a, s, u, vt, work, c->svd_lwork, iwork, e, col)) rc = ND_ESYS;
    e[i] = 0;
    for (int k = 0; k < NCOEF; k++) pinv[(size_t)k * n + i] = col[k];
  }
  nd_free(e);
  nd_free(work);
done:
  nd_free(a);
  nd_free(u);
  if (rc == ND_ENOMEM) return nd__merr(rc, "dti: out of memory");
  if (rc) return nd__merr(rc, "dti: the SVD of the design matrix failed");
  return 0;
}

static void slots_free(slot *s, size_t k) {
  for (size_t i = 0; s && i < k; i++) nd_free(s[i].mem);
  nd_free(s);
}

static int slots_new(fit_ctx *c) {
  size_t n = c->n, per = 3 * n * NCOEF + NCOEF + NCOEF * NCOEF + (size_t)c->svd_lwork + 2 * n;
  c->slots = nd_calloc(c->nslots, sizeof *c->slots);
  if (!c->slots) return nd__merr(ND_ENOMEM, "dti: out of memory");
  for (size_t i = 0; i < c->nslots; i++) {
    slot *s = &c->slots[i];
    atomic_init(&s->busy, 0);
    if (c->method != ND_DTI_WLS) continue; /* OLS needs only y */
    s->mem = nd_malloc(per * sizeof(double));
    if (!s->mem) {
      slots_free(c->slots, i);
      c->slots = NULL;
      return nd__merr(ND_ENOMEM, "dti: out of memory");
    }
    s->a = s->mem;
    s->u = s->a + n * NCOEF;
    s->s = s->u + n * NCOEF;
    s->vt = s->s + NCOEF;
    s->work = s->vt + NCOEF * NCOEF;
    s->y = s->work + c->svd_lwork;
    s->w = s->y + n;
  }
  if (c->method != ND_DTI_WLS)
    for (size_t i = 0; i < c->nslots; i++) {
      c->slots[i].mem = nd_malloc(n * sizeof(double));
      if (!c->slots[i].mem) {
        slots_free(c->slots, c->nslots);
        c->slots = NULL;
        return nd__merr(ND_ENOMEM, "dti: out of memory");
      }
      c->slots[i].y = c->slots[i].mem;
    }
  return 0;
}

int nd_dti_fit(const nd_gradients *g, const double *signals, size_t nvox, size_t nvol,
               const nd_dti_opts *o, nd_dti_result *out) {
  nd__merr_clear();
  nd_dti_opts defaults = {0};
  if (!o) o = &defaults;
  if (out) memset(out, 0, sizeof *out);
  int rc = check_args(g, signals, nvox, nvol, o, out);
  if (rc) return rc;
  nd_pool *pool = o->pool;
  if (!pool && (rc = nd_pool_global(&pool)) != 0)
    return nd__merr(rc, "dti: cannot start the global pool");
  fit_ctx c = {.n = nvol, .signals = signals, .method = o->method, .out = out,
               .min_signal = o->min_signal > 0 ? o->min_signal : ND_DTI_MIN_SIGNAL};
  atomic_init(&c.failed, 0);
  c.nslots = (size_t)nd_pool_threads(pool) + 1;
  double *x = nd_malloc(nvol * NCOEF * sizeof *x), *pinv = nd_malloc(nvol * NCOEF * sizeof *pinv);
  if (!x || !pinv) rc = nd__merr(ND_ENOMEM, "dti: out of memory");
  if (!rc) rc = setup(&c, g, x, pinv);
  c.x = x;
  c.pinv = pinv;
  double *xr = NULL;
  if (!rc && !(xr = nd_malloc(nvol * NCOEF * sizeof *xr)))
    rc = nd__merr(ND_ENOMEM, "dti: out of memory");
  for (size_t i = 0; !rc && i < nvol; i++)
    for (int k = 0; k < NCOEF; k++) xr[i * NCOEF + k] = x[(size_t)k * nvol + i];
  c.xr = xr;
  if (!rc) rc = slots_new(&c);
  if (!rc) rc = result_alloc(out, nvox);
  if (!rc && nvox > 0) {
    size_t nchunks = o->chunks ? o->chunks : ND_DEFAULT_CHUNKS;
    size_t chunk = (nvox + nchunks - 1) / nchunks;
    rc = nd_parallel_for(pool, 0, nvox, o->chunking, chunk, fit_chunk, &c);
    if (rc) {
      nd_dti_result_free(out);
      rc = nd__merr(rc, "dti: the parallel loop failed");
    }
  }
  if (!rc) {
    out->min_diffusivity = c.min_diffusivity;
    out->n_failed = atomic_load(&c.failed);
  }
  if (c.slots) slots_free(c.slots, c.nslots);
  nd_free(x);
  nd_free(xr);
  nd_free(pinv);
  return rc;
}
