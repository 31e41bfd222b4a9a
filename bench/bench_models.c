/* `nidag-bench models`: the W5 workload of ../shared/peers (scikit-learn's
 * GridSearchCV, StackingRegressor and VotingRegressor over four feature sets)
 * as nidag graphs over the cache.
 *
 * Data: tests/data/models/w5_X.npy (500 x 589) and w5_y.npy, written by
 * scripts/models_reference.py with the peer's generator (numpy PCG64 seed 0),
 * so the inputs are the peer's to the bit. The four sets are the column
 * blocks of widths 116, 48, 384 and 41, each an nd_graph_const.
 *
 * Pipeline per set: StandardScaler -> Ridge, a 3-fold (unshuffled) inner
 * search over alphas = logspace(-3, 5, 20), R²; outer unshuffled 5-fold.
 *   w5a  per-set grid search: the 20 full fits and 4 score nodes
 *   w5b  stacking: the full fits, the 60 inner-fold fits, RidgeCV meta-models
 *   w5c  voting: the full fits and the mean
 * After one untimed warm-up run, each workload runs cold (a fresh cache directory, a fresh graph) --reps
 * times, and then from the cache (a freshly built graph against the filled,
 * still open cache, and once more after reopening it). Reported: the median
 * wall time (graph building, key hashing, planning, computing, storing and
 * reading the results), the outer-fold R² like the peer's lines, and the
 * largest relative difference of the 500 outer predictions from
 * scikit-learn's (w5_pred_sets.npy, w5_pred_stack.npy, w5_pred_vote.npy). A cached run that computes anything, or a
 * prediction off by more than 1e-6, prints "# ERROR" and fails the program.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "nidag.h"

#ifndef NB_MODELS_DATA
#define NB_MODELS_DATA "tests/data/models"
#endif

#define NM_SETS 4
#define NM_ALPHAS 20
#define NM_OUTER 5
#define NM_INNER 3
#define NM_MAX_REPS 16
#define NM_TOL 1e-6

static const size_t NM_WIDTHS[NM_SETS] = {116, 48, 384, 41};

typedef struct nm_opts {
  const char *data;
  const char *tmp;
  unsigned threads;
  int reps;
  bool only[3]; /* workloads to run; none set: all */
} nm_opts;

typedef struct nm_data {
  nd_array *set[NM_SETS];
  nd_array *y;
  size_t n;
  double alphas[NM_ALPHAS];
  nd_array *ref_set[NM_SETS], *ref_stack, *ref_vote; /* NULL when absent */
} nm_data;

typedef enum nm_work { NM_GRID = 0, NM_STACK, NM_VOTE, NM_NWORK } nm_work;
static const char *const NM_NAMES[NM_NWORK] = {"w5a_nidag_ridge_gridsearch", "w5b_nidag_stacking",
                                               "w5c_nidag_voting"};

void nb_models_usage(FILE *f) {
  fprintf(f,
          "models    the peers' W5 (500 subjects, 4 feature sets, ridge with a 20-alpha\n"
          "          inner 3-fold search, outer 5-fold): per-set grid search, stacking and\n"
          "          voting, cold and from the cache\n"
          "  --reps N         cold runs per workload (default %d; median reported)\n"
          "  --only LIST      w5a, w5b and/or w5c (default all)\n"
          "  --threads N      pool workers (default 2, like the peers' n_jobs=2)\n"
          "  --data DIR       the reference data (default %s)\n"
          "  --tmp DIR        where the cache directories go (default /tmp)\n",
          NB_REPS, NB_MODELS_DATA);
}

static int load_npy(const char *dir, const char *name, nd_array **out, bool optional) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int rc = nd_npy_load(path, out);
  if (rc != 0) {
    *out = NULL;
    if (!optional)
      fprintf(stderr, "nidag-bench models: %s\n", nd_models_errmsg());
    return optional ? 0 : rc;
  }
  return 0;
}

