/* L2-penalised binary logistic regression with an unpenalised intercept: the
 * optimum of scikit-learn's LogisticRegression(C, penalty="l2"),
 *   f(w, b) = C * sum_i [log(1 + exp(z_i)) - y_i z_i] + ||w||^2 / 2,
 *   z_i = x_i . w + b.
 * f is strictly convex (the penalty covers w, the data the intercept), so
 * Newton's method converges to the unique optimum quadratically. Each step
 * solves (C X~' S X~ + diag(1, .., 1, 0)) d = -g by Cholesky, X~ = [X 1] and
 * S = diag(p_i (1 - p_i)), and a backtracking (Armijo) line search keeps the
 * first steps from overshooting. When n < p the same step comes from the
 * n x n Gram XX' (computed once per fit, or once per fold by a search) by
 * the Woodbury identity, with the intercept decoupled by a weighted centring
 * (newton_dual): an iteration then costs an n x n Cholesky instead of a
 * (p+1) x (p+1) one and never forms X'SX.
 *
 * Stopping on the gradient makes the result independent of the path: any
 * start ends within the tolerance of the same optimum. The line search
 * compares objective changes computed term by term (objective_change), not
 * two values of f, so it still sees the decrease of the last steps, which
 * is far below the rounding of f. log(1 + exp(z)) and the sigmoid are
 * evaluated in forms that neither overflow nor cancel. */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

#include "models/fit_int.h"

#define ND__ARMIJO_C1 1e-4  /* sufficient decrease */
#define ND__MAX_HALVINGS 60 /* line-search steps before giving up */

/* log(1 + exp(z)) */
static double softplus(double z) { return z > 0 ? z + log1p(exp(-z)) : log1p(exp(z)); }

static double sigmoid(double z) {
  if (z >= 0) return 1.0 / (1.0 + exp(-z));
  double e = exp(z);
  return e / (1.0 + e);
}

/* softplus(z + d) - softplus(z). For small d as log1p(sigmoid(z) expm1(d)),
 * which keeps its relative accuracy where the plain difference cancels. */
static double softplus_change(double z, double d) {
  if (fabs(d) > 1.0) return softplus(z + d) - softplus(z);
  return log1p(sigmoid(z) * expm1(d));
}

/* f(w + t dw, b + t db) - f(w, b), summed term by term: near the optimum
 * the change falls far below the rounding of f itself, and a line search
 * comparing two values of f would only see noise. u = X dw + db,
 * wd = w.dw, dd = dw.dw. */
static double objective_change(const double *z, const double *u, const double *y, size_t n,
                               double C, double t, double wd, double dd) {
  double s = 0;
  for (size_t i = 0; i < n; i++) {
    double d = t * u[i];
    s += softplus_change(z[i], d) - y[i] * d;
  }
  return C * s + t * wd + 0.5 * t * t * dd;
}

bool nd__logistic_dual(size_t n, size_t p) { return n < p; }

void nd__logistic_gram(nd_matview X, double *K) {
  cblas_dsyrk(CblasColMajor, CblasLower, CblasTrans, (int)X.rows, (int)X.cols, 1.0, X.data,
              (int)X.ld, 0.0, K, (int)X.rows);
}

/* Common: z, r, s, u (n each), g, step (q each). Primal steps: H (q x q)
 * and the weighted rows (n x q). Dual steps: M (m x m, m = min(n, p), as
 * they run only when n < p) and five vectors. */
size_t nd__logistic_work(size_t n, size_t p) {
  size_t q = p + 1, m = n < p ? n : p, qq, nq, mm, prim, dual, tot;
  if (p > ND__FIT_DIM_MAX - 1 || n > ND__FIT_DIM_MAX || !nd__mul_size(q, q, &qq) ||
      !nd__mul_size(n, q, &nq) || !nd__mul_size(m, m, &mm) || !nd__add_size(qq, nq, &prim) ||
      !nd__add_size(mm, 3 * n + 2 * p, &dual) ||
      !nd__add_size(prim > dual ? prim : dual, 4 * n + 2 * q, &tot))
    return 0;
  return tot;
}

/* z = X w + b */
static void linear(nd_matview X, const double *w, double b, double *z) {
  cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)X.rows, (int)X.cols, 1.0, X.data, (int)X.ld, w,
              1, 0.0, z, 1);
  for (size_t i = 0; i < X.rows; i++) z[i] += b;
}

/* g = (C X'r + w, C sum r) with r = sigmoid(z) - y; s gets sigmoid'(z).
 * Returns max |g|. */
static double gradient(nd_matview X, const double *y, double C, const double *w,
                       const double *z, double *r, double *s, double *g) {
  size_t n = X.rows, p = X.cols;
  double gb = 0;
  for (size_t i = 0; i < n; i++) {
    double e = exp(-fabs(z[i])), den = 1.0 + e;
    r[i] = sigmoid(z[i]) - y[i];
    s[i] = e / (den * den);
    gb += r[i];
  }
  memcpy(g, w, p * sizeof *g);
  cblas_dgemv(CblasRowMajor, CblasTrans, (int)n, (int)p, C, X.data, (int)X.ld, r, 1, 1.0, g, 1);
  g[p] = C * gb;
  double m = 0;
  for (size_t j = 0; j <= p; j++) m = fmax(m, fabs(g[j]));
  return m;
}

