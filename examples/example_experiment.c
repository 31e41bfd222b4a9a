/* example_experiment: the multi-parcellation experiment of `nidag demo` as a
 * short program over the public API.
 *
 *   example_experiment [COHORT_DIR [PARTICIPANTS [CACHE_DIR]]]
 *   (defaults: ./example-cohort, 60 participants, ./example-cache)
 *
 * The synthetic cohort (nd_cohort_generate; see neuro.h) is written once, when
 * COHORT_DIR has no participants.tsv; PARTICIPANTS applies only then.
 *
 * It builds one lazy graph (node labels shown), runs it against the cache
 * and prints the scores:
 *
 *   atlas file ─ load atlas <a> ─ resample <a> onto the grid ─┐
 *   participant's map ─ load sub-XXXX ───────── parcellate sub-XXXX <a>
 *                                                    │  (all participants)
 *                                              features <a>   + score_a, families
 *                                                    │
 *                        fit <a> f<k>,  fit <a> f<k> inner<i>   (outer fold k, inner i)
 *                             │                      │  (all atlases)
 *                        score <a>          vote / grid / stack f<k>
 *                                                    │  (all outer folds)
 *                                           score vote / grid / stack
 *
 * Every node is keyed by its op, params and inputs (source files by their
 * content), so a second run computes nothing, an added atlas computes only
 * its own parcellations and what depends on them, and an edited map only its
 * parcellations and the fits that see it. README.md ("Tutorial: the
 * experiment") walks through it. Uses only the public header. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nidag.h"

#define TEMPLATES ND_COHORT_DEFAULT_TEMPLATES /* mricron-data's atlases */
#define GRID TEMPLATES "/AICHAmc.nii.gz"       /* the cohort's grid */
#define OUTER_FOLDS 5
#define INNER_FOLDS 3
#define OUTER_SEED 20261121u /* shuffles the families into outer folds */
#define NALPHA 20            /* ridge alphas 1e-3 .. 1e5 */
#define TARGET "score_a"
#define PATH_LEN 1024
#define MIN_PARTICIPANTS 20 /* fewer can leave an outer test fold a single row (R² NaN) */
#define NSTRATEGY 3 /* nd_ensemble: ND_ENS_VOTE, ND_ENS_GRID, ND_ENS_STACK */

/* The atlases: a name (for labels) and a file. Add an atlas to both lists. */
static const char *const ATLAS_NAMES[] = {"aal", "harvardoxford", "jhu"};
static const char *const ATLAS_FILES[] = {
    TEMPLATES "/aal.nii.gz", TEMPLATES "/HarvardOxford-cort-maxprob-thr0-1mm.nii.gz",
    TEMPLATES "/JHU-WhiteMatter-labels-1mm.nii.gz"};
#define NATLAS (sizeof ATLAS_NAMES / sizeof ATLAS_NAMES[0])

static int fail(const char *what, const char *msg) {
  fprintf(stderr, "example_experiment: %s: %s\n", what, msg);
  return 1;
}

/* The outer folds keep families together: nd_cv wants integer group ids,
 * participants.tsv has family_id strings, so number them by first sight. */
static void family_codes(const nd_participants *p, int64_t *code) {
  for (size_t i = 0; i < p->n; i++) {
    code[i] = (int64_t)i; /* no family_id: a family of one */
    for (size_t j = 0; p->family && p->family[i] && j < i; j++)
      if (p->family[j] && strcmp(p->family[i], p->family[j]) == 0) {
        code[i] = code[j];
        break;
      }
  }
}

/* Wrap a vector as a constant node of the graph. */
static int add_vector(nd_graph *g, nd_dtype dt, const void *x, size_t n, size_t elem,
                      const char *label, int64_t *id) {
  nd_array *a;
  int rc = nd_array_from(&a, dt, 1, &n, x, n * elem);
  if (rc == 0) rc = nd_graph_const(g, a, label, id);
  nd_array_release(a);
  return rc;
}

