/* Ridge regression as scikit-learn 1.2 defines it: Ridge(alpha) and
 * RidgeCV(alphas) with fit_intercept=True. X and y are centred on the
 * training rows, the penalised problem is solved on the centred data (so the
 * intercept is not penalised) and the intercept is ybar - xbar . coef.
 *
 * How the path works. Let Z be the centred training matrix (n x p) and
 * d = min(n, p). The primal form (n >= p) solves (Z'Z + aI) b = Z'y, the
 * kernel form (n < p) solves (ZZ' + aI) c = y and takes b = Z'c: both are
 * (S + aI) x = r for one d x d symmetric S. A single Householder reduction
 * S = Q T Q' (dsytrd: a quarter of an eigendecomposition's work) turns every
 * alpha into a tridiagonal LDL' solve (T + aI) x~ = Q'r, O(d) per alpha.
 * Q is then applied once to all the alphas' x~ together (dormtr on a
 * d x nalpha block), and the predictions are one product with the test
 * rows. Applying Q on the alpha side rather than to the test matrix keeps
 * that cost independent of the number of test rows.
 *
 * RidgeCV's leave-one-out selection follows sklearn's _RidgeGCV: with the
 * intercept an unpenalised direction of the hat matrix, the LOO residual of
 * row i is (y_i - yhat_i) / (1 - h_ii - 1/n). For n > p it is computed from
 * the thin SVD of Z (sklearn's "svd" mode); for n <= p from the
 * eigendecomposition of ZZ' + 11' with the eigenvector most aligned with 1
 * given no shrinkage (sklearn's "eigen" mode and its intercept trick). */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

#include "models/fit_int.h"

/* Hand out consecutive pieces of a scratch block. */
static double *take(double **cur, size_t n) {
  double *p = *cur;
  *cur += n;
  return p;
}

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

/* Lanes of the finiteness scan: x * 0 is 0 for a finite x and NaN for
 * NaN/Inf, so summing it in independent lanes vectorises. */
#define ND__FINITE_LANES 8

static bool rows_finite(nd_matview X, const size_t *rows, size_t nrows) {
  double acc[ND__FINITE_LANES] = {0};
  size_t p = X.cols, pb = p - p % ND__FINITE_LANES;
  for (size_t r = 0; r < nrows; r++) {
    const double *row = X.data + (rows ? rows[r] : r) * X.ld;
    for (size_t j = 0; j < pb; j += ND__FINITE_LANES)
      for (size_t k = 0; k < ND__FINITE_LANES; k++) acc[k] += row[j + k] * 0.0;
    for (size_t j = pb; j < p; j++) acc[0] += row[j] * 0.0;
  }
  double t = 0;
  for (size_t k = 0; k < ND__FINITE_LANES; k++) t += acc[k];
  return t == 0;
}

int nd__check_finite_rows(nd_matview X, const size_t *rows, size_t nrows, const char *what) {
  if (rows_finite(X, rows, nrows)) return 0;
  for (size_t r = 0; r < nrows; r++) {
    size_t i = rows ? rows[r] : r;
    const double *row = X.data + i * X.ld;
    for (size_t j = 0; j < X.cols; j++)
      if (!isfinite(row[j]))
        return nd__merr(ND_EINVAL, "%s row %zu column %zu is not finite (%g)", what, i, j,
                        row[j]);
  }
  return 0;
}

static int check_finite_vec(const double *v, size_t n, const char *what) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(v[i]))
      return nd__merr(ND_EINVAL, "%s[%zu] is not finite (%g)", what, i, v[i]);
  return 0;
}

static int check_alphas(const char *fn, const double *alphas, size_t nalpha) {
  if (!alphas || nalpha == 0) return nd__merr(ND_EINVAL, "%s: no alphas", fn);
  for (size_t a = 0; a < nalpha; a++)
    if (!(alphas[a] > 0) || !isfinite(alphas[a]))
      return nd__merr(ND_EINVAL, "%s: alphas[%zu] = %g is not a finite value > 0", fn, a,
                      alphas[a]);
  return 0;
}