/* Column block [c0, c0 + w) of the n x p matrix X as a new n x w array. */
static int column_block(const nd_array *X, size_t c0, size_t w, nd_array **out) {
  size_t n = nd_array_dim(X, 0), p = nd_array_dim(X, 1);
  size_t shape[2] = {n, w};
  int rc = nd_array_new(out, ND_F64, 2, shape);
  if (rc != 0) return rc;
  const double *src = nd_array_data(X);
  double *dst = nd_array_data_mut(*out);
  for (size_t i = 0; i < n; i++) memcpy(dst + i * w, src + i * p + c0, w * sizeof(double));
  return 0;
}

static int load_data(const nm_opts *o, nm_data *d) {
  nd_array *X = NULL;
  int rc = load_npy(o->data, "w5_X.npy", &X, false);
  if (rc == 0) rc = load_npy(o->data, "w5_y.npy", &d->y, false);
  if (rc != 0) {
    nd_array_release(X);
    return rc;
  }
  size_t total = 0;
  for (int s = 0; s < NM_SETS; s++) total += NM_WIDTHS[s];
  if (nd_array_ndim(X) != 2 || nd_array_dtype(X) != ND_F64 || nd_array_dim(X, 1) != total ||
      nd_array_dtype(d->y) != ND_F64 || nd_array_count(d->y) != nd_array_dim(X, 0)) {
    fprintf(stderr, "nidag-bench models: %s/w5_X.npy or w5_y.npy has an unexpected shape\n",
            o->data);
    nd_array_release(X);
    return ND_EFORMAT;
  }
  d->n = nd_array_dim(X, 0);
  for (int s = 0, c0 = 0; rc == 0 && s < NM_SETS; c0 += (int)NM_WIDTHS[s], s++)
    rc = column_block(X, (size_t)c0, NM_WIDTHS[s], &d->set[s]);
  nd_array_release(X);
  for (int a = 0; a < NM_ALPHAS; a++)
    d->alphas[a] = pow(10.0, -3.0 + 8.0 * (double)a / (double)(NM_ALPHAS - 1));
  /* scikit-learn's outer predictions: [set, row], stacking, voting */
  nd_array *sets_ref = NULL;
  if (rc == 0) rc = load_npy(o->data, "w5_pred_sets.npy", &sets_ref, true);
  if (rc == 0 && sets_ref && nd_array_ndim(sets_ref) == 2 &&
      nd_array_dim(sets_ref, 0) == NM_SETS && nd_array_dim(sets_ref, 1) == d->n &&
      nd_array_dtype(sets_ref) == ND_F64) {
    for (int s = 0; rc == 0 && s < NM_SETS; s++)
      rc = nd_array_from(&d->ref_set[s], ND_F64, 1, &d->n,
                         (const double *)nd_array_data(sets_ref) + (size_t)s * d->n,
                         d->n * sizeof(double));
  }
  nd_array_release(sets_ref);
  if (rc == 0) rc = load_npy(o->data, "w5_pred_stack.npy", &d->ref_stack, true);
  if (rc == 0) rc = load_npy(o->data, "w5_pred_vote.npy", &d->ref_vote, true);
  return rc;
}

static void free_data(nm_data *d) {
  for (int s = 0; s < NM_SETS; s++) {
    nd_array_release(d->set[s]);
    nd_array_release(d->ref_set[s]);
  }
  nd_array_release(d->y);
  nd_array_release(d->ref_stack);
  nd_array_release(d->ref_vote);
}

