/* Tests of task graphs (nd_taskgraph).
 *
 * - diamond, chain, wide and seeded random DAGs run every node once, each
 *   after all its predecessors (per-node atomic flags), on 1, 2, 3 and 8
 *   workers, from the main thread and from inside a task;
 * - error cancellation: a failing node's transitive dependents are SKIPPED
 *   (ND_ECANCELED, message naming the failed label) and never run, unrelated
 *   branches complete, the run returns ND_ETASK and nd_errmsg names the
 *   failed labels; run statistics;
 * - cycles (ND_EINVAL, nothing runs), bad ids and self edges, reruns
 *   (ND_ESTATE), labels;
 * - the memory budget: ~200 independent nodes with seeded random costs in
 *   [1, B]; the running sum of costs observed by the nodes never exceeds B,
 *   nor does the pool's mem_peak; a node costing more than B fails with
 *   ND_EBUDGET and only its dependents are skipped;
 * - a graph computing a deterministic value gives the same result on every
 *   worker count.
 * Seeded (printed; NIDAG_TEST_SEED overrides).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "nidag/runtime.h"
#include "tests/testutil.h"

static const unsigned g_worker_counts[] = {1, 2, 3, 8};
#define N_POOLS (sizeof g_worker_counts / sizeof g_worker_counts[0])
static nd_pool *g_pools[N_POOLS];
static uint64_t g_seed;


static int open_pools(void **state) {
  (void)state;
  return nd_test_open_pools(g_pools, g_worker_counts, N_POOLS);
}

static int close_pools(void **state) {
  (void)state;
  nd_test_close_pools(g_pools, N_POOLS);
  return 0;
}

/* ------------------------------------------------------ ordered graphs */

typedef struct gtest gtest;

typedef struct node_info {
  gtest *t;
  int64_t id;
  size_t npred, cap;
  int64_t *preds;
} node_info;

struct gtest {
  nd_taskgraph *g;
  nd_pool *pool; /* expected nd_task_pool; NULL: any */
  size_t n;
  node_info *info;
  _Atomic int *finished;
  _Atomic int *ran;
  _Atomic int violations; /* predecessor not finished, wrong ctx, ... */
  int fail_node;          /* -1: none */
  int fail_code;
};

static int order_node(nd_task_ctx *ctx, void *arg) {
  node_info *ni = arg;
  gtest *t = ni->t;
  atomic_fetch_add(&t->ran[ni->id], 1);
  if (nd_task_node(ctx) != ni->id) atomic_fetch_add(&t->violations, 1);
  if (t->pool && nd_task_pool(ctx) != t->pool) atomic_fetch_add(&t->violations, 1);
  for (size_t k = 0; k < ni->npred; k++)
    if (!atomic_load_explicit(&t->finished[ni->preds[k]], memory_order_acquire))
      atomic_fetch_add(&t->violations, 1);
  if (ni->id == t->fail_node) return nd_task_fail(ctx, t->fail_code, "node %lld broke", (long long)ni->id);
  atomic_store_explicit(&t->finished[ni->id], 1, memory_order_release);
  return 0;
}

static void gt_init(gtest *t, size_t n) {
  memset(t, 0, sizeof *t);
  assert_int_equal(nd_taskgraph_new(&t->g), 0);
  t->n = n;
  t->fail_node = -1;
  t->info = calloc(n, sizeof *t->info);
  t->finished = calloc(n, sizeof *t->finished);
  t->ran = calloc(n, sizeof *t->ran);
  assert_non_null(t->info);
  assert_non_null(t->finished);
  assert_non_null(t->ran);
  for (size_t i = 0; i < n; i++) {
    t->info[i].t = t;
    char label[32];
    snprintf(label, sizeof label, "n%zu", i);
    int64_t id = nd_taskgraph_add(t->g, order_node, &t->info[i], label);
    assert_int_equal(id, (int64_t)i); /* dense from 0 */
    t->info[i].id = id;
  }
  assert_int_equal(nd_taskgraph_size(t->g), n);
}

static void gt_edge(gtest *t, int64_t node, int64_t before) {
  assert_int_equal(nd_taskgraph_depend(t->g, node, before), 0);
  node_info *ni = &t->info[node];
  if (ni->npred == ni->cap) {
    ni->cap = ni->cap ? 2 * ni->cap : 4;
    ni->preds = realloc(ni->preds, ni->cap * sizeof *ni->preds);
    assert_non_null(ni->preds);
  }
  ni->preds[ni->npred++] = before;
}

