/* `nidag cohort [DIR]`: write the synthetic cohort (nd_cohort_generate) into
 * DIR (default ./cohort), once: a second run with the same options leaves
 * every file in place. Prints what it wrote and skipped, and the time.
 * Exit status: 0 ok, 1 the generation failed (the message names the file),
 * 2 a usage error.
 *
 * A tool, not the library: it prints and returns exit codes. Only the public
 * API (nidag.h) is used. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "nidag.h"

#define COHORT_DEFAULT_DIR "./cohort"

typedef struct cohort_cli {
  const char *dir;
  nd_cohort_opts o;
  unsigned threads; /* 0: default */
  bool help;
} cohort_cli;

void cli_cohort_usage(FILE *f) {
  fprintf(f,
          "\n"
          "cohort (nidag cohort [DIR] [options]): write a synthetic BIDS-like cohort with\n"
          "a known answer into DIR (default %s): participants.tsv (participant_id,\n"
          "family_id, score_a, score_b, noise, group, noise_bin), dataset_description.json\n"
          "and one 2 mm MNI map per participant, sub-XXXX/anat/sub-XXXX_map.nii.gz.\n"
          "Generated once: files already up to date are left alone.\n"
          "  --participants N        participants, 1..%d (default %d)\n"
          "  --seed S                random seed, 1..2^64-1 (default %d)\n"
          "  --templates DIR         the MRIcron atlases\n"
          "                          (default %s)\n"
          "  --threads N             worker threads, 1..%d\n",
          COHORT_DEFAULT_DIR, ND_COHORT_MAX_PARTICIPANTS, ND_COHORT_DEFAULT_PARTICIPANTS,
          ND_COHORT_DEFAULT_SEED, ND_COHORT_DEFAULT_TEMPLATES, CLI_MAX_THREADS);
}


/* Parse argv (argv[0] is "cohort"). Returns 0 or EXIT_USAGE after printing. */
static int parse_args(int argc, char **argv, cohort_cli *cli) {
  static const char *const VALUED[] = {"--participants", "--seed", "--templates", "--threads"};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-' || a[1] == '\0') {
      if (cli->dir) return cli_usage_error("cohort", "unexpected argument '%s' (one DIR only)", a);
      cli->dir = a;
      continue;
    }
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      cli->help = true;
      return 0;
    }
    const char *name = NULL, *v = NULL;
    int urc = cli_valued_option("cohort", argc, argv, &i, VALUED, sizeof VALUED / sizeof VALUED[0],
                                false, &name, &v);
    if (urc) return urc;
    uint64_t n;
    if (!strcmp(name, "--participants")) {
      if (!cli_parse_u64(v, 1, ND_COHORT_MAX_PARTICIPANTS, &n))
        return cli_usage_error("cohort", "--participants needs a whole number from 1 to %d, got '%s'",
                           ND_COHORT_MAX_PARTICIPANTS, v);
      cli->o.participants = (size_t)n;
    } else if (!strcmp(name, "--seed")) {
      if (!cli_parse_u64(v, 1, UINT64_MAX, &n))
        return cli_usage_error("cohort", "--seed needs a whole number from 1 to %" PRIu64 ", got '%s'",
                           UINT64_MAX, v);
      cli->o.seed = n;
    } else if (!strcmp(name, "--templates")) {
      if (!*v) return cli_usage_error("cohort", "--templates needs a directory");
      cli->o.templates = v;
    } else { /* --threads */
      if (!cli_parse_u64(v, 1, CLI_MAX_THREADS, &n))
        return cli_usage_error("cohort", "--threads needs a whole number from 1 to %d, got '%s'",
                           CLI_MAX_THREADS, v);
      cli->threads = (unsigned)n;
    }
  }
  if (!cli->dir) cli->dir = COHORT_DEFAULT_DIR;
  return 0;
}

int cli_cohort(int argc, char **argv) {
  cohort_cli cli = {0};
  int rc = parse_args(argc, argv, &cli);
  if (rc) return rc;
  if (cli.help) {
    printf("usage: nidag cohort [DIR] [options]\n");
    cli_cohort_usage(stdout);
    return 0;
  }
  nd_runtime_opts ro = {0};
  ro.threads = cli.threads;
  if ((rc = nd_pool_open(&cli.o.pool, &ro))) {
    fprintf(stderr, "nidag cohort: cannot start the pool: %s\n", nd_strerror(rc));
    return EXIT_RUN_FAILED;
  }
  nd_cohort_report rep = {0};
  rc = nd_cohort_generate(cli.dir, &cli.o, &rep);
  unsigned threads = nd_pool_threads(cli.o.pool);
  nd_pool_close(cli.o.pool);
  if (rc) {
    fprintf(stderr, "nidag cohort: %s: %s\n", nd_errname(rc), nd_neuro_errmsg());
    return EXIT_RUN_FAILED;
  }
  size_t n = cli.o.participants ? cli.o.participants : ND_COHORT_DEFAULT_PARTICIPANTS;
  uint64_t seed = cli.o.seed ? cli.o.seed : ND_COHORT_DEFAULT_SEED;
  printf("cohort %s: %zu participants, seed %" PRIu64 ": wrote %zu files, %zu already up to "
         "date, in %.2f s (%u threads)\n",
         cli.dir, n, seed, rep.written, rep.skipped, rep.seconds, threads);
  return 0;
}