/* Shape checks shared by the public entry points. */
static int check_matrix(const char *fn, nd_matview X, const char *what) {
  if (!X.data && X.rows > 0) return nd__merr(ND_EINVAL, "%s: %s is NULL", fn, what);
  if (X.cols == 0) return nd__merr(ND_EINVAL, "%s: %s has no columns", fn, what);
  if (X.ld < X.cols)
    return nd__merr(ND_EINVAL, "%s: %s leading dimension %zu < %zu columns", fn, what, X.ld,
                    X.cols);
  if (X.rows > ND__FIT_DIM_MAX || X.cols > ND__FIT_DIM_MAX || X.ld > ND__FIT_DIM_MAX)
    return nd__merr(ND_EOVERFLOW, "%s: %s is too large", fn, what);
  size_t n;
  if (!nd__mul_size(X.rows, X.ld, &n)) return nd__merr(ND_EOVERFLOW, "%s: %s too large", fn, what);
  return 0;
}

/* Copy X's rows into contiguous n x p storage from nd_malloc. */
static double *copy_rows(nd_matview X, size_t extra) {
  size_t n, tot;
  if (!nd__mul_size(X.rows, X.cols, &n) || !nd__add_size(n, extra, &tot) ||
      !nd__mul_size(tot, sizeof(double), &tot))
    return NULL;
  double *Z = nd_malloc(tot ? tot : 1);
  if (!Z) return NULL;
  for (size_t i = 0; i < X.rows; i++)
    memcpy(Z + i * X.cols, X.data + i * X.ld, X.cols * sizeof *Z);
  return Z;
}

/* Centre Z's columns in place (xbar gets the means; 0 when the caller has
 * centred them already) and y into yc; returns the mean of y. */
static double centre(double *Z, size_t n, size_t p, bool centred, const double *y,
                     double *xbar, double *yc) {
  memset(xbar, 0, p * sizeof *xbar);
  for (size_t i = 0; i < n && !centred; i++) {
    const double *row = Z + i * p;
    for (size_t j = 0; j < p; j++) xbar[j] += row[j];
  }
  for (size_t j = 0; j < p; j++) xbar[j] /= (double)n;
  for (size_t i = 0; i < n && !centred; i++) {
    double *row = Z + i * p;
    for (size_t j = 0; j < p; j++) row[j] -= xbar[j];
  }
  double ybar = 0;
  for (size_t i = 0; i < n; i++) ybar += y[i];
  ybar /= (double)n;
  for (size_t i = 0; i < n; i++) yc[i] = y[i] - ybar;
  return ybar;
}

/* S = Z'Z (primal, d = p) or ZZ' (kernel, d = n), lower triangle,
 * column-major (S is symmetric, so row- and column-major agree). */
static void gram(const double *Z, size_t n, size_t p, bool kernel, double *S) {
  if (kernel)
    cblas_dsyrk(CblasColMajor, CblasLower, CblasTrans, (int)n, (int)p, 1.0, Z, (int)p, 0.0,
                S, (int)n);
  else
    cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, (int)p, (int)n, 1.0, Z, (int)p, 0.0,
                S, (int)p);
}

/* The right-hand side r of (S + aI) x = r: yc (kernel) or Z'yc (primal). */
static void gram_rhs(const double *Z, size_t n, size_t p, bool kernel, const double *yc,
                     double *r) {
  if (kernel)
    memcpy(r, yc, n * sizeof *r);
  else /* Z row-major n x p is column-major p x n */
    cblas_dgemv(CblasColMajor, CblasNoTrans, (int)p, (int)n, 1.0, Z, (int)p, yc, 1, 0.0, r, 1);
}

/* The LAPACK workspace (doubles) of dsytrd on d x d and dormtr on a
 * d x nrhs block, from their workspace queries. */
static size_t lapack_work(size_t d, size_t nrhs) {
  double q1 = 0, q2 = 0, dummy = 0;
  lapack_int di = (lapack_int)d;
  LAPACKE_dsytrd_work(LAPACK_COL_MAJOR, 'L', di, &dummy, di, &dummy, &dummy, &dummy, &q1, -1);
  LAPACKE_dormtr_work(LAPACK_COL_MAJOR, 'L', 'L', 'N', di, (lapack_int)nrhs, &dummy, di,
                      &dummy, &dummy, di, &q2, -1);
  double q = q1 > q2 ? q1 : q2;
  return q > 1 ? (size_t)q : 1;
}