static void gt_free(gtest *t) {
  for (size_t i = 0; i < t->n; i++) free(t->info[i].preds);
  free(t->info);
  free((void *)t->finished);
  free((void *)t->ran);
  nd_taskgraph_free(t->g);
}

static void gt_check_all_done(gtest *t, int rc, const nd_run_stats *st) {
  assert_int_equal(rc, 0);
  assert_int_equal(atomic_load(&t->violations), 0);
  assert_int_equal(st->done, t->n);
  assert_int_equal(st->failed, 0);
  assert_int_equal(st->skipped, 0);
  for (size_t i = 0; i < t->n; i++) {
    assert_int_equal(atomic_load(&t->ran[i]), 1);
    assert_int_equal(nd_taskgraph_state(t->g, (int64_t)i), ND_NODE_DONE);
    const char *msg = NULL;
    assert_int_equal(nd_taskgraph_error(t->g, (int64_t)i, &msg), 0);
    assert_string_equal(msg, "");
  }
  assert_string_equal(nd_errmsg(t->g), "");
}

enum shape { DIAMOND, CHAIN, WIDE, RANDOM_DAG, N_SHAPES };
static const char *const g_shape_names[] = {"diamond", "chain", "wide", "random"};

static void build_shape(gtest *t, enum shape s, uint64_t *rng) {
  switch (s) {
  case DIAMOND:
    gt_init(t, 4);
    gt_edge(t, 1, 0);
    gt_edge(t, 2, 0);
    gt_edge(t, 3, 1);
    gt_edge(t, 3, 2);
    break;
  case CHAIN:
    gt_init(t, 2000);
    for (int64_t i = 1; i < 2000; i++) gt_edge(t, i, i - 1);
    break;
  case WIDE: /* root -> 500 -> sink */
    gt_init(t, 502);
    for (int64_t i = 1; i <= 500; i++) {
      gt_edge(t, i, 0);
      gt_edge(t, 501, i);
    }
    break;
  default: { /* random DAG: edges from lower to higher ids, added in any order */
    const size_t n = 300;
    gt_init(t, n);
    for (int64_t i = 1; i < (int64_t)n; i++) {
      int k = (int)(splitmix64(rng) % 5);
      for (int e = 0; e < k; e++) {
        int64_t before = (int64_t)(splitmix64(rng) % (uint64_t)i);
        int dup = 0;
        for (size_t q = 0; q < t->info[i].npred; q++) dup |= t->info[i].preds[q] == before;
        if (!dup) gt_edge(t, i, before);
      }
    }
    break;
  }
  }
}

static void test_shapes(void **state) {
  (void)state;
  for (int s = 0; s < N_SHAPES; s++)
    for (size_t w = 0; w < N_POOLS; w++) {
      uint64_t rng = g_seed;
      gtest t;
      build_shape(&t, (enum shape)s, &rng);
      t.pool = g_pools[w];
      nd_run_stats st = {99, 99, 99};
      int rc = nd_taskgraph_run(g_pools[w], t.g, &st);
      if (rc || atomic_load(&t.violations))
        printf("  FAIL %s on %u workers: rc %d, %d order violations\n", g_shape_names[s],
               g_worker_counts[w], rc, atomic_load(&t.violations));
      gt_check_all_done(&t, rc, &st);
      gt_free(&t);
    }
}

typedef struct run_in_task {
  nd_pool *p;
  nd_taskgraph *g;
  nd_run_stats st;
} run_in_task;

static int graph_from_task(void *arg) {
  run_in_task *r = arg;
  return nd_taskgraph_run(r->p, r->g, &r->st);
}

static void test_graph_from_task_and_global(void **state) {
  (void)state;
  for (size_t w = 0; w < N_POOLS; w++) {
    uint64_t rng = g_seed + 1;
    gtest t;
    build_shape(&t, RANDOM_DAG, &rng);
    t.pool = g_pools[w];
    run_in_task r = {g_pools[w], t.g, {0, 0, 0}};
    int rc = nd_pool_run(g_pools[w], graph_from_task, &r);
    gt_check_all_done(&t, rc, &r.st);
    gt_free(&t);
  }
  /* NULL pool: the global pool; NULL stats. */
  uint64_t rng = g_seed + 2;
  gtest t;
  build_shape(&t, WIDE, &rng);
  assert_int_equal(nd_taskgraph_run(NULL, t.g, NULL), 0);
  nd_run_stats st = {t.n, 0, 0};
  gt_check_all_done(&t, 0, &st);
  gt_free(&t);
}

/* A node running a parallel_for on its own pool (nesting inside graphs). */
typedef struct pfor_node_arg {
  _Atomic int hits[1000];
} pfor_node_arg;

