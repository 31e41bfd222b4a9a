/* `nidag demo`: the multi-parcellation prediction experiment, end to end.
 *
 *   cohort/ (generated once: nd_cohort_generate)
 *     sub-XXXX/anat/sub-XXXX_map.nii.gz ─ load ─┐
 *   atlas ─ load ─ resample onto the 2 mm grid ─┴─ parcellate ─ features <atlas>
 *   features × target ─ per outer fold: full fit + 3 inner fits per atlas
 *                      ─ vote / grid / stack per fold ─ scores
 *
 * Every participant-parcellation extraction and every fold fit is a cached
 * node (nd_features_add, nd_experiment_add), so a rerun computes nothing and
 * loads no image, an added atlas computes only its own nodes, and a changed
 * participant file recomputes only what depends on it.
 *
 * Continuous targets get StandardScaler + ridge (20 alphas), binary ones
 * StandardScaler + L2 logistic regression (6 Cs, ROC AUC); 5 outer folds
 * grouped by family, 3 inner folds. Results: a table of mean ± sd over folds,
 * results.csv, results.json and strategies.svg (gnuplot, when installed) in
 * --out. A progress bar on a TTY, plain lines otherwise; Ctrl-C stops
 * starting new nodes, keeps everything finished, and exits 130.
 *
 * Uses only the public API (nidag.h). */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "demo_int.h"
#include "nidag.h"

#define DEMO_OUTER DEMO_FOLDS
#define DEMO_INNER 3
#define DEMO_SEED 20261121u /* the outer split's shuffle */
#define DEMO_NALPHA 20
#define DEMO_NC 6
#define DEMO_MAX_TARGETS 64
#define EXIT_INTERRUPTED 130
#define DEMO_MIN_PARTICIPANTS (2 * DEMO_OUTER) /* build() needs two per outer fold */
#define DEMO_LIST_CAP 4096                     /* the text of --atlases or --targets */

const demo_atlas DEMO_ATLASES[] = {
    {"aal", "aal.nii.gz"},
    {"harvardoxford", "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz"},
    {"brodmann", "brodmann.nii.gz"},
    {"aicha", "AICHAmc.nii.gz"},
    {"jhu", "JHU-WhiteMatter-labels-1mm.nii.gz"},
};
const size_t DEMO_NATLASES = sizeof DEMO_ATLASES / sizeof DEMO_ATLASES[0];
#define DEMO_GRID_ATLAS "AICHAmc.nii.gz" /* the cohort's 2 mm grid */

/* ------------------------------------------------------------- helpers */

static char *path_join(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", a, b);
  return p;
}

static int mkdir_p(const char *dir) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) return -1;
  for (char *s = buf + 1; *s; s++) {
    if (*s != '/') continue;
    *s = '\0';
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
    *s = '/';
  }
  if (mkdir(buf, 0777) == 0) return 0;
  struct stat st;
  if (errno != EEXIST || stat(buf, &st) != 0) return -1;
  if (!S_ISDIR(st.st_mode)) {
    errno = ENOTDIR;
    return -1;
  }
  return 0;
}

/* Family ids as integer codes (first appearance order); a participant with
 * no family is its own family. */
static int64_t *family_codes(const nd_participants *p) {
  int64_t *code = malloc(sizeof *code * (p->n ? p->n : 1));
  if (!code) return NULL;
  int64_t next = 0;
  for (size_t i = 0; i < p->n; i++) {
    code[i] = -1;
    for (size_t j = 0; p->family && p->family[i] && j < i; j++)
      if (p->family[j] && strcmp(p->family[i], p->family[j]) == 0) {
        code[i] = code[j];
        break;
      }
    if (code[i] < 0) code[i] = next++;
  }
  return code;
}

static bool is_binary(const double *y, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (y[i] != 0.0 && y[i] != 1.0) return false;
  return true;
}

/* ------------------------------------------------------------ progress */

typedef struct progress {
  bool tty;
  double last_plain;
  int last_pct;
} progress;

