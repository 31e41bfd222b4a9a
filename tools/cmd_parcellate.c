/* `nidag parcellate IMAGE ATLAS`: region values of a NIfTI image under an
 * atlas, as a TSV, through a cached graph:
 *
 *   file IMAGE ──> nd.nifti_load ──┬──────────────> nd.parcellate ──> rows
 *   file ATLAS ──> nd.nifti_load ──┼──┬───────────>   (reduce, on_grid_mismatch)
 *   [file MASK ──> nd.nifti_load ──┼──┼───────────>]
 *                                  └──┴─> cli.atlas_labels ──> header
 *
 * The header (one column per label, headed by the label value) comes from a
 * second target, cli.atlas_labels, so a fully cached run loads nothing. It
 * gives exactly the columns nd.parcellate produces: the atlas's labels
 * (nd_atlas_labels) as the parcellation sees them, i.e. after resampling onto
 * the image grid when the grids differ and --resample is nearest (a label too
 * small to survive nearest-neighbour resampling has no column), and 1..K for
 * a 4D probabilistic atlas of K maps.
 *
 * Output: the header line, then one row per volume (a 3D image has one), the
 * values printed with %.17g (NaN as "nan"), tab-separated, to stdout or to
 * -o FILE (written to a temporary name next to it, then renamed). A summary
 * line goes to stderr. Exit status: 0 ok, 1 a failed run (the failed nodes
 * are listed on stderr, naming the file and the problem), 2 a usage error.
 *
 * A tool, not the library: it prints and returns exit codes. Only the public
 * API (nidag.h) is used.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "nidag.h"

#define PARC_DEFAULT_CACHE_DIR "./.nidag"

typedef struct parc_cli {
  const char *image, *atlas, *mask, *out;
  const char *strategy;   /* nd_reduce_fn_parse name */
  bool refuse;            /* --resample refuse */
  const char *cache_dir;  /* NULL: $NIDAG_CACHE, else ./.nidag */
  bool no_cache, help;
  unsigned threads;       /* 0: default */
} parc_cli;

void cli_parcellate_usage(FILE *f) {
  fprintf(f,
          "\n"
          "parcellate (nidag parcellate IMAGE ATLAS [options]): region values of a NIfTI\n"
          "image (3D, or 4D: one row per volume) under an integer-label or 4D\n"
          "probabilistic atlas, as TSV: a header of label values, then one row per volume.\n"
          "  --strategy S            mean (default), median, sum, min, max, std, variance\n"
          "  --resample nearest|refuse  when the atlas is on another grid: resample it onto\n"
          "                          the image grid by nearest neighbour (default), or fail\n"
          "  --mask M                a brain mask on the image grid; voxels where it is 0\n"
          "                          are ignored (a region left empty is nan)\n"
          "  -o FILE                 write the TSV to FILE (default: stdout)\n"
          "  --threads N             worker threads, 1..%d\n"
          "  --cache DIR             result cache (default: $NIDAG_CACHE, else %s)\n"
          "  --no-cache              compute everything, store nothing\n",
          CLI_MAX_THREADS, PARC_DEFAULT_CACHE_DIR);
}


/* Parse argv (argv[0] is "parcellate"). Returns 0 or EXIT_USAGE after
 * printing the problem. */
