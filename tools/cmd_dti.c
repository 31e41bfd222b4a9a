/* `nidag dti --dwi F --bval F --bvec F [--mask F] --out PREFIX ...`: a
 * diffusion tensor fit (DIPY 1.6's TensorModel, WLS or OLS) through a cached
 * graph, written as NIfTI maps:
 *
 *   file DWI  ──> nd.nifti_load (f64, not stored) ──┐
 *   file BVAL ──────────────────────────────────────┼──> nd.dti_fit ──> maps
 *   file BVEC ──────────────────────────────────────┤      (stored)
 *   [file MASK ─> nd.nifti_load (f64, not stored) ──┘]
 *
 * The nodes come from nd_dti_add. The fit's key covers the contents of the
 * four files, the method, min_signal and b0_threshold (the CLI keeps DIPY's
 * defaults for the last two); the schedule, the chunk count and the thread
 * count are not part of it (the maps do not depend on them), so a rerun with
 * other values of those is a cache hit.
 *
 * Outputs: PREFIX{fa,md,ad,rd,evals,evecs}.nii.gz (nd_dti_maps_save; files
 * whose bytes would not change are left untouched). When PREFIX is an
 * existing directory the files go inside it; otherwise the directory part of
 * PREFIX must exist (it is never created) and is checked before any work.
 *
 * The summary (stdout) counts voxels from the maps, because the graph op does
 * not return nd_dti_fit_image's report: a voxel was fitted when its MD is not
 * 0 (voxels outside the mask are 0 in every map, a fitted voxel's MD is at
 * least the eigenvalue floor, a failed one's is NaN), and failed when its MD
 * is NaN. The eigenvalue floor is recomputed from the gradient table (a fit
 * of zero voxels), which also works for a cache hit.
 *
 * Exit status: 0 ok, 1 a failed run (the failed nodes are listed on stderr,
 * naming the file and the problem), 2 a usage error, 130 interrupted.
 *
 * A tool, not the library: it prints and returns exit codes. Only the public
 * API (nidag.h) is used.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "nidag.h"

#define DTI_DEFAULT_CACHE_DIR "./.nidag"
#define DTI_EXIT_INTERRUPTED 130
#define DTI_MAX_CHUNKS 100000000u

typedef struct dti_cli {
  const char *dwi, *bval, *bvec, *mask, *out;
  nd_dti_method method;
  nd_chunking chunking;
  size_t chunks;         /* 0: ND_DEFAULT_CHUNKS */
  const char *cache_dir; /* NULL: $NIDAG_CACHE, else ./.nidag */
  bool no_cache, help;
  unsigned threads; /* 0: default */
} dti_cli;

void cli_dti_usage(FILE *f) {
  fprintf(f,
          "\n"
          "dti (nidag dti --dwi F --bval F --bvec F --out PREFIX [options]): a diffusion\n"
          "tensor fit (DIPY 1.6's TensorModel) of a 4D DWI, cached, written as\n"
          "PREFIX{fa,md,ad,rd,evals,evecs}.nii.gz (float32; an existing directory as\n"
          "PREFIX puts the files inside it; otherwise PREFIX's directory must exist).\n"
          "  --dwi F                 the 4D diffusion-weighted NIfTI image\n"
          "  --bval F, --bvec F      FSL b-values and b-vectors (b0: b <= %g)\n"
          "  --mask F                fit only where this 3D image on the DWI's grid is\n"
          "                          non-zero (0 elsewhere in every map)\n"
          "  --out PREFIX            the output files' prefix (\"results/sub-01_\")\n"
          "  --method wls|ols        weighted (default, as DIPY) or ordinary least squares\n"
          "  --schedule static|dynamic|guided  how voxel chunks go to the workers\n"
          "                          (default dynamic); never changes the maps\n"
          "  --chunks K              number of voxel chunks, >= 1 (default %d)\n"
          "  --threads N             worker threads, 1..%d\n"
          "  --cache DIR             result cache (default: $NIDAG_CACHE, else %s)\n"
          "  --no-cache              compute everything, store nothing\n"
          "  A rerun with the same file contents and --method is read from the cache;\n"
          "  --schedule, --chunks and --threads are not part of the key.\n",
          ND_DTI_B0_THRESHOLD, ND_DEFAULT_CHUNKS, CLI_MAX_THREADS, DTI_DEFAULT_CACHE_DIR);
}


/* ------------------------------------------------------------ arguments */

/* Parse argv (argv[0] is "dti"). Returns 0 or EXIT_USAGE after printing the
 * problem. */