static void on_progress(const nd_graph_progress *p, void *ud) {
  progress *pr = ud;
  size_t total = p->total ? p->total : 1;
  int pct = (int)(100.0 * (double)p->done / (double)total);
  if (pr->tty) {
    enum { WIDTH = 30 };
    int fill = pct * WIDTH / 100;
    char bar[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++) bar[i] = i < fill ? '#' : '.';
    bar[WIDTH] = '\0';
    char eta[32] = "";
    if (p->eta_s >= 0 && !p->final) snprintf(eta, sizeof eta, ", ETA %.0f s", p->eta_s);
    fprintf(stderr, "\r[%s] %3d%% %zu/%zu nodes, %zu cached, %zu failed%s   ", bar, pct,
            p->done, p->total, p->hits, p->failed + p->skipped, eta);
    if (p->final) fputc('\n', stderr);
    fflush(stderr);
    return;
  }
  /* plain lines: at most one per 10 % step and per 2 s, and the last */
  if (!p->final && (pct / 10 == pr->last_pct / 10 || p->elapsed_s - pr->last_plain < 2.0))
    return;
  pr->last_pct = pct;
  pr->last_plain = p->elapsed_s;
  fprintf(stderr, "progress: %zu/%zu nodes (%d%%), %zu cached, %zu failed, %.1f s\n", p->done,
          p->total, pct, p->hits, p->failed + p->skipped, p->elapsed_s);
}

/* ------------------------------------------------------------- options */

typedef struct demo_opts {
  const char *cohort, *out, *templates, *cache_dir;
  const char *atlases[DEMO_MAX_ATLAS];
  size_t natlas;
  const char *targets[DEMO_MAX_TARGETS];
  size_t ntargets;
  size_t participants;
  uint64_t seed;
  unsigned threads;
  bool no_cache, skip_bad, quiet, no_generate;
} demo_opts;

void cli_demo_usage(FILE *f) {
  fprintf(f,
          "demo options:\n"
          "  --cohort DIR          the synthetic cohort (default ./cohort; generated on first\n"
          "                        use, then reused: only missing or changed files are rewritten)\n"
          "  --participants N      cohort size, %d to %d (default %d)\n"
          "  --seed S              cohort seed (default %d)\n"
          "  --no-generate         use DIR as it is (your own data in the same layout:\n"
          "                        participants.tsv, sub-X/anat/sub-X_map.nii.gz)\n"
          "  --atlases LIST        comma-separated, from aal,harvardoxford,brodmann,aicha,jhu\n"
          "                        (default all five)\n"
          "  --targets LIST        participants.tsv columns to predict (default all)\n"
          "  --out DIR             results.csv, results.json, strategies.svg (default ./results)\n"
          "  --templates DIR       the atlases (default %s)\n"
          "  --skip-bad            leave out participants whose image cannot be read (a\n"
          "                        warning names each) instead of failing\n"
          "  --threads N           worker threads (default: NIDAG_THREADS, else the CPUs)\n"
          "  --cache DIR | --no-cache   the result cache (default NIDAG_CACHE, else ./.nidag)\n"
          "  --quiet               no progress output\n",
          DEMO_MIN_PARTICIPANTS, ND_COHORT_MAX_PARTICIPANTS, ND_COHORT_DEFAULT_PARTICIPANTS,
          ND_COHORT_DEFAULT_SEED, ND_COHORT_DEFAULT_TEMPLATES);
}

/* Cut a comma-separated list into buf (DEMO_LIST_CAP bytes, which out then
 * points into); -1 when it is too long, has more than max items or none. */
static int split_list(const char *s, char *buf, const char **out, size_t max, size_t *n) {
  if (strlen(s) >= DEMO_LIST_CAP) return -1;
  strcpy(buf, s);
  *n = 0;
  for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    if (*n == max) return -1;
    out[(*n)++] = tok;
  }
  return *n ? 0 : -1;
}

static int parse_count(const char *opt, const char *v, uint64_t lo, uint64_t hi, uint64_t *out) {
  if (cli_parse_u64(v, lo, hi, out)) return 0;
  fprintf(stderr, "nidag demo: %s needs a whole number from %" PRIu64 " to %" PRIu64 ", got '%s'\n",
          opt, lo, hi, v);
  return -1;
}

