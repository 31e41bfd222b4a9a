/* Voxel-wise diffusion tensor fit (nidag/dti.h) with DIPY 1.6 TensorModel
 * semantics.
 *
 * How it works. The design matrix X (n x 7) and its pseudo-inverse are built
 * once, through an SVD exactly as numpy's pinv does it (dgesdd, singular
 * values <= 1e-15 * max dropped), so a rank-deficient table behaves as in
 * DIPY instead of failing. OLS is then one 7 x n product per voxel. WLS
 * needs the pseudo-inverse of diag(w) X, which differs per voxel: it is
 * solved through the normal equations (X^T W^2 X) beta = X^T W^2 y, scaled
 * to unit diagonal and factored by a hand-written Cholesky; when a pivot is
 * weak or the factor looks ill-conditioned (conditioned(): a nearly
 * rank-deficient weighted design) the voxel runs its own SVD in
 * preallocated scratch instead, as numpy's pinv would. The weights are
 * DIPY's exp(U U^T y), U from the reduced SVD of X. The 3 x 3 tensor
 * is diagonalised by cyclic Jacobi rotations (nd__dti_eigh3).
 *
 * Speed. Per voxel the work is n logs, (WLS) n exps, a few 7 x n products,
 * the 28 distinct entries of X^T W^2 X and the 3 x 3 eigenproblem. The
 * per-volume loops run two volumes (or two coefficients) per instruction on
 * plain SSE2, through GCC/Clang vector extensions (other targets get the
 * same arithmetic lane by lane), on tables built once per fit (pinv(X)
 * transposed, X by columns, each row's products x_ik x_ij). log and exp are
 * two-lane code of their own (below; within 1 ulp of glibc's), with libm
 * for the rare arguments outside their ranges, found by one test per voxel.
 * No fast-math: every operation is IEEE, and every voxel is computed by the
 * same instructions whatever the thread or chunk count, so the results do
 * not depend on them.
 *
 * Scratch: one slot per possible claimer (the pool's threads plus the
 * calling thread). A chunk takes a free slot with a compare-and-swap and
 * gives it back at its end, so nothing is allocated per voxel or per chunk
 * and no slot is shared, whichever thread runs the chunk.
 */
#include <float.h>
#include <lapacke.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "models/dti_int.h"

#define NCOEF 7               /* 6 tensor elements + the constant column */
#define NPAD 8                /* NCOEF rounded up to whole pairs */
#define NTRI 28               /* entries of the lower triangle of a 7 x 7 */
#define PINV_RCOND 1e-15      /* numpy.linalg.pinv's default */
#define SVD_IWORK (8 * NCOEF) /* dgesdd's iwork */

typedef struct slot {
  _Atomic int busy;
  double *a, *u, *s, *vt, *work; /* the SVD fallback (WLS); views into mem */
  double *y, *w, *w2, *wy;       /* n rounded up to even, each */
  double *mem;
} slot;

typedef struct fit_ctx {
  size_t n;             /* volumes */
  size_t n2;            /* n rounded up to even */
  const double *x;      /* design matrix, column-major n x 7 (leading dim n) */
  const double *xc;     /* the same with leading dimension n2, zero padded */
  const double *xr;     /* the same row-major n x NPAD, column 7 zero */
  const double *xx;     /* n x NTRI: row i's x_ik x_ij, j <= k, row by row */
  const double *pt;     /* pinv(X)^T, row-major n x NPAD, column 7 zero */
  const double *ut;     /* U of X's reduced SVD, row-major n x NPAD, zero padded */
  const double *uc;     /* the same by columns, leading dimension n2, zero padded */
  const double *signals;
  double min_signal, min_diffusivity;
  nd_dti_method method;
  lapack_int svd_lwork;
  slot *slots;
  size_t nslots;
  nd_dti_result *out;
  _Atomic size_t failed;
} fit_ctx;

/* ----------------------------------------------- two-lane log and exp */

/* GCC and Clang vector extensions: on x86-64 each operation is one SSE2
 * instruction; the lanes never mix, so lane results do not depend on their
 * neighbour. */