static int parse_args(int argc, char **argv, dti_cli *cli) {
  static const char *const VALUED[] = {"--dwi",      "--bval",   "--bvec",  "--mask",
                                       "--out",      "--method", "--schedule",
                                       "--chunks",   "--threads", "--cache"};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-' || a[1] == '\0') return cli_usage_error("dti", "unexpected argument '%s'", a);
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      cli->help = true;
      return 0;
    }
    if (!strcmp(a, "--no-cache")) {
      cli->no_cache = true;
      continue;
    }
    const char *name = NULL, *v = NULL;
    int urc = cli_valued_option("dti", argc, argv, &i, VALUED, sizeof VALUED / sizeof VALUED[0],
                                true, &name, &v);
    if (urc) return urc;
    if (!strcmp(name, "--dwi")) {
      cli->dwi = v;
    } else if (!strcmp(name, "--bval")) {
      cli->bval = v;
    } else if (!strcmp(name, "--bvec")) {
      cli->bvec = v;
    } else if (!strcmp(name, "--mask")) {
      cli->mask = v;
    } else if (!strcmp(name, "--out")) {
      cli->out = v;
    } else if (!strcmp(name, "--method")) {
      if (!strcmp(v, "wls")) cli->method = ND_DTI_WLS;
      else if (!strcmp(v, "ols")) cli->method = ND_DTI_OLS;
      else return cli_usage_error("dti", "--method is 'wls' or 'ols', got '%s'", v);
    } else if (!strcmp(name, "--schedule")) {
      if (!strcmp(v, "static")) cli->chunking = ND_STATIC;
      else if (!strcmp(v, "dynamic")) cli->chunking = ND_DYNAMIC;
      else if (!strcmp(v, "guided")) cli->chunking = ND_GUIDED;
      else return cli_usage_error("dti", "--schedule is 'static', 'dynamic' or 'guided', got '%s'", v);
    } else if (!strcmp(name, "--chunks")) {
      uint64_t n;
      if (!cli_parse_u64(v, 1, DTI_MAX_CHUNKS, &n))
        return cli_usage_error("dti", "--chunks needs a whole number from 1 to %u, got '%s'",
                           DTI_MAX_CHUNKS, v);
      cli->chunks = (size_t)n;
    } else if (!strcmp(name, "--threads")) {
      uint64_t n;
      if (!cli_parse_u64(v, 1, CLI_MAX_THREADS, &n))
        return cli_usage_error("dti", "--threads needs a whole number from 1 to %d, got '%s'",
                           CLI_MAX_THREADS, v);
      cli->threads = (unsigned)n;
    } else { /* --cache */
      cli->cache_dir = v;
    }
  }
  const char *need[] = {"--dwi", "--bval", "--bvec", "--out"};
  const char *have[] = {cli->dwi, cli->bval, cli->bvec, cli->out};
  for (size_t k = 0; k < 4; k++)
    if (!have[k]) return cli_usage_error("dti", "missing required option %s", need[k]);
  if (cli->no_cache && cli->cache_dir)
    return cli_usage_error("dti", "--cache and --no-cache contradict each other");
  return 0;
}

/* ------------------------------------------------------------ the prefix */

/* The prefix to write with: PREFIX, or PREFIX/ when it is an existing
 * directory. Fails (message printed, NULL returned) when the directory the
 * files would go into does not exist or is not a directory. */
static char *output_prefix(const char *out) {
  struct stat st;
  size_t n = strlen(out);
  bool dir = stat(out, &st) == 0 && S_ISDIR(st.st_mode);
  char *prefix = malloc(n + 2);
  if (!prefix) {
    fprintf(stderr, "nidag dti: out of memory\n");
    return NULL;
  }
  snprintf(prefix, n + 2, "%s%s", out, dir && out[n - 1] != '/' ? "/" : "");
  if (dir) return prefix;
  const char *slash = strrchr(out, '/');
  if (!slash) return prefix; /* the working directory */
  char *parent = slash == out ? strdup("/") : strndup(out, (size_t)(slash - out));
  if (!parent) {
    free(prefix);
    fprintf(stderr, "nidag dti: out of memory\n");
    return NULL;
  }
  const char *why = NULL;
  if (stat(parent, &st) != 0)
    why = errno == ENOENT ? "does not exist" : strerror(errno);
  else if (!S_ISDIR(st.st_mode))
    why = "is not a directory";
  if (why) {
    fprintf(stderr,
            "nidag dti: --out %s: the directory '%s' %s (nidag dti does not create "
            "directories)\n",
            out, parent, why);
    free(parent);
    free(prefix);
    return NULL;
  }
  free(parent);
  return prefix;
}

/* ------------------------------------------------------------ the summary */

/* The eigenvalue floor of this gradient table (a fit of no voxel); NAN when
 * the table cannot be read (it was read a moment ago, so hardly ever). */