static int pfor_body(void *ctx, size_t lo, size_t hi) {
  pfor_node_arg *a = ctx;
  for (size_t i = lo; i < hi; i++) atomic_fetch_add(&a->hits[i], 1);
  return 0;
}

static int pfor_node(nd_task_ctx *ctx, void *arg) {
  return nd_parallel_for(nd_task_pool(ctx), 0, 1000, ND_DYNAMIC, 10, pfor_body, arg);
}

static void test_parallel_for_in_nodes(void **state) {
  (void)state;
  enum { NODES = 16 };
  pfor_node_arg *args = calloc(NODES, sizeof *args);
  assert_non_null(args);
  for (size_t w = 0; w < N_POOLS; w++) {
    memset(args, 0, NODES * sizeof *args);
    nd_taskgraph *g;
    assert_int_equal(nd_taskgraph_new(&g), 0);
    for (int i = 0; i < NODES; i++) {
      assert_int_equal(nd_taskgraph_add(g, pfor_node, &args[i], NULL), i);
      if (i >= 2) assert_int_equal(nd_taskgraph_depend(g, i, i / 2), 0);
    }
    nd_run_stats st;
    assert_int_equal(nd_taskgraph_run(g_pools[w], g, &st), 0);
    assert_int_equal(st.done, NODES);
    for (int i = 0; i < NODES; i++)
      for (int k = 0; k < 1000; k++) assert_int_equal(atomic_load(&args[i].hits[k]), 1);
    nd_taskgraph_free(g);
  }
  free(args);
}

/* ------------------------------------------------------ error cancellation */

typedef struct enode {
  const char *label;
  int code; /* 0: succeed; else fail with this code */
  int use_fail; /* through nd_task_fail (with a message) */
  _Atomic int ran;
} enode;

static int enode_fn(nd_task_ctx *ctx, void *arg) {
  enode *e = arg;
  atomic_fetch_add(&e->ran, 1);
  if (!e->code) return 0;
  if (e->use_fail) return nd_task_fail(ctx, e->code, "cannot open %s.nii", e->label);
  return e->code;
}

enum {
  LOAD_X, SMOOTH_X, STATS_X, EXTRA_X, LOAD_Y, SMOOTH_Y, STATS_Y, REPORT, LONELY, N_ENODES
};

static void test_error_cancellation(void **state) {
  (void)state;
  for (size_t w = 0; w < N_POOLS; w++) {
    enode en[N_ENODES] = {
        [LOAD_X] = {"load-x", ND_EIO, 1, 0}, [SMOOTH_X] = {"smooth-x", 0, 0, 0},
        [STATS_X] = {"stats-x", 0, 0, 0},    [EXTRA_X] = {"extra-x", 0, 0, 0},
        [LOAD_Y] = {"load-y", 0, 0, 0},      [SMOOTH_Y] = {"smooth-y", 0, 0, 0},
        [STATS_Y] = {"stats-y", 0, 0, 0},    [REPORT] = {"report", 0, 0, 0},
        [LONELY] = {"lonely", 0, 0, 0},
    };
    nd_taskgraph *g;
    assert_int_equal(nd_taskgraph_new(&g), 0);
    for (int i = 0; i < N_ENODES; i++)
      assert_int_equal(nd_taskgraph_add(g, enode_fn, &en[i], en[i].label), i);
    /* x: load -> smooth -> stats -> report; load -> extra (a second path)
     * y: load -> smooth -> stats -> report;  lonely: no edges. */
    assert_int_equal(nd_taskgraph_depend(g, SMOOTH_X, LOAD_X), 0);
    assert_int_equal(nd_taskgraph_depend(g, STATS_X, SMOOTH_X), 0);
    assert_int_equal(nd_taskgraph_depend(g, EXTRA_X, LOAD_X), 0);
    assert_int_equal(nd_taskgraph_depend(g, SMOOTH_Y, LOAD_Y), 0);
    assert_int_equal(nd_taskgraph_depend(g, STATS_Y, SMOOTH_Y), 0);
    assert_int_equal(nd_taskgraph_depend(g, REPORT, STATS_X), 0);
    assert_int_equal(nd_taskgraph_depend(g, REPORT, STATS_Y), 0);

    nd_run_stats st;
    int rc = nd_taskgraph_run(g_pools[w], g, &st);
    const char *summary = nd_errmsg(g);
    printf("  %u workers: rc %s, errmsg \"%s\"\n", g_worker_counts[w], nd_errname(rc), summary);
    assert_int_equal(rc, ND_ETASK);
    assert_non_null(strstr(summary, "load-x"));
    assert_int_equal(st.done, 4);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.skipped, 4);

    const char *msg = NULL;
    assert_int_equal(nd_taskgraph_state(g, LOAD_X), ND_NODE_FAILED);
    assert_int_equal(nd_taskgraph_error(g, LOAD_X, &msg), ND_EIO);
    assert_non_null(strstr(msg, "cannot open load-x.nii"));
    assert_int_equal(atomic_load(&en[LOAD_X].ran), 1);
    const int skipped[] = {SMOOTH_X, STATS_X, EXTRA_X, REPORT};
    for (size_t k = 0; k < 4; k++) {
      int i = skipped[k];
      assert_int_equal(nd_taskgraph_state(g, i), ND_NODE_SKIPPED);
      assert_int_equal(nd_taskgraph_error(g, i, &msg), ND_ECANCELED);
      if (!strstr(msg, "load-x")) printf("  skipped %s: message \"%s\"\n", en[i].label, msg);
      assert_non_null(strstr(msg, "load-x"));
      assert_int_equal(atomic_load(&en[i].ran), 0);
    }
    const int done[] = {LOAD_Y, SMOOTH_Y, STATS_Y, LONELY};
    for (size_t k = 0; k < 4; k++) {
      int i = done[k];
      assert_int_equal(nd_taskgraph_state(g, i), ND_NODE_DONE);
      assert_int_equal(nd_taskgraph_error(g, i, &msg), 0);
      assert_int_equal(atomic_load(&en[i].ran), 1);
    }
    /* A graph runs once. */
    assert_int_equal(nd_taskgraph_run(g_pools[w], g, &st), ND_ESTATE);
    assert_int_equal(atomic_load(&en[LOAD_Y].ran), 1);
    nd_taskgraph_free(g);
  }
}