size_t nd__ridge_work(size_t n, size_t p, size_t nalpha) {
  size_t d = min_size(n, p);
  if (d == 0 || d > ND__FIT_DIM_MAX || nalpha > ND__FIT_DIM_MAX) return 0;
  /* S, then tau, dg, off, piv, l, rhs (d each), yc (n), xbar (p), the alphas'
   * solutions (nalpha x d) and coefficients (nalpha x p), intercepts. */
  size_t sq, xs, bs, tot = 0;
  if (!nd__mul_size(d, d, &sq) || !nd__mul_size(nalpha, d, &xs) ||
      !nd__mul_size(nalpha, p, &bs))
    return 0;
  size_t parts[] = {sq, 6 * d, n, p, xs, bs, nalpha, lapack_work(d, nalpha)};
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
    if (!nd__add_size(tot, parts[i], &tot)) return 0;
  return tot;
}

/* Solve (T + alpha I) x = r for the symmetric tridiagonal T (diagonal dg,
 * off-diagonal off) by LDL' as dpttrf/dpttrs do; piv and l are d scratch.
 * -1 when a pivot is not positive (T + alpha I numerically singular). */
static int tridiag_solve(const double *dg, const double *off, size_t d, double alpha,
                         const double *r, double *x, double *piv, double *l) {
  piv[0] = dg[0] + alpha;
  if (!(piv[0] > 0)) return -1;
  x[0] = r[0];
  for (size_t i = 1; i < d; i++) {
    l[i - 1] = off[i - 1] / piv[i - 1];
    piv[i] = dg[i] + alpha - l[i - 1] * off[i - 1];
    if (!(piv[i] > 0)) return -1;
    x[i] = r[i] - l[i - 1] * x[i - 1];
  }
  x[d - 1] /= piv[d - 1];
  for (size_t i = d - 1; i-- > 0;) x[i] = x[i] / piv[i] - l[i] * x[i + 1];
  return 0;
}

static int singular(double alpha) {
  return nd__merr(ND_ERANGE,
                  "ridge: the system for alpha = %g is numerically singular (alpha too small "
                  "for this data)",
                  alpha);
}

/* pred[a * m + i] = Xte_i . B_a + ybar - xbar . B_a for the nalpha x p
 * coefficient rows B (sklearn's predict: X coef + intercept). */
static void predict_rows(const double *B, size_t nalpha, size_t p, const double *xbar,
                         double ybar, const double *Xte, size_t ldte, size_t m, double *icpt,
                         double *pred) {
  if (m == 0) return;
  cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)nalpha, (int)p, 1.0, B, (int)p, xbar, 1, 0.0,
              icpt, 1);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nalpha, (int)m, (int)p, 1.0, B,
              (int)p, Xte, (int)ldte, 0.0, pred, (int)m);
  for (size_t a = 0; a < nalpha; a++) {
    double c = ybar - icpt[a];
    double *row = pred + a * m;
    for (size_t i = 0; i < m; i++) row[i] += c;
  }
}

int nd__ridge_path_ws(double *Z, size_t n, size_t p, bool centred, const double *y,
                      const double *Xte, size_t ldte, size_t m, const double *alphas,
                      size_t nalpha, double *pred, double *work) {
  size_t d = min_size(n, p);
  bool kernel = n < p;
  double *cur = work;
  double *S = take(&cur, d * d), *tau = take(&cur, d), *dg = take(&cur, d);
  double *off = take(&cur, d), *piv = take(&cur, d), *l = take(&cur, d);
  double *rhs = take(&cur, d), *yc = take(&cur, n), *xbar = take(&cur, p);
  double *Xs = take(&cur, nalpha * d), *Bs = take(&cur, nalpha * p);
  double *icpt = take(&cur, nalpha);
  size_t lwork = lapack_work(d, nalpha);
  double *lw = take(&cur, lwork);
  lapack_int di = (lapack_int)d, nlw = (lapack_int)lwork;

  double ybar = centre(Z, n, p, centred, y, xbar, yc);
  gram(Z, n, p, kernel, S);
  gram_rhs(Z, n, p, kernel, yc, rhs);
  /* S = Q T Q'; rhs <- Q' rhs. */
  lapack_int info = LAPACKE_dsytrd_work(LAPACK_COL_MAJOR, 'L', di, S, di, dg, off, tau, lw, nlw);
  if (info == 0)
    info = LAPACKE_dormtr_work(LAPACK_COL_MAJOR, 'L', 'L', 'T', di, 1, S, di, tau, rhs, di, lw,
                               nlw);
  if (info != 0)
    return nd__merr(ND_ERANGE, "ridge: LAPACK tridiagonal reduction failed (%d)", (int)info);
  /* Column a of the column-major d x nalpha block Xs is alpha a's solution
   * in the tridiagonal basis; one dormtr maps them all back. */
  for (size_t a = 0; a < nalpha; a++)
    if (tridiag_solve(dg, off, d, alphas[a], rhs, Xs + a * d, piv, l) != 0)
      return singular(alphas[a]);
  info = LAPACKE_dormtr_work(LAPACK_COL_MAJOR, 'L', 'L', 'N', di, (lapack_int)nalpha, S, di,
                             tau, Xs, di, lw, nlw);
  if (info != 0) return nd__merr(ND_ERANGE, "ridge: LAPACK dormtr failed (%d)", (int)info);
  const double *B = Xs; /* primal: the rows of Xs are the coefficients */
  if (kernel) {         /* dual coefficients c_a (rows of Xs): b_a = Z'c_a */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nalpha, (int)p, (int)n, 1.0,
                Xs, (int)n, Z, (int)p, 0.0, Bs, (int)p);
    B = Bs;
  }
  predict_rows(B, nalpha, p, xbar, ybar, Xte, ldte, m, icpt, pred);
  return 0;
}