static double min_diffusivity(const dti_cli *cli, nd_pool *pool) {
  nd_gradients *g = NULL;
  if (nd_gradients_read_fsl(cli->bval, cli->bvec, &g)) return NAN;
  nd_dti_opts o = {.method = cli->method, .pool = pool};
  nd_dti_result r = {0};
  double v = nd_dti_fit(g, NULL, 0, nd_gradients_count(g), &o, &r) == 0 ? r.min_diffusivity : NAN;
  nd_dti_result_free(&r);
  nd_gradients_free(g);
  return v;
}

typedef struct file_stamp {
  bool exists;
  struct stat st;
} file_stamp;

static void stamp(const char *path, file_stamp *s) {
  s->exists = stat(path, &s->st) == 0;
}

static bool same_stamp(const file_stamp *a, const file_stamp *b) {
  return a->exists && b->exists && a->st.st_ino == b->st.st_ino &&
         a->st.st_dev == b->st.st_dev && a->st.st_size == b->st.st_size &&
         a->st.st_mtim.tv_sec == b->st.st_mtim.tv_sec &&
         a->st.st_mtim.tv_nsec == b->st.st_mtim.tv_nsec;
}

/* Save the maps and print the summary. Returns 0 or EXIT_RUN_FAILED. */
static int emit(const dti_cli *cli, const char *prefix, nd_graph *g, int64_t fit, nd_pool *pool,
                const nd_cache *cache, const nd_graph_stats *st, double t0) {
  nd_array *maps = NULL;
  int rc = nd_graph_get(g, fit, &maps);
  if (rc) {
    fprintf(stderr, "nidag dti: reading the fit: %s\n", nd_strerror(rc));
    return EXIT_RUN_FAILED;
  }
  if (nd_array_dtype(maps) != ND_F64 || nd_array_ndim(maps) != 4 ||
      nd_array_dim(maps, 0) != ND_DTI_NMAPS) {
    fprintf(stderr, "nidag dti: the fit's value is not a (%d, z, y, x) f64 array\n",
            ND_DTI_NMAPS);
    nd_array_release(maps);
    return EXIT_RUN_FAILED;
  }
  char path[ND_DTI_NFILES][4096];
  file_stamp before[ND_DTI_NFILES], after[ND_DTI_NFILES];
  for (int f = 0; f < ND_DTI_NFILES; f++) {
    snprintf(path[f], sizeof path[f], "%s%s.nii.gz", prefix, nd_dti_file_names[f]);
    stamp(path[f], &before[f]);
  }
  if ((rc = nd_dti_maps_save(maps, prefix, NULL)) != 0) {
    fprintf(stderr, "nidag dti: writing the maps: %s\n", nd_models_errmsg());
    nd_array_release(maps);
    return EXIT_RUN_FAILED;
  }
  double wall = cli_now_s() - t0;

  size_t nvox = nd_array_dim(maps, 1) * nd_array_dim(maps, 2) * nd_array_dim(maps, 3);
  const double *md = (const double *)nd_array_data(maps) + (size_t)ND_DTI_MAP_MD * nvox;
  size_t fitted = 0, failed = 0;
  for (size_t i = 0; i < nvox; i++) {
    fitted += md[i] != 0.0; /* NaN too */
    failed += isnan(md[i]) != 0;
  }
  nd_array_release(maps);
  double floor = min_diffusivity(cli, pool);

  printf("dti: %s fit of %s: %zu of %zu voxels fitted (%s%s), %zu failed (NaN)",
         cli->method == ND_DTI_OLS ? "OLS" : "WLS", cli->dwi, fitted, nvox,
         cli->mask ? "mask " : "no mask", cli->mask ? cli->mask : "", failed);
  if (isfinite(floor)) printf(", min diffusivity %.6g", floor);
  printf("\n");
  nd_graph_node_state s = nd_graph_state(g, fit);
  const char *how = s == ND_GNODE_HIT      ? "read from the cache"
                    : s == ND_GNODE_WAITED ? "computed by another process, read from the cache"
                                           : "computed";
  printf("dti: %s in %.3f s (nodes computed %zu, cache hits %zu; cache %s)\n", how, wall,
         st->computed, st->hits, cache ? nd_cache_dir(cache) : "none");
  for (int pass = 0; pass < 2; pass++) {
    size_t n = 0;
    for (int f = 0; f < ND_DTI_NFILES; f++) {
      stamp(path[f], &after[f]);
      if (same_stamp(&before[f], &after[f]) != (pass == 1)) continue;
      if (n++ == 0) printf("dti: %s:", pass == 0 ? "wrote" : "unchanged");
      printf(" %s", path[f]);
    }
    if (n) printf("\n");
  }
  if (fflush(stdout) != 0) {
    fprintf(stderr, "nidag dti: writing stdout: %s\n", strerror(errno));
    return EXIT_RUN_FAILED;
  }
  return 0;
}

