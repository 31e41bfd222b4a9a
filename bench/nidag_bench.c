/* nidag-bench: the benchmark program of issue 2 item 6.
 *
 *   nidag-bench runtime [--threads N] [--only w0,w1a,...] [--quiet-wait S]
 *                       [--bg-seconds S]
 *   nidag-bench cache [--only hit1k,store,...] [--reps N] [--tmp DIR]
 *   nidag-bench neuro [--reps N] [--volumes T] [--tmp DIR]
 *   nidag-bench models [--reps N] [--threads N] [--data DIR] [--tmp DIR]
 *   nidag-bench dti [--only w6a,w6b,sweep] [--threads N] [--reps N] [--quick]
 *                   [--sweep-tsv FILE]
 *   nidag-bench help
 *
 * `runtime` runs the workloads of ../shared/peers (W1 task overhead, W2
 * imbalanced map, W3 chunk sweep) on a nidag pool of N workers (default 2,
 * the peers' OMP_NUM_THREADS) and prints "name value unit" lines named like
 * the peers' with "nidag" as the system, then the idle CPU use of the pool.
 * `cache` measures the result cache like the peers' W4 (bench_cache.c);
 * `neuro` NIfTI loads and parcellation like the peers' W7 (bench_neuro.c);
 * `models` the peers' W5 (bench_models.c); `dti` the peers' W6 diffusion
 * tensor fits and a chunk sweep (bench_dti.c).
 * This file holds the command line, the shared helpers and the idle probe;
 * the workloads live in bench_w*.c and bench_cache.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/* ------------------------------------------------------------ helpers */