static void test_two_failures_and_plain_codes(void **state) {
  (void)state;
  for (size_t w = 0; w < N_POOLS; w++) {
    /* a (fails via nd_task_fail) -> a2;  b (returns ND_ERANGE) -> b2;  c */
    enode en[5] = {{"alpha", ND_EIO, 1, 0},
                   {"alpha-dep", 0, 0, 0},
                   {"beta", ND_ERANGE, 0, 0},
                   {"beta-dep", 0, 0, 0},
                   {"gamma", 0, 0, 0}};
    nd_taskgraph *g;
    assert_int_equal(nd_taskgraph_new(&g), 0);
    for (int i = 0; i < 5; i++) assert_int_equal(nd_taskgraph_add(g, enode_fn, &en[i], en[i].label), i);
    assert_int_equal(nd_taskgraph_depend(g, 1, 0), 0);
    assert_int_equal(nd_taskgraph_depend(g, 3, 2), 0);
    nd_run_stats st;
    assert_int_equal(nd_taskgraph_run(g_pools[w], g, &st), ND_ETASK);
    assert_int_equal(st.done, 1);
    assert_int_equal(st.failed, 2);
    assert_int_equal(st.skipped, 2);
    const char *msg;
    assert_int_equal(nd_taskgraph_state(g, 2), ND_NODE_FAILED);
    assert_int_equal(nd_taskgraph_error(g, 2, &msg), ND_ERANGE);
    assert_non_null(msg);
    assert_int_equal(nd_taskgraph_error(g, 3, &msg), ND_ECANCELED);
    assert_non_null(strstr(msg, "beta"));
    assert_int_equal(nd_taskgraph_error(g, 1, &msg), ND_ECANCELED);
    assert_non_null(strstr(msg, "alpha"));
    assert_int_equal(nd_taskgraph_state(g, 4), ND_NODE_DONE);
    assert_int_equal(atomic_load(&en[1].ran) + atomic_load(&en[3].ran), 0);
    /* Every failed node is reported by label: the summary names both, and
     * the report has one line per failed and per skipped node. */
    const char *summary = nd_errmsg(g);
    printf("  %u workers: summary \"%s\"\n", g_worker_counts[w], summary);
    assert_non_null(strstr(summary, "2 of 5 nodes failed, 2 skipped"));
    assert_non_null(strstr(summary, "'alpha' (ND_EIO): cannot open alpha.nii"));
    assert_non_null(strstr(summary, "'beta' (ND_ERANGE)"));
    char *text = NULL;
    size_t text_len = 0;
    FILE *out = open_memstream(&text, &text_len);
    assert_non_null(out);
    assert_int_equal(nd_taskgraph_report(g, out), 4);
    fclose(out);
    assert_string_equal(text,
                        "failed  alpha: ND_EIO: cannot open alpha.nii\n"
                        "skipped alpha-dep: ND_ECANCELED: skipped: upstream node 'alpha' failed\n"
                        "failed  beta: ND_ERANGE: value out of range\n"
                        "skipped beta-dep: ND_ECANCELED: skipped: upstream node 'beta' failed\n");
    free(text);
    assert_string_equal(nd_taskgraph_label(g, 0), "alpha");
    assert_string_equal(nd_taskgraph_label(g, 2), "beta");
    nd_taskgraph_free(g);
  }
}