static int parse_opts(int argc, char **argv, const char *cache_dir, demo_opts *o) {
  *o = (demo_opts){.cohort = "cohort", .out = "results",
                   .templates = ND_COHORT_DEFAULT_TEMPLATES, .cache_dir = cache_dir,
                   .participants = ND_COHORT_DEFAULT_PARTICIPANTS, .seed = ND_COHORT_DEFAULT_SEED};
  for (size_t a = 0; a < DEMO_NATLASES; a++) o->atlases[o->natlas++] = DEMO_ATLASES[a].name;
  for (int i = 1; i < argc; i++) {
    bool missing = false;
    const char *v;
    uint64_t x;
    if ((v = cli_option_value(argc, argv, &i, "--cohort", &missing))) o->cohort = v;
    else if ((v = cli_option_value(argc, argv, &i, "--out", &missing))) o->out = v;
    else if ((v = cli_option_value(argc, argv, &i, "--templates", &missing))) o->templates = v;
    else if ((v = cli_option_value(argc, argv, &i, "--cache", &missing))) o->cache_dir = v;
    else if ((v = cli_option_value(argc, argv, &i, "--participants", &missing))) {
      if (parse_count("--participants", v, DEMO_MIN_PARTICIPANTS, ND_COHORT_MAX_PARTICIPANTS, &x))
        return -1;
      o->participants = (size_t)x;
    } else if ((v = cli_option_value(argc, argv, &i, "--seed", &missing))) {
      if (parse_count("--seed", v, 1, UINT64_MAX, &x)) return -1;
      o->seed = x;
    } else if ((v = cli_option_value(argc, argv, &i, "--threads", &missing))) {
      if (parse_count("--threads", v, 1, CLI_MAX_THREADS, &x)) return -1;
      o->threads = (unsigned)x;
    } else if ((v = cli_option_value(argc, argv, &i, "--atlases", &missing))) {
      static char abuf[DEMO_LIST_CAP];
      if (split_list(v, abuf, o->atlases, DEMO_MAX_ATLAS, &o->natlas)) {
        fprintf(stderr, "nidag demo: --atlases needs a comma-separated list of at most %d\n",
                DEMO_MAX_ATLAS);
        return -1;
      }
    } else if ((v = cli_option_value(argc, argv, &i, "--targets", &missing))) {
      static char tbuf[DEMO_LIST_CAP];
      if (split_list(v, tbuf, o->targets, DEMO_MAX_TARGETS, &o->ntargets)) {
        fprintf(stderr, "nidag demo: --targets needs a comma-separated list of at most %d\n",
                DEMO_MAX_TARGETS);
        return -1;
      }
    } else if (!missing && strcmp(argv[i], "--no-cache") == 0) o->no_cache = true;
    else if (!missing && strcmp(argv[i], "--skip-bad") == 0) o->skip_bad = true;
    else if (!missing && strcmp(argv[i], "--quiet") == 0) o->quiet = true;
    else if (!missing && strcmp(argv[i], "--no-generate") == 0) o->no_generate = true;
    else {
      /* a valued option without its value matches none of the above */
      if (missing) fprintf(stderr, "nidag demo: %s needs a value\n", argv[i]);
      else fprintf(stderr, "nidag demo: unknown option '%s'\n", argv[i]);
      return -1;
    }
  }
  for (size_t a = 0; a < o->natlas; a++) {
    size_t k = 0;
    while (k < DEMO_NATLASES && strcmp(o->atlases[a], DEMO_ATLASES[k].name) != 0) k++;
    if (k == DEMO_NATLASES) {
      fprintf(stderr, "nidag demo: unknown atlas '%s' (known: aal, harvardoxford, brodmann, "
                      "aicha, jhu)\n", o->atlases[a]);
      return -1;
    }
  }
  return 0;
}

/* ------------------------------------------------------- the experiment */

static const char *atlas_file(const char *name) {
  for (size_t k = 0; k < DEMO_NATLASES; k++)
    if (strcmp(name, DEMO_ATLASES[k].name) == 0) return DEMO_ATLASES[k].file;
  return NULL;
}

