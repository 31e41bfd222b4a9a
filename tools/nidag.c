/* nidag command-line tool: `nidag version`, `nidag help`, `nidag demo` (in
 * cmd_demo.c), `nidag parcellate` (in cmd_parcellate.c), `nidag cohort` (in
 * cmd_cohort.c), `nidag dti` (in cmd_dti.c) and `nidag cache <command>` (in
 * cmd_cache.c).
 *
 * This is a tool, not the library: it prints to stdout/stderr and calls exit().
 * It uses only the public API (nidag.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "nidag.h"

/* ------------------------------------------------------------ arguments */

static void usage(FILE *f) {
  fprintf(f,
          "usage: nidag <command> [options]\n"
          "\n"
          "commands:\n"
          "  version                 print the version\n"
          "  help                    print this help\n"
          "  demo [options]          the multi-parcellation experiment on the synthetic\n"
          "                          cohort, as a cached lazy graph (see below)\n"
          "  parcellate IMAGE ATLAS  region values of a NIfTI image under an atlas, as TSV\n"
          "                          (cached; see below)\n"
          "  dti --dwi F --bval F --bvec F --out PREFIX\n"
          "                          diffusion tensor fit (DIPY's TensorModel) to FA, MD,\n"
          "                          AD, RD, eigenvalue and eigenvector maps (cached; see\n"
          "                          below)\n"
          "  cohort [DIR]            write the synthetic cohort (default ./cohort; see below)\n"
          "  cache <command>         manage a result cache: stats, verify, gc, compact,\n"
          "                          clear, why (see below)\n"
          "\n");
  cli_demo_usage(f);
  cli_parcellate_usage(f);
  cli_dti_usage(f);
  cli_cohort_usage(f);
  cli_cache_usage(f);
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Print "nidag: <message>" and a usage hint, and exit 2. */
static void usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "nidag: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\nrun 'nidag help' for usage\n");
  va_end(ap);
  exit(EXIT_USAGE);
}

/* Accepts "--opt N" and "--opt=N"; returns the value or NULL when argv[*i]
 * is not `opt`. */
static const char *option_value(int argc, char **argv, int *i, const char *opt) {
  bool missing = false;
  const char *v = cli_option_value(argc, argv, i, opt, &missing);
  if (missing)
    usage_error("option %s needs a value", opt);
  return v;
}

/* ------------------------------------------------------------- commands */

int main(int argc, char **argv) {
  /* The global option --cache DIR may come before the command. */
  const char *cache_dir = NULL;
  while (argc > 1) {
    int i = 1;
    const char *v = option_value(argc, argv, &i, "--cache");
    if (!v)
      break;
    if (!*v)
      usage_error("--cache needs a directory");
    cache_dir = v;
    argc -= i;
    argv += i;
  }
  const char *cmd = argc > 1 ? argv[1] : NULL;
  if (cache_dir && (!cmd || (strcmp(cmd, "cache") != 0 && strcmp(cmd, "demo") != 0 &&
                             strcmp(cmd, "parcellate") != 0 && strcmp(cmd, "dti") != 0)))
    usage_error("--cache goes with 'nidag cache <command>', 'nidag demo', "
                "'nidag parcellate' or 'nidag dti'");
  if (!cmd) {
    usage(stderr);
    return EXIT_USAGE;
  }
  if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
    if (argc > 2)
      usage_error("'version' takes no arguments (got '%s')", argv[2]);
    printf("nidag %s\n", NIDAG_VERSION_STRING);
    return 0;
  }
  if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(cmd, "demo"))
    return cli_demo(argc - 1, argv + 1, cache_dir);
  if (!strcmp(cmd, "parcellate"))
    return cli_parcellate(argc - 1, argv + 1, cache_dir);
  if (!strcmp(cmd, "dti"))
    return cli_dti(argc - 1, argv + 1, cache_dir);
  if (!strcmp(cmd, "cohort"))
    return cli_cohort(argc - 1, argv + 1);
  if (!strcmp(cmd, "cache"))
    return cli_cache(argc - 1, argv + 1, cache_dir);
  usage_error("unknown command '%s'", cmd);
  return EXIT_USAGE;
}