typedef double v2d __attribute__((vector_size(16)));
typedef uint64_t v2u __attribute__((vector_size(16)));
typedef int64_t v2i __attribute__((vector_size(16)));

static inline v2d ld2(const double *p) {
  v2d v;
  memcpy(&v, p, sizeof v);
  return v;
}

static inline void st2(double *p, v2d v) { memcpy(p, &v, sizeof v); }

static inline v2d splat(double a) { return (v2d){a, a}; }

/* ln 2 split so that k * LN2_HI is exact for |k| < 2^17 (LN2_HI has 36
 * significant bits); LN2_LO is the rest, rounded. */
#define LN2_HI 0x1.62e42fefa0000p-1
#define LN2_LO 0x1.cf79abc9e3b3ap-40
#define INV_LN2 0x1.71547652b82fep+0

/* log x for positive normal finite lanes. x = 2^k m with m in
 * [sqrt(1/2), sqrt(2)), f = m - 1 (exact), s = f / (2 + f); then
 * log(1 + f) = 2 atanh(s) = f - f^2/2 + s (f^2/2 + R), R = sum_j>=1
 * 2 s^2j / (2j + 1), truncated after s^20 (relative error < 1e-18, the
 * series' terms fall by s^2 <= 0.0295 each). */
static inline v2d vlog_core(v2d x) {
  v2u ix = (v2u)x;
  /* biased exponent of x / sqrt(1/2), i.e. k + 1023 */
  v2u eb = (ix + (0x3ff0000000000000ULL - 0x3fe6a09e667f3bcdULL)) >> 52;
  v2d m = (v2d)(ix - ((eb - 1023) << 52));
  v2d k = (v2d)(eb | 0x4330000000000000ULL) - splat(0x1p52 + 1023.0);
  v2d f = m - 1.0;
  v2d s = f / (f + 2.0);
  v2d z = s * s, z2 = z * z, z4 = z2 * z2, z8 = z4 * z4;
  /* R / z = sum_j=0..9 c_j z^j, c_j = 2 / (2j + 3), by Estrin's scheme
   * (pairs, then powers of z^2): a short dependency chain */
  v2d p01 = 2.0 / 3 + z * (2.0 / 5), p23 = 2.0 / 7 + z * (2.0 / 9);
  v2d p45 = 2.0 / 11 + z * (2.0 / 13), p67 = 2.0 / 15 + z * (2.0 / 17);
  v2d p89 = 2.0 / 19 + z * (2.0 / 21);
  v2d r = z * ((p01 + z2 * p23) + z4 * (p45 + z2 * p67) + z8 * p89);
  v2d hfsq = 0.5 * f * f;
  return k * LN2_HI + ((f - hfsq) + (s * (hfsq + r) + k * LN2_LO));
}

/* Per lane of an x > 0 (or NaN), 0x800 when x is subnormal, infinite or
 * NaN (its exponent field is 0 or 0x7ff), else 0: integer operations only,
 * so that a voxel can OR the flags of all its lanes and test them once. */
static inline v2u flag_not_normal(v2d x) {
  v2u e = ((v2u)x >> 52) & 0x7ff;
  return ((e + 1) | (e - 1)) & 0x800;
}

/* exp x, valid for |x| <= 708 (used below EXP_FAST_LIMIT): x = k ln2 + r,
 * |r| <= ~0.35, exp(r) by its Taylor series to r^13 (relative error
 * < 1e-17), times 2^k built in the exponent
 * field (k in [-1022, 1022]: no overflow, no subnormal). */