typedef struct demo_run {
  const demo_opts *o;
  nd_participants *parts;
  bool *excluded;      /* participants left out (--skip-bad) */
  size_t nkept;
  nd_graph *g;
  demo_result *res;    /* per target */
  size_t ntargets;
  int64_t *loads;      /* per kept participant */
  size_t *kept_index;  /* kept participant -> participants row */
  double alphas[DEMO_NALPHA], Cs[DEMO_NC];
} demo_run;

static int build(demo_run *d) {
  const demo_opts *o = d->o;
  nd_participants *p = d->parts;
  size_t n = 0;
  for (size_t i = 0; i < p->n; i++) n += !d->excluded[i];
  d->nkept = n;
  if (n < 2 * DEMO_OUTER) {
    fprintf(stderr, "nidag demo: only %zu participants left, %d needed\n", n, 2 * DEMO_OUTER);
    return ND_EINVAL;
  }
  char **images = calloc(n, sizeof *images);
  const char **ids = calloc(n, sizeof *ids);
  char *atlas_paths[DEMO_MAX_ATLAS] = {0};
  char *grid = path_join(o->templates, DEMO_GRID_ATLAS);
  double *y = malloc(sizeof *y * n);
  int64_t *fam_all = family_codes(p), *fam = malloc(sizeof *fam * n);
  int64_t features[DEMO_MAX_ATLAS];
  free(d->loads);
  free(d->kept_index);
  d->loads = calloc(n, sizeof *d->loads);
  d->kept_index = calloc(n, sizeof *d->kept_index);
  int rc = (images && ids && grid && y && fam_all && fam && d->loads && d->kept_index)
               ? nd_graph_new(&d->g) : ND_ENOMEM;
  for (size_t i = 0, k = 0; !rc && i < p->n; i++) {
    if (d->excluded[i]) continue;
    char rel[512];
    snprintf(rel, sizeof rel, "%s/anat/%s_map.nii.gz", p->id[i], p->id[i]);
    images[k] = path_join(o->cohort, rel);
    ids[k] = p->id[i];
    fam[k] = fam_all[i];
    d->kept_index[k] = i;
    if (!images[k++]) rc = ND_ENOMEM;
  }
  for (size_t a = 0; !rc && a < o->natlas; a++)
    if (!(atlas_paths[a] = path_join(o->templates, atlas_file(o->atlases[a])))) rc = ND_ENOMEM;
  if (!rc) {
    nd_features_spec fs = {.images = (const char *const *)images, .ids = ids, .n = n,
                           .atlases = (const char *const *)atlas_paths,
                           .atlas_names = o->atlases, .natlas = o->natlas, .grid = grid};
    rc = nd_features_add(d->g, &fs, features, d->loads, NULL);
    if (rc) fprintf(stderr, "nidag demo: %s\n", nd_models_errmsg());
  }
  int64_t groups = -1;
  if (!rc) {
    nd_array *ga = NULL;
    rc = nd_array_from(&ga, ND_I64, 1, &n, fam, n * sizeof *fam);
    if (!rc) rc = nd_graph_const(d->g, ga, "families", &groups);
    nd_array_release(ga);
  }
  for (size_t t = 0; !rc && t < d->ntargets; t++) {
    demo_result *r = &d->res[t];
    for (size_t k = 0; k < n; k++) y[k] = p->targets[d->kept_index[k] * p->ntargets + r->column];
    r->binary = is_binary(y, n);
    nd_array *ya = NULL;
    int64_t yid;
    char label[160];
    snprintf(label, sizeof label, "target %s", r->name);
    rc = nd_array_from(&ya, ND_F64, 1, &n, y, n * sizeof *y);
    if (!rc) rc = nd_graph_const(d->g, ya, label, &yid);
    nd_array_release(ya);
    nd_experiment_spec e = {0};
    e.fit.pipeline = (nd_pipeline){
        .scaling = ND_SCALE_STANDARD, .constant = ND_CONSTANT_KEEP,
        .model = r->binary ? ND_MODEL_LOGISTIC : ND_MODEL_RIDGE,
        .grid = r->binary ? d->Cs : d->alphas, .ngrid = r->binary ? DEMO_NC : DEMO_NALPHA,
        .scoring = r->binary ? ND_METRIC_ROC_AUC : ND_METRIC_R2,
        .inner = {.kind = r->binary ? ND_CV_STRATIFIED : ND_CV_KFOLD, .k = DEMO_INNER}};
    e.fit.outer = (nd_cv){.kind = ND_CV_GROUP, .k = DEMO_OUTER, .shuffle = true, .seed = DEMO_SEED};
    e.fit.inner = e.fit.pipeline.inner;
    e.metric = e.fit.pipeline.scoring;
    e.meta_grid = r->binary ? NULL : d->alphas;
    e.nmeta = r->binary ? 0 : DEMO_NALPHA;
    e.ensembles = true;
    /* labels name the target too ("fit score_a:aal f2"), so a failure report
     * says which experiment a fit belongs to */
    char names[DEMO_MAX_ATLAS][160];
    const char *name_ptr[DEMO_MAX_ATLAS];
    for (size_t a = 0; a < o->natlas; a++) {
      snprintf(names[a], sizeof names[a], "%s:%s", r->name, o->atlases[a]);
      name_ptr[a] = names[a];
    }
    if (!rc) rc = nd_experiment_add(d->g, &e, yid, groups, features, name_ptr, o->natlas,
                                    &r->nodes);
    if (rc) fprintf(stderr, "nidag demo: target %s: %s\n", r->name, nd_models_errmsg());
  }
  for (size_t k = 0; images && k < n; k++) free(images[k]);
  for (size_t a = 0; a < o->natlas; a++) free(atlas_paths[a]);
  free(images);
  free(ids);
  free(grid);
  free(y);
  free(fam_all);
  free(fam);
  return rc;
}

