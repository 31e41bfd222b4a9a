/* W1: task overhead (see ../shared/peers/src/w1_*.c for the peers).
 *
 *  W1a  one task on a worker (entered with nd_pool_run, like the peers'
 *       parallel+single region) spawns 1,000,000 empty tasks into an
 *       nd_group and waits; timed from before the spawn loop to after the wait.
 *  W1b  fib(30), a task per call, no cutoff: fib(n) spawns fib(n-1) and
 *       fib(n-2) into a local group, waits, sums. Tasks = 2*fib(31)-2.
 *  W1c  a chain of 100,000 nd_taskgraph nodes (acc += 1; node i depends on
 *       node i-1): build (new + adds + depends) and run, timed on a worker.
 *       The graph is freed outside the timed region. Also reported (as "#"
 *       lines) when built and run from the main thread, outside the pool.
 */
#include <stdatomic.h>
#include <stdio.h>

#include "bench.h"

#define W1A_N 1000000L
#define W1B_N 30
#define W1B_RESULT 832040L
#define W1B_TASKS (2L * 1346269L - 2L)
#define W1C_N 100000L

/* ------------------------------------------------------------ W1a */

static int empty_task(void *arg) {
  (void)arg;
  atomic_signal_fence(memory_order_seq_cst); /* a compiler barrier: "do nothing" */
  return 0;
}

/* Spawns per wait in the "queued" variant: below the deque capacity, so no
 * spawn runs inline and every task goes through a deque (popped or stolen). */
#define W1A_BATCH 2048L

typedef struct w1a_job {
  nd_pool *pool;
  long batch; /* W1A_N: one wait at the end (the peers' shape) */
  double secs;
} w1a_job;

static int w1a_body(void *arg) {
  w1a_job *j = arg;
  int rc = 0;
  double t0 = nb_now();
  for (long done = 0; done < W1A_N && rc == 0; done += j->batch) {
    nd_group g;
    nd_group_init(&g, j->pool);
    for (long i = 0; i < j->batch; i++) nd_spawn(&g, empty_task, j);
    rc = nd_group_wait(&g);
  }
  j->secs = nb_now() - t0;
  return rc;
}

static int w1a_variant(const nb_ctx *c, long batch, const char *name) {
  double t[NB_REPS], inlined = 0;
  w1a_job j = {c->pool, batch, 0};
  for (int r = -1; r < NB_REPS; r++) {
    nb_stats_reset(c);
    int rc = nd_pool_run(c->pool, w1a_body, &j);
    if (rc != 0) {
      fprintf(stderr, "nidag-bench: %s: a task returned %d\n", name, rc);
      return 1;
    }
    if (r < 0) continue; /* warm-up */
    t[r] = j.secs;
    nd_pool_stats st;
    nd_pool_stats_get(c->pool, &st);
    inlined += (double)st.inlined / W1A_N / NB_REPS;
    char label[48];
    snprintf(label, sizeof label, "%s_run %d", name, r);
    printf("# %s_run %d %.6f s\n", name, r, t[r]);
    nb_stats_print(c, label);
  }
  printf("%s_empty_task_ns %.1f ns/task\n", name, 1e9 * nb_median(t, NB_REPS) / W1A_N);
  /* Spawns that found the bounded deque full and ran at once (see README). */
  printf("%s_inlined_share %.3f frac\n", name, inlined);
  return 0;
}

int nb_w1a(const nb_ctx *c) {
  if (w1a_variant(c, W1A_N, "w1a_nidag")) return 1;
  return w1a_variant(c, W1A_BATCH, "w1a_nidag_queued");
}

/* ------------------------------------------------------------ W1b */

typedef struct fib_job {
  nd_pool *pool;
  long n;
  long r;
} fib_job;

static int fib_task(void *arg) {
  fib_job *j = arg;
  if (j->n < 2) {
    j->r = j->n;
    return 0;
  }
  fib_job a = {j->pool, j->n - 1, 0}, b = {j->pool, j->n - 2, 0};
  nd_group g;
  nd_group_init(&g, j->pool);
  nd_spawn(&g, fib_task, &a);
  nd_spawn(&g, fib_task, &b);
  int rc = nd_group_wait(&g);
  j->r = a.r + b.r;
  return rc;
}

long nb_fib_tasks(nd_pool *p, int n, int *rc) {
  fib_job root = {p, n, 0};
  *rc = fib_task(&root);
  return root.r;
}

typedef struct w1b_job {
  nd_pool *pool;
  long result;
  double secs;
} w1b_job;

static int w1b_body(void *arg) {
  w1b_job *j = arg;
  int rc;
  double t0 = nb_now();
  j->result = nb_fib_tasks(j->pool, W1B_N, &rc);
  j->secs = nb_now() - t0;
  return rc;
}