/* A failure in the middle of a wide graph: exactly its subtree is skipped. */
static void test_failure_subtree(void **state) {
  (void)state;
  for (size_t w = 0; w < N_POOLS; w++) {
    uint64_t rng = g_seed + 3;
    gtest t;
    build_shape(&t, RANDOM_DAG, &rng);
    t.fail_node = 40;
    t.fail_code = ND_EFORMAT;
    /* Expected: descendants of 40 (ids only grow along edges). */
    uint8_t *desc = calloc(t.n, 1);
    assert_non_null(desc);
    desc[40] = 1;
    size_t ndesc = 0;
    for (size_t i = 41; i < t.n; i++)
      for (size_t k = 0; k < t.info[i].npred; k++)
        if (desc[t.info[i].preds[k]]) {
          desc[i] = 1;
          ndesc++;
          break;
        }
    nd_run_stats st;
    assert_int_equal(nd_taskgraph_run(g_pools[w], t.g, &st), ND_ETASK);
    assert_int_equal(atomic_load(&t.violations), 0);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.skipped, ndesc);
    assert_int_equal(st.done, t.n - 1 - ndesc);
    for (size_t i = 0; i < t.n; i++) {
      nd_node_state s = nd_taskgraph_state(t.g, (int64_t)i);
      if (i == 40) {
        assert_int_equal(s, ND_NODE_FAILED);
        const char *msg;
        assert_int_equal(nd_taskgraph_error(t.g, 40, &msg), ND_EFORMAT);
        assert_non_null(strstr(msg, "node 40 broke"));
      } else if (desc[i]) {
        assert_int_equal(s, ND_NODE_SKIPPED);
        assert_int_equal(atomic_load(&t.ran[i]), 0);
        const char *msg;
        assert_int_equal(nd_taskgraph_error(t.g, (int64_t)i, &msg), ND_ECANCELED);
        assert_non_null(strstr(msg, "n40"));
      } else {
        assert_int_equal(s, ND_NODE_DONE);
        assert_int_equal(atomic_load(&t.ran[i]), 1);
      }
    }
    assert_non_null(strstr(nd_errmsg(t.g), "n40"));
    free(desc);
    gt_free(&t);
  }
}

/* ------------------------------------------------------------ structure */

static void test_cycle(void **state) {
  (void)state;
  gtest t;
  gt_init(&t, 6);
  gt_edge(&t, 2, 1);
  gt_edge(&t, 3, 2);
  gt_edge(&t, 1, 3); /* 1 -> 2 -> 3 -> 1 */
  gt_edge(&t, 5, 4);
  gt_edge(&t, 4, 5); /* a 2-cycle too */
  assert_int_equal(nd_taskgraph_run(g_pools[1], t.g, NULL), ND_EINVAL);
  for (size_t i = 0; i < t.n; i++) {
    assert_int_equal(atomic_load(&t.ran[i]), 0); /* node 0 did not run either */
    assert_int_equal(nd_taskgraph_state(t.g, (int64_t)i), ND_NODE_PENDING);
  }
  gt_free(&t);
}

static int noop_node(nd_task_ctx *ctx, void *arg) {
  (void)ctx, (void)arg;
  return 0;
}