static int run_graph(demo_run *d, nd_cache *cache, nd_pool *pool, nd_graph_stats *st) {
  size_t ntg = d->ntargets * (d->o->natlas + 3), k = 0;
  int64_t *tg = malloc(sizeof *tg * (ntg ? ntg : 1));
  if (!tg) return ND_ENOMEM;
  for (size_t t = 0; t < d->ntargets; t++) {
    for (size_t a = 0; a < d->o->natlas; a++) tg[k++] = d->res[t].nodes.set_score[a];
    for (int s = 0; s < 3; s++) tg[k++] = d->res[t].nodes.ens_score[s];
  }
  progress pr = {.tty = isatty(STDERR_FILENO) == 1, .last_pct = -100};
  nd_graph_run_opts ro = {.cache = cache, .pool = pool, .targets = tg, .ntargets = k,
                          .cancel = &cli_cancel};
  if (!d->o->quiet) {
    ro.progress = on_progress;
    ro.progress_ud = &pr;
  }
  int rc = nd_graph_run(d->g, &ro, st);
  free(tg);
  return rc;
}

/* After a failed run under --skip-bad: exclude every participant whose load
 * failed; true when some were excluded (then rebuild and rerun). */
static bool exclude_bad(demo_run *d) {
  bool any = false;
  for (size_t k = 0; k < d->nkept; k++) {
    /* a load fails on a bad file, and is skipped when its file node failed
     * (a missing file): either way the participant is unreadable */
    nd_graph_node_state st = nd_graph_state(d->g, d->loads[k]);
    if (st != ND_GNODE_FAILED && st != ND_GNODE_SKIPPED) continue;
    size_t i = d->kept_index[k];
    const char *msg = "";
    nd_graph_error(d->g, d->loads[k], &msg);
    fprintf(stderr, "nidag demo: warning: leaving out participant %s: %s\n", d->parts->id[i],
            msg);
    d->excluded[i] = true;
    any = true;
  }
  return any;
}

static size_t count_loads(const demo_run *d) {
  size_t c = 0;
  for (size_t k = 0; k < d->nkept; k++)
    c += nd_graph_state(d->g, d->loads[k]) == ND_GNODE_COMPUTED;
  return c;
}