static nd_experiment_spec w5_spec(const nm_data *d, bool ensembles) {
  nd_experiment_spec e = {0};
  e.fit.pipeline = (nd_pipeline){.scaling = ND_SCALE_STANDARD,
                                 .constant = ND_CONSTANT_KEEP,
                                 .model = ND_MODEL_RIDGE,
                                 .grid = d->alphas,
                                 .ngrid = NM_ALPHAS,
                                 .scoring = ND_METRIC_R2,
                                 .inner = {.kind = ND_CV_KFOLD, .k = NM_INNER}};
  e.fit.outer = (nd_cv){.kind = ND_CV_KFOLD, .k = NM_OUTER};
  e.fit.inner = (nd_cv){.kind = ND_CV_KFOLD, .k = NM_INNER};
  e.metric = ND_METRIC_R2;
  e.meta_grid = d->alphas;
  e.nmeta = NM_ALPHAS;
  e.ensembles = ensembles;
  return e;
}

/* A run's outcome: the outer-fold metric mean per target and their OOF
 * predictions (owned). */
typedef struct nm_result {
  size_t ntargets;
  nd_array *value[NM_SETS];
  nd_graph_stats stats;
  double seconds;
} nm_result;

static void free_result(nm_result *r) {
  for (size_t i = 0; i < r->ntargets; i++) nd_array_release(r->value[i]);
  memset(r, 0, sizeof *r);
}

/* Build the W5 graph for workload w and run it against cache c. */
static int run_once(const nm_data *d, nm_work w, nd_cache *c, nd_pool *pool, nm_result *r) {
  static const char *const set_names[NM_SETS] = {"set0", "set1", "set2", "set3"};
  memset(r, 0, sizeof *r);
  double t0 = nb_now();
  nd_graph *g = NULL;
  nd_experiment_nodes en = {0};
  int64_t y, sets[NM_SETS], targets[NM_SETS];
  int rc = nd_graph_new(&g);
  if (rc == 0) rc = nd_graph_const(g, d->y, "y", &y);
  for (int s = 0; rc == 0 && s < NM_SETS; s++)
    rc = nd_graph_const(g, d->set[s], set_names[s], &sets[s]);
  nd_experiment_spec spec = w5_spec(d, w != NM_GRID);
  if (rc == 0) rc = nd_experiment_add(g, &spec, y, -1, sets, set_names, NM_SETS, &en);
  if (rc == 0 && w == NM_GRID) {
    r->ntargets = NM_SETS;
    memcpy(targets, en.set_score, sizeof targets);
  } else if (rc == 0) {
    r->ntargets = 1;
    targets[0] = en.ens_score[w == NM_STACK ? ND_ENS_STACK : ND_ENS_VOTE];
  }
  if (rc == 0) {
    nd_graph_run_opts ro = {.cache = c, .pool = pool, .targets = targets,
                            .ntargets = r->ntargets};
    rc = nd_graph_run(g, &ro, &r->stats);
    if (rc != 0) nd_graph_report(g, stderr);
  }
  for (size_t i = 0; rc == 0 && i < r->ntargets; i++) rc = nd_graph_get(g, targets[i], &r->value[i]);
  r->seconds = nb_now() - t0;
  if (rc != 0)
    fprintf(stderr, "nidag-bench models: %s: %s: %s\n", NM_NAMES[w], nd_strerror(rc),
            g ? nd_errmsg(g) : "");
  nd_experiment_nodes_free(&en);
  nd_graph_free(g);
  return rc;
}

/* Largest |a - b| / max(1, |b|) over the OOF predictions of a score value. */
static double max_rel_diff(const nd_array *score, const nd_array *ref, size_t n) {
  if (!ref || nd_array_count(ref) != n || nd_array_dtype(ref) != ND_F64) return NAN;
  const double *v = nd_array_data(score);
  const double *pred = v + 2 + NM_OUTER, *b = nd_array_data(ref);
  double worst = 0.0;
  for (size_t i = 0; i < n; i++) {
    double e = fabs(pred[i] - b[i]) / fmax(1.0, fabs(b[i]));
    if (!(e <= worst)) worst = e; /* NaN propagates */
  }
  return worst;
}

