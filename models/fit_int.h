/* Internal entry points of the estimators (ridge.c, logistic.c) for the grid
 * search (search.c): the same fits as the public functions, but on
 * contiguous matrices and caller-owned scratch, so that a search allocates
 * once per call and checks its data once. Not part of the public API. */
#ifndef NIDAG_MODELS_FIT_INT_H
#define NIDAG_MODELS_FIT_INT_H

#include "models/models_int.h"

/* The largest dimension handed to BLAS/LAPACK (their integers are int). */
#define ND__FIT_DIM_MAX 0x7fffffffu

/* ND_EINVAL naming the first non-finite element of X's rows (all rows when
 * rows is NULL); `what` names the matrix in the message. */
int nd__check_finite_rows(nd_matview X, const size_t *rows, size_t nrows, const char *what);

/* Doubles of scratch that nd__ridge_path_ws and nd__ridge_fit_ws need for
 * n training rows, p columns and nalpha alphas (monotone in each, so the
 * largest fold's size serves the smaller ones). 0 on overflow. */
size_t nd__ridge_work(size_t n, size_t p, size_t nalpha);

/* nd_ridge_path on a contiguous n x p training matrix Z, which is
 * overwritten (centred), or used as is when `centred` says its columns
 * have mean 0 already. Xte is m x p with leading dimension ldte. No
 * argument or finiteness checks. */
int nd__ridge_path_ws(double *Z, size_t n, size_t p, bool centred, const double *y,
                      const double *Xte,
                      size_t ldte, size_t m, const double *alphas, size_t nalpha,
                      double *pred, double *work);

/* nd_ridge_fit (Cholesky) on a contiguous n x p matrix Z, overwritten
 * (centred) unless `centred`. */
int nd__ridge_fit_ws(double *Z, size_t n, size_t p, bool centred, const double *y,
                     double alpha,
                     double *coef, double *intercept, double *work);

/* Whether a logistic fit on n x p takes its Newton steps in the dual
 * (n x n) form, which needs the Gram matrix from nd__logistic_gram. */
bool nd__logistic_dual(size_t n, size_t p);
/* K = XX', n x n, lower triangle column-major (the upper is not written). */
void nd__logistic_gram(nd_matview X, double *K);

/* Doubles of scratch for nd__logistic_fit_ws, either form (monotone in n
 * and p), not counting K. */
size_t nd__logistic_work(size_t n, size_t p);

/* nd_logistic_fit without the checks (y is 0/1 with both classes, C > 0):
 * K is nd__logistic_gram(X) when nd__logistic_dual, else NULL. */
int nd__logistic_fit_ws(nd_matview X, const double *y, double C, double tol,
                        uint32_t max_iter, const double *K, double *coef, double *intercept,
                        double *work);

#endif /* NIDAG_MODELS_FIT_INT_H */