static void test_bad_ids_and_rerun(void **state) {
  (void)state;
  nd_taskgraph *g;
  assert_int_equal(nd_taskgraph_new(&g), 0);
  assert_int_equal(nd_taskgraph_size(g), 0);
  assert_int_equal(nd_taskgraph_add(g, noop_node, NULL, "a"), 0);
  assert_int_equal(nd_taskgraph_add(g, noop_node, NULL, "b"), 1);
  assert_int_equal(nd_taskgraph_depend(g, 0, 2), ND_EINVAL);
  assert_int_equal(nd_taskgraph_depend(g, 2, 0), ND_EINVAL);
  assert_int_equal(nd_taskgraph_depend(g, -1, 0), ND_EINVAL);
  assert_int_equal(nd_taskgraph_depend(g, 0, -1), ND_EINVAL);
  assert_int_equal(nd_taskgraph_depend(g, 1, 1), ND_EINVAL);
  assert_int_equal(nd_taskgraph_depend(g, 0, 0), ND_EINVAL);
  assert_int_equal(nd_taskgraph_set_cost(g, 2, 10), ND_EINVAL);
  assert_int_equal(nd_taskgraph_set_cost(g, -1, 10), ND_EINVAL);
  assert_int_equal(nd_taskgraph_set_cost(g, 1, 10), 0);
  assert_int_equal(nd_taskgraph_depend(g, 1, 0), 0);
  nd_run_stats st;
  assert_int_equal(nd_taskgraph_run(g_pools[0], g, &st), 0);
  assert_int_equal(st.done, 2);
  assert_int_equal(nd_taskgraph_run(g_pools[0], g, &st), ND_ESTATE);
  assert_int_equal(nd_taskgraph_run(g_pools[2], g, NULL), ND_ESTATE);
  assert_int_equal(nd_taskgraph_state(g, 0), ND_NODE_DONE);
  nd_taskgraph_free(g);
  nd_taskgraph_free(NULL);

  /* An empty graph runs and succeeds. */
  assert_int_equal(nd_taskgraph_new(&g), 0);
  assert_int_equal(nd_taskgraph_run(g_pools[1], g, &st), 0);
  assert_int_equal(st.done + st.failed + st.skipped, 0);
  nd_taskgraph_free(g);
}

static void test_labels(void **state) {
  (void)state;
  nd_taskgraph *g;
  assert_int_equal(nd_taskgraph_new(&g), 0);
  char buf[32] = "first label";
  assert_int_equal(nd_taskgraph_add(g, noop_node, NULL, buf), 0);
  strcpy(buf, "changed"); /* the label was copied */
  for (int i = 1; i < 12; i++) assert_int_equal(nd_taskgraph_add(g, noop_node, NULL, NULL), i);
  assert_string_equal(nd_taskgraph_label(g, 0), "first label");
  assert_string_equal(nd_taskgraph_label(g, 3), "node 3");
  assert_string_equal(nd_taskgraph_label(g, 11), "node 11");
  assert_int_equal(nd_taskgraph_add(g, noop_node, NULL, ""), 12);
  assert_non_null(nd_taskgraph_label(g, 12));
  assert_int_equal(nd_taskgraph_size(g), 13);
  for (int i = 0; i < 13; i++) assert_int_equal(nd_taskgraph_state(g, i), ND_NODE_PENDING);
  nd_taskgraph_free(g);
}

/* ---------------------------------------------------------- memory budget */

#define BUDGET ((size_t)1 << 20)
#define BUDGET_NODES 200

typedef struct budget_state {
  _Atomic size_t running;
  _Atomic size_t max_seen;
  _Atomic int ran[BUDGET_NODES + 8];
} budget_state;

typedef struct bnode {
  budget_state *bs;
  int idx;
  size_t cost;
  long spin_ns;
} bnode;

static void busy_wait_ns(long ns) {
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  do {
    clock_gettime(CLOCK_MONOTONIC, &t);
  } while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < ns);
}

static int budget_node(nd_task_ctx *ctx, void *arg) {
  (void)ctx;
  bnode *b = arg;
  atomic_fetch_add(&b->bs->ran[b->idx], 1);
  size_t cur = atomic_fetch_add(&b->bs->running, b->cost) + b->cost;
  size_t m = atomic_load(&b->bs->max_seen);
  while (cur > m && !atomic_compare_exchange_weak(&b->bs->max_seen, &m, cur)) {
  }
  if (b->idx % 2) {
    struct timespec ts = {0, b->spin_ns};
    nanosleep(&ts, NULL);
  } else {
    busy_wait_ns(b->spin_ns);
  }
  atomic_fetch_sub(&b->bs->running, b->cost);
  return 0;
}

static nd_pool *open_budget_pool(unsigned threads, size_t budget) {
  nd_runtime_opts o = {0};
  o.threads = threads;
  o.mem_budget = budget;
  nd_pool *p = NULL;
  assert_int_equal(nd_pool_open(&p, &o), 0);
  return p;
}