static inline v2d vexp_core(v2d x) {
  const double shift = 0x1.8p52; /* adding it rounds to an integer */
  v2d kd = x * INV_LN2 + shift;
  v2d k = kd - shift;
  v2d r = (x - k * LN2_HI) - k * LN2_LO;
  /* exp(r) = 1 + (r + r^2 Q), Q = sum_j=0..11 r^j / (j + 2)!, by Estrin's
   * scheme (pairs, then powers of r^2): a short dependency chain */
  v2d r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
  v2d b0 = 1.0 / 2 + r * (1.0 / 6), b1 = 1.0 / 24 + r * (1.0 / 120);
  v2d b2 = 1.0 / 720 + r * (1.0 / 5040), b3 = 1.0 / 40320 + r * (1.0 / 362880);
  v2d b4 = 1.0 / 3628800 + r * (1.0 / 39916800);
  v2d b5 = 1.0 / 479001600 + r * (1.0 / 6227020800);
  v2d q = (b0 + r2 * b1) + r4 * (b2 + r2 * b3) + r8 * (b4 + r2 * b5);
  v2d p = 1.0 + (r + r2 * q);
  v2u scale = ((v2u)kd - 0x4338000000000000ULL + 1023) << 52;
  return p * (v2d)scale;
}

/* Per lane, 0x800 when |x| >= 512 (exponent field >= 1032) or x is not
 * finite, else 0: where vexp_core is not used. */
#define EXP_FAST_LIMIT 512.0
static inline v2u flag_exp_slow(v2d x) {
  v2u e = ((v2u)x >> 52) & 0x7ff;
  return (e + (0x800 - 1032)) & 0x800;
}

/* The scalar forms of the rules the fit applies per value (for the tests):
 * vlog_core for normal positive x, else libm; vexp_core below
 * EXP_FAST_LIMIT, else libm. */
double nd__dti_log(double x) { return isnormal(x) && x > 0 ? vlog_core(splat(x))[0] : log(x); }
double nd__dti_exp(double x) { return fabs(x) < EXP_FAST_LIMIT ? vexp_core(splat(x))[0] : exp(x); }

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

/* The reduced SVD of the column-major m x 7 matrix a (destroyed): s, u
 * (m x min(m, 7), leading dimension m), vt (7 x 7). Returns the LAPACK info. */
static int svd7(size_t m, double *a, double *s, double *u, double *vt, double *work,
                lapack_int lwork, lapack_int *iwork) {
  return (int)LAPACKE_dgesdd_work(LAPACK_COL_MAJOR, 'S', (lapack_int)m, NCOEF, a, (lapack_int)m,
                                  s, u, (lapack_int)m, vt, NCOEF, work, lwork, iwork);
}

/* numpy's pinv from that SVD applied to rhs: out = V diag(1/s) U^T rhs over
 * the singular values above 1e-15 s_max. With m < 7 only m singular values
 * and vectors exist; the rest of the pseudo-inverse is 0, as in numpy. */
static void pinv_apply(size_t m, const double *s, const double *u, const double *vt,
                       const double *rhs, double *out) {
  int r = m < NCOEF ? (int)m : NCOEF;
  double cutoff = PINV_RCOND * s[0], t[NCOEF];
  for (int j = 0; j < r; j++) {
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
    for (int j = 0; j < r; j++) acc += vt[k * NCOEF + j] * t[j]; /* V[k][j] = VT[j][k] */
    out[k] = acc;
  }
}

/* ------------------------------------------------- 3 x 3 eigensolver */

#define JACOBI_TOL 0x1p-53    /* off-diagonal vs its two diagonal entries */
#define JACOBI_ABS 0x1p-60    /* off-diagonal vs the largest entry */
#define JACOBI_MAX_SWEEPS 32  /* seen: at most 4 sweeps that rotate */

/* One Jacobi rotation in the (p, q) plane, r the third index: zero a_pq
 * unless it is negligible (returns 0 then). a_rp, a_rq are the entries
 * that the rotation mixes; v's columns p and q rotate alike. */