int nd__ridge_fit_ws(double *Z, size_t n, size_t p, bool centred, const double *y,
                     double alpha, double *coef, double *intercept, double *work) {
  size_t d = min_size(n, p);
  bool kernel = n < p;
  double *cur = work;
  double *S = take(&cur, d * d), *rhs = take(&cur, d), *yc = take(&cur, n);
  double *xbar = take(&cur, p);
  lapack_int di = (lapack_int)d;

  double ybar = centre(Z, n, p, centred, y, xbar, yc);
  gram(Z, n, p, kernel, S);
  for (size_t i = 0; i < d; i++) S[i * d + i] += alpha;
  gram_rhs(Z, n, p, kernel, yc, rhs);
  if (LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', di, S, di) != 0) return singular(alpha);
  LAPACKE_dpotrs_work(LAPACK_COL_MAJOR, 'L', di, 1, S, di, rhs, di);
  if (kernel)
    cblas_dgemv(CblasColMajor, CblasNoTrans, (int)p, (int)n, 1.0, Z, (int)p, rhs, 1, 0.0, coef,
                1);
  else
    memcpy(coef, rhs, p * sizeof *coef);
  *intercept = ybar - cblas_ddot((int)p, xbar, 1, coef, 1);
  return 0;
}

/* Checks shared by nd_ridge_fit and nd_ridgecv_fit. */
static int check_fit_args(const char *fn, nd_matview X, const double *y, double *coef,
                          double *intercept) {
  int rc = check_matrix(fn, X, "X");
  if (rc) return rc;
  if (X.rows == 0) return nd__merr(ND_EINVAL, "%s: no training rows", fn);
  if (!y || !coef || !intercept) return nd__merr(ND_EINVAL, "%s: NULL argument", fn);
  if ((rc = nd__check_finite_rows(X, NULL, X.rows, "X")) != 0) return rc;
  return check_finite_vec(y, X.rows, "y");
}

int nd_ridge_path(nd_matview Xtr, const double *ytr, nd_matview Xte, const double *alphas,
                  size_t nalpha, double *pred) {
  static const char fn[] = "nd_ridge_path";
  int rc = check_matrix(fn, Xtr, "Xtr");
  if (!rc) rc = check_matrix(fn, Xte, "Xte");
  if (!rc) rc = check_alphas(fn, alphas, nalpha);
  if (rc) return rc;
  if (Xtr.rows == 0) return nd__merr(ND_EINVAL, "%s: no training rows", fn);
  if (Xte.cols != Xtr.cols)
    return nd__merr(ND_EINVAL, "%s: Xte has %zu columns, Xtr %zu", fn, Xte.cols, Xtr.cols);
  if (!ytr || (!pred && Xte.rows > 0)) return nd__merr(ND_EINVAL, "%s: NULL argument", fn);
  if ((rc = nd__check_finite_rows(Xtr, NULL, Xtr.rows, "Xtr")) != 0 ||
      (rc = check_finite_vec(ytr, Xtr.rows, "y")) != 0 ||
      (rc = nd__check_finite_rows(Xte, NULL, Xte.rows, "Xte")) != 0)
    return rc;
  size_t nw = nd__ridge_work(Xtr.rows, Xtr.cols, nalpha);
  double *Z = nw ? copy_rows(Xtr, nw) : NULL;
  if (!Z) return nd__merr(ND_ENOMEM, "%s: out of memory", fn);
  rc = nd__ridge_path_ws(Z, Xtr.rows, Xtr.cols, false, ytr, Xte.data, Xte.ld, Xte.rows, alphas,
                         nalpha, pred, Z + Xtr.rows * Xtr.cols);
  nd_free(Z);
  return rc;
}

int nd_ridge_fit(nd_matview X, const double *y, double alpha, double *coef,
                 double *intercept) {
  static const char fn[] = "nd_ridge_fit";
  int rc = check_fit_args(fn, X, y, coef, intercept);
  if (!rc) rc = check_alphas(fn, &alpha, 1);
  if (rc) return rc;
  size_t nw = nd__ridge_work(X.rows, X.cols, 1);
  double *Z = nw ? copy_rows(X, nw) : NULL;
  if (!Z) return nd__merr(ND_ENOMEM, "%s: out of memory", fn);
  rc = nd__ridge_fit_ws(Z, X.rows, X.cols, false, y, alpha, coef, intercept, Z + X.rows * X.cols);
  nd_free(Z);
  return rc;
}

/* ---------------------------------------------------------------- RidgeCV */

/* The decomposition RidgeCV scores every alpha from. SVD mode (n > p):
 * Z = U diag(sqrt(s)) V' thin, U n x r with r = p. Eigen mode (n <= p):
 * ZZ' + 11' = U diag(s) U' with r = n, and column icol of U, the one most
 * aligned with 1 (the intercept's direction), left unshrunk. U is row-major
 * n x r in both; s holds squared singular values or eigenvalues. */
typedef struct gcv {
  size_t n, p, r;
  bool svd;
  double *U, *s, *VT, *uty, *yc, *c, *wt;
  size_t icol;
} gcv;

static int gcv_decompose(gcv *g, double *Z) {
  size_t n = g->n, p = g->p;
  if (g->svd) { /* destroys Z; the coefficients come from V */
    lapack_int info =
        LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'S', 'S', (lapack_int)n, (lapack_int)p, Z,
                       (lapack_int)p, g->s, g->U, (lapack_int)p, g->VT, (lapack_int)p, g->c);
    if (info != 0) return nd__merr(ND_ERANGE, "nd_ridgecv_fit: the SVD did not converge");
    for (size_t j = 0; j < p; j++) g->s[j] *= g->s[j];
  } else {
    /* K = ZZ' + 11' in U (symmetric: the column-major lower triangle). */
    cblas_dsyrk(CblasColMajor, CblasLower, CblasTrans, (int)n, (int)p, 1.0, Z, (int)p, 0.0,
                g->U, (int)n);
    for (size_t j = 0; j < n; j++)
      for (size_t i = j; i < n; i++) g->U[j * n + i] += 1.0;
    lapack_int info =
        LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', (lapack_int)n, g->U, (lapack_int)n, g->s);
    if (info != 0)
      return nd__merr(ND_ERANGE, "nd_ridgecv_fit: the eigensolver did not converge");
    for (size_t i = 0; i < n; i++) /* column-major eigenvectors -> row-major U */
      for (size_t j = i + 1; j < n; j++) {
        double t = g->U[i * n + j];
        g->U[i * n + j] = g->U[j * n + i];
        g->U[j * n + i] = t;
      }
    /* sklearn's _find_smallest_angle: argmax |1'u_j| (the first on ties). */
    double best = -1;
    for (size_t j = 0; j < n; j++) g->wt[j] = 0;
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < n; j++) g->wt[j] += g->U[i * n + j];
    for (size_t j = 0; j < n; j++)
      if (fabs(g->wt[j]) > best) best = fabs(g->wt[j]), g->icol = j;
  }
  cblas_dgemv(CblasRowMajor, CblasTrans, (int)n, (int)g->r, 1.0, g->U, (int)g->r, g->yc, 1,
              0.0, g->uty, 1);
  return 0;
}