static size_t run_budget_graph(nd_pool *p, size_t *peak_out) {
  budget_state *bs = calloc(1, sizeof *bs);
  bnode *nodes = calloc(BUDGET_NODES, sizeof *nodes);
  assert_non_null(bs);
  assert_non_null(nodes);
  uint64_t rng = g_seed + 4;
  nd_taskgraph *g;
  assert_int_equal(nd_taskgraph_new(&g), 0);
  for (int i = 0; i < BUDGET_NODES; i++) {
    size_t cost = 1 + (size_t)(splitmix64(&rng) % BUDGET);
    if (i == 0) cost = BUDGET; /* exactly the budget: allowed */
    if (i == 1) cost = 0;      /* free */
    nodes[i] = (bnode){bs, i, cost, 50000 + (long)(splitmix64(&rng) % 150000)};
    assert_int_equal(nd_taskgraph_add(g, budget_node, &nodes[i], NULL), i);
    assert_int_equal(nd_taskgraph_set_cost(g, i, cost), 0);
  }
  nd_pool_stats_reset(p);
  nd_run_stats st;
  assert_int_equal(nd_taskgraph_run(p, g, &st), 0);
  assert_int_equal(st.done, BUDGET_NODES);
  for (int i = 0; i < BUDGET_NODES; i++) assert_int_equal(atomic_load(&bs->ran[i]), 1);
  nd_pool_stats ps;
  nd_pool_stats_get(p, &ps);
  assert_int_equal(ps.mem_in_use, 0);
  *peak_out = ps.mem_peak;
  size_t max_seen = atomic_load(&bs->max_seen);
  nd_taskgraph_free(g);
  free(nodes);
  free(bs);
  return max_seen;
}

static void test_memory_budget(void **state) {
  (void)state;
  for (size_t w = 0; w < N_POOLS; w++) {
    nd_pool *p = open_budget_pool(g_worker_counts[w], BUDGET);
    size_t peak = 0;
    size_t max_seen = run_budget_graph(p, &peak);
    printf("  budget %zu, %u workers: max running cost seen %zu, pool mem_peak %zu\n", BUDGET,
           g_worker_counts[w], max_seen, peak);
    assert_true(max_seen <= BUDGET);
    assert_true(max_seen >= BUDGET); /* node 0 alone costs the whole budget */
    assert_true(peak <= BUDGET);
    assert_int_equal(peak, BUDGET);
    nd_pool_close(p);
  }
  /* For contrast (printed, not asserted): no budget on 8 workers. */
  nd_pool *p = open_budget_pool(8, 0);
  size_t peak = 0;
  size_t max_seen = run_budget_graph(p, &peak);
  printf("  no budget, 8 workers: max running cost seen %zu (%.1f x the budget above)\n",
         max_seen, (double)max_seen / (double)BUDGET);
  nd_pool_close(p);
}

static void test_over_budget(void **state) {
  (void)state;
  for (size_t w = 0; w < N_POOLS; w++) {
    nd_pool *p = open_budget_pool(g_worker_counts[w], BUDGET);
    budget_state *bs = calloc(1, sizeof *bs);
    assert_non_null(bs);
    enum { OTHERS = 20, BIG = OTHERS, DEP1, DEP2, N = OTHERS + 3 };
    bnode nodes[N];
    nd_taskgraph *g;
    assert_int_equal(nd_taskgraph_new(&g), 0);
    for (int i = 0; i < N; i++) {
      size_t cost = i == BIG ? BUDGET + 1 : BUDGET / 2;
      nodes[i] = (bnode){bs, i, cost, 20000};
      const char *label = i == BIG ? "huge-volume" : NULL;
      assert_int_equal(nd_taskgraph_add(g, budget_node, &nodes[i], label), i);
      assert_int_equal(nd_taskgraph_set_cost(g, i, cost), 0);
    }
    assert_int_equal(nd_taskgraph_depend(g, DEP1, BIG), 0);
    assert_int_equal(nd_taskgraph_depend(g, DEP2, DEP1), 0);
    nd_run_stats st;
    assert_int_equal(nd_taskgraph_run(p, g, &st), ND_ETASK);
    assert_int_equal(st.done, OTHERS);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.skipped, 2);
    const char *msg;
    assert_int_equal(nd_taskgraph_state(g, BIG), ND_NODE_FAILED);
    assert_int_equal(nd_taskgraph_error(g, BIG, &msg), ND_EBUDGET);
    assert_int_equal(atomic_load(&bs->ran[BIG]), 0); /* refused, never started */
    for (int i = DEP1; i <= DEP2; i++) {
      assert_int_equal(nd_taskgraph_state(g, i), ND_NODE_SKIPPED);
      assert_int_equal(nd_taskgraph_error(g, i, &msg), ND_ECANCELED);
      assert_non_null(strstr(msg, "huge-volume"));
      assert_int_equal(atomic_load(&bs->ran[i]), 0);
    }
    for (int i = 0; i < OTHERS; i++) {
      assert_int_equal(nd_taskgraph_state(g, i), ND_NODE_DONE);
      assert_int_equal(atomic_load(&bs->ran[i]), 1);
    }
    assert_non_null(strstr(nd_errmsg(g), "huge-volume"));
    assert_true(atomic_load(&bs->max_seen) <= BUDGET);
    nd_taskgraph_free(g);
    free(bs);
    nd_pool_close(p);
  }
  /* Without a budget any cost runs. */
  nd_pool *p = open_budget_pool(2, 0);
  nd_taskgraph *g;
  assert_int_equal(nd_taskgraph_new(&g), 0);
  assert_int_equal(nd_taskgraph_add(g, noop_node, NULL, "big"), 0);
  assert_int_equal(nd_taskgraph_set_cost(g, 0, SIZE_MAX / 4), 0);
  assert_int_equal(nd_taskgraph_run(p, g, NULL), 0);
  assert_int_equal(nd_taskgraph_state(g, 0), ND_NODE_DONE);
  nd_taskgraph_free(g);
  nd_pool_close(p);
}