int nb_w1b(const nb_ctx *c) {
  double t[NB_REPS];
  w1b_job j = {c->pool, 0, 0};
  for (int r = -1; r < NB_REPS; r++) {
    nb_stats_reset(c);
    j.result = -1;
    int rc = nd_pool_run(c->pool, w1b_body, &j);
    if (rc != 0 || j.result != W1B_RESULT) {
      fprintf(stderr, "nidag-bench: w1b: fib(30) = %ld (rc %d), expected %ld\n", j.result,
              rc, W1B_RESULT);
      return 1;
    }
    if (r < 0) continue;
    t[r] = j.secs;
    char label[48];
    snprintf(label, sizeof label, "w1b_nidag_run %d", r);
    printf("# w1b_nidag_run %d %.6f s result %ld\n", r, t[r], j.result);
    nb_stats_print(c, label);
  }
  double m = nb_median(t, NB_REPS);
  printf("w1b_nidag_fib30_total %.4f s\n", m);
  printf("w1b_nidag_fib30_tasks_per_s %.4g tasks/s\n", (double)W1B_TASKS / m);
  printf("w1b_nidag_fib30_ns_per_task %.1f ns/task\n", 1e9 * m / (double)W1B_TASKS);
  return 0;
}

/* ------------------------------------------------------------ W1c */

static int chain_node(nd_task_ctx *ctx, void *arg) {
  (void)ctx;
  long *acc = arg;
  *acc += 1; /* node i runs after node i-1: the runtime orders the writes */
  return 0;
}

typedef struct w1c_job {
  nd_pool *pool;
  nd_taskgraph *graph; /* freed by the caller, untimed */
  long acc;
  double build, run;
  nd_run_stats st;
  int rc;
  const char *where;
} w1c_job;

static int w1c_body(void *arg) {
  w1c_job *j = arg;
  j->graph = NULL;
  j->acc = 0;
  double t0 = nb_now();
  int rc = nd_taskgraph_new(&j->graph);
  if (rc != 0) {
    j->where = "nd_taskgraph_new";
    return j->rc = rc;
  }
  int64_t prev = -1;
  for (long i = 0; i < W1C_N; i++) {
    int64_t id = nd_taskgraph_add(j->graph, chain_node, &j->acc, NULL);
    if (id < 0) {
      j->where = "nd_taskgraph_add";
      return j->rc = (int)id;
    }
    if (prev >= 0 && (rc = nd_taskgraph_depend(j->graph, id, prev)) != 0) {
      j->where = "nd_taskgraph_depend";
      return j->rc = rc;
    }
    prev = id;
  }
  double t1 = nb_now();
  rc = nd_taskgraph_run(j->pool, j->graph, &j->st);
  double t2 = nb_now();
  j->build = t1 - t0;
  j->run = t2 - t1;
  j->where = "nd_taskgraph_run";
  return j->rc = rc;
}

/* One W1c series: warm-up + NB_REPS runs, on a worker or from this thread. */
static int w1c_series(const nb_ctx *c, int on_worker, double *b, double *r, double *tot) {
  const char *tag = on_worker ? "w1c_nidag_run" : "w1c_nidag_external_run";
  for (int k = -1; k < NB_REPS; k++) {
    w1c_job j = {c->pool, NULL, 0, 0, 0, {0, 0, 0}, 0, "?"};
    nb_stats_reset(c);
    int rc = on_worker ? nd_pool_run(c->pool, w1c_body, &j) : w1c_body(&j);
    if (rc == 0) rc = j.rc;
    int ok = rc == 0 && j.acc == W1C_N && j.st.done == (size_t)W1C_N &&
             nd_taskgraph_size(j.graph) == (size_t)W1C_N;
    if (!ok) {
      fprintf(stderr, "nidag-bench: w1c: %s: %s; acc %ld, done %zu (expected %ld)\n",
              j.where, nd_strerror(rc), j.acc, j.st.done, W1C_N);
      nd_taskgraph_free(j.graph);
      return 1;
    }
    nd_taskgraph_free(j.graph);
    if (k < 0) continue;
    b[k] = j.build;
    r[k] = j.run;
    tot[k] = j.build + j.run;
    char label[48];
    snprintf(label, sizeof label, "%s %d", tag, k);
    printf("# %s %d build %.6f run %.6f s acc %ld\n", tag, k, b[k], r[k], j.acc);
    nb_stats_print(c, label);
  }
  return 0;
}

int nb_w1c(const nb_ctx *c) {
  double b[NB_REPS], r[NB_REPS], tot[NB_REPS];
  if (w1c_series(c, 1, b, r, tot) != 0) return 1;
  printf("w1c_nidag_chain_build_ns %.1f ns/task\n", 1e9 * nb_median(b, NB_REPS) / W1C_N);
  printf("w1c_nidag_chain_run_ns %.1f ns/task\n", 1e9 * nb_median(r, NB_REPS) / W1C_N);
  printf("w1c_nidag_chain_total_ns %.1f ns/task\n", 1e9 * nb_median(tot, NB_REPS) / W1C_N);
  if (w1c_series(c, 0, b, r, tot) != 0) return 1;
  printf("# w1c_nidag_external (built and run from the main thread) build %.1f run %.1f "
         "total %.1f ns/task\n",
         1e9 * nb_median(b, NB_REPS) / W1C_N, 1e9 * nb_median(r, NB_REPS) / W1C_N,
         1e9 * nb_median(tot, NB_REPS) / W1C_N);
  return 0;
}