static inline int jacobi_rot(double *app, double *aqq, double *apq, double *arp, double *arq,
                             double *v, int p, int q, double floor_abs) {
  double a = *apq;
  if (!(fabs(a) > JACOBI_TOL * (fabs(*app) + fabs(*aqq)) + floor_abs)) return 0;
  /* tan of the angle: t = sign(d) 2a / (|d| + sqrt(d^2 + 4a^2)), d =
   * a_qq - a_pp, so |angle| <= pi/4; cos^2 = (|d| + r) / 2r. The largest
   * entry is in [2^-100, 2^100] (nd__dti_eigh3 scales it there) and
   * |a| > 2^-60 of it, so d^2 + 4a^2 neither over- nor underflows. */
  double d = *aqq - *app;
  double r = sqrt(d * d + 4.0 * a * a);
  double u = fabs(d) + r;
  double t = 2.0 * a / u;
  if (d < 0) t = -t;
  double c = sqrt(u / (2.0 * r)), s = t * c;
  *app -= t * a;
  *aqq += t * a;
  *apq = 0;
  double x = *arp, y = *arq;
  *arp = c * x - s * y;
  *arq = s * x + c * y;
  for (int k = 0; k < 3; k++) {
    double vp = v[3 * k + p], vq = v[3 * k + q];
    v[3 * k + p] = c * vp - s * vq;
    v[3 * k + q] = s * vp + c * vq;
  }
  return 1;
}