static int parse_args(int argc, char **argv, parc_cli *cli) {
  static const char *const VALUED[] = {"--strategy", "--resample", "--mask", "-o",
                                       "--output",   "--cache",    "--threads"};
  const char *pos[2] = {NULL, NULL};
  size_t npos = 0;
  bool only_pos = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (only_pos || a[0] != '-' || a[1] == '\0') {
      if (npos == 2) return cli_usage_error("parcellate", "unexpected argument '%s'", a);
      pos[npos++] = a;
      continue;
    }
    if (!strcmp(a, "--")) {
      only_pos = true;
      continue;
    }
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      cli->help = true;
      return 0;
    }
    if (!strcmp(a, "--no-cache")) {
      cli->no_cache = true;
      continue;
    }
    const char *name = NULL, *v = NULL;
    int urc = cli_valued_option("parcellate", argc, argv, &i, VALUED, sizeof VALUED / sizeof VALUED[0],
                                true, &name, &v);
    if (urc) return urc;
    if (!strcmp(name, "--strategy")) {
      nd_reduce_fn f;
      if (nd_reduce_fn_parse(v, &f) != 0)
        return cli_usage_error("parcellate", "unknown --strategy '%s' (mean, median, sum, min, max, std, "
                           "variance)",
                           v);
      cli->strategy = nd_reduce_fn_name(f);
    } else if (!strcmp(name, "--resample")) {
      if (!strcmp(v, "nearest")) cli->refuse = false;
      else if (!strcmp(v, "refuse")) cli->refuse = true;
      else return cli_usage_error("parcellate", "--resample is 'nearest' or 'refuse', got '%s'", v);
    } else if (!strcmp(name, "--mask")) {
      cli->mask = v;
    } else if (!strcmp(name, "-o") || !strcmp(name, "--output")) {
      cli->out = v;
    } else if (!strcmp(name, "--cache")) {
      cli->cache_dir = v;
    } else { /* --threads */
      uint64_t n;
      if (!cli_parse_u64(v, 1, CLI_MAX_THREADS, &n))
        return cli_usage_error("parcellate", "--threads needs a whole number from 1 to %d, got '%s'",
                           CLI_MAX_THREADS, v);
      cli->threads = (unsigned)n;
    }
  }
  if (npos < 2)
    return cli_usage_error("parcellate", "needs an IMAGE and an ATLAS (nidag parcellate IMAGE ATLAS)");
  cli->image = pos[0];
  cli->atlas = pos[1];
  if (cli->no_cache && cli->cache_dir)
    return cli_usage_error("parcellate", "--cache and --no-cache contradict each other");
  return 0;
}

/* ------------------------------------------------------- cli.atlas_labels */

/* Inputs: atlas[, image]. With the image (--resample nearest), the labels of
 * the atlas as nd.parcellate sees it: resampled onto the image grid when the
 * grids differ. A 4D atlas (maps, z, y, x) gives 1..maps. Output: int64 (n). */
static int atlas_labels_fn(nd_op_ctx *ctx) {
  size_t n = nd_op_ninputs(ctx);
  const nd_array *atlas = n >= 1 ? nd_op_input(ctx, 0) : NULL;
  const nd_array *img = n == 2 ? nd_op_input(ctx, 1) : NULL;
  if (!atlas || n > 2 || (n == 2 && !img))
    return nd_op_fail(ctx, ND_EINVAL, "atlas_labels needs array inputs: atlas[, image]");
  nd_array *out = NULL;
  int rc;
  if (nd_array_ndim(atlas) == 4) {
    size_t maps = nd_array_dim(atlas, 0);
    if ((rc = nd_array_new(&out, ND_I64, 1, &maps)))
      return nd_op_fail(ctx, rc, "out of memory");
    int64_t *l = nd_array_data_mut(out);
    for (size_t i = 0; i < maps; i++) l[i] = (int64_t)i + 1;
    return nd_op_set_output(ctx, out);
  }
  nd_array *resampled = NULL;
  if (img && !nd_grid_equal(img, atlas, 0)) {
    if ((rc = nd_resample_nearest(atlas, img, &resampled)))
      return nd_op_fail(ctx, rc, "%s", nd_neuro_errmsg());
    atlas = resampled;
  }
  rc = nd_atlas_labels(atlas, &out);
  nd_array_release(resampled);
  if (rc) return nd_op_fail(ctx, rc, "%s", nd_neuro_errmsg());
  return nd_op_set_output(ctx, out);
}

/* Bump the version whenever the op's results change: it is part of every key. */
static const nd_op OP_ATLAS_LABELS = {.name = "cli.atlas_labels", .version = 1,
                                      .fn = atlas_labels_fn};

/* ---------------------------------------------------------------- graph */

typedef struct parc_graph {
  nd_graph *g;
  int64_t parc, labels;
} parc_graph;

static int add_op(nd_graph *g, const nd_op *op, nd_params *p, const int64_t *in, size_t nin,
                  const char *label, int64_t *out) {
  void *bytes = NULL;
  size_t len = 0;
  int rc = p ? cli_params_bytes(p, &bytes, &len) : 0;
  if (!rc) rc = nd_graph_add(g, op, bytes, len, in, nin, label, out);
  nd_free(bytes);
  if (rc)
    fprintf(stderr, "nidag parcellate: cannot add node '%s': %s: %s\n", label, nd_strerror(rc),
            nd_errmsg(g));
  return rc;
}