int main(int argc, char **argv) {
  const char *cohort = argc > 1 ? argv[1] : "example-cohort";
  size_t participants = argc > 2 ? strtoul(argv[2], NULL, 10) : 60;
  const char *cache_dir = argc > 3 ? argv[3] : "example-cache";
  if (participants < MIN_PARTICIPANTS || participants > ND_COHORT_MAX_PARTICIPANTS)
    return fail("participants", "needs a number from 20 to 10000");
  char tsv[PATH_LEN];
  snprintf(tsv, sizeof tsv, "%s/participants.tsv", cohort);

  /* 1. The cohort: generated once, when the directory has no participants.tsv
   *    yet; afterwards it is used as it is, like a real dataset. */
  FILE *probe = fopen(tsv, "r");
  if (probe) {
    fclose(probe);
  } else {
    nd_cohort_opts co = {.participants = participants};
    nd_cohort_report rep;
    if (nd_cohort_generate(cohort, &co, &rep) != 0) return fail("cohort", nd_neuro_errmsg());
    printf("cohort: wrote %zu files to %s in %.1f s\n", rep.written, cohort, rep.seconds);
  }

  /* 2. participants.tsv: ids, families, and the numeric columns as targets. */
  nd_participants *p;
  if (nd_participants_read(tsv, &p) != 0) return fail("participants", nd_neuro_errmsg());
  size_t n = p->n, col = 0;
  while (col < p->ntargets && strcmp(p->target_name[col], TARGET) != 0) col++;
  if (col == p->ntargets) return fail(tsv, "no " TARGET " column");

  char *paths = malloc(n * PATH_LEN);
  const char **images = malloc(n * sizeof *images);
  double *y = malloc(n * sizeof *y);
  int64_t *family = malloc(n * sizeof *family);
  if (!paths || !images || !y || !family) return fail("setup", "out of memory");
  for (size_t i = 0; i < n; i++) {
    images[i] = paths + i * PATH_LEN;
    snprintf(paths + i * PATH_LEN, PATH_LEN, "%s/%s/anat/%s_map.nii.gz", cohort, p->id[i],
             p->id[i]);
    y[i] = p->targets[i * p->ntargets + col];
  }
  family_codes(p, family);

  /* 3. Features: per atlas, load it and resample it onto the grid; per
   *    participant, load the map and parcellate it (region means) with every
   *    atlas; stack the rows into one matrix per atlas. Nothing runs yet. */
  nd_graph *g;
  int64_t features[NATLAS], yid, groups;
  if (nd_graph_new(&g) != 0) return fail("graph", "out of memory");
  nd_features_spec fs = {.images = images, .ids = (const char *const *)p->id, .n = n,
                         .atlases = ATLAS_FILES, .atlas_names = ATLAS_NAMES,
                         .natlas = NATLAS, .grid = GRID};
  if (nd_features_add(g, &fs, features, NULL, NULL) != 0)
    return fail("features", nd_models_errmsg());
  if (add_vector(g, ND_F64, y, n, sizeof *y, "target " TARGET, &yid) != 0 ||
      add_vector(g, ND_I64, family, n, sizeof *family, "families", &groups) != 0)
    return fail("constants", nd_errmsg(g));

  /* 4. The experiment: StandardScaler + ridge, alpha chosen by a grid search
   *    over 3 inner folds, inside 5 outer folds that keep families together;
   *    ensembles over the atlases per outer fold (vote: mean prediction; grid:
   *    the atlas with the best inner score; stack: RidgeCV over the atlases'
   *    inner out-of-fold predictions). Every fold fit is its own node. */
  double alphas[NALPHA];
  for (int a = 0; a < NALPHA; a++) alphas[a] = pow(10.0, -3.0 + 8.0 * a / (NALPHA - 1));
  nd_cv inner = {.kind = ND_CV_KFOLD, .k = INNER_FOLDS};
  nd_experiment_spec spec = {
      .fit = {.pipeline = {.scaling = ND_SCALE_STANDARD, .constant = ND_CONSTANT_KEEP,
                           .model = ND_MODEL_RIDGE, .grid = alphas, .ngrid = NALPHA,
                           .scoring = ND_METRIC_R2, .inner = inner},
              .outer = {.kind = ND_CV_GROUP, .k = OUTER_FOLDS, .shuffle = true,
                        .seed = OUTER_SEED},
              .inner = inner},
      .metric = ND_METRIC_R2, .meta_grid = alphas, .nmeta = NALPHA, .ensembles = true};
  nd_experiment_nodes ex;
  if (nd_experiment_add(g, &spec, yid, groups, features, ATLAS_NAMES, NATLAS, &ex) != 0)
    return fail("experiment", nd_models_errmsg());

  /* 5. Run: plan against the cache, compute only what it lacks. The targets
   *    are the score nodes; everything upstream follows. */
  int64_t targets[NATLAS + NSTRATEGY];
  for (size_t a = 0; a < NATLAS; a++) targets[a] = ex.set_score[a];
  for (int s = 0; s < NSTRATEGY; s++) targets[NATLAS + s] = ex.ens_score[s];
  nd_cache *cache;
  if (nd_cache_open(&cache, &(nd_cache_opts){.dir = cache_dir}) != 0)
    return fail("cache", nd_cache_open_errmsg());
  printf("graph: %zu participants, %zu atlases, %s, %d outer x %d inner folds, %zu nodes\n", n,
         NATLAS, TARGET, OUTER_FOLDS, INNER_FOLDS, nd_graph_size(g));
  nd_graph_stats st;
  nd_graph_run_opts ro = {.cache = cache, .targets = targets, .ntargets = NATLAS + NSTRATEGY};
  /* On failure nd_errmsg(g) names the first failed node; nd_graph_report()
   * would list every failed and skipped node. */
  if (nd_graph_run(g, &ro, &st) != 0) return fail("run", nd_errmsg(g));

  /* 6. Results. A cv_score value is [mean, sd, the k fold R², then the n
   *    out-of-fold predictions]. */
  static const char *const STRATEGY[NSTRATEGY] = {"vote", "grid", "stack"};
  printf("R² of %s over %d outer folds (mean ± sd):\n", TARGET, OUTER_FOLDS);
  for (size_t m = 0; m < NATLAS + NSTRATEGY; m++) {
    nd_array *v;
    if (nd_graph_get(g, targets[m], &v) != 0) return fail("result", nd_errmsg(g));
    const double *x = nd_array_data(v);
    printf("  %-6s %-14s %6.3f ± %.3f\n", m < NATLAS ? "atlas" : "ens",
           m < NATLAS ? ATLAS_NAMES[m] : STRATEGY[m - NATLAS], x[0], x[1]);
    nd_array_release(v);
  }
  printf("run: computed %zu, cache hits %zu, %.2f s\n", st.computed, st.hits, st.run_seconds);

  nd_experiment_nodes_free(&ex);
  nd_graph_free(g);
  nd_participants_free(p);
  free(paths);
  free(images);
  free(y);
  free(family);
  int rc = nd_cache_close(cache); /* flushes what the run stored */
  return rc != 0 ? fail("cache", nd_strerror(rc)) : 0;
}
