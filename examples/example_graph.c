/* example_graph: a tour of the nidag runtime in one short program.
 *
 *   1. open a pool of worker threads;
 *   2. run a task graph in which one node fails: its dependents are skipped,
 *      while an unrelated branch still completes;
 *   3. read every node's state and error message;
 *   4. fill an array with nd_parallel_for;
 *   5. sum it with nd_parallel_reduce, and see that the result is bitwise the
 *      same whatever the chunking.
 *
 * Build: cmake -S . -B build && cmake --build build; run: build/examples/example_graph
 * README.md ("Tutorial") walks through it. It uses only the public header.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nidag.h"

/* ------------------------------------------------------------------------
 * Step 2: graph nodes. A node is a function (nd_task_ctx *, void *arg) that
 * returns 0 on success or an error code. nd_task_fail() records a message on
 * the node and returns the code, so `return nd_task_fail(...)` is the idiom.
 * ---------------------------------------------------------------------- */

typedef struct subject {
  const char *id;
  int file_ok;   /* pretend the input file is readable */
  double signal; /* "loaded" data */
  double score;  /* result of the analysis */
} subject;

static int load(nd_task_ctx *ctx, void *arg) {
  subject *s = arg;
  if (!s->file_ok)
    return nd_task_fail(ctx, ND_EIO, "cannot open %s.nii.gz: no such file", s->id);
  s->signal = 42.0;
  return 0;
}

static int analyse(nd_task_ctx *ctx, void *arg) {
  (void)ctx;
  subject *s = arg;
  /* Safe to read s->signal: this node runs only after `load` succeeded. */
  s->score = sqrt(s->signal);
  return 0;
}

static int report(nd_task_ctx *ctx, void *arg) {
  (void)ctx;
  subject *s = arg;
  printf("  [report] %s: score %.3f (ran on worker %d)\n", s->id, s->score, nd_worker_index());
  return 0;
}

static const char *state_name(nd_node_state st) {
  switch (st) {
  case ND_NODE_DONE: return "done";
  case ND_NODE_FAILED: return "FAILED";
  case ND_NODE_SKIPPED: return "skipped";
  default: return "pending";
  }
}

/* Build and run: two independent chains, load -> analyse -> report, one per
 * subject. sub-02's file is "missing", so its load fails. */
static int graph_demo(nd_pool *pool) {
  subject subs[2] = {{"sub-01", 1, 0, 0}, {"sub-02", 0, 0, 0}};
  nd_taskgraph *g;
  int rc = nd_taskgraph_new(&g);
  if (rc != 0)
    return rc;

  for (int i = 0; i < 2; i++) {
    char label[64];
    snprintf(label, sizeof label, "load %s", subs[i].id); /* labels are copied */
    int64_t l = nd_taskgraph_add(g, load, &subs[i], label);
    snprintf(label, sizeof label, "analyse %s", subs[i].id);
    int64_t a = nd_taskgraph_add(g, analyse, &subs[i], label);
    snprintf(label, sizeof label, "report %s", subs[i].id);
    int64_t r = nd_taskgraph_add(g, report, &subs[i], label);
    if (l < 0 || a < 0 || r < 0) {
      nd_taskgraph_free(g);
      return ND_ENOMEM;
    }
    /* Declared memory cost: with a pool budget (nd_runtime_opts.mem_budget)
     * the executor keeps the sum of running costs under it. */
    nd_taskgraph_set_cost(g, l, 1u << 20);
    nd_taskgraph_depend(g, a, l); /* analyse after load */
    nd_taskgraph_depend(g, r, a); /* report after analyse */
  }

  nd_run_stats st = {0};
  rc = nd_taskgraph_run(pool, g, &st);
  /* rc is ND_ETASK because a node failed; nd_errmsg(g) summarises. */
  printf("  run returned %s (%s)\n  summary: %s\n", nd_errname(rc), nd_strerror(rc),
         nd_errmsg(g));
  printf("  done %zu, failed %zu, skipped %zu\n", st.done, st.failed, st.skipped);

  /* Step 3: per-node state and error message (owned by the graph). */
  for (size_t i = 0; i < nd_taskgraph_size(g); i++) {
    const char *msg;
    int code = nd_taskgraph_error(g, (int64_t)i, &msg);
    const char *label = nd_taskgraph_label(g, (int64_t)i);
    const char *state = state_name(nd_taskgraph_state(g, (int64_t)i));
    if (code != 0)
      printf("  %-16s %-8s %s: %s\n", label, state, nd_errname(code), msg);
    else
      printf("  %-16s %s\n", label, state);
  }

  /* What we expect: sub-01's chain done (3 nodes), sub-02's load failed and
   * its two dependents skipped. */
  int as_expected = rc == ND_ETASK && st.done == 3 && st.failed == 1 && st.skipped == 2;
  nd_taskgraph_free(g);
  return as_expected ? 0 : ND_ESTATE;
}