/* The primal Newton direction: step = -H^-1 g with H = C X~'SX~ + diag(1..1, 0)
 * built in H (q x q) from the weighted rows in W (n x q). -1 if H is not
 * numerically positive definite. */
static int newton_primal(nd_matview X, double C, const double *s, const double *g, double *W,
                         double *H, double *step) {
  size_t n = X.rows, p = X.cols, q = p + 1;
  for (size_t i = 0; i < n; i++) {
    double f = sqrt(C * s[i]);
    const double *x = X.data + i * X.ld;
    double *row = W + i * q;
    for (size_t j = 0; j < p; j++) row[j] = f * x[j];
    row[p] = f;
  }
  /* W row-major n x q is column-major q x n: H = W'W, lower triangle. */
  cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, (int)q, (int)n, 1.0, W, (int)q, 0.0, H,
              (int)q);
  for (size_t j = 0; j < p; j++) H[j * q + j] += 1.0;
  for (size_t j = 0; j < q; j++) step[j] = -g[j];
  if (LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', (lapack_int)q, H, (lapack_int)q) != 0)
    return -1;
  LAPACKE_dpotrs_work(LAPACK_COL_MAJOR, 'L', (lapack_int)q, 1, H, (lapack_int)q, step,
                      (lapack_int)q);
  return 0;
}

/* The Newton direction when n < p, from the n x n Gram K = XX' (lower
 * triangle) instead of the q x q Hessian. Newton's direction does not
 * depend on the parametrisation, so it is taken in (w, b') with
 * b = b' - m.w and m = X's / sum(s), the s-weighted column means: there
 * z = Xc w + b' with Xc = X - 1m', Xc's = 0, and the Hessian is
 * block-diagonal: C sum(s) for b', A = I + C Xc'S Xc for w. A^-1 comes from
 * Woodbury with M = I + C S^1/2 Kc S^1/2, Kc = Xc Xc' = K - v1' - 1v' +
 * (m.m)11' and v = Xm. Without the change of variables the intercept's
 * Schur complement, C sum(s) - C^2 s'X A^-1 X's, cancels badly for large C
 * on uncentred data. M and the vectors live in V. */
static int newton_dual(nd_matview X, double C, const double *K, const double *s,
                       const double *g, double *V, double *step) {
  size_t n = X.rows, p = X.cols;
  double *M = V, *ss = M + n * n, *t = ss + n, *v = t + n, *m = v + n, *gw = m + p;
  double ssum = 0;
  for (size_t i = 0; i < n; i++) ss[i] = sqrt(s[i]), ssum += s[i];
  if (!(ssum > 0)) return -1;
  cblas_dgemv(CblasRowMajor, CblasTrans, (int)n, (int)p, 1.0 / ssum, X.data, (int)X.ld, s, 1,
              0.0, m, 1);
  cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)p, 1.0, X.data, (int)X.ld, m, 1, 0.0, v,
              1);
  double mm = cblas_ddot((int)p, m, 1, m, 1);
  for (size_t k = 0; k < n; k++)
    for (size_t i = k; i < n; i++)
      M[k * n + i] = C * ss[i] * ss[k] * (K[k * n + i] - v[i] - v[k] + mm) + (i == k ? 1.0 : 0.0);
  if (LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', (lapack_int)n, M, (lapack_int)n) != 0)
    return -1;
  /* The w-gradient at fixed b': C Xc'r + w = g_w - m g_b. */
  for (size_t j = 0; j < p; j++) gw[j] = g[j] - m[j] * g[p];
  /* t = S^1/2 M^-1 S^1/2 Xc gw, then dw = -(gw - C Xc't). */
  cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)p, 1.0, X.data, (int)X.ld, gw, 1, 0.0,
              t, 1);
  double mg = cblas_ddot((int)p, m, 1, gw, 1);
  for (size_t i = 0; i < n; i++) t[i] = (t[i] - mg) * ss[i];
  LAPACKE_dpotrs_work(LAPACK_COL_MAJOR, 'L', (lapack_int)n, 1, M, (lapack_int)n, t,
                      (lapack_int)n);
  double tsum = 0;
  for (size_t i = 0; i < n; i++) t[i] *= ss[i], tsum += t[i];
  for (size_t j = 0; j < p; j++) step[j] = -gw[j] - C * tsum * m[j];
  cblas_dgemv(CblasRowMajor, CblasTrans, (int)n, (int)p, C, X.data, (int)X.ld, t, 1, 1.0, step,
              1);
  /* db' = -g_b / (C sum s), and db = db' - m.dw. */
  step[p] = -g[p] / (C * ssum) - cblas_ddot((int)p, m, 1, step, 1);
  return 0;
}