/* Read each score node's value into the results. */
static int collect(demo_run *d) {
  for (size_t t = 0; t < d->ntargets; t++) {
    demo_result *r = &d->res[t];
    for (size_t m = 0; m < d->o->natlas + 3; m++) {
      int64_t id = m < d->o->natlas ? r->nodes.set_score[m] : r->nodes.ens_score[m - d->o->natlas];
      nd_array *v = NULL;
      int rc = nd_graph_get(d->g, id, &v);
      if (rc) return rc;
      const double *x = nd_array_data(v);
      r->mean[m] = x[0];
      r->sd[m] = x[1];
      for (int f = 0; f < DEMO_OUTER; f++) r->fold[m][f] = x[2 + f];
      nd_array_release(v);
    }
  }
  return 0;
}

static int choose_targets(demo_run *d) {
  const demo_opts *o = d->o;
  nd_participants *p = d->parts;
  size_t want = o->ntargets ? o->ntargets : p->ntargets;
  d->res = calloc(want ? want : 1, sizeof *d->res);
  if (!d->res) return ND_ENOMEM;
  for (size_t t = 0; t < want; t++) {
    size_t c = t;
    if (o->ntargets) {
      for (c = 0; c < p->ntargets && strcmp(p->target_name[c], o->targets[t]) != 0; c++) {
      }
      if (c == p->ntargets) {
        fprintf(stderr, "nidag demo: participants.tsv has no target column '%s'\n", o->targets[t]);
        return ND_EINVAL;
      }
    }
    bool finite = true;
    for (size_t i = 0; i < p->n; i++) finite = finite && isfinite(p->targets[i * p->ntargets + c]);
    if (!finite) {
      fprintf(stderr, "nidag demo: warning: target '%s' has missing values; it is left out\n",
              p->target_name[c]);
      continue;
    }
    demo_result *r = &d->res[d->ntargets++];
    r->name = p->target_name[c];
    r->column = c;
  }
  if (d->ntargets == 0) {
    fprintf(stderr, "nidag demo: %s/participants.tsv has no numeric target column without "
                    "missing values\n", o->cohort);
    return ND_EINVAL;
  }
  return 0;
}

static void free_run(demo_run *d) {
  for (size_t t = 0; d->res && t < d->ntargets; t++) nd_experiment_nodes_free(&d->res[t].nodes);
  free(d->res);
  free(d->excluded);
  free(d->loads);
  free(d->kept_index);
  nd_graph_free(d->g);
  nd_participants_free(d->parts);
}

static void reset_graph(demo_run *d) {
  for (size_t t = 0; t < d->ntargets; t++) nd_experiment_nodes_free(&d->res[t].nodes);
  nd_graph_free(d->g);
  d->g = NULL;
}

static int prepare_cohort(const demo_opts *o, nd_pool *pool, nd_cache *memo) {
  nd_cohort_opts co = {.participants = o->participants, .seed = o->seed,
                       .templates = o->templates, .pool = pool, .memo = memo};
  nd_cohort_report rep = {0};
  int rc = nd_cohort_generate(o->cohort, &co, &rep);
  if (rc) {
    fprintf(stderr, "nidag demo: cohort '%s': %s\n", o->cohort, nd_neuro_errmsg());
    return rc;
  }
  if (rep.written)
    printf("cohort: wrote %zu files in %.1f s (%zu already there) in %s\n", rep.written,
           rep.seconds, rep.skipped, o->cohort);
  else
    printf("cohort: %zu files already there and unchanged (%s, checked in %.2f s)\n",
           rep.skipped, o->cohort, rep.seconds);
  return 0;
}