static int report(const nm_data *d, nm_work w, const nm_result *r) {
  int bad = 0;
  for (size_t i = 0; i < r->ntargets; i++) {
    const double *v = nd_array_data(r->value[i]);
    const nd_array *ref = w == NM_GRID ? d->ref_set[i] : (w == NM_STACK ? d->ref_stack : d->ref_vote);
    double diff = max_rel_diff(r->value[i], ref, d->n);
    char name[96];
    if (w == NM_GRID)
      snprintf(name, sizeof name, "w5a_nidag_ridge_set%zu_w%zu", i, NM_WIDTHS[i]);
    else
      snprintf(name, sizeof name, "%s", NM_NAMES[w]);
    printf("%s_outer_r2 %.4f r2\n", name, v[0]);
    printf("# %s fold r2", name);
    for (int f = 0; f < NM_OUTER; f++) printf(" %.4f", v[2 + f]);
    printf("\n");
    if (isnan(diff)) {
      printf("# %s: no scikit-learn reference predictions in the data directory\n", name);
    } else {
      printf("%s_max_rel_diff_vs_sklearn %.3g ratio\n", name, diff);
      if (!(diff <= NM_TOL)) {
        printf("# ERROR %s: predictions differ from scikit-learn's by %.3g (> %g)\n", name,
               diff, NM_TOL);
        bad = 1;
      }
    }
  }
  return bad;
}

static bool same_values(const nm_result *a, const nm_result *b) {
  if (a->ntargets != b->ntargets) return false;
  for (size_t i = 0; i < a->ntargets; i++)
    if (!nd_array_equal(a->value[i], b->value[i])) return false;
  return true;
}

static int open_cache(const char *dir, nd_cache **c) {
  nd_cache_opts co = {.dir = dir};
  int rc = nd_cache_open(c, &co);
  if (rc != 0)
    fprintf(stderr, "nidag-bench models: cache '%s': %s\n", dir, nd_cache_open_errmsg());
  return rc;
}

/* Cold reps (each in a fresh cache), then cached reruns of the last one. */
static int bench_work(const nm_opts *o, const nm_data *d, nm_work w, nd_pool *pool) {
  double cold[NM_MAX_REPS], warm[NM_MAX_REPS];
  nm_result first = {0}, r = {0};
  int bad = 0, rc = 0;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/nidag-bench-models-XXXXXX", o->tmp);
  if (!mkdtemp(dir)) {
    perror("nidag-bench models: mkdtemp");
    return 1;
  }
  char cdir[4200];
  nd_cache *c = NULL;
  for (int rep = 0; rc == 0 && rep < o->reps; rep++) {
    snprintf(cdir, sizeof cdir, "%s/cold%d", dir, rep);
    rc = open_cache(cdir, &c);
    if (rc == 0) rc = run_once(d, w, c, pool, &r);
    if (rc != 0) break;
    cold[rep] = r.seconds;
    printf("# %s cold run %d: %.4f s, computed %zu nodes\n", NM_NAMES[w], rep, r.seconds,
           r.stats.computed);
    if (rep == 0) {
      first = r;
      memset(&r, 0, sizeof r);
    } else {
      if (!same_values(&first, &r)) {
        printf("# ERROR %s: cold run %d differs from run 0\n", NM_NAMES[w], rep);
        bad = 1;
      }
      free_result(&r);
    }
    if (rep + 1 < o->reps) {
      nd_cache_close(c);
      c = NULL;
    }
  }
  for (int rep = 0; rc == 0 && rep < o->reps; rep++) {
    rc = run_once(d, w, c, pool, &r);
    if (rc != 0) break;
    warm[rep] = r.seconds;
    if (r.stats.computed != 0 || !same_values(&first, &r)) {
      printf("# ERROR %s: the cached rerun computed %zu nodes or changed a value\n",
             NM_NAMES[w], r.stats.computed);
      bad = 1;
    }
    free_result(&r);
  }
  double reopen = 0.0;
  if (rc == 0) {
    nd_cache_close(c);
    c = NULL;
    double t0 = nb_now();
    rc = open_cache(cdir, &c);
    if (rc == 0) rc = run_once(d, w, c, pool, &r);
    reopen = nb_now() - t0;
    if (rc == 0 && (r.stats.computed != 0 || !same_values(&first, &r))) bad = 1;
    free_result(&r);
  }
  nd_cache_close(c);
  if (rc == 0) {
    printf("%s_cold_wall %.4f s\n", NM_NAMES[w], nb_median(cold, o->reps));
    printf("%s_cached_wall %.5f s\n", NM_NAMES[w], nb_median(warm, o->reps));
    printf("# %s cached rerun after reopening the cache: %.5f s\n", NM_NAMES[w], reopen);
    bad |= report(d, w, &first);
  }
  free_result(&first);
  nb_rm_rf(dir);
  return rc != 0 || bad;
}