/* file PATH -> nd.nifti_load (f32). The op declares its memory cost from the
 * header itself, only when the load has to run; a file that cannot be read
 * fails that node, and the run's report names it. */
static int add_load(nd_graph *g, const char *what, const char *path, int64_t *out) {
  char label[512];
  snprintf(label, sizeof label, "%s %s", what, path);
  int64_t file;
  int rc = nd_graph_file(g, path, label, &file);
  if (rc) {
    fprintf(stderr, "nidag parcellate: %s '%s': %s\n", what, path, nd_strerror(rc));
    return rc;
  }
  nd_params *p = NULL;
  if (nd_params_new(&p) || nd_params_str(p, "dtype", "f32")) {
    nd_params_free(p);
    return ND_ENOMEM;
  }
  snprintf(label, sizeof label, "load %s %s", what, path);
  return add_op(g, &nd_op_nifti_load, p, &file, 1, label, out);
}

static int build(parc_graph *pg, const parc_cli *cli) {
  int rc = nd_graph_new(&pg->g);
  if (rc) {
    fprintf(stderr, "nidag parcellate: cannot create the graph: %s\n", nd_strerror(rc));
    return rc;
  }
  int64_t in[3];
  size_t nin = 2;
  if ((rc = add_load(pg->g, "image", cli->image, &in[0])) ||
      (rc = add_load(pg->g, "atlas", cli->atlas, &in[1])))
    return rc;
  if (cli->mask && (rc = add_load(pg->g, "mask", cli->mask, &in[nin++]))) return rc;

  nd_params *p = NULL;
  if (nd_params_new(&p) || nd_params_str(p, "reduce", cli->strategy) ||
      nd_params_str(p, "on_grid_mismatch", cli->refuse ? "refuse" : "resample")) {
    nd_params_free(p);
    return ND_ENOMEM;
  }
  char label[1100];
  snprintf(label, sizeof label, "parcellate %s %s", cli->image, cli->atlas);
  if ((rc = add_op(pg->g, &nd_op_parcellate, p, in, nin, label, &pg->parc))) return rc;

  /* Over the atlas, and the image when the atlas may be resampled onto it. */
  int64_t lin[2] = {in[1], in[0]};
  snprintf(label, sizeof label, "labels %s", cli->atlas);
  return add_op(pg->g, &OP_ATLAS_LABELS, NULL, lin, cli->refuse ? 1 : 2, label, &pg->labels);
}

/* --------------------------------------------------------------- output */

static void put_value(FILE *f, double v) {
  if (isnan(v)) fputs("nan", f);
  else fprintf(f, "%.17g", v);
}

/* The TSV. Returns 0, or -1 with errno set by a failed write. */
static int write_tsv(FILE *f, const nd_array *labels, const nd_array *values) {
  const int64_t *l = nd_array_data(labels);
  size_t ncols = nd_array_count(labels);
  size_t nrows = nd_array_dim(values, 0);
  const double *v = nd_array_data(values);
  for (size_t c = 0; c < ncols; c++) fprintf(f, "%s%" PRId64, c ? "\t" : "", l[c]);
  fputc('\n', f);
  for (size_t r = 0; r < nrows; r++) {
    for (size_t c = 0; c < ncols; c++) {
      if (c) fputc('\t', f);
      put_value(f, v[r * ncols + c]);
    }
    fputc('\n', f);
  }
  if (fflush(f) != 0 || ferror(f)) return -1;
  return 0;
}