int cli_demo(int argc, char **argv, const char *cache_dir) {
  demo_opts o;
  if (parse_opts(argc, argv, cache_dir, &o)) {
    cli_demo_usage(stderr);
    return EXIT_USAGE;
  }
  double t0 = cli_now_s();
  nd_runtime_opts rto = {.threads = o.threads};
  nd_pool *pool = NULL;
  int rc = nd_pool_open(&pool, &rto);
  if (rc) {
    fprintf(stderr, "nidag demo: cannot start the pool: %s\n", nd_strerror(rc));
    return EXIT_RUN_FAILED;
  }
  demo_run d = {.o = &o};
  for (int a = 0; a < DEMO_NALPHA; a++)
    d.alphas[a] = pow(10.0, -3.0 + 8.0 * a / (DEMO_NALPHA - 1));
  for (int c = 0; c < DEMO_NC; c++) d.Cs[c] = pow(10.0, -3.0 + 5.0 * c / (DEMO_NC - 1));
  nd_cache *cache = NULL;
  int status = EXIT_RUN_FAILED;
  char *tsv = NULL;
  if (!o.no_cache) {
    nd_cache_opts co = {.dir = o.cache_dir};
    if (nd_cache_open(&cache, &co)) {
      fprintf(stderr, "nidag demo: %s\n", nd_cache_open_errmsg());
      goto done;
    }
  }
  if (!o.no_generate && prepare_cohort(&o, pool, cache)) goto done;
  tsv = path_join(o.cohort, "participants.tsv");
  if (!tsv || nd_participants_read(tsv, &d.parts)) {
    fprintf(stderr, "nidag demo: %s\n", tsv ? nd_neuro_errmsg() : "out of memory");
    goto done;
  }
  d.excluded = calloc(d.parts->n ? d.parts->n : 1, sizeof *d.excluded);
  if (!d.excluded || choose_targets(&d)) goto done;
  struct sigaction sa = {0}, old_sa;
  sa.sa_handler = cli_on_sigint;
  sigaction(SIGINT, &sa, &old_sa);
  nd_graph_stats st = {0};
  for (;;) {
    if ((rc = build(&d))) break;
    printf("experiment: %zu participants x %zu atlases x %zu targets; %d outer folds grouped by "
           "family, %d inner; graph of %zu nodes; %u threads; cache %s\n",
           d.nkept, o.natlas, d.ntargets, DEMO_OUTER, DEMO_INNER, nd_graph_size(d.g),
           nd_pool_threads(pool), cache ? nd_cache_dir(cache) : "none (--no-cache)");
    fflush(stdout);
    rc = run_graph(&d, cache, pool, &st);
    if (rc == 0 || rc == ND_ECANCELED || !o.skip_bad || !exclude_bad(&d)) break;
    reset_graph(&d);
  }
  sigaction(SIGINT, &old_sa, NULL);
  size_t loads = d.g ? count_loads(&d) : 0;
  if (rc == ND_ECANCELED) {
    fprintf(stderr, "nidag demo: interrupted; the %zu nodes finished so far are in the cache\n",
            st.computed);
    status = EXIT_INTERRUPTED;
  } else if (rc) {
    fprintf(stderr, "nidag demo: the run failed (%s); failed and skipped nodes:\n",
            nd_strerror(rc));
    if (d.g) nd_graph_report(d.g, stderr);
    fprintf(stderr, "nidag demo: everything else that finished is in the cache%s\n",
            o.skip_bad ? "" : "; --skip-bad leaves out participants whose image is bad");
  } else if ((rc = collect(&d)) == 0) {
    demo_print_table(&d.res[0], d.ntargets, o.atlases, o.natlas);
    demo_checksum(&d.res[0], d.ntargets, o.natlas);
    if (mkdir_p(o.out) != 0)
      fprintf(stderr, "nidag demo: cannot create '%s': %s\n", o.out, strerror(errno));
    else if (demo_write_outputs(o.out, &d.res[0], d.ntargets, o.atlases, o.natlas, d.nkept) == 0)
      status = 0;
  }
  printf("run: computed %zu, cache hits %zu, failed %zu, skipped %zu, images loaded %zu, "
         "wall %.2f s (the hits had taken %.2f s to compute)\n",
         st.computed, st.hits, st.failed, st.skipped, loads, cli_now_s() - t0, st.seconds_saved);
done:
  free(tsv);
  free_run(&d);
  if (cache && nd_cache_close(cache)) status = EXIT_RUN_FAILED;
  nd_pool_close(pool);
  return status;
}
