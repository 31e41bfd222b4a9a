/* Shared by the nidag command-line tool's files (not a library header). */
#ifndef NIDAG_TOOLS_CLI_H
#define NIDAG_TOOLS_CLI_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define EXIT_USAGE 2
#define EXIT_RUN_FAILED 1
#define CLI_MAX_THREADS 1024 /* the largest --threads value */

typedef struct nd_params nd_params;

/* cli_util.c. "--opt VALUE" or "--opt=VALUE": the value, or NULL when
 * argv[*i] is not opt (*i moves past a separate value); *missing is set
 * when opt has no value. */
const char *cli_option_value(int argc, char **argv, int *i, const char *opt, bool *missing);

/* cli_util.c. Match argv[*i] against the options that take a value
 * (names[0..n-1], "--opt V" or "--opt=V"): on success *name is the matched
 * option and *value its value (*i moves past a separate value) and 0 is
 * returned; an unknown option, a missing value or (when nonempty) an empty
 * one prints a usage error for `nidag CMD` and returns EXIT_USAGE. */
int cli_valued_option(const char *cmd, int argc, char **argv, int *i, const char *const *names,
                      size_t n, bool nonempty, const char **name, const char **value);

/* cli_util.c. A decimal whole number in [lo, hi] (digits only: no sign, no
 * space) into *out; false otherwise. */
bool cli_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);

/* cli_util.c. Print "nidag CMD: <message>" and a usage hint on stderr;
 * returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* cli_util.c. Seconds on the monotonic clock. */
double cli_now_s(void);

/* cli_util.c. The Ctrl-C protocol of the commands that run a graph: install
 * cli_on_sigint for SIGINT and pass &cli_cancel as the run's cancel flag.
 * The first Ctrl-C sets the flag (the graph stops starting nodes; nothing
 * finished is lost); a second one ends the process at once. */
extern atomic_int cli_cancel;
void cli_on_sigint(int sig);

/* Encode p into canonical params bytes (*bytes, nd_free them) and free p. */
int cli_params_bytes(nd_params *p, void **bytes, size_t *len);

/* `nidag cache ...`: argv[0] is "cache". cache_dir is the value of a global
 * `--cache DIR` given before the command, or NULL. Returns the exit status. */
int cli_cache(int argc, char **argv, const char *cache_dir);

/* The cache part of `nidag help`. */
void cli_cache_usage(FILE *f);

/* `nidag demo [options]` (cmd_demo.c): argv[0] is "demo"; cache_dir as for
 * cli_cache. Returns the exit status (130 when interrupted). */
int cli_demo(int argc, char **argv, const char *cache_dir);
/* The demo part of `nidag help`. */
void cli_demo_usage(FILE *f);

/* `nidag parcellate IMAGE ATLAS ...` (cmd_parcellate.c): argv[0] is
 * "parcellate"; cache_dir as for cli_cache. Returns the exit status. */
int cli_parcellate(int argc, char **argv, const char *cache_dir);

/* The parcellate part of `nidag help`. */
void cli_parcellate_usage(FILE *f);

/* `nidag dti --dwi F --bval F --bvec F --out PREFIX ...` (cmd_dti.c): argv[0]
 * is "dti"; cache_dir as for cli_cache. Returns the exit status (130 when
 * interrupted). */
int cli_dti(int argc, char **argv, const char *cache_dir);

/* The dti part of `nidag help`. */
void cli_dti_usage(FILE *f);

/* `nidag cohort [DIR] ...` (cmd_cohort.c): argv[0] is "cohort". Returns the
 * exit status. */
int cli_cohort(int argc, char **argv);

/* The cohort part of `nidag help`. */
void cli_cohort_usage(FILE *f);

#endif /* NIDAG_TOOLS_CLI_H */