/* Mean squared leave-one-out error for alpha. SVD mode: with the hat
 * matrix H = U diag(s/(s+a)) U' of the centred problem plus 11'/n for the
 * intercept, e_i = (y_i - yhat_i) / (1 - h_ii - 1/n). Eigen mode: sklearn's
 * c = G^-1 y and e_i = c_i / (G^-1)_ii, G^-1 = U diag(w) U' with
 * w = 1/(s+a) and w[icol] = 0; c is left in g->c for the coefficients. */
static double gcv_mse(gcv *g, double alpha) {
  size_t n = g->n, r = g->r;
  double sum = 0, *wt = g->wt;
  if (g->svd) {
    for (size_t j = 0; j < r; j++) wt[j] = g->s[j] / (g->s[j] + alpha);
    for (size_t i = 0; i < n; i++) {
      const double *u = g->U + i * r;
      double h = 0, yhat = 0;
      for (size_t j = 0; j < r; j++) {
        h += u[j] * u[j] * wt[j];
        yhat += u[j] * wt[j] * g->uty[j];
      }
      double e = (g->yc[i] - yhat) / (1.0 - h - 1.0 / (double)n);
      sum += e * e;
    }
  } else {
    for (size_t j = 0; j < r; j++) wt[j] = j == g->icol ? 0.0 : 1.0 / (g->s[j] + alpha);
    for (size_t i = 0; i < n; i++) {
      const double *u = g->U + i * r;
      double c = 0, gi = 0;
      for (size_t j = 0; j < r; j++) {
        c += u[j] * wt[j] * g->uty[j];
        gi += u[j] * u[j] * wt[j];
      }
      g->c[i] = c;
      double e = c / gi;
      sum += e * e;
    }
  }
  return sum / (double)n;
}

