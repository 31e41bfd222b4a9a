#!/usr/bin/python3
"""Literals of tests/test_models_fit.c from scikit-learn (Debian's 1.2.1).

Run with Debian's interpreter:  OPENBLAS_NUM_THREADS=1 /usr/bin/python3 scripts/models_fit_reference.py
It prints the data matrices (rounded to 3 decimals, so C and numpy read the
same numbers) and the reference results the suite pastes as literals:
  * RidgeCV(alphas) in sklearn's "svd" mode (n > p) and "eigen" mode (n <= p);
  * LogisticRegression(C, tol=1e-12, max_iter=100000): the default lbfgs
    (about 1e-7 from the optimum) and newton-cholesky (the optimum);
  * GridSearchCV(Pipeline([StandardScaler(), Ridge() | LogisticRegression()]),
    cv=3) on X[train] with the training rows in a shuffled order.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge, RidgeCV
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

warnings.simplefilter("ignore")


def cmat(name, a):
    rows = ",\n    ".join(", ".join(f"{v:.3f}" for v in r) for r in np.atleast_2d(a))
    print(f"static const double {name}[] = {{\n    {rows}}};")


def vec(tag, v):
    print(f"// {tag}: " + ", ".join(f"{x:.17g}" for x in np.atleast_1d(v)))


rng = np.random.default_rng(7)
alphas = [0.01, 0.1, 1.0, 10.0, 100.0]
X1 = np.round(rng.standard_normal((15, 3)) * 2 + 1, 3)
y1 = np.round(X1 @ [1.5, -2.0, 0.3] + rng.standard_normal(15) * 2 + 4, 3)
X2 = np.round(rng.standard_normal((6, 8)), 3)
y2 = np.round(X2 @ rng.standard_normal(8) + rng.standard_normal(6) * 0.5, 3)
cmat("cv_x1", X1), cmat("cv_y1", y1), cmat("cv_x2", X2), cmat("cv_y2", y2)
for tag, X, y in [("svd", X1, y1), ("eigen", X2, y2)]:
    m = RidgeCV(alphas=alphas).fit(X, y)
    vec(f"RidgeCV {tag} best {alphas.index(m.alpha_)} coef", m.coef_)
    vec(f"RidgeCV {tag} intercept", m.intercept_)

X3 = np.round(rng.standard_normal((20, 3)), 3)
y3 = (X3 @ [1.0, -1.5, 0.5] + 0.3 + rng.standard_normal(20) > 0).astype(float)
cmat("lg_x", X3), cmat("lg_y", y3)
for C in [0.5, 10.0]:
    for solver in ["lbfgs", "newton-cholesky"]:
        m = LogisticRegression(C=C, tol=1e-12, max_iter=100000, solver=solver).fit(X3, y3)
        vec(f"logistic C={C} {solver} coef, intercept", np.r_[m.coef_[0], m.intercept_])

rng = np.random.default_rng(11)
X = np.round(rng.standard_normal((36, 4)) * [1, 2, 0.5, 3] + [0, 1, -2, 5], 3)
y = np.round(X @ [0.5, -0.3, 1.0, 0.2] + rng.standard_normal(36), 3)
yb = (y > np.median(y)).astype(float)
train = rng.permutation(36)[:30]
ev = np.setdiff1d(np.arange(36), train)
cmat("gs_x", X), cmat("gs_y", y), cmat("gs_yb", yb)
print("// gs_train", list(train), "gs_eval", list(ev))
g = GridSearchCV(Pipeline([("s", StandardScaler()), ("r", Ridge())]), {"r__alpha": alphas},
                 cv=3).fit(X[train], y[train])
vec(f"ridge search best {g.best_index_} means", g.cv_results_["mean_test_score"])
vec("ridge search pred", g.predict(X[ev]))
Cs = [0.01, 0.1, 1.0, 10.0]
for scoring in ["roc_auc", "balanced_accuracy"]:
    lr = LogisticRegression(tol=1e-12, max_iter=100000, solver="newton-cholesky")
    g = GridSearchCV(Pipeline([("s", StandardScaler()), ("l", lr)]), {"l__C": Cs}, cv=3,
                     scoring=scoring).fit(X[train], yb[train])
    vec(f"logistic search {scoring} best {g.best_index_} means", g.cv_results_["mean_test_score"])
    vec(f"logistic search {scoring} proba", g.predict_proba(X[ev])[:, 1])