/* ------------------------------------------------------------------------
 * Step 4: nd_parallel_for calls body(ctx, lo, hi) on chunks of [begin, end).
 * Chunk boundaries depend only on (begin, end, chunking, chunk), never on
 * the number of threads.
 * ---------------------------------------------------------------------- */

static int fill(void *ctx, size_t lo, size_t hi) {
  double *x = ctx;
  for (size_t i = lo; i < hi; i++)
    x[i] = 1.0 / (double)(i + 1); /* terms of the harmonic series */
  return 0;
}

/* ------------------------------------------------------------------------
 * Step 5: nd_parallel_reduce. Each leaf of `grain` items is reduced into its
 * own partial (init, then body) and the partials are combined in a fixed
 * tree, so the floating-point result depends on the grain only.
 * ---------------------------------------------------------------------- */

static void sum_init(void *ctx, void *partial) {
  (void)ctx;
  *(double *)partial = 0.0;
}

static int sum_body(void *ctx, size_t lo, size_t hi, void *partial) {
  const double *x = ctx;
  double s = *(double *)partial;
  for (size_t i = lo; i < hi; i++)
    s += x[i];
  *(double *)partial = s;
  return 0;
}

static void sum_combine(void *ctx, void *into, const void *from) {
  (void)ctx;
  *(double *)into += *(const double *)from;
}

#define N_ITEMS 1000000
#define GRAIN 4096

static int loops_demo(nd_pool *pool) {
  double *x = malloc(sizeof *x * N_ITEMS);
  if (!x)
    return ND_ENOMEM;
  int rc = nd_parallel_for(pool, 0, N_ITEMS, ND_DYNAMIC, 10000, fill, x);
  if (rc != 0) {
    free(x);
    return rc;
  }
  printf("  parallel_for: filled %d items, x[999999] = %.3g\n", N_ITEMS, x[N_ITEMS - 1]);

  static const struct {
    nd_chunking how;
    const char *name;
  } chunkings[] = {{ND_STATIC, "static"},
                   {ND_STATIC_CYCLIC, "static-cyclic"},
                   {ND_DYNAMIC, "dynamic"},
                   {ND_GUIDED, "guided"}};
  double first = 0.0;
  int identical = 1;
  for (size_t k = 0; k < sizeof chunkings / sizeof chunkings[0]; k++) {
    nd_reduce_desc d = {.grain = GRAIN,
                        .chunking = chunkings[k].how,
                        .chunk = 3, /* leaves per claim */
                        .partial_size = sizeof(double),
                        .init = sum_init,
                        .body = sum_body,
                        .combine = sum_combine,
                        .ctx = x};
    double total;
    rc = nd_parallel_reduce(pool, 0, N_ITEMS, &d, &total);
    if (rc != 0)
      break;
    if (k == 0)
      first = total;
    identical &= memcmp(&first, &total, sizeof total) == 0;
    printf("  parallel_reduce (%-13s): sum = %.17g\n", chunkings[k].name, total);
  }
  free(x);
  if (rc != 0)
    return rc;
  printf("  all chunkings bitwise identical: %s\n", identical ? "yes" : "NO");
  return identical ? 0 : ND_ESTATE;
}

int main(void) {
  /* Step 1: a pool. Zeroed options mean defaults: threads from $NIDAG_THREADS
   * or the CPUs this process may use, no memory budget. */
  nd_runtime_opts opts = {0};
  nd_pool *pool;
  int rc = nd_pool_open(&pool, &opts);
  if (rc != 0) {
    fprintf(stderr, "nd_pool_open: %s\n", nd_strerror(rc));
    return 1;
  }
  printf("pool: %u worker threads\n", nd_pool_threads(pool));

  printf("\ntask graph with a failing node:\n");
  int rc_graph = graph_demo(pool);
  printf("\nparallel loops:\n");
  int rc_loops = loops_demo(pool);

  nd_pool_stats ps;
  nd_pool_stats_get(pool, &ps);
  printf("\npool counters: tasks %llu, steals %llu, sleeps %llu, wakes %llu\n",
         (unsigned long long)ps.tasks, (unsigned long long)ps.steals,
         (unsigned long long)ps.sleeps, (unsigned long long)ps.wakes);
  nd_pool_close(pool);

  if (rc_graph != 0 || rc_loops != 0) {
    fprintf(stderr, "example_graph: unexpected result (graph: %s, loops: %s)\n",
            nd_errname(rc_graph), nd_errname(rc_loops));
    return 1;
  }
  printf("\nexample_graph: everything behaved as described\n");
  return 0;
}