int nd__dti_eigh3(const double m[9], double evals[3], double evecs[9]) {
  double a00 = m[0], a01 = m[1], a02 = m[2], a11 = m[4], a12 = m[5], a22 = m[8];
  double mx = 0;
  const double up[6] = {a00, a01, a02, a11, a12, a22};
  for (int k = 0; k < 6; k++) {
    if (!isfinite(up[k])) return -1;
    if (fabs(up[k]) > mx) mx = fabs(up[k]);
  }
  double v[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1}, unscale = 1;
  if (mx > 0 && !(mx >= 0x1p-100 && mx <= 0x1p100)) {
    /* bring the largest entry to [1/2, 1) by a power of 2 (exact but for
     * entries that become subnormal, far below the largest's rounding) */
    int e;
    (void)frexp(mx, &e);
    double sc = ldexp(1.0, -e);
    unscale = ldexp(1.0, e);
    a00 *= sc;
    a01 *= sc;
    a02 *= sc;
    a11 *= sc;
    a12 *= sc;
    a22 *= sc;
    mx *= sc;
  }
  double floor_abs = JACOBI_ABS * mx;
  int sweep = 0;
  for (; sweep < JACOBI_MAX_SWEEPS; sweep++) {
    int rotated = jacobi_rot(&a00, &a11, &a01, &a02, &a12, v, 0, 1, floor_abs);
    rotated |= jacobi_rot(&a00, &a22, &a02, &a01, &a12, v, 0, 2, floor_abs);
    rotated |= jacobi_rot(&a11, &a22, &a12, &a01, &a02, v, 1, 2, floor_abs);
    if (!rotated) break;
  }
  if (sweep == JACOBI_MAX_SWEEPS) return -1;
  /* descending, stable: equal eigenvalues keep the order of the diagonal */
  double dg[3] = {a00, a11, a22};
  int o[3] = {0, 1, 2};
  for (int i = 1; i < 3; i++) {
    int k = o[i], j = i;
    for (; j > 0 && dg[o[j - 1]] < dg[k]; j--) o[j] = o[j - 1];
    o[j] = k;
  }
  for (int j = 0; j < 3; j++) {
    int c = o[j], big = 0;
    evals[j] = dg[c] * unscale;
    for (int i = 1; i < 3; i++)
      if (fabs(v[3 * i + c]) > fabs(v[3 * big + c])) big = i;
    double sgn = v[3 * big + c] < 0 ? -1.0 : 1.0;
    for (int i = 0; i < 3; i++) evecs[3 * i + j] = sgn * v[3 * i + c];
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
  nd_dti_result *r = c->out;
  double *ev = r->evals + 3 * v;
  if (nd__dti_eigh3(t, ev, r->evecs + 9 * v)) return -1;
  for (int k = 0; k < 3; k++)
    if (ev[k] < c->min_diffusivity) ev[k] = c->min_diffusivity;
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

/* y = log(max(S, min_signal)), n volumes, y padded with 0 to even length.
 * Returns -1 when a signal is NaN or +Inf (np.maximum keeps NaN). */
static int log_signal(const double *sig, size_t n, double min_signal, double *y) {
  const v2d lo = splat(min_signal);
  v2u flag = {0, 0};
  size_t i = 0;
  for (; i + 1 < n; i += 2) {
    v2d s = ld2(sig + i);
    v2i below = s < lo;
    s = (v2d)(((v2i)lo & below) | ((v2i)s & ~below)); /* NaN is not below */
    flag |= flag_not_normal(s);
    st2(y + i, vlog_core(s));
  }
  if (i < n) { /* the odd one out, in lane 0; lane 1 gives log 1 = 0 */
    double s = sig[i];
    v2d x = {s < min_signal ? min_signal : s, 1.0};
    flag |= flag_not_normal(x);
    st2(y + i, vlog_core(x));
  }
  if (!(flag[0] | flag[1])) return 0;
  /* rare: a NaN or +Inf signal, or a floor below DBL_MIN; the values of the
   * positive normal lanes do not change (lanes are independent) */
  for (i = 0; i < n; i++) {
    double s = sig[i];
    if (isnan(s) || s == INFINITY) return -1;
    double x = s < min_signal ? min_signal : s;
    y[i] = isnormal(x) ? vlog_core(splat(x))[0] : log(x);
  }
  return 0;
}

/* out = T^T y for a row-major n x NPAD table T (pinv(X)^T: the OLS beta;
 * U: U^T y for DIPY's WLS weights): coefficient k sums t_ik y_i over i in
 * order, two coefficients per instruction. */
static void table_t_y(const double *pt, const double *y, size_t n, double *beta) {
  v2d b0 = {0, 0}, b1 = b0, b2 = b0, b3 = b0;
  for (size_t i = 0; i < n; i++) {
    const double *p = pt + i * NPAD;
    v2d yi = splat(y[i]);
    b0 += ld2(p) * yi;
    b1 += ld2(p + 2) * yi;
    b2 += ld2(p + 4) * yi;
    b3 += ld2(p + 6) * yi;
  }
  st2(beta, b0);
  st2(beta + 2, b1);
  st2(beta + 4, b2);
  st2(beta + 6, b3);
}

/* The WLS weights w = exp(C t), C one of the n x 7 tables by columns (the
 * OLS-predicted log signal when C t = U U^T y), w2 = w^2
 * and wy = w^2 y, two volumes at a time (padding included). Returns -1 when
 * a weight is not finite. */
static int weights(const fit_ctx *c, const double *xc, const double *beta, const double *y,
                   double *w, double *w2, double *wy) {
  size_t n2 = c->n2;
  v2u flag = {0, 0};
  for (size_t i = 0; i < n2; i += 2) {
    v2d acc = ld2(xc + i) * beta[0];
    for (int k = 1; k < NCOEF; k++) acc += ld2(xc + (size_t)k * n2 + i) * beta[k];
    flag |= flag_exp_slow(acc);
    v2d wi = vexp_core(acc), wi2 = wi * wi;
    st2(w + i, wi);
    st2(w2 + i, wi2);
    st2(wy + i, wi2 * ld2(y + i));
  }
  if (!(flag[0] | flag[1])) return 0;
  /* rare: a predicted log signal beyond +-512 or not finite: libm's exp
   * there, the same values elsewhere (lanes are independent) */
  for (size_t i = 0; i < c->n; i++) {
    double acc = xc[i] * beta[0];
    for (int k = 1; k < NCOEF; k++) acc += xc[(size_t)k * n2 + i] * beta[k];
    double wi = fabs(acc) < EXP_FAST_LIMIT ? vexp_core(splat(acc))[0] : exp(acc);
    if (!isfinite(wi)) return -1;
    w[i] = wi;
    w2[i] = wi * wi;
    wy[i] = w2[i] * y[i];
  }
  return 0;
}

/* WLS through the normal equations (X^T W^2 X) beta = X^T W^2 y, with the
 * system scaled to unit diagonal and a hand-written Cholesky. The 28
 * distinct entries of X^T W^2 X accumulate w2_i (x_ik x_ij) over the rows i
 * in order, two entries per instruction, in registers. Returns -1 (caller
 * falls back to the SVD) when a pivot is not clearly positive or the
 * factor fails conditioned(). */
#define CHOL_PIVOT_TOL 1e-10
/* A pivot only bounds the smallest eigenvalue from above, so the factor is
 * also checked by an estimate of ||A^-1|| from three steps of inverse
 * iteration (A = L L^T, unit diagonal, so ||A|| <= 7): above CHOL_INV_MAX
 * the normal equations, which square the condition number of diag(w) X,
 * could lose more than about 1e-9 relative, and the voxel takes the SVD. */
#define CHOL_INV_MAX 1e6
static bool conditioned(const double a[NCOEF][NCOEF]) {
  double x[NCOEF], id[NCOEF], est = 0;
  for (int k = 0; k < NCOEF; k++) id[k] = 1.0 / a[k][k]; /* an estimate: products will do */
  for (int k = 0; k < NCOEF; k++) x[k] = ((k & 1) ? -0.5 : 1.0 - 0.1 * k) / 1.6; /* generic */
  for (int it = 0; it < 3; it++) {
    for (int k = 0; k < NCOEF; k++) { /* L z = x */
      double s = x[k];
      for (int m = 0; m < k; m++) s -= a[k][m] * x[m];
      x[k] = s * id[k];
    }
    for (int k = NCOEF - 1; k >= 0; k--) { /* L^T z = x */
      double s = x[k];
      for (int m = k + 1; m < NCOEF; m++) s -= a[m][k] * x[m];
      x[k] = s * id[k];
    }
    double nrm = 0;
    for (int k = 0; k < NCOEF; k++) nrm += x[k] * x[k];
    nrm = sqrt(nrm);
    if (!(nrm <= CHOL_INV_MAX)) return false; /* also NaN */
    est = nrm;
    double inv = 1.0 / nrm;
    for (int k = 0; k < NCOEF; k++) x[k] *= inv;
  }
  return est <= CHOL_INV_MAX;
}
static int wls_normal(const fit_ctx *c, const double *w2, const double *wy, double *beta) {
  size_t n = c->n;
  v2d acc[NTRI / 2], bacc[NPAD / 2];
  for (int p = 0; p < NTRI / 2; p++) acc[p] = splat(0);
  for (int p = 0; p < NPAD / 2; p++) bacc[p] = splat(0);
  for (size_t i = 0; i < n; i++) {
    const double *q = c->xx + i * NTRI;
    v2d s = splat(w2[i]);
#pragma GCC unroll 14
    for (int p = 0; p < NTRI / 2; p++) acc[p] += s * ld2(q + 2 * p);
  }
  for (size_t i = 0; i < n; i++) {
    const double *r = c->xr + i * NPAD;
    v2d s = splat(wy[i]);
#pragma GCC unroll 4
    for (int p = 0; p < NPAD / 2; p++) bacc[p] += s * ld2(r + 2 * p);
  }
  double at[NTRI], a[NCOEF][NCOEF], b[NPAD];
  memcpy(at, acc, sizeof at);
  memcpy(b, bacc, sizeof b);
  for (int k = 0, p = 0; k < NCOEF; k++)
    for (int j = 0; j <= k; j++) a[k][j] = at[p++];
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
      double s = a[k][j];
      for (int m = 0; m < j; m++) s -= a[k][m] * a[j][m];
      a[k][j] = s / a[j][j];
    }
    double p = a[k][k];
    for (int m = 0; m < k; m++) p -= a[k][m] * a[k][m];
    if (!(p > CHOL_PIVOT_TOL)) return -1; /* unit diagonal: relative to 1 */
    a[k][k] = sqrt(p);
  }
  if (!conditioned(a)) return -1;
  double z[NCOEF];
  for (int k = 0; k < NCOEF; k++) {
    double s = b[k];
    for (int m = 0; m < k; m++) s -= a[k][m] * z[m];
    z[k] = s / a[k][k];
  }
  for (int k = NCOEF - 1; k >= 0; k--) {
    double s = z[k];
    for (int m = k + 1; m < NCOEF; m++) s -= a[m][k] * z[m];
    z[k] = s / a[k][k];
  }
  for (int k = 0; k < NCOEF; k++) {
    beta[k] = z[k] * d[k];
    if (!isfinite(beta[k])) return -1;
  }
  return 0;
}