/* One untimed stacking run in a scratch cache: the first run of a process
 * pays for page faults, BLAS's first calls and the pool's thread start-up. */
static int warm_up(const nm_opts *o, const nm_data *d, nd_pool *pool) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/nidag-bench-models-XXXXXX", o->tmp);
  if (!mkdtemp(dir)) {
    perror("nidag-bench models: mkdtemp");
    return 1;
  }
  nd_cache *c = NULL;
  nm_result r = {0};
  int rc = open_cache(dir, &c);
  if (rc == 0) rc = run_once(d, NM_STACK, c, pool, &r);
  free_result(&r);
  nd_cache_close(c);
  nb_rm_rf(dir);
  return rc != 0;
}

static int parse_args(int argc, char **argv, nm_opts *o) {
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) goto bad;
    if (strcmp(a, "--reps") == 0) {
      o->reps = atoi(v);
      if (o->reps < 1 || o->reps > NM_MAX_REPS) goto bad;
    } else if (strcmp(a, "--threads") == 0) {
      int t = atoi(v);
      if (t < 1 || t > 256) goto bad;
      o->threads = (unsigned)t;
    } else if (strcmp(a, "--data") == 0) {
      o->data = v;
    } else if (strcmp(a, "--only") == 0) {
      bool any = false;
      for (int w = 0; w < 3; w++) {
        const char *tag[3] = {"w5a", "w5b", "w5c"};
        if (strstr(v, tag[w])) o->only[w] = any = true;
      }
      if (!any) goto bad;
    } else if (strcmp(a, "--tmp") == 0) {
      o->tmp = v;
    } else {
      goto bad;
    }
    i++;
  }
  return 0;
bad:
  fprintf(stderr, "nidag-bench models: bad option '%s'\n", argv[argc > 0 ? argc - 1 : 0]);
  nb_models_usage(stderr);
  return -1;
}

int nb_models_main(int argc, char **argv) {
  nm_opts o = {.data = NB_MODELS_DATA, .tmp = "/tmp", .threads = 2, .reps = NB_REPS};
  if (parse_args(argc, argv, &o) != 0) return 2;
  nm_data d = {0};
  if (load_data(&o, &d) != 0) {
    free_data(&d);
    return 1;
  }
  nd_pool *pool = NULL;
  nd_runtime_opts po = {.threads = o.threads};
  if (nd_pool_open(&pool, &po) != 0) {
    fprintf(stderr, "nidag-bench models: cannot start the pool\n");
    free_data(&d);
    return 1;
  }
  printf("# W5: %zu subjects, sets of widths 116 48 384 41, %d alphas, %d outer x %d inner "
         "folds, %u threads\n",
         d.n, NM_ALPHAS, NM_OUTER, NM_INNER, o.threads);
  int bad = warm_up(&o, &d, pool);
  bool all = !o.only[0] && !o.only[1] && !o.only[2];
  for (int w = 0; w < NM_NWORK; w++)
    if (all || o.only[w]) bad |= bench_work(&o, &d, (nm_work)w, pool);
  nd_pool_close(pool);
  free_data(&d);
  return bad ? 1 : 0;
}