/* ---------------------------------------------------------- determinism */

#define DET_NODES 500

typedef struct det_graph {
  uint64_t slot[DET_NODES];
  size_t npred[DET_NODES];
  int preds[DET_NODES][6];
} det_graph;

typedef struct det_arg {
  det_graph *d;
  int id;
} det_arg;

static uint64_t det_value(const det_graph *d, int id) {
  uint64_t h = 0x1234567ull + (uint64_t)id;
  for (size_t k = 0; k < d->npred[id]; k++) {
    uint64_t s = h ^ d->slot[d->preds[id][k]];
    h = splitmix64(&s);
  }
  return h;
}

static int det_node(nd_task_ctx *ctx, void *arg) {
  (void)ctx;
  det_arg *a = arg;
  a->d->slot[a->id] = det_value(a->d, a->id); /* plain reads of predecessors' slots */
  return 0;
}

static void test_deterministic_values(void **state) {
  (void)state;
  det_graph *d = calloc(1, sizeof *d);
  det_arg *args = calloc(DET_NODES, sizeof *args);
  assert_non_null(d);
  assert_non_null(args);
  uint64_t rng = g_seed + 5;
  for (int i = 1; i < DET_NODES; i++) {
    d->npred[i] = (size_t)(splitmix64(&rng) % 7);
    for (size_t k = 0; k < d->npred[i]; k++) d->preds[i][k] = (int)(splitmix64(&rng) % (uint64_t)i);
  }
  uint64_t ref[DET_NODES];
  for (int i = 0; i < DET_NODES; i++) d->slot[i] = ref[i] = det_value(d, i);
  for (size_t w = 0; w <= N_POOLS; w++) { /* w == N_POOLS: the global pool */
    memset(d->slot, 0, sizeof d->slot);
    nd_taskgraph *g;
    assert_int_equal(nd_taskgraph_new(&g), 0);
    for (int i = 0; i < DET_NODES; i++) {
      args[i] = (det_arg){d, i};
      assert_int_equal(nd_taskgraph_add(g, det_node, &args[i], NULL), i);
    }
    for (int i = 0; i < DET_NODES; i++)
      for (size_t k = 0; k < d->npred[i]; k++) {
        int rc = nd_taskgraph_depend(g, i, d->preds[i][k]);
        assert_int_equal(rc, 0); /* duplicate edges are allowed */
      }
    assert_int_equal(nd_taskgraph_run(w < N_POOLS ? g_pools[w] : NULL, g, NULL), 0);
    assert_memory_equal(d->slot, ref, sizeof ref);
    nd_taskgraph_free(g);
  }
  free(args);
  free(d);
}

int main(void) {
  g_seed = nd_test_seed("test_runtime_graph", 0x5eed0004u);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shapes),
      cmocka_unit_test(test_graph_from_task_and_global),
      cmocka_unit_test(test_parallel_for_in_nodes),
      cmocka_unit_test(test_error_cancellation),
      cmocka_unit_test(test_two_failures_and_plain_codes),
      cmocka_unit_test(test_failure_subtree),
      cmocka_unit_test(test_cycle),
      cmocka_unit_test(test_bad_ids_and_rerun),
      cmocka_unit_test(test_labels),
      cmocka_unit_test(test_memory_budget),
      cmocka_unit_test(test_over_budget),
      cmocka_unit_test(test_deterministic_values),
  };
  return cmocka_run_group_tests(tests, open_pools, close_pools);
}