static int fit_voxel(const fit_ctx *c, slot *sl, size_t v) {
  size_t n = c->n;
  double *y = sl->y, beta[NPAD];
  if (log_signal(c->signals + v * n, n, c->min_signal, y)) return -1;
  if (c->method == ND_DTI_WLS) {
    /* DIPY 1.6's weights: w = exp(U U^T y), U from the reduced SVD of X
     * (its _ols_fit_matrix; X pinv(X) y when X has full column rank); then
     * solve pinv(diag(w) X) (w * y) */
    double *w = sl->w, t[NPAD];
    table_t_y(c->ut, y, n, t);
    if (weights(c, c->uc, t, y, w, sl->w2, sl->wy)) return -1;
    if (wls_normal(c, sl->w2, sl->wy, beta) == 0) return put_tensor(c, beta, v);
    for (int k = 0; k < NCOEF; k++)
      for (size_t i = 0; i < n; i++) sl->a[(size_t)k * n + i] = c->x[(size_t)k * n + i] * w[i];
    for (size_t i = 0; i < n; i++) w[i] *= y[i];
    lapack_int iwork[SVD_IWORK];
    if (svd7(n, sl->a, sl->s, sl->u, sl->vt, sl->work, c->svd_lwork, iwork)) return -1;
    pinv_apply(n, sl->s, sl->u, sl->vt, w, beta);
    return put_tensor(c, beta, v);
  }
  table_t_y(c->pt, y, n, beta);
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

/* The design matrix, its pseudo-inverse (row-major 7 x n, numpy's pinv:
 * V diag(1/s) U^T over the singular values above 1e-15 s_max), U of its
 * reduced SVD (column-major n x 7, columns past min(n, 7) zero) and the WLS
 * workspace size. */
static int setup(fit_ctx *c, const nd_gradients *g, double *x, double *pinv, double *u) {
  size_t n = g->n;
  c->min_diffusivity = ND_DTI_EVAL_TOL / design_matrix(g, x);
  double *a = nd_malloc(n * NCOEF * sizeof *a), *e = nd_calloc(n, sizeof *e), *work = NULL;
  double s[NCOEF], vt[NCOEF * NCOEF], q, col[NCOEF];
  lapack_int iwork[SVD_IWORK];
  int rc = ND_ENOMEM;
  if (!a || !e) goto done;
  memset(u, 0, n * NCOEF * sizeof *u);
  rc = ND_ESYS;
  if (svd7(n, a, s, u, vt, &q, -1, iwork)) goto done; /* workspace query */
  c->svd_lwork = (lapack_int)q + 1;
  rc = ND_ENOMEM;
  if (!(work = nd_malloc((size_t)c->svd_lwork * sizeof *work))) goto done;
  memcpy(a, x, n * NCOEF * sizeof *a);
  rc = ND_ESYS;
  if (svd7(n, a, s, u, vt, work, c->svd_lwork, iwork)) goto done;
  rc = 0;
  /* pinv(X) column by column of the identity, through the routine the WLS
   * fallback uses */
  for (size_t i = 0; i < n; i++) {
    e[i] = 1;
    pinv_apply(n, s, u, vt, e, col);
    e[i] = 0;
    for (int k = 0; k < NCOEF; k++) pinv[(size_t)k * n + i] = col[k];
  }
done:
  nd_free(work);
  nd_free(e);
  nd_free(a);
  if (rc == ND_ENOMEM) return nd__merr(rc, "dti: out of memory");
  if (rc) return nd__merr(rc, "dti: the SVD of the design matrix failed");
  return 0;
}

/* The per-fit tables of fit_ctx from x and u (column-major n x 7) and pinv
 * (row-major 7 x n), in tab (TABLE_SIZE(n, n2) doubles). */
#define TABLE_SIZE(n, n2) ((n) * (3 * NPAD + NTRI) + 2 * NCOEF * (n2))
static void tables(fit_ctx *c, const double *x, const double *pinv, const double *u,
                   double *tab) {
  size_t n = c->n, n2 = c->n2;
  double *pt = tab, *xr = pt + n * NPAD, *xx = xr + n * NPAD, *xc = xx + n * NTRI;
  double *ut = xc + NCOEF * n2, *uc = ut + n * NPAD;
  for (size_t i = 0; i < n; i++) {
    for (int k = 0; k < NPAD; k++) {
      pt[i * NPAD + k] = k < NCOEF ? pinv[(size_t)k * n + i] : 0;
      ut[i * NPAD + k] = k < NCOEF ? u[(size_t)k * n + i] : 0;
      xr[i * NPAD + k] = k < NCOEF ? x[(size_t)k * n + i] : 0;
    }
    for (int k = 0, p = 0; k < NCOEF; k++)
      for (int j = 0; j <= k; j++) xx[i * NTRI + p++] = x[(size_t)k * n + i] * x[(size_t)j * n + i];
  }
  for (int k = 0; k < NCOEF; k++)
    for (size_t i = 0; i < n2; i++) {
      xc[(size_t)k * n2 + i] = i < n ? x[(size_t)k * n + i] : 0;
      uc[(size_t)k * n2 + i] = i < n ? u[(size_t)k * n + i] : 0;
    }
  c->pt = pt;
  c->ut = ut;
  c->uc = uc;
  c->xr = xr;
  c->xx = xx;
  c->xc = xc;
}

static void slots_free(slot *s, size_t k) {
  for (size_t i = 0; s && i < k; i++) nd_free(s[i].mem);
  nd_free(s);
}

static int slots_new(fit_ctx *c) {
  size_t n = c->n, n2 = c->n2, per = n2;
  if (c->method == ND_DTI_WLS)
    per = 2 * n * NCOEF + NCOEF + NCOEF * NCOEF + (size_t)c->svd_lwork + 4 * n2;
  c->slots = nd_calloc(c->nslots, sizeof *c->slots);
  if (!c->slots) return nd__merr(ND_ENOMEM, "dti: out of memory");
  for (size_t i = 0; i < c->nslots; i++) {
    slot *s = &c->slots[i];
    atomic_init(&s->busy, 0);
    s->mem = nd_malloc(per * sizeof(double));
    if (!s->mem) {
      slots_free(c->slots, i);
      c->slots = NULL;
      return nd__merr(ND_ENOMEM, "dti: out of memory");
    }
    s->y = s->mem;
    if (c->method != ND_DTI_WLS) continue; /* OLS needs only y */
    s->w = s->y + n2;
    s->w2 = s->w + n2;
    s->wy = s->w2 + n2;
    s->a = s->wy + n2;
    s->u = s->a + n * NCOEF;
    s->s = s->u + n * NCOEF;
    s->vt = s->s + NCOEF;
    s->work = s->vt + NCOEF * NCOEF;
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
  fit_ctx c = {.n = nvol, .n2 = nvol + (nvol & 1), .signals = signals, .method = o->method,
               .out = out, .min_signal = o->min_signal > 0 ? o->min_signal : ND_DTI_MIN_SIGNAL};
  atomic_init(&c.failed, 0);
  c.nslots = (size_t)nd_pool_threads(pool) + 1;
  double *x = nd_malloc(nvol * NCOEF * sizeof *x), *pinv = nd_malloc(nvol * NCOEF * sizeof *pinv);
  double *u = nd_malloc(nvol * NCOEF * sizeof *u);
  double *tab = nd_malloc(TABLE_SIZE(nvol, c.n2) * sizeof *tab);
  if (!x || !pinv || !u || !tab) rc = nd__merr(ND_ENOMEM, "dti: out of memory");
  if (!rc) rc = setup(&c, g, x, pinv, u);
  c.x = x;
  if (!rc) tables(&c, x, pinv, u, tab);
  if (!rc) rc = slots_new(&c);
  if (!rc) rc = result_alloc(out, nvox);
  if (!rc && nvox > 0) {
    size_t nchunks = o->chunks ? o->chunks : ND_DEFAULT_CHUNKS;
    if (nchunks > nvox) nchunks = nvox; /* also keeps the division below from wrapping */
    size_t chunk = nvox / nchunks + (nvox % nchunks != 0);
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
  nd_free(pinv);
  nd_free(u);
  nd_free(tab);
  return rc;
}
