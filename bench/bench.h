/* nidag-bench internals, shared by the C files of bench/ (one program).
 *
 * Every workload prints "name value unit" lines on stdout, plus "#" context
 * lines (each repetition, the pool counters of each run, the machine load
 * before the workload). Timings are the median of NB_REPS timed runs after
 * one untimed warm-up, as in ../shared/peers. Benchmarks never judge a time;
 * they verify results and return non-zero when one is wrong.
 */
#ifndef NIDAG_BENCH_H
#define NIDAG_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nidag/cache.h"
#include "nidag/runtime.h"

#define NB_REPS 3

typedef struct nb_ctx {
  nd_pool *pool;
  unsigned threads;
  double quiet_wait; /* seconds to wait for other processes to go quiet */
  double bg_seconds; /* length of each background-load sample; 0: skip */
} nb_ctx;

/* Monotonic clock in seconds. */
double nb_now(void);
/* Median of n values (n <= 16); v is not modified. */
double nb_median(const double *v, int n);
/* Process CPU time (user + system) in seconds, from getrusage. */
double nb_process_cpu(void);

/* Samples the CPU used by other processes (from /proc/stat, minus this
 * process's own use) for c->bg_seconds, repeating while it is >= 0.25 cores
 * and c->quiet_wait allows; prints "# background_cpu_cores_before ...". */
void nb_background(const nb_ctx *c, const char *workload);

/* CPU used during one timed run: by this process and by everything else
 * (from /proc/stat, 10 ms resolution), in cores over the run's wall time. */
typedef struct nb_load {
  unsigned long long busy0;
  double own0, t0;
  int ok;
} nb_load;
void nb_load_begin(nb_load *l);
/* Cores used since nb_load_begin by this process and by the others; both -1
 * when /proc/stat cannot be read. */
void nb_load_end(const nb_load *l, double *own, double *others);

/* Reset the pool counters (before a run) / print them as a "#" line. */
void nb_stats_reset(const nb_ctx *c);
void nb_stats_print(const nb_ctx *c, const char *label);

/* The busy floating-point recurrence x = x * (1 + 1e-9) + 1e-9, `iters`
 * times from x = 1: pure compute, no memory traffic. */
double nb_spin(long iters);

/* Workloads. Each returns 0, or non-zero when a result is wrong or the
 * runtime reported an error (a message is printed on stderr). */
int nb_w0(const nb_ctx *c);
int nb_w1a(const nb_ctx *c);
int nb_w1b(const nb_ctx *c);
int nb_w1c(const nb_ctx *c);
int nb_w2(const nb_ctx *c);
int nb_w3(const nb_ctx *c);
int nb_idle(const nb_ctx *c);

/* `nidag-bench cache` (bench_cache.c): its own command line (argv after
 * "cache"), returning the exit status; and its part of the help text. */
int nb_cache_main(int argc, char **argv);
void nb_cache_usage(FILE *f);
/* Helpers of bench_cache.c: open a cache at dir (printing why not), print its
 * counters as a "#" line, remove a directory tree. */
int nb_cache_open(const char *dir, bool no_sync, nd_cache **c);
void nb_cache_stats_print(nd_cache *c, const char *label);
void nb_rm_rf(const char *path);
/* The graph workload of `nidag-bench cache` (bench_cache_graph.c): a cold run
 * without claims in dir_noclaims, a cold run in dir_graph, then reps
 * (1..16) cached reruns; both directories are removed. */
int nb_cache_graph(const char *dir_noclaims, const char *dir_graph, int reps);

/* `nidag-bench neuro` (bench_neuro.c): NIfTI loads and parcellation like the
 * peers' W7; its command line (argv after "neuro") and its help text. */
int nb_neuro_main(int argc, char **argv);
/* `nidag-bench models` (bench_models.c). */
int nb_models_main(int argc, char **argv);
void nb_models_usage(FILE *f);
/* `nidag-bench dti` (bench_dti.c): the peers' W6 and the chunk sweep. */
int nb_dti_main(int argc, char **argv);
void nb_dti_usage(FILE *f);
void nb_neuro_usage(FILE *f);

/* fib(n) with a task per call inside the pool (used by W1b and as the work
 * before the idle measurement). Must be called on a worker of c->pool. */
long nb_fib_tasks(nd_pool *p, int n, int *rc);

#endif /* NIDAG_BENCH_H */