int nd__logistic_fit_ws(nd_matview X, const double *y, double C, double tol,
                        uint32_t max_iter, const double *K, double *coef, double *intercept,
                        double *work) {
  size_t n = X.rows, p = X.cols, q = p + 1;
  if (tol == 0) tol = ND__LOGISTIC_DEFAULT_TOL;
  if (max_iter == 0) max_iter = ND__LOGISTIC_DEFAULT_MAX_ITER;
  double *z = work, *r = z + n, *s = r + n, *u = s + n;
  double *g = u + n, *step = g + q, *H = step + q, *W = H + q * q;
  double *w = coef, b = 0;
  memset(w, 0, p * sizeof *w);
  double thr = tol * fmax(1.0, C * (double)n);
  linear(X, w, b, z);
  for (uint32_t it = 0;; it++) {
    double gmax = gradient(X, y, C, w, z, r, s, g);
    if (gmax <= thr) break;
    if (it == max_iter)
      return nd__merr(ND_ERANGE,
                      "logistic: did not converge in %u iterations (C = %g, largest gradient "
                      "%g > %g)",
                      (unsigned)max_iter, C, gmax, thr);
    int bad = K ? newton_dual(X, C, K, s, g, H, step) : newton_primal(X, C, s, g, W, H, step);
    if (bad)
      return nd__merr(ND_ERANGE,
                      "logistic: the Newton system is singular at iteration %u (C = %g; "
                      "separable data with a large C?)",
                      (unsigned)it, C);
    /* Along the step z moves by u = X dw + db. */
    linear(X, step, step[p], u);
    double slope = cblas_ddot((int)q, g, 1, step, 1);
    double wd = cblas_ddot((int)p, w, 1, step, 1), dd = cblas_ddot((int)p, step, 1, step, 1);
    double t = 1.0;
    int h = 0;
    for (; h < ND__MAX_HALVINGS; h++, t *= 0.5)
      if (objective_change(z, u, y, n, C, t, wd, dd) <= ND__ARMIJO_C1 * t * slope) break;
    if (h == ND__MAX_HALVINGS)
      return nd__merr(ND_ERANGE,
                      "logistic: the line search failed at iteration %u (C = %g, largest "
                      "gradient %g > %g)",
                      (unsigned)it, C, gmax, thr);
    cblas_daxpy((int)p, t, step, 1, w, 1);
    b += t * step[p];
    linear(X, w, b, z); /* recomputed rather than updated, so no drift */
  }
  *intercept = b;
  return 0;
}

int nd_logistic_fit(nd_matview X, const double *y, double C, double tol, uint32_t max_iter,
                    double *coef, double *intercept) {
  static const char fn[] = "nd_logistic_fit";
  if (!X.data || !y || !coef || !intercept) return nd__merr(ND_EINVAL, "%s: NULL argument", fn);
  if (X.rows == 0 || X.cols == 0) return nd__merr(ND_EINVAL, "%s: empty X", fn);
  if (X.ld < X.cols)
    return nd__merr(ND_EINVAL, "%s: leading dimension %zu < %zu columns", fn, X.ld, X.cols);
  if (X.ld > ND__FIT_DIM_MAX) /* BLAS takes it as an int */
    return nd__merr(ND_EOVERFLOW, "%s: leading dimension %zu is too large", fn, X.ld);
  if (!(C > 0) || !isfinite(C))
    return nd__merr(ND_EINVAL, "%s: C = %g is not a finite value > 0", fn, C);
  if (!(tol >= 0) || !isfinite(tol))
    return nd__merr(ND_EINVAL, "%s: tol = %g is not a finite value >= 0", fn, tol);
  int rc = nd__check_finite_rows(X, NULL, X.rows, "X");
  if (rc) return rc;
  size_t ones = 0;
  for (size_t i = 0; i < X.rows; i++) {
    if (y[i] != 0.0 && y[i] != 1.0)
      return nd__merr(ND_EINVAL, "%s: y[%zu] = %g is not 0/1", fn, i, y[i]);
    ones += y[i] == 1.0;
  }
  if (ones == 0 || ones == X.rows)
    return nd__merr(ND_EINVAL, "%s: a single class (all %d) in the training rows", fn,
                    ones ? 1 : 0);
  size_t n = X.rows, nw = nd__logistic_work(n, X.cols), nk = 0, bytes;
  if (nd__logistic_dual(n, X.cols)) nk = n * n; /* < n * p: no overflow */
  if (nw == 0 || !nd__add_size(nw, nk, &nw) || !nd__mul_size(nw, sizeof(double), &bytes))
    return nd__merr(ND_EOVERFLOW, "%s: too large", fn);
  double *work = nd_malloc(bytes);
  if (!work) return nd__merr(ND_ENOMEM, "%s: out of memory", fn);
  double *K = nk ? work + (nw - nk) : NULL;
  if (K) nd__logistic_gram(X, K);
  rc = nd__logistic_fit_ws(X, y, C, tol, max_iter, K, coef, intercept, work);
  nd_free(work);
  return rc;
}

void nd_logistic_proba(nd_matview X, const double *coef, double intercept, double *proba) {
  if (X.rows == 0) return;
  linear(X, coef, intercept, proba);
  for (size_t i = 0; i < X.rows; i++) proba[i] = sigmoid(proba[i]);
}