/* Write to PATH.tmp.<pid> next to PATH, then rename over PATH. */
static int write_file(const char *path, const nd_array *labels, const nd_array *values) {
  size_t len = strlen(path) + 32;
  char *tmp = malloc(len);
  if (!tmp) {
    fprintf(stderr, "nidag parcellate: out of memory\n");
    return -1;
  }
  snprintf(tmp, len, "%s.tmp.%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  int rc = -1;
  if (!f) {
    fprintf(stderr, "nidag parcellate: cannot create '%s': %s\n", tmp, strerror(errno));
    if (fd >= 0) close(fd);
  } else {
    int w = write_tsv(f, labels, values);
    int saved = errno;
    if (fclose(f) != 0 && w == 0) {
      w = -1;
      saved = errno;
    }
    if (w != 0)
      fprintf(stderr, "nidag parcellate: writing '%s': %s\n", tmp, strerror(saved));
    else if (rename(tmp, path) != 0)
      fprintf(stderr, "nidag parcellate: cannot rename '%s' to '%s': %s\n", tmp, path,
              strerror(errno));
    else
      rc = 0;
  }
  if (rc) unlink(tmp);
  free(tmp);
  return rc;
}

/* Fetch both targets and write them. Returns 0 or EXIT_RUN_FAILED. */
static int emit(const parc_cli *cli, parc_graph *pg, const nd_graph_stats *st) {
  nd_array *values = NULL, *labels = NULL;
  int rc = nd_graph_get(pg->g, pg->parc, &values);
  if (!rc) rc = nd_graph_get(pg->g, pg->labels, &labels);
  if (rc) {
    fprintf(stderr, "nidag parcellate: reading the results: %s\n", nd_strerror(rc));
    goto fail;
  }
  if (nd_array_dtype(values) != ND_F64 || nd_array_ndim(values) != 2 ||
      nd_array_dtype(labels) != ND_I64 || nd_array_ndim(labels) != 1 ||
      nd_array_dim(values, 1) != nd_array_count(labels)) {
    fprintf(stderr,
            "nidag parcellate: the parcellation has %zu columns but the atlas %s has %zu "
            "labels\n",
            nd_array_dim(values, 1), cli->atlas, nd_array_count(labels));
    goto fail;
  }
  if (cli->out ? write_file(cli->out, labels, values) != 0
               : write_tsv(stdout, labels, values) != 0) {
    if (!cli->out) fprintf(stderr, "nidag parcellate: writing stdout: %s\n", strerror(errno));
    goto fail;
  }
  fprintf(stderr, "parcellate: %zu rows x %zu regions; computed %zu, cache hits %zu\n",
          nd_array_dim(values, 0), nd_array_count(labels), st->computed, st->hits);
  nd_array_release(values);
  nd_array_release(labels);
  return 0;
fail:
  nd_array_release(values);
  nd_array_release(labels);
  return EXIT_RUN_FAILED;
}

static int run(const parc_cli *cli) {
  nd_runtime_opts ro = {0};
  ro.threads = cli->threads;
  nd_pool *pool = NULL;
  int rc = nd_pool_open(&pool, &ro);
  if (rc) {
    fprintf(stderr, "nidag parcellate: cannot start the pool: %s\n", nd_strerror(rc));
    return EXIT_RUN_FAILED;
  }
  nd_cache *cache = NULL;
  if (!cli->no_cache) {
    nd_cache_opts co = {.dir = cli->cache_dir};
    if ((rc = nd_cache_open(&cache, &co))) {
      fprintf(stderr, "nidag parcellate: %s\n", nd_cache_open_errmsg());
      nd_pool_close(pool);
      return EXIT_RUN_FAILED;
    }
  }
  parc_graph pg = {0};
  int status = EXIT_RUN_FAILED;
  if (build(&pg, cli) == 0) {
    int64_t targets[2] = {pg.parc, pg.labels};
    nd_graph_run_opts ro2 = {.cache = cache, .pool = pool, .targets = targets, .ntargets = 2};
    nd_graph_stats st = {0};
    rc = nd_graph_run(pg.g, &ro2, &st);
    if (rc) {
      /* The report names each failed node (its label names the file) and the
       * problem; the graph's own message only when there is no node to list. */
      fprintf(stderr, "nidag parcellate: the run failed (%s)\n", nd_strerror(rc));
      if (nd_graph_report(pg.g, stderr) == 0 && *nd_errmsg(pg.g))
        fprintf(stderr, "nidag parcellate: %s\n", nd_errmsg(pg.g));
    } else {
      status = emit(cli, &pg, &st);
    }
  }
  nd_graph_free(pg.g);
  if (cache && (rc = nd_cache_close(cache))) {
    fprintf(stderr, "nidag parcellate: closing the cache: %s\n", nd_strerror(rc));
    status = EXIT_RUN_FAILED;
  }
  nd_pool_close(pool);
  return status;
}

int cli_parcellate(int argc, char **argv, const char *cache_dir) {
  parc_cli cli = {.strategy = "mean", .cache_dir = cache_dir};
  int rc = parse_args(argc, argv, &cli);
  if (rc) return rc;
  if (cli.help) {
    printf("usage: nidag parcellate IMAGE ATLAS [options]\n");
    cli_parcellate_usage(stdout);
    return 0;
  }
  return run(&cli);
}