/* The coefficients for alpha: V diag(sqrt(s)/(s+a)) U'y (SVD mode) or Z'c
 * (eigen mode, Z the centred X). */
static void gcv_coef(gcv *g, const double *Z, double alpha, double *coef) {
  size_t p = g->p;
  if (g->svd) {
    for (size_t j = 0; j < g->r; j++)
      g->wt[j] = sqrt(g->s[j]) / (g->s[j] + alpha) * g->uty[j];
    cblas_dgemv(CblasRowMajor, CblasTrans, (int)g->r, (int)p, 1.0, g->VT, (int)p, g->wt, 1,
                0.0, coef, 1);
  } else {
    gcv_mse(g, alpha);
    cblas_dgemv(CblasRowMajor, CblasTrans, (int)g->n, (int)p, 1.0, Z, (int)p, g->c, 1, 0.0,
                coef, 1);
  }
}

int nd_ridgecv_fit(nd_matview X, const double *y, const double *alphas, size_t nalpha,
                   double *coef, double *intercept, size_t *best) {
  static const char fn[] = "nd_ridgecv_fit";
  int rc = check_fit_args(fn, X, y, coef, intercept);
  if (!rc) rc = check_alphas(fn, alphas, nalpha);
  if (rc) return rc;
  size_t n = X.rows, p = X.cols;
  gcv g = {.n = n, .p = p, .svd = n > p, .r = n > p ? p : n};
  /* After Z: U (n x r), s, uty, wt (r each), VT (p x p, SVD mode only, where
   * p < n), yc, c (n each), xbar. */
  size_t nu, pp = 0, extra;
  if (!nd__mul_size(n, g.r, &nu) || (g.svd && !nd__mul_size(p, p, &pp)) ||
      !nd__add_size(nu, pp, &extra) || !nd__add_size(extra, 3 * g.r + 2 * n + p, &extra))
    return nd__merr(ND_EOVERFLOW, "%s: too large", fn);
  double *Z = copy_rows(X, extra);
  if (!Z) return nd__merr(ND_ENOMEM, "%s: out of memory", fn);
  double *cur = Z + n * p;
  g.U = take(&cur, nu);
  g.s = take(&cur, g.r);
  g.uty = take(&cur, g.r);
  g.wt = take(&cur, g.r);
  g.VT = take(&cur, pp);
  g.yc = take(&cur, n);
  g.c = take(&cur, n);
  double *xbar = take(&cur, p);
  double ybar = centre(Z, n, p, false, y, xbar, g.yc);
  rc = gcv_decompose(&g, Z);
  if (rc == 0) {
    /* sklearn keeps the first alpha and replaces it only by a strictly
     * better score (-mse): ties go to the first, and a NaN never wins. */
    size_t ib = 0;
    double best_score = -gcv_mse(&g, alphas[0]);
    for (size_t a = 1; a < nalpha; a++) {
      double score = -gcv_mse(&g, alphas[a]);
      if (score > best_score) best_score = score, ib = a;
    }
    gcv_coef(&g, Z, alphas[ib], coef);
    *intercept = ybar - cblas_ddot((int)p, xbar, 1, coef, 1);
    if (best) *best = ib;
  }
  nd_free(Z);
  return rc;
}