/* ------------------------------------------------------------------ run */

static int run(const dti_cli *cli) {
  double t0 = cli_now_s();
  char *prefix = output_prefix(cli->out);
  if (!prefix) return EXIT_RUN_FAILED;
  nd_runtime_opts ropts = {.threads = cli->threads};
  nd_pool *pool = NULL;
  int rc = nd_pool_open(&pool, &ropts);
  if (rc) {
    fprintf(stderr, "nidag dti: cannot start the pool: %s\n", nd_strerror(rc));
    free(prefix);
    return EXIT_RUN_FAILED;
  }
  nd_cache *cache = NULL;
  if (!cli->no_cache) {
    nd_cache_opts co = {.dir = cli->cache_dir};
    if (nd_cache_open(&cache, &co)) {
      fprintf(stderr, "nidag dti: %s\n", nd_cache_open_errmsg());
      nd_pool_close(pool);
      free(prefix);
      return EXIT_RUN_FAILED;
    }
  }
  /* The chunking reaches the op through its ud, never through its key. */
  nd_dti_exec ex = {.chunking = cli->chunking, .chunks = cli->chunks};
  nd_op op = nd_op_dti_fit;
  op.ud = &ex;
  nd_dti_opts dopts = {.method = cli->method};
  nd_graph *g = NULL;
  int64_t fit = -1;
  int status = EXIT_RUN_FAILED;
  if ((rc = nd_graph_new(&g)) != 0) {
    fprintf(stderr, "nidag dti: cannot create the graph: %s\n", nd_strerror(rc));
  } else if ((rc = nd_dti_add(g, cli->dwi, cli->bval, cli->bvec, cli->mask, &dopts, &op,
                              &fit)) != 0) {
    fprintf(stderr, "nidag dti: %s\n", nd_models_errmsg());
  } else {
    struct sigaction sa = {0}, old_sa;
    sa.sa_handler = cli_on_sigint;
    sigaction(SIGINT, &sa, &old_sa);
    nd_graph_run_opts o = {.cache = cache, .pool = pool, .targets = &fit, .ntargets = 1,
                           .cancel = &cli_cancel};
    nd_graph_stats st = {0};
    rc = nd_graph_run(g, &o, &st);
    if (rc == ND_ECANCELED) {
      fprintf(stderr, "nidag dti: interrupted before the fit started; nothing was written\n");
      status = DTI_EXIT_INTERRUPTED;
    } else if (rc) {
      /* The report names each failed node (the load's label names the image;
       * the fit's message names the bval/bvec file) and the problem. */
      fprintf(stderr, "nidag dti: the run failed (%s); inputs: --dwi %s --bval %s --bvec %s%s%s\n",
              nd_strerror(rc), cli->dwi, cli->bval, cli->bvec, cli->mask ? " --mask " : "",
              cli->mask ? cli->mask : "");
      if (nd_graph_report(g, stderr) == 0 && *nd_errmsg(g))
        fprintf(stderr, "nidag dti: %s\n", nd_errmsg(g));
    } else {
      /* The handler stays installed while the files are written: a Ctrl-C
       * now lets every map be written whole (a second one still ends the
       * process at once). */
      status = emit(cli, prefix, g, fit, pool, cache, &st, t0);
      if (status == 0 && atomic_load(&cli_cancel)) {
        fprintf(stderr, "nidag dti: interrupted; the fit and every map were written in full\n");
        status = DTI_EXIT_INTERRUPTED;
      }
    }
    sigaction(SIGINT, &old_sa, NULL);
  }
  nd_graph_free(g);
  if (cache && (rc = nd_cache_close(cache))) {
    fprintf(stderr, "nidag dti: closing the cache: %s\n", nd_strerror(rc));
    if (status == 0) status = EXIT_RUN_FAILED;
  }
  nd_pool_close(pool);
  free(prefix);
  return status;
}

int cli_dti(int argc, char **argv, const char *cache_dir) {
  dti_cli cli = {.method = ND_DTI_WLS, .chunking = ND_DYNAMIC, .cache_dir = cache_dir};
  int rc = parse_args(argc, argv, &cli);
  if (rc) return rc;
  if (cli.help) {
    printf("usage: nidag dti --dwi F --bval F --bvec F --out PREFIX [options]\n");
    cli_dti_usage(stdout);
    return 0;
  }
  return run(&cli);
}