double nb_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double nb_median(const double *v, int n) {
  double s[16];
  if (n <= 0) return 0.0;
  if (n > 16) n = 16;
  for (int i = 0; i < n; i++) {
    double x = v[i];
    int j = i;
    while (j > 0 && s[j - 1] > x) {
      s[j] = s[j - 1];
      j--;
    }
    s[j] = x;
  }
  return (n & 1) ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

double nb_process_cpu(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0.0;
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static void nb_sleep(double seconds) {
  struct timespec ts;
  ts.tv_sec = (time_t)seconds;
  ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

double nb_spin(long iters) {
  double x = 1.0;
  for (long i = 0; i < iters; i++) x = x * 1.000000001 + 1e-9;
  return x;
}

/* Busy jiffies of the whole machine (user, nice, system, irq, softirq). */
static int read_busy_jiffies(unsigned long long *busy) {
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return -1;
  unsigned long long v[8] = {0};
  int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
                 &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
  fclose(f);
  if (n < 7) return -1;
  /* user nice system irq softirq, plus steal: time the hypervisor gave to
   * someone else is as lost to us as another process's */
  *busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
  return 0;
}

/* Cores used by other processes over `seconds`, or -1 if unknown. */
static double sample_background(double seconds) {
  unsigned long long b0, b1;
  long hz = sysconf(_SC_CLK_TCK);
  if (hz <= 0 || read_busy_jiffies(&b0) != 0) return -1.0;
  double c0 = nb_process_cpu(), t0 = nb_now();
  nb_sleep(seconds);
  double c1 = nb_process_cpu(), t1 = nb_now();
  if (read_busy_jiffies(&b1) != 0) return -1.0;
  double all = (double)(b1 - b0) / (double)hz;
  double other = (all - (c1 - c0)) / (t1 - t0);
  return other < 0 ? 0.0 : other;
}

void nb_load_begin(nb_load *l) {
  l->ok = read_busy_jiffies(&l->busy0) == 0;
  l->own0 = nb_process_cpu();
  l->t0 = nb_now();
}

void nb_load_end(const nb_load *l, double *own, double *others) {
  unsigned long long b1;
  double t1 = nb_now(), own1 = nb_process_cpu();
  long hz = sysconf(_SC_CLK_TCK);
  *own = *others = -1.0;
  if (!l->ok || hz <= 0 || read_busy_jiffies(&b1) != 0 || t1 <= l->t0) return;
  double wall = t1 - l->t0, mine = own1 - l->own0;
  double rest = ((double)(b1 - l->busy0) / (double)hz - mine) / wall;
  *own = mine / wall;
  *others = rest < 0 ? 0.0 : rest;
}

void nb_background(const nb_ctx *c, const char *workload) {
  if (c->bg_seconds <= 0) return;
  double waited = 0, bg;
  for (;;) {
    bg = sample_background(c->bg_seconds);
    if (bg < 0.25 || waited >= c->quiet_wait) break;
    waited += c->bg_seconds;
  }
  printf("# background_cpu_cores_before %.2f (waited %.0fs) %s\n", bg, waited, workload);
  fflush(stdout);
}

void nb_stats_reset(const nb_ctx *c) { nd_pool_stats_reset(c->pool); }

void nb_stats_print(const nb_ctx *c, const char *label) {
  nd_pool_stats s;
  nd_pool_stats_get(c->pool, &s);
  printf("# %s stats tasks %llu steals %llu failed_steals %llu sleeps %llu wakes %llu "
         "injected %llu inlined %llu\n",
         label, (unsigned long long)s.tasks, (unsigned long long)s.steals,
         (unsigned long long)s.failed_steals, (unsigned long long)s.sleeps,
         (unsigned long long)s.wakes, (unsigned long long)s.injected,
         (unsigned long long)s.inlined);
}

/* ------------------------------------------------------------ idle */

typedef struct idle_job {
  nd_pool *pool;
  long result;
  int rc;
} idle_job;

static int idle_work(void *arg) {
  idle_job *j = arg;
  j->result = nb_fib_tasks(j->pool, 22, &j->rc);
  return j->rc;
}

/* Some work, then 10 ms of quiet, then the process CPU time over 1 s of
 * idling with the pool open (the main thread sleeps, so it is the pool's). */
int nb_idle(const nb_ctx *c) {
  idle_job j = {c->pool, 0, 0};
  int rc = nd_pool_run(c->pool, idle_work, &j);
  if (rc != 0 || j.result != 17711) {
    fprintf(stderr, "nidag-bench: idle warm-up fib(22) = %ld (rc %d), expected 17711\n",
            j.result, rc);
    return 1;
  }
  nb_sleep(0.010);
  nb_stats_reset(c);
  double t0 = nb_now(), c0 = nb_process_cpu();
  nb_sleep(0.200);
  double t1 = nb_now(), c1 = nb_process_cpu();
  nb_sleep(0.800);
  double t2 = nb_now(), c2 = nb_process_cpu();
  printf("# idle_nidag first 200 ms %.3f %% of a core, next 800 ms %.3f %%\n",
         100.0 * (c1 - c0) / (t1 - t0), 100.0 * (c2 - c1) / (t2 - t1));
  nb_stats_print(c, "idle_nidag");
  printf("idle_nidag_cpu_pct %.3f %%\n", 100.0 * (c2 - c0) / (t2 - t0));
  return 0;
}

/* ------------------------------------------------------------ command line */

typedef struct nb_workload {
  const char *name;
  const char *what;
  int (*run)(const nb_ctx *c);
} nb_workload;

static const nb_workload WORKLOADS[] = {
    {"w0", "effective cores: 1 vs N spinning workers", nb_w0},
    {"w1a", "1,000,000 independent empty tasks", nb_w1a},
    {"w1b", "fib(30) with a task per call", nb_w1b},
    {"w1c", "chain of 100,000 dependent graph nodes, build included", nb_w1c},
    {"w2", "4 slow + 12 fast spin tasks, static/cyclic/dynamic/guided", nb_w2},
    {"w3", "2^20 7x7 least-squares solves, chunk sweep 2^0..2^15", nb_w3},
    {"idle", "process CPU over 1 s of idling, 10 ms after work ends", nb_idle},
};
#define NB_NWORK (sizeof WORKLOADS / sizeof WORKLOADS[0])

static void usage(FILE *f) {
  fprintf(f,
          "usage: nidag-bench runtime [--threads N] [--only LIST] [--quiet-wait S]\n"
          "                           [--bg-seconds S]\n"
          "       nidag-bench cache [--only LIST] [--reps N] [--tmp DIR]\n"
          "       nidag-bench neuro [--reps N] [--four-reps N] [--volumes T] [--tmp DIR]\n"
          "       nidag-bench models [--reps N] [--threads N] [--data DIR] [--tmp DIR]\n"
          "       nidag-bench dti [--only LIST] [--threads N] [--reps N] [--quick]\n"
          "                       [--voxels N] [--data DIR] [--sweep-tsv FILE]\n"
          "       nidag-bench help\n"
          "\n"
          "runtime   run the executor workloads of ../shared/peers on a nidag pool and\n"
          "          print \"name value unit\" lines (\"#\" lines are context)\n"
          "  --threads N      pool workers (default 2, like the peers' OMP_NUM_THREADS=2)\n"
          "  --only LIST      comma-separated subset (w1 = w1a,w1b,w1c); default all:\n");
  for (size_t i = 0; i < NB_NWORK; i++)
    fprintf(f, "                     %-5s %s\n", WORKLOADS[i].name, WORKLOADS[i].what);
  fprintf(f,
          "  --quiet-wait S   before each workload, wait up to S seconds for other\n"
          "                   processes to use < 0.25 cores (default 0: only measure)\n"
          "  --bg-seconds S   length of each background-load sample (default 1; 0 skips)\n"
          "help      this text\n"
          "\n"
          "Timings are the median of 3 runs after 1 untimed warm-up. Results are\n"
          "verified (fib value, chain count, W3 checksum); exit status 1 if one is wrong.\n"
          "\n");
  nb_cache_usage(f);
  nb_neuro_usage(f);
  nb_models_usage(f);
  nb_dti_usage(f);
}

static int parse_double(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || v < 0) return -1;
  *out = v;
  return 0;
}

/* Marks the workloads named in list; returns -1 on an unknown name. */
static int parse_only(const char *list, int *sel) {
  char buf[256];
  if (strlen(list) >= sizeof buf) return -1;
  strcpy(buf, list);
  for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    int found = 0;
    for (size_t i = 0; i < NB_NWORK; i++) {
      if (strcmp(tok, WORKLOADS[i].name) == 0 ||
          (strcmp(tok, "w1") == 0 && strncmp(WORKLOADS[i].name, "w1", 2) == 0)) {
        sel[i] = 1;
        found = 1;
      }
    }
    if (!found) {
      fprintf(stderr, "nidag-bench: unknown workload '%s'\n", tok);
      return -1;
    }
  }
  return 0;
}

static int cmd_runtime(int argc, char **argv) {
  nb_ctx c = {NULL, 2, 0.0, 1.0};
  int sel[NB_NWORK] = {0}, any = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--threads") == 0 && v) {
      char *end;
      long n = strtol(v, &end, 10);
      if (*end || n < 1 || n > 1024) {
        fprintf(stderr, "nidag-bench: --threads wants 1..1024, got '%s'\n", v);
        return 2;
      }
      c.threads = (unsigned)n;
      i++;
    } else if (strcmp(a, "--only") == 0 && v) {
      if (parse_only(v, sel) != 0) {
        usage(stderr);
        return 2;
      }
      any = 1;
      i++;
    } else if (strcmp(a, "--quiet-wait") == 0 && v) {
      if (parse_double(v, &c.quiet_wait) != 0) {
        fprintf(stderr, "nidag-bench: bad --quiet-wait '%s'\n", v);
        return 2;
      }
      i++;
    } else if (strcmp(a, "--bg-seconds") == 0 && v) {
      if (parse_double(v, &c.bg_seconds) != 0) {
        fprintf(stderr, "nidag-bench: bad --bg-seconds '%s'\n", v);
        return 2;
      }
      i++;
    } else {
      fprintf(stderr, "nidag-bench: unknown or incomplete option '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (!any)
    for (size_t i = 0; i < NB_NWORK; i++) sel[i] = 1;

  setvbuf(stdout, NULL, _IOLBF, 0);
  struct utsname u;
  time_t now = time(NULL);
  char when[64] = "?";
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
  printf("# nidag-bench runtime %s", when);
  if (uname(&u) == 0) printf(" host %s; %s %s %s", u.nodename, u.sysname, u.release, u.machine);
  printf("\n# online cpus %ld; nd_usable_cpus %u; gcc %s\n", sysconf(_SC_NPROCESSORS_ONLN),
         nd_usable_cpus(), __VERSION__);

  nd_runtime_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.threads = c.threads;
  int rc = nd_pool_open(&c.pool, &opts);
  if (rc != 0) {
    fprintf(stderr, "nidag-bench: nd_pool_open: %s\n", nd_strerror(rc));
    return 1;
  }
  printf("# nidag threads %u (spin before sleep %d us default)\n", nd_pool_threads(c.pool),
         ND_DEFAULT_SPIN_US);

  int status = 0;
  for (size_t i = 0; i < NB_NWORK; i++) {
    if (!sel[i]) continue;
    printf("## ---- %s: %s ----\n", WORKLOADS[i].name, WORKLOADS[i].what);
    nb_background(&c, WORKLOADS[i].name);
    double t0 = nb_now();
    int wrc = WORKLOADS[i].run(&c);
    printf("# %s exit=%d wall=%.1fs\n", WORKLOADS[i].name, wrc, nb_now() - t0);
    fflush(stdout);
    if (wrc != 0) {
      fprintf(stderr, "nidag-bench: workload %s failed verification\n", WORKLOADS[i].name);
      status = 1;
    }
  }
  nd_pool_close(c.pool);
  return status;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "runtime") == 0) return cmd_runtime(argc - 2, argv + 2);
  if (strcmp(cmd, "cache") == 0) return nb_cache_main(argc - 2, argv + 2);
  if (strcmp(cmd, "neuro") == 0) return nb_neuro_main(argc - 2, argv + 2);
  if (strcmp(cmd, "models") == 0) return nb_models_main(argc - 2, argv + 2);
  if (strcmp(cmd, "dti") == 0) return nb_dti_main(argc - 2, argv + 2);
  usage(stderr);
  fprintf(stderr, "nidag-bench: unknown subcommand '%s'\n", cmd);
  return 2;
}
