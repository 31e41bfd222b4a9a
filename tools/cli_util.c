/* Helpers shared by the nidag tool's commands (declared in cli.h): option
 * values, usage errors, node params, the clock and the Ctrl-C protocol.
 * Only the public API (nidag.h) is used. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "nidag.h"

const char *cli_option_value(int argc, char **argv, int *i, const char *opt, bool *missing) {
  size_t len = strlen(opt);
  if (strncmp(argv[*i], opt, len) != 0)
    return NULL;
  if (argv[*i][len] == '=')
    return argv[*i] + len + 1;
  if (argv[*i][len] != '\0')
    return NULL;
  if (*i + 1 >= argc) {
    *missing = true;
    return NULL;
  }
  return argv[++*i];
}

bool cli_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
  char *end = NULL;
  errno = 0;
  unsigned long long v = (*s >= '0' && *s <= '9') ? strtoull(s, &end, 10) : 0;
  if (!end || errno || *end || v < lo || v > hi)
    return false;
  *out = v;
  return true;
}

int cli_params_bytes(nd_params *p, void **bytes, size_t *len) {
  int rc = nd_params_encode(p, bytes, len);
  nd_params_free(p);
  return rc;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "nidag %s: ", cmd);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\nrun 'nidag help' for usage\n");
  va_end(ap);
  return EXIT_USAGE;
}

double cli_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

atomic_int cli_cancel;

void cli_on_sigint(int sig) {
  if (atomic_exchange(&cli_cancel, 1) != 0) {
    signal(sig, SIG_DFL);
    raise(sig);
  }
}

int cli_valued_option(const char *cmd, int argc, char **argv, int *i, const char *const *names,
                      size_t n, bool nonempty, const char **name, const char **value) {
  const char *arg = argv[*i];
  for (size_t k = 0; k < n; k++) {
    bool missing = false;
    const char *v = cli_option_value(argc, argv, i, names[k], &missing);
    if (missing) return cli_usage_error(cmd, "option %s needs a value", names[k]);
    if (!v) continue;
    if (nonempty && !*v) return cli_usage_error(cmd, "option %s needs a non-empty value", names[k]);
    *name = names[k];
    *value = v;
    return 0;
  }
  return cli_usage_error(cmd, "unknown option '%s'", arg);
}
