#!/usr/bin/python3
"""Reference values for nidag's models layer from scikit-learn, checked by
tests/test_models_sklearn.c.

Run with Debian's interpreter (scikit-learn 1.2.1, numpy 1.24, scipy 1.10):

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 scripts/models_reference.py

It writes, deterministically (fixed numpy seeds, n_jobs=1, one BLAS thread),
the .npy files described in tests/data/models/README.md (which it also
writes). Every array is saved with np.save as little-endian, C-order float64
('<f8') or int64 ('<i8'); fold numbers, chosen indices and counts are int64.

Cases:
  w5_*     the W5 workload of the peers' benchmark (w5_models.py): 500 x 589,
           4 feature sets, ridge with an inner GridSearchCV per set, then
           stacking, voting and a "grid" ensemble (choose the set by inner-CV
           R^2, refit), outer unshuffled KFold(5).
  cls_*    the same for binary classification (240 x 380, 3 sets, logistic
           regression scored by ROC AUC, outer StratifiedKFold(5)).
  small    ridge paths, RidgeCV, scalers, logistic regression, grid searches,
           fold assignments and metrics on small data sets of their own.

Conventions shared with the C test (keep both sides in sync):
  * A "set" is a contiguous block of columns; widths are in *_widths.npy.
  * Per-outer-fold arrays indexed by row use the original row numbers; rows
    outside the fold's training set hold NaN (float) or -1 (int).
  * Logistic regressions are solved to the exact optimum, because nidag's
    Newton solver converges tighter than scikit-learn's default tol=1e-4:
    solver='newton-cholesky' (new in 1.2: Newton steps with a Cholesky solve,
    on the objective divided by C * n) at tol=1e-12, which reaches the
    optimum to rounding. The small cases cross-check it against newton-cg at
    tol=1e-10. L-BFGS at tol=1e-12 is NOT exact: scikit-learn does not pass
    scipy's ftol, so L-BFGS-B stops on its relative-decrease test (2.2e-9)
    with coefficients up to ~1e-4 relative off; its distance is printed.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys
import time
import warnings

import numpy as np
import scipy
import scipy.linalg
import scipy.special
import scipy.stats
import sklearn
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
from sklearn.ensemble import (StackingClassifier, StackingRegressor, VotingClassifier,
                              VotingRegressor)
from sklearn.linear_model import LogisticRegression, Ridge, RidgeCV
from sklearn.metrics import (balanced_accuracy_score, make_scorer, mean_absolute_error,
                             r2_score, roc_auc_score)
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, check_cv
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import RobustScaler, StandardScaler

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "tests", "data", "models"))
PEER_CSV = "/work/shared/peers/w5_predictions.csv"

# Logistic regression as solved for the references (see the module comment).
LOGIT_SOLVER = "newton-cholesky"
LOGIT_TOL = 1e-12
LOGIT_MAX_ITER = 1000

_readme = []  # (file name, dtype, shape, description) in the order written


def save(name, arr, what):
    arr = np.asarray(arr)
    if arr.dtype.kind in "iub":
        arr = np.ascontiguousarray(arr, dtype="<i8")
    else:
        arr = np.ascontiguousarray(arr, dtype="<f8")
    np.save(os.path.join(OUT, name + ".npy"), arr, allow_pickle=False)
    _readme.append((name + ".npy", arr.dtype.str, arr.shape, what))


def logit(C):
    return LogisticRegression(C=C, solver=LOGIT_SOLVER, tol=LOGIT_TOL,
                              max_iter=LOGIT_MAX_ITER)


def logit_grad_max(X, y, C, coef, intercept):
    """max |gradient| of C * sum(log-loss) + ||coef||^2 / 2 (our objective)."""
    z = X @ coef + intercept
    r = C * (scipy.special.expit(z) - y)
    return max(np.max(np.abs(X.T @ r + coef)), abs(r.sum()))


def rel_err(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)))) if a.size else 0.0


def set_columns(widths):
    cols, start = [], 0
    for w in widths:
        cols.append(list(range(start, start + w)))
        start += w
    return cols


# A candidate whose mean inner score is within TIE_MARGIN of the winner's
# makes the choice depend on rounding (e.g. two ROC AUCs that are equal
# rationals but computed by different trapezoid sums): the data must not have
# one, because a correct implementation could then pick either.
TIE_MARGIN = 1e-9


def scorer_names(gs):
    """The cv_results_ suffixes of a search: 'score', or its metric names."""
    return list(gs.scoring) if isinstance(gs.scoring, dict) else ["score"]


def mean_scores_of(gs, name=None):
    name = name or (gs.refit if isinstance(gs.scoring, dict) else "score")
    return gs.cv_results_[f"mean_test_{name}"]


def check_choice(gs, what):
    """Refuse a GridSearchCV whose winner is not clear (see TIE_MARGIN); exact
    ties (every split score bitwise equal to the winner's) are fine: the first
    candidate wins on both sides. With several metrics (CLS_SCORING) each must
    pick the same winner."""
    res = gs.cv_results_
    b = gs.best_index_
    for name in scorer_names(gs):
        mean = res[f"mean_test_{name}"]
        nsplit = sum(1 for k in res if k.startswith("split") and k.endswith(f"_test_{name}"))
        splits = np.array([res[f"split{i}_test_{name}"] for i in range(nsplit)])
        first = int(np.flatnonzero(mean == np.nanmax(mean))[0])
        if first != b:
            raise SystemExit(f"{what}: {name} picks candidate {first}, the search {b} "
                             f"(ROC AUC of decision_function vs of P(y=1)): change the data seed")
        for c in range(len(mean)):
            if c == b or not abs(mean[c] - mean[b]) <= TIE_MARGIN:
                continue
            exact = np.array_equal(splits[:, c], splits[:, b])
            if not exact or c < b:
                raise SystemExit(f"{what}: candidates {b} and {c} score within {TIE_MARGIN:g} "
                                 f"({mean[b]!r} vs {mean[c]!r}): change the data seed")


def check_ridgecv(X, y, alphas, what):
    """The same for RidgeCV's leave-one-out mean squared errors."""
    cv = RidgeCV(alphas=alphas, store_cv_values=True).fit(X, y)
    err = cv.cv_values_.reshape(len(y), -1).mean(axis=0)
    order = np.argsort(err, kind="stable")
    if err[order[1]] - err[order[0]] <= TIE_MARGIN * max(1.0, abs(err[order[0]])):
        raise SystemExit(f"{what}: RidgeCV alphas {order[0]} and {order[1]} tie "
                         f"({err[order[0]]!r} vs {err[order[1]]!r}): change the data seed")


def select(cols):
    return ColumnTransformer([("sel", "passthrough", cols)], remainder="drop")


# ------------------------------------------------------------------ W5 data

W5_WIDTHS = [116, 48, 384, 41]
W5_COEF = [1.0, 0.8, 0.6, 0.4]
W5_ALPHAS = np.logspace(-3, 5, 20)


def w5_make_data():
    """Exactly w5_models.py's make_data (numpy default_rng(0), same draw order)."""
    rng = np.random.default_rng(0)
    n = 500
    z = rng.standard_normal((n, 5))
    Xs, y = [], np.zeros(n)
    for s, w in enumerate(W5_WIDTHS):
        L = rng.standard_normal((5, w))
        X = 0.5 * z @ L + rng.standard_normal((n, w))
        beta = rng.standard_normal(w) / np.sqrt(w)
        Xs.append(X)
        y += W5_COEF[s] * X @ beta
    y += 1.0 * rng.standard_normal(n)
    return np.hstack(Xs), y


# ------------------------------------------------------- ensemble machinery


def run_ensembles(tag, X, y, widths, base, outer, stack, vote, grid_search, proba):
    """Outer CV of the per-set searches, stacking, voting and the grid ensemble;
    saves <tag>_* files. base(cols) is the per-set estimator (a GridSearchCV);
    stack/vote/grid_search(cols_list) build the ensembles; proba selects
    P(y=1) (classification) over predict (regression)."""
    n, nsets = len(y), len(widths)
    cols = set_columns(widths)
    outer_fold = np.full(n, -1, dtype=np.int64)
    splits = list(outer.split(X, y))
    k = len(splits)
    pred_sets = np.full((nsets, n), np.nan)
    best_index = np.zeros((nsets, k), dtype=np.int64)
    mean_scores = [[None] * k for _ in range(nsets)]
    mean_scores_proba = [[None] * k for _ in range(nsets)]
    pred_stack = np.full(n, np.nan)
    pred_vote = np.full(n, np.nan)
    pred_grid = np.full(n, np.nan)
    grid_choice = np.zeros(k, dtype=np.int64)
    grid_scores = np.full((k, nsets), np.nan)
    oof = np.full((k, nsets, n), np.nan)
    inner_fold = np.full((k, n), -1, dtype=np.int64)
    stack_meta = []
    stack_alpha_index = np.zeros(k, dtype=np.int64)

    def predict(est, Xe):
        return est.predict_proba(Xe)[:, 1] if proba else est.predict(Xe)

    for f, (tr, te) in enumerate(splits):
        outer_fold[te] = f
        Xtr, ytr, Xte = X[tr], y[tr], X[te]
        for s in range(nsets):
            est = base(cols[s]).fit(Xtr, ytr)
            check_choice(est, f"{tag} set {s} outer fold {f}")
            pred_sets[s, te] = predict(est, Xte)
            best_index[s, f] = est.best_index_
            mean_scores[s][f] = mean_scores_of(est)
            if proba:
                mean_scores_proba[s][f] = mean_scores_of(est, "auc_proba")

        st = stack(cols).fit(Xtr, ytr)
        pred_stack[te] = predict(st, Xte)
        # The stacker's inner folds and out-of-fold member predictions, made
        # the way it makes them (cross_val_predict over check_cv(cv=3)).
        icv = check_cv(3, ytr, classifier=proba)
        for i, (itr, ite) in enumerate(icv.split(Xtr, ytr)):
            inner_fold[f, tr[ite]] = i
            for s in range(nsets):
                e = clone(base(cols[s])).fit(Xtr[itr], ytr[itr])
                check_choice(e, f"{tag} set {s} outer fold {f} inner fold {i}")
                oof[f, s, tr[ite]] = predict(e, Xtr[ite])
        meta = clone(st.final_estimator).fit(oof[f][:, tr].T, ytr)
        fe = st.final_estimator_
        coef_fe = np.ravel(fe.coef_)
        d = rel_err(np.ravel(meta.coef_), coef_fe)
        assert d < 1e-9, f"{tag} fold {f}: stacker's meta coef differs from ours by {d}"
        stack_meta.append(np.concatenate([[np.ravel(fe.intercept_)[0]], coef_fe]))
        if not proba:
            stack_alpha_index[f] = int(np.flatnonzero(fe.alphas == fe.alpha_)[0])
            check_ridgecv(oof[f][:, tr].T, ytr, fe.alphas, f"{tag} stack outer fold {f}")

        vt = vote(cols).fit(Xtr, ytr)
        pred_vote[te] = predict(vt, Xte)

        gs = grid_search(cols).fit(Xtr, ytr)
        check_choice(gs, f"{tag} grid outer fold {f}")
        pred_grid[te] = predict(gs, Xte)
        grid_choice[f] = gs.best_index_
        grid_scores[f] = gs.cv_results_["mean_test_score"]
        # The grid ensemble's inner CV is the stacker's: the same folds and fits,
        # so its scores are the fold-averaged metric of the out-of-fold predictions.
        metric = roc_auc_score if proba else r2_score
        ours = [np.mean([metric(ytr[ite], oof[f, s, tr[ite]])
                         for _, ite in icv.split(Xtr, ytr)]) for s in range(nsets)]
        d = rel_err(ours, grid_scores[f])
        assert d < 1e-9, f"{tag} fold {f}: grid scores differ from the out-of-fold ones by {d}"

    save(f"{tag}_outer_fold", outer_fold, "outer test fold of each row")
    save(f"{tag}_pred_sets", pred_sets,
         "[set, row]: the set's outer-fold prediction (its GridSearchCV refit "
         "on the outer training rows)" + (", P(y=1)" if proba else ""))
    save(f"{tag}_best_index", best_index, "[set, outer fold]: GridSearchCV best_index_")
    save(f"{tag}_mean_scores", np.array(mean_scores),
         "[set, outer fold, candidate]: GridSearchCV's mean inner score (cv_results_)")
    if proba:
        save(f"{tag}_mean_scores_proba", np.array(mean_scores_proba),
             "[set, outer fold, candidate]: the same with ROC AUC of P(y=1) (see CLS_SCORING)")
    save(f"{tag}_inner_fold", inner_fold,
         "[outer fold, row]: the stacker's inner fold (check_cv(3)) of each "
         "outer training row; -1 for the outer test rows")
    save(f"{tag}_stack_oof", oof,
         "[outer fold, set, row]: out-of-fold inner predictions (the stacker's "
         "cross_val_predict) on the outer training rows; NaN elsewhere")
    save(f"{tag}_stack_meta", np.array(stack_meta),
         "[outer fold, 1 + set]: the meta-model's intercept then coefficients")
    save(f"{tag}_pred_stack", pred_stack, "stacking outer-fold predictions")
    if not proba:
        save(f"{tag}_stack_alpha_index", stack_alpha_index,
             "[outer fold]: index of the meta RidgeCV's alpha_ in the alphas")
    save(f"{tag}_pred_vote", pred_vote, "voting outer-fold predictions")
    save(f"{tag}_pred_grid", pred_grid,
         "grid ensemble (GridSearchCV over the feature set) outer-fold predictions")
    save(f"{tag}_grid_choice", grid_choice, "[outer fold]: the set the grid ensemble chose")
    save(f"{tag}_grid_scores", grid_scores,
         "[outer fold, set]: the grid ensemble's mean_test_score per set")
    return dict(pred_sets=pred_sets, best_index=best_index, pred_stack=pred_stack,
                pred_vote=pred_vote, pred_grid=pred_grid, grid_choice=grid_choice,
                stack_alpha_index=stack_alpha_index, outer_fold=outer_fold)


# ----------------------------------------------------------------- case (a)


def case_w5():
    X, y = w5_make_data()
    save("w5_X", X, "W5 features (w5_models.py make_data, default_rng(0))")
    save("w5_y", y, "W5 target")
    save("w5_widths", np.array(W5_WIDTHS), "widths of the 4 contiguous column sets")
    save("w5_alphas", W5_ALPHAS, "np.logspace(-3, 5, 20): ridge grid and meta RidgeCV alphas")

    def base(cols):
        pipe = Pipeline([("select", select(cols)), ("scale", StandardScaler()),
                         ("ridge", Ridge())])
        return GridSearchCV(pipe, {"ridge__alpha": W5_ALPHAS}, cv=3, n_jobs=1)

    def stack(cols_list):
        return StackingRegressor([(f"set{s}", base(c)) for s, c in enumerate(cols_list)],
                                 final_estimator=RidgeCV(alphas=W5_ALPHAS), cv=3, n_jobs=1)

    def vote(cols_list):
        return VotingRegressor([(f"set{s}", base(c)) for s, c in enumerate(cols_list)],
                               n_jobs=1)

    def grid_search(cols_list):
        inner = GridSearchCV(Pipeline([("scale", StandardScaler()), ("ridge", Ridge())]),
                             {"ridge__alpha": W5_ALPHAS}, cv=3, n_jobs=1)
        pipe = Pipeline([("sel", select(cols_list[0])), ("gs", inner)])
        grid = {"sel__transformers": [[("sel", "passthrough", c)] for c in cols_list]}
        return GridSearchCV(pipe, grid, cv=3, scoring="r2", n_jobs=1)

    r = run_ensembles("w5", X, y, W5_WIDTHS, base, KFold(n_splits=5), stack, vote,
                      grid_search, proba=False)

    # Sanity check against the peers' CSV (same program, its last repetition).
    if os.path.exists(PEER_CSV):
        peer = np.genfromtxt(PEER_CSV, delimiter=",", names=True)
        diffs = [np.max(np.abs(peer[f"ridge_set{s}"] - r["pred_sets"][s])) for s in range(4)]
        diffs += [np.max(np.abs(peer["stack"] - r["pred_stack"])),
                  np.max(np.abs(peer["vote"] - r["pred_vote"])),
                  np.max(np.abs(peer["y"] - y))]
        print("  vs peers' w5_predictions.csv: max |diff| sets "
              + " ".join(f"{d:.2e}" for d in diffs[:4])
              + f", stack {diffs[4]:.2e}, vote {diffs[5]:.2e}, y {diffs[6]:.2e}")
        assert max(diffs) < 1e-9, "W5 disagrees with the peers' predictions"
    else:
        print(f"  ({PEER_CSV} not found: no comparison)")
    for s in range(4):
        print(f"  set{s} (w{W5_WIDTHS[s]}) best alpha index per fold {list(r['best_index'][s])}"
              f", outer R2 {r2_score(y, r['pred_sets'][s]):.4f}")
    print(f"  stack R2 {r2_score(y, r['pred_stack']):.4f} meta alpha index "
          f"{list(r['stack_alpha_index'])}; vote R2 {r2_score(y, r['pred_vote']):.4f}; "
          f"grid R2 {r2_score(y, r['pred_grid']):.4f} chose {list(r['grid_choice'])}")


# ----------------------------------------------------------------- case (c)

CLS_WIDTHS = [20, 60, 300]
CLS_CS = np.logspace(-3, 2, 6)
CLS_META_C = 1.0
# scikit-learn's 'roc_auc' scorer ranks a classifier's decision_function (the
# logit), not P(y=1): the same ranking except where the sigmoid rounds to
# exactly 1.0 (logit > ~36.7, weak penalties), which makes ties. nidag's
# searches rank the logit too, but its GRID ensemble sees only the members'
# P(y=1). Every logistic search therefore also records the ROC AUC of P(y=1)
# ('auc_proba', not used for the choice; *_mean_scores_proba), check_choice
# refuses data where the two would choose differently, and run_ensembles
# checks the grid ensemble's scores against the P(y=1) ones.
CLS_SCORING = {"roc_auc": "roc_auc",
               "auc_proba": make_scorer(roc_auc_score, needs_proba=True)}
CLS_SEED = 2  # 2024 has a rounding tie between two AUCs (see check_choice)


def cls_make_data():
    rng = np.random.default_rng(CLS_SEED)
    n = 240
    z = rng.standard_normal((n, 4))
    Xs, eta = [], np.zeros(n)
    strength = [1.2, 0.8, 0.5]
    for s, w in enumerate(CLS_WIDTHS):
        L = rng.standard_normal((4, w))
        X = 0.6 * z @ L + rng.standard_normal((n, w))
        beta = np.zeros(w)
        k = max(5, w // 10)  # a planted signal on a few columns
        beta[rng.choice(w, size=k, replace=False)] = rng.standard_normal(k) / np.sqrt(k)
        Xs.append(X * rng.uniform(0.5, 3.0, size=w) + rng.uniform(-2, 2, size=w))
        eta += strength[s] * X @ beta
    y = (rng.uniform(size=n) < scipy.special.expit(eta)).astype(float)
    return np.hstack(Xs), y


def case_cls():
    X, y = cls_make_data()
    save("cls_X", X, f"classification features (cls_make_data, default_rng({CLS_SEED}))")
    save("cls_y", y, "binary target (0/1 as float64)")
    save("cls_widths", np.array(CLS_WIDTHS), "widths of the 3 contiguous column sets")
    save("cls_Cs", CLS_CS, "np.logspace(-3, 2, 6): the per-set C grid")
    save("cls_meta_C", np.array([CLS_META_C]), "the stacking meta LogisticRegression's C")

    def base(cols):
        pipe = Pipeline([("select", select(cols)), ("scale", StandardScaler()),
                         ("logit", logit(1.0))])
        return GridSearchCV(pipe, {"logit__C": CLS_CS}, cv=3, scoring=CLS_SCORING,
                            refit="roc_auc", n_jobs=1)

    def stack(cols_list):
        return StackingClassifier([(f"set{s}", base(c)) for s, c in enumerate(cols_list)],
                                  final_estimator=logit(CLS_META_C), cv=3, n_jobs=1)

    def vote(cols_list):
        return VotingClassifier([(f"set{s}", base(c)) for s, c in enumerate(cols_list)],
                                voting="soft", n_jobs=1)

    def grid_search(cols_list):
        inner = GridSearchCV(Pipeline([("scale", StandardScaler()), ("logit", logit(1.0))]),
                             {"logit__C": CLS_CS}, cv=3, scoring=CLS_SCORING,
                             refit="roc_auc", n_jobs=1)
        pipe = Pipeline([("sel", select(cols_list[0])), ("gs", inner)])
        grid = {"sel__transformers": [[("sel", "passthrough", c)] for c in cols_list]}
        return GridSearchCV(pipe, grid, cv=3, scoring="roc_auc", n_jobs=1)

    r = run_ensembles("cls", X, y, CLS_WIDTHS, base, StratifiedKFold(n_splits=5), stack,
                      vote, grid_search, proba=True)
    print(f"  n {len(y)} positives {int(y.sum())}")
    for s in range(3):
        print(f"  set{s} (w{CLS_WIDTHS[s]}) best C index per fold {list(r['best_index'][s])}"
              f", outer AUC {roc_auc_score(y, r['pred_sets'][s]):.4f}")
    print(f"  stack AUC {roc_auc_score(y, r['pred_stack']):.4f}; vote AUC "
          f"{roc_auc_score(y, r['pred_vote']):.4f}; grid AUC "
          f"{roc_auc_score(y, r['pred_grid']):.4f} chose {list(r['grid_choice'])}")


# ----------------------------------------------------------------- case (b)


def mixed_matrix(rng, n, p):
    """Columns with different means and scales (so the intercept matters)."""
    return rng.standard_normal((n, p)) * rng.uniform(0.3, 4.0, size=p) + rng.uniform(-3, 3, size=p)


RIDGE_ALPHAS = np.logspace(-4, 4, 25)
RIDGECV_ALPHAS = np.logspace(-2, 4, 13)


def case_ridge():
    rng = np.random.default_rng(11)
    save("ridge_alphas", RIDGE_ALPHAS, "np.logspace(-4, 4, 25): ridge path alphas")
    save("ridgecv_alphas", RIDGECV_ALPHAS, "np.logspace(-2, 4, 13): RidgeCV alphas")
    for tag, n, p, nte in [("np", 60, 8, 15), ("pn", 30, 80, 10)]:
        Xtr = mixed_matrix(rng, n, p)
        Xte = mixed_matrix(rng, nte, p)
        beta = rng.standard_normal(p) / np.sqrt(p)
        ytr = Xtr @ beta + 5.0 + rng.standard_normal(n)
        pred = np.empty((len(RIDGE_ALPHAS), nte))
        coef = np.empty((len(RIDGE_ALPHAS), p))
        icpt = np.empty(len(RIDGE_ALPHAS))
        for a, alpha in enumerate(RIDGE_ALPHAS):
            m = Ridge(alpha=alpha).fit(Xtr, ytr)
            pred[a] = m.predict(Xte)
            coef[a], icpt[a] = m.coef_, m.intercept_
        cv = RidgeCV(alphas=RIDGECV_ALPHAS).fit(Xtr, ytr)
        check_ridgecv(Xtr, ytr, RIDGECV_ALPHAS, f"ridgecv_{tag}")
        best = int(np.flatnonzero(RIDGECV_ALPHAS == cv.alpha_)[0])
        desc = f"{n} x {p}"
        save(f"ridge_{tag}_Xtr", Xtr, f"ridge training features ({desc})")
        save(f"ridge_{tag}_ytr", ytr, "ridge training target")
        save(f"ridge_{tag}_Xte", Xte, "ridge test features")
        save(f"ridge_{tag}_pred", pred, "[alpha, test row]: Ridge(alpha).predict(Xte)")
        save(f"ridge_{tag}_coef", coef, "[alpha, column]: Ridge(alpha).coef_")
        save(f"ridge_{tag}_intercept", icpt, "[alpha]: Ridge(alpha).intercept_")
        save(f"ridgecv_{tag}_best", np.array([best]), "RidgeCV(ridgecv_alphas) alpha_ index")
        save(f"ridgecv_{tag}_coef", cv.coef_, "RidgeCV coef_")
        save(f"ridgecv_{tag}_intercept", np.array([cv.intercept_]), "RidgeCV intercept_")
        print(f"  ridge {desc}: pred range [{pred.min():.3f}, {pred.max():.3f}]; "
              f"RidgeCV alpha index {best} (alpha {cv.alpha_:.4g})")


def case_scalers():
    rng = np.random.default_rng(12)
    n, p = 51, 6
    X = mixed_matrix(rng, n, p)
    X[:, 2] = 3.3                        # constant: scale 1 under both scalers
    X[:, 4] = np.round(X[:, 4])          # ties, for the quantiles
    X[rng.choice(n, 4, replace=False), 5] *= 25.0  # outliers
    save("scale_X", X, f"scaler input ({n} x {p}; column 2 constant, 4 has ties, 5 outliers)")
    std = np.empty((2, 2, p))
    rob = np.empty((2, 2, p))
    for c, rows in enumerate([np.arange(n), np.arange(n - 1)]):
        s = StandardScaler().fit(X[rows])
        r = RobustScaler(quantile_range=(5.0, 95.0)).fit(X[rows])
        std[c] = s.mean_, s.scale_
        rob[c] = r.center_, r.scale_
    save("scale_standard", std,
         "[rows case, (center, scale), column]: StandardScaler mean_/scale_; rows case 0 "
         "= all 51 rows, 1 = the first 50")
    save("scale_robust", rob,
         "[rows case, (center, scale), column]: RobustScaler(quantile_range=(5, 95)) "
         "center_/scale_, same rows cases")
    print(f"  scalers: standard scale {np.round(std[0, 1], 4)}; robust scale {np.round(rob[0, 1], 4)}")


LOGIT_CS = np.array([0.01, 0.1, 1.0, 10.0, 100.0])


def case_logistic():
    rng = np.random.default_rng(13)
    save("logit_Cs", LOGIT_CS, "C values of the logistic cases")
    for tag, n, p, nte in [("a", 80, 5, 20), ("w", 40, 60, 12)]:
        X = mixed_matrix(rng, n, p)
        Xte = mixed_matrix(rng, nte, p)
        Z = (X - X.mean(0)) / X.std(0)
        beta = rng.standard_normal(p) * (1.5 / np.sqrt(p))
        y = (rng.uniform(size=n) < scipy.special.expit(Z @ beta + 0.3)).astype(float)
        coef = np.empty((len(LOGIT_CS), p))
        icpt = np.empty(len(LOGIT_CS))
        proba = np.empty((len(LOGIT_CS), nte))
        worst_cg, worst_lbfgs, worst_grad = 0.0, 0.0, 0.0
        for c, C in enumerate(LOGIT_CS):
            m = logit(C).fit(X, y)
            with warnings.catch_warnings():  # cross-checks only: they may stop early
                warnings.simplefilter("ignore")
                cg = LogisticRegression(C=C, solver="newton-cg", tol=1e-10,
                                        max_iter=10000).fit(X, y)
                l = LogisticRegression(C=C, solver="lbfgs", tol=1e-12,
                                       max_iter=100000).fit(X, y)
            coef[c], icpt[c] = m.coef_[0], m.intercept_[0]
            proba[c] = m.predict_proba(Xte)[:, 1]
            w_n = np.concatenate([m.coef_[0], m.intercept_])
            w_l = np.concatenate([l.coef_[0], l.intercept_])
            w_cg = np.concatenate([cg.coef_[0], cg.intercept_])
            worst_lbfgs = max(worst_lbfgs, rel_err(w_l, w_n))
            worst_cg = max(worst_cg, rel_err(w_cg, w_n))
            g = logit_grad_max(X, y, C, m.coef_[0], m.intercept_[0])
            worst_grad = max(worst_grad, g / max(1.0, C * n))
        assert worst_grad < 1e-12, f"logit_{tag}: {LOGIT_SOLVER} gradient {worst_grad}"
        assert worst_cg < 1e-6, f"logit_{tag}: {LOGIT_SOLVER} vs newton-cg {worst_cg}"
        save(f"logit_{tag}_X", X, f"logistic training features ({n} x {p})")
        save(f"logit_{tag}_y", y, "logistic training target (0/1)")
        save(f"logit_{tag}_Xte", Xte, "logistic test features")
        save(f"logit_{tag}_coef", coef, "[C, column]: LogisticRegression(C) coef_ (the optimum)")
        save(f"logit_{tag}_intercept", icpt, "[C]: intercept_")
        save(f"logit_{tag}_proba", proba, "[C, test row]: predict_proba(Xte)[:, 1]")
        print(f"  logistic {n} x {p} (positives {int(y.sum())}): {LOGIT_SOLVER} max "
              f"|grad|/max(1, C n) {worst_grad:.1e}; max rel diff to newton-cg(1e-10) "
              f"{worst_cg:.1e}, to lbfgs(1e-12, stops on ftol) {worst_lbfgs:.1e}")


def case_gridsearch():
    rng = np.random.default_rng(14)
    n, p, ntr = 90, 12, 70
    X = mixed_matrix(rng, n, p)
    Z = (X - X.mean(0)) / X.std(0)
    beta = rng.standard_normal(p) * (1.2 / np.sqrt(p))
    y = (rng.uniform(size=n) < scipy.special.expit(Z @ beta)).astype(float)
    Cs = np.logspace(-3, 2, 6)
    gs = GridSearchCV(Pipeline([("scale", StandardScaler()), ("logit", logit(1.0))]),
                      {"logit__C": Cs}, cv=3, scoring=CLS_SCORING, refit="roc_auc", n_jobs=1)
    assert isinstance(check_cv(3, y[:ntr], classifier=True), StratifiedKFold)
    gs.fit(X[:ntr], y[:ntr])
    check_choice(gs, "gslogit")
    save("gslogit_X", X, f"grid-search features ({n} x {p}); train = rows 0..{ntr - 1}, "
         f"eval = rows {ntr}..{n - 1}")
    save("gslogit_y", y, "binary target")
    save("gslogit_Cs", Cs, "np.logspace(-3, 2, 6)")
    save("gslogit_ntrain", np.array([ntr]), "number of training rows (the first ones)")
    save("gslogit_mean_scores", mean_scores_of(gs),
         "GridSearchCV(StandardScaler+LogisticRegression, cv=3, roc_auc) mean_test_roc_auc")
    save("gslogit_mean_scores_proba", mean_scores_of(gs, "auc_proba"),
         "the same with ROC AUC of P(y=1) (see CLS_SCORING)")
    save("gslogit_best", np.array([gs.best_index_]), "its best_index_")
    save("gslogit_pred", gs.predict_proba(X[ntr:])[:, 1], "refit's P(y=1) on the eval rows")
    print(f"  GridSearchCV logistic/roc_auc: scores {np.round(mean_scores_of(gs), 4)}"
          f" best {gs.best_index_}")

    # The same for ridge and R^2, on a regression target.
    yr = X @ rng.standard_normal(p) + 2.0 + 3.0 * rng.standard_normal(n)
    alphas = np.logspace(-3, 5, 20)
    gr = GridSearchCV(Pipeline([("scale", StandardScaler()), ("ridge", Ridge())]),
                      {"ridge__alpha": alphas}, cv=3, n_jobs=1).fit(X[:ntr], yr[:ntr])
    check_choice(gr, "gsridge")
    save("gsridge_y", yr, "regression target on gslogit_X (same train/eval rows)")
    save("gsridge_alphas", alphas, "np.logspace(-3, 5, 20)")
    save("gsridge_mean_scores", mean_scores_of(gr),
         "GridSearchCV(StandardScaler+Ridge, cv=3, r2) mean_test_score")
    save("gsridge_best", np.array([gr.best_index_]), "its best_index_")
    save("gsridge_pred", gr.predict(X[ntr:]), "refit's predictions on the eval rows")
    print(f"  GridSearchCV ridge/r2: best {gr.best_index_} "
          f"(score {mean_scores_of(gr)[gr.best_index_]:.4f})")


def folds_of(cv, y):
    fold = np.full(len(y), -1, dtype=np.int64)
    for f, (_, te) in enumerate(cv.split(np.zeros((len(y), 1)), y)):
        fold[te] = f
    assert (fold >= 0).all()
    return fold


def case_cv():
    rng = np.random.default_rng(15)
    save("cv_kfold5_n23", folds_of(KFold(5), np.zeros(23)), "KFold(5) test fold of each of 23 rows")
    save("cv_kfold3_n10", folds_of(KFold(3), np.zeros(10)), "KFold(3) test fold of each of 10 rows")
    ya = (rng.uniform(size=31) < 0.4).astype(float)
    ya[0] = 0.0
    yb = (rng.uniform(size=29) < 0.3).astype(float)
    yb[0] = 1.0  # the first row is the minority class: order of appearance matters
    yc = rng.choice([0.0, 1.0, 2.0], size=40, p=[0.5, 0.3, 0.2])
    yc[:3] = [2.0, 0.0, 1.0]
    for tag, y, what in [("a", ya, "binary, first row class 0"),
                         ("b", yb, "binary, first row the minority class 1"),
                         ("c", yc, "3 classes, first appearing 2, 0, 1")]:
        save(f"cv_strat_{tag}_y", y, f"labels ({len(y)} rows; {what})")
        save(f"cv_strat_{tag}_fold", folds_of(StratifiedKFold(3), y),
             "StratifiedKFold(3) test fold of each row")
    print(f"  cv: KFold(5) n23 sizes {np.bincount(folds_of(KFold(5), np.zeros(23)))}; "
          f"stratified b sizes {np.bincount(folds_of(StratifiedKFold(3), yb))}")


def case_metrics():
    rng = np.random.default_rng(16)
    n = 37
    y = rng.standard_normal(n) * 2.0 + 1.0
    pred = 0.7 * y + rng.standard_normal(n)
    save("met_reg_y", y, "regression targets")
    save("met_reg_pred", pred, "regression predictions")
    save("met_reg_values", np.array([r2_score(y, pred), mean_absolute_error(y, pred),
                                     scipy.stats.pearsonr(y, pred)[0]]),
         "[r2_score, mean_absolute_error, scipy.stats.pearsonr r]")
    yb = (rng.uniform(size=n) < 0.45).astype(float)
    score = np.clip(0.5 + 0.3 * (yb - 0.5) + 0.25 * rng.standard_normal(n), 0.01, 0.99)
    score = np.round(score, 1)  # ties across classes, and exact 0.5 values
    assert (score == 0.5).any()
    save("met_cls_y", yb, "binary labels")
    save("met_cls_score", score, "probabilities rounded to 0.1 (ties, some exactly 0.5)")
    save("met_cls_values", np.array([roc_auc_score(yb, score),
                                     balanced_accuracy_score(yb, score > 0.5)]),
         "[roc_auc_score, balanced_accuracy_score(y, score > 0.5)]")
    print(f"  metrics: r2 {r2_score(y, pred):.4f} mae {mean_absolute_error(y, pred):.4f} "
          f"r {scipy.stats.pearsonr(y, pred)[0]:.4f} auc {roc_auc_score(yb, score):.4f} "
          f"bacc {balanced_accuracy_score(yb, score > 0.5):.4f}")


def write_readme():
    lines = [
        "# tests/data/models",
        "",
        "Reference inputs and outputs for `tests/test_models_sklearn.c`, written by",
        "`scripts/models_reference.py` (scikit-learn " + sklearn.__version__ + ", numpy "
        + np.__version__ + ", scipy " + scipy.__version__ + "; run it with",
        "`OPENBLAS_NUM_THREADS=1 /usr/bin/python3 scripts/models_reference.py`). Do not edit",
        "by hand: rerun the script. Every file is `np.save` output (format 1.0),",
        "little-endian, C order: `<f8` (float64) or `<i8` (int64). Shapes below are",
        "numpy's (row-major, first index slowest).",
        "",
        "Cases: `w5_*` is the W5 workload of the peers' benchmark",
        "(`/work/shared/peers/src/w5_models.py`: per-set GridSearchCV(ColumnTransformer +",
        "StandardScaler + Ridge, alphas, cv=3), StackingRegressor(cv=3, RidgeCV(alphas)),",
        "VotingRegressor, outer unshuffled KFold(5)) plus a grid ensemble",
        "(GridSearchCV(cv=3, r2) over which column set feeds the per-set search);",
        "`cls_*` the same for binary classification (StandardScaler +",
        "LogisticRegression, Cs, cv=3 StratifiedKFold, roc_auc; StackingClassifier(cv=3,",
        "LogisticRegression(C=1)) on P(y=1); soft VotingClassifier; grid by roc_auc;",
        "outer unshuffled StratifiedKFold(5)). Logistic regressions are solved with",
        f"solver='{LOGIT_SOLVER}' at tol={LOGIT_TOL:g}: the optimum of",
        "C * sum(log-loss) + ||w||^2/2 to rounding (see the script's docstring).",
        "The logistic searches score with {'roc_auc', 'auc_proba'} and refit='roc_auc':",
        "sklearn's 'roc_auc' ranks the decision function (the choice and",
        "`*_mean_scores`), 'auc_proba' ranks P(y=1) (`*_mean_scores_proba`, for",
        "information; they differ where the sigmoid rounds to 1.0). The script refuses",
        f"data where a search's winner is within {TIE_MARGIN:g} of another candidate",
        "or where the two scorers would choose differently.",
        "",
        "| file | dtype | shape | contents |",
        "|---|---|---|---|",
    ]
    for name, dt, shape, what in _readme:
        lines.append(f"| `{name}` | `{dt}` | {tuple(shape)} | {what} |")
    with open(os.path.join(OUT, "README.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main():
    # A reference fit that did not converge is a broken reference.
    warnings.simplefilter("error", ConvergenceWarning)
    warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
    warnings.simplefilter("error", FitFailedWarning)  # GridSearchCV would score NaN
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".npy"):
            os.remove(os.path.join(OUT, f))
    print(f"# sklearn {sklearn.__version__} numpy {np.__version__} scipy {scipy.__version__}"
          f" -> {OUT}")
    for name, fn in [("(b) ridge path / RidgeCV", case_ridge),
                     ("(b) scalers", case_scalers),
                     ("(b) logistic regression", case_logistic),
                     ("(b) grid searches", case_gridsearch),
                     ("(b) fold assignments", case_cv),
                     ("(b) metrics", case_metrics),
                     ("(a, d) W5 ridge ensembles", case_w5),
                     ("(c, d) classification ensembles", case_cls)]:
        t0 = time.perf_counter()
        print(name)
        fn()
        print(f"  [{time.perf_counter() - t0:.1f} s]")
    write_readme()
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"# {len(_readme)} arrays, {total / 1e6:.2f} MB in {OUT}")


if __name__ == "__main__":
    sys.exit(main())
