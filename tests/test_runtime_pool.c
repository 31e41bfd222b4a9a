/* Tests of the worker pool and fork-join groups (nd_pool, nd_group).
 *
 * Pools of 1, 2, 3 and 8 workers open and close; nd_usable_cpus and
 * $NIDAG_THREADS; nd_worker_index inside and outside; fib(20) with a task
 * per call, spawned from the main thread and from a worker; tasks spawning
 * into their parent's group; first-error reporting by nd_group_wait while
 * every task still runs; nd_pool_run; 100k spawns from one task (the full
 * deque path) each run exactly once; the statistics counters; the global
 * pool.
 */
#include <pthread.h>
#include <sched.h>
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

static const unsigned g_worker_counts[] = {1, 2, 3, 8};
#define N_COUNTS (sizeof g_worker_counts / sizeof g_worker_counts[0])

static _Atomic int g_bad_index; /* a task saw a worker index out of range */

static nd_pool *open_pool(unsigned threads) {
  nd_runtime_opts o = {0};
  o.threads = threads;
  nd_pool *p = NULL;
  assert_int_equal(nd_pool_open(&p, &o), 0);
  assert_non_null(p);
  assert_int_equal(nd_pool_threads(p), threads);
  return p;
}

static void check_index(unsigned nthreads) {
  int w = nd_worker_index();
  if (w < 0 || (unsigned)w >= nthreads) atomic_store(&g_bad_index, 1);
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* ---------------------------------------------------------------- basics */

static void test_usable_cpus(void **state) {
  (void)state;
  unsigned n = nd_usable_cpus();
  cpu_set_t set;
  CPU_ZERO(&set);
  assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
  printf("  nd_usable_cpus() = %u, affinity mask has %d\n", n, CPU_COUNT(&set));
  assert_true(n >= 1);
  assert_true(n <= (unsigned)CPU_COUNT(&set));
}

static int index_task(void *arg) {
  (void)arg;
  return nd_worker_index();
}

static _Atomic int g_counter;

typedef struct idx_arg {
  unsigned nthreads;
} idx_arg;

static int count_task(void *arg) {
  idx_arg *a = arg;
  check_index(a->nthreads);
  atomic_fetch_add(&g_counter, 1);
  return 0;
}

static void *outside_thread(void *arg) {
  *(int *)arg = nd_worker_index();
  return NULL;
}

static void test_open_close(void **state) {
  (void)state;
  assert_int_equal(nd_worker_index(), -1);
  nd_pool_close(NULL); /* NULL-safe */
  for (size_t c = 0; c < N_COUNTS; c++) {
    unsigned n = g_worker_counts[c];
    nd_pool *p = open_pool(n);
    assert_int_equal(nd_worker_index(), -1);
    int w = nd_pool_run(p, index_task, NULL);
    assert_true(w >= 0 && (unsigned)w < n);
    int other = 12345;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, outside_thread, &other), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(other, -1);

    atomic_store(&g_counter, 0);
    atomic_store(&g_bad_index, 0);
    idx_arg a = {n};
    nd_group g;
    nd_group_init(&g, p);
    for (int i = 0; i < 1000; i++) nd_spawn(&g, count_task, &a);
    assert_int_equal(nd_group_wait(&g), 0);
    assert_int_equal(atomic_load(&g_counter), 1000);
    assert_int_equal(atomic_load(&g_bad_index), 0);
    nd_pool_close(p);
  }
  /* Open and close right away, several times (no work at all). */
  for (int i = 0; i < 5; i++) nd_pool_close(open_pool(3));
}

static void test_default_threads(void **state) {
  (void)state;
  const char *saved = getenv("NIDAG_THREADS");
  char *copy = saved ? strdup(saved) : NULL;
  unsetenv("NIDAG_THREADS");
  nd_pool *p = NULL;
  assert_int_equal(nd_pool_open(&p, NULL), 0);
  assert_int_equal(nd_pool_threads(p), nd_usable_cpus());
  nd_pool_close(p);

  assert_int_equal(setenv("NIDAG_THREADS", "3", 1), 0);
  nd_runtime_opts o = {0};
  assert_int_equal(nd_pool_open(&p, &o), 0);
  assert_int_equal(nd_pool_threads(p), 3);
  assert_int_equal(nd_pool_run(p, index_task, NULL) < 3, 1);
  nd_pool_close(p);
  assert_int_equal(nd_pool_open(&p, NULL), 0);
  assert_int_equal(nd_pool_threads(p), 3);
  nd_pool_close(p);
  o.threads = 2; /* an explicit count wins over the environment */
  assert_int_equal(nd_pool_open(&p, &o), 0);
  assert_int_equal(nd_pool_threads(p), 2);
  nd_pool_close(p);

  if (copy) {
    setenv("NIDAG_THREADS", copy, 1);
    free(copy);
  } else {
    unsetenv("NIDAG_THREADS");
  }
}

/* ---------------------------------------------------------------- fib */

#define FIB_N 20
#define FIB_VALUE 6765
#define FIB_CALLS 21891 /* 2 * fib(21) - 1 */

typedef struct fib_arg {
  nd_pool *p;
  unsigned nthreads;
  int n;
  long result;
} fib_arg;

static _Atomic long g_fib_calls;

static int fib_task(void *arg) {
  fib_arg *a = arg;
  atomic_fetch_add_explicit(&g_fib_calls, 1, memory_order_relaxed);
  check_index(a->nthreads);
  if (a->n < 2) {
    a->result = a->n;
    return 0;
  }
  fib_arg x = {a->p, a->nthreads, a->n - 1, 0}, y = {a->p, a->nthreads, a->n - 2, 0};
  nd_group g;
  nd_group_init(&g, a->p);
  nd_spawn(&g, fib_task, &x);
  nd_spawn(&g, fib_task, &y);
  int rc = nd_group_wait(&g);
  a->result = x.result + y.result;
  return rc;
}

static void test_fib(void **state) {
  (void)state;
  for (size_t c = 0; c < N_COUNTS; c++) {
    unsigned n = g_worker_counts[c];
    nd_pool *p = open_pool(n);
    atomic_store(&g_bad_index, 0);

    /* From the main thread: the root goes through the injection queue. */
    atomic_store(&g_fib_calls, 0);
    nd_pool_stats_reset(p);
    fib_arg root = {p, n, FIB_N, 0};
    nd_group g;
    nd_group_init(&g, p);
    nd_spawn(&g, fib_task, &root);
    assert_int_equal(nd_group_wait(&g), 0);
    assert_int_equal(root.result, FIB_VALUE);
    assert_int_equal(atomic_load(&g_fib_calls), FIB_CALLS);
    nd_pool_stats st;
    nd_pool_stats_get(p, &st);
    assert_true(st.injected >= 1);
    assert_true(st.tasks + st.inlined >= FIB_CALLS);

    /* From a worker, through nd_pool_run. */
    atomic_store(&g_fib_calls, 0);
    fib_arg root2 = {p, n, FIB_N, 0};
    assert_int_equal(nd_pool_run(p, fib_task, &root2), 0);
    assert_int_equal(root2.result, FIB_VALUE);
    assert_int_equal(atomic_load(&g_fib_calls), FIB_CALLS);
    assert_int_equal(atomic_load(&g_bad_index), 0);
    printf("  fib(%d) on %u workers: tasks %llu steals %llu failed %llu inlined %llu\n", FIB_N,
           n, (unsigned long long)st.tasks, (unsigned long long)st.steals,
           (unsigned long long)st.failed_steals, (unsigned long long)st.inlined);
    nd_pool_close(p);
  }
}

/* ----------------------------------------------- spawn into parent group */

#define FANOUT1 100
#define FANOUT2 10

typedef struct tree_arg {
  nd_group *g;
  int depth;
} tree_arg;

static tree_arg g_tree_args[1 + FANOUT1 + FANOUT1 * FANOUT2];
static _Atomic int g_tree_next;
static _Atomic int g_tree_ran;

static int tree_task(void *arg) {
  tree_arg *a = arg;
  atomic_fetch_add(&g_tree_ran, 1);
  int fan = a->depth == 0 ? FANOUT1 : a->depth == 1 ? FANOUT2 : 0;
  for (int i = 0; i < fan; i++) {
    int k = atomic_fetch_add(&g_tree_next, 1);
    g_tree_args[k] = (tree_arg){a->g, a->depth + 1};
    nd_spawn(a->g, tree_task, &g_tree_args[k]); /* into the parent's group */
  }
  return 0;
}

static int tree_from_worker(void *arg) {
  nd_group g;
  nd_group_init(&g, (nd_pool *)arg);
  atomic_store(&g_tree_next, 1);
  g_tree_args[0] = (tree_arg){&g, 0};
  nd_spawn(&g, tree_task, &g_tree_args[0]);
  return nd_group_wait(&g);
}

static void test_spawn_into_parent_group(void **state) {
  (void)state;
  for (size_t c = 0; c < N_COUNTS; c++) {
    nd_pool *p = open_pool(g_worker_counts[c]);
    for (int rep = 0; rep < 5; rep++) {
      nd_group g;
      nd_group_init(&g, p);
      atomic_store(&g_tree_next, 1);
      atomic_store(&g_tree_ran, 0);
      g_tree_args[0] = (tree_arg){&g, 0};
      nd_spawn(&g, tree_task, &g_tree_args[0]);
      assert_int_equal(nd_group_wait(&g), 0);
      assert_int_equal(atomic_load(&g_tree_ran), 1 + FANOUT1 + FANOUT1 * FANOUT2);
    }
    /* The same from inside a worker (the group's owner is a worker). */
    atomic_store(&g_tree_ran, 0);
    assert_int_equal(nd_pool_run(p, tree_from_worker, p), 0);
    assert_int_equal(atomic_load(&g_tree_ran), 1 + FANOUT1 + FANOUT1 * FANOUT2);
    nd_pool_close(p);
  }
}

/* --------------------------------------------------------------- errors */

#define N_ERR_TASKS 200

typedef struct err_arg {
  int ret;
} err_arg;

static _Atomic int g_err_ran;

static int err_task(void *arg) {
  err_arg *a = arg;
  atomic_fetch_add(&g_err_ran, 1);
  return a->ret;
}

typedef struct err_case {
  nd_pool *p;
  err_arg *args;
} err_case;

/* Spawns N_ERR_TASKS err_tasks into a fresh group and waits. */
static int spawn_err_tasks(void *arg) {
  err_case *ec = arg;
  nd_group g;
  nd_group_init(&g, ec->p);
  for (int i = 0; i < N_ERR_TASKS; i++) nd_spawn(&g, err_task, &ec->args[i]);
  return nd_group_wait(&g);
}

static void test_group_wait_error(void **state) {
  (void)state;
  err_arg args[N_ERR_TASKS];
  for (size_t c = 0; c < N_COUNTS; c++) {
    nd_pool *p = open_pool(g_worker_counts[c]);
    err_case ec = {p, args};
    /* An empty group. */
    nd_group g;
    nd_group_init(&g, p);
    assert_int_equal(nd_group_wait(&g), 0);

    /* One failing task: its result is returned, every task still ran. */
    for (int i = 0; i < N_ERR_TASKS; i++) args[i].ret = i == 57 ? ND_EIO : 0;
    for (int from_worker = 0; from_worker < 2; from_worker++) {
      atomic_store(&g_err_ran, 0);
      int rc = from_worker ? nd_pool_run(p, spawn_err_tasks, &ec) : spawn_err_tasks(&ec);
      assert_int_equal(rc, ND_EIO);
      assert_int_equal(atomic_load(&g_err_ran), N_ERR_TASKS);
    }
    /* Two failing tasks: one of the two results. */
    for (int i = 0; i < N_ERR_TASKS; i++)
      args[i].ret = i == 10 ? ND_EIO : i == 150 ? ND_ERANGE : 0;
    atomic_store(&g_err_ran, 0);
    int rc = spawn_err_tasks(&ec);
    assert_true(rc == ND_EIO || rc == ND_ERANGE);
    assert_int_equal(atomic_load(&g_err_ran), N_ERR_TASKS);
    /* All succeed: 0 (the earlier error does not leak into a new group). */
    for (int i = 0; i < N_ERR_TASKS; i++) args[i].ret = 0;
    assert_int_equal(spawn_err_tasks(&ec), 0);
    nd_pool_close(p);
  }
}

/* ------------------------------------------------------------ pool_run */

typedef struct run_arg {
  nd_pool *p;
  int outer_index, inner_index;
} run_arg;

static int inner_run(void *arg) {
  run_arg *a = arg;
  a->inner_index = nd_worker_index();
  return 77;
}

static int outer_run(void *arg) {
  run_arg *a = arg;
  a->outer_index = nd_worker_index();
  int rc = nd_pool_run(a->p, inner_run, a); /* from a worker: a plain call */
  return rc == 77 ? ND_EBUDGET : -100;
}

static void test_pool_run(void **state) {
  (void)state;
  for (size_t c = 0; c < N_COUNTS; c++) {
    unsigned n = g_worker_counts[c];
    nd_pool *p = open_pool(n);
    run_arg a = {p, -5, -5};
    assert_int_equal(nd_pool_run(p, outer_run, &a), ND_EBUDGET);
    assert_true(a.outer_index >= 0 && (unsigned)a.outer_index < n);
    assert_int_equal(a.inner_index, a.outer_index);
    assert_int_equal(nd_pool_run(p, inner_run, &a), 77);
    nd_pool_close(p);
  }
}

/* ------------------------------------------------------------- overflow */

#define N_FLOOD 100000

typedef struct flood {
  nd_pool *p;
  _Atomic uint8_t *ran;
  size_t *idx; /* idx[i] == i: a distinct arg per task */
} flood;

static flood g_flood;

static int flood_item(void *arg) {
  size_t i = *(size_t *)arg;
  atomic_fetch_add_explicit(&g_flood.ran[i], 1, memory_order_relaxed);
  return 0;
}

static int flood_task(void *arg) {
  flood *f = arg;
  nd_group g;
  nd_group_init(&g, f->p);
  for (size_t i = 0; i < N_FLOOD; i++) nd_spawn(&g, flood_item, &f->idx[i]);
  return nd_group_wait(&g);
}

static void check_flood(void) {
  size_t bad = 0;
  for (size_t i = 0; i < N_FLOOD; i++) bad += atomic_load(&g_flood.ran[i]) != 1;
  assert_int_equal(bad, 0);
}

static void test_overflow(void **state) {
  (void)state;
  g_flood.ran = calloc(N_FLOOD, sizeof *g_flood.ran);
  g_flood.idx = malloc(N_FLOOD * sizeof *g_flood.idx);
  assert_non_null(g_flood.ran);
  assert_non_null(g_flood.idx);
  for (size_t i = 0; i < N_FLOOD; i++) g_flood.idx[i] = i;
  for (size_t c = 0; c < N_COUNTS; c++) {
    unsigned n = g_worker_counts[c];
    nd_pool *p = open_pool(n);
    g_flood.p = p;
    /* From one task on a worker: more spawns than a deque holds. */
    memset((void *)g_flood.ran, 0, N_FLOOD);
    nd_pool_stats_reset(p);
    assert_int_equal(nd_pool_run(p, flood_task, &g_flood), 0);
    check_flood();
    nd_pool_stats st;
    nd_pool_stats_get(p, &st);
    printf("  %u workers, %d spawns from a task: inlined %llu steals %llu\n", n, N_FLOOD,
           (unsigned long long)st.inlined, (unsigned long long)st.steals);
    /* One worker has nobody to steal from it: its deque (bounded, far below
     * 100k slots) must fill, and the overflow must run inline. */
    if (n == 1) assert_true(st.inlined > 0);
    assert_true(st.tasks + st.inlined >= N_FLOOD);
    /* From the main thread: 100k through the injection queue. */
    memset((void *)g_flood.ran, 0, N_FLOOD);
    assert_int_equal(flood_task(&g_flood), 0);
    check_flood();
    nd_pool_close(p);
  }
  free((void *)g_flood.ran);
  free(g_flood.idx);
}

/* ---------------------------------------------------------------- stats */

#define SLOW_TASKS 64
#define SLOW_TASK_US 200

static int slow_task(void *arg) {
  (void)arg;
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  do {
    clock_gettime(CLOCK_MONOTONIC, &t);
  } while ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000 < SLOW_TASK_US);
  atomic_fetch_add(&g_counter, 1);
  return 0;
}

static int spawn_slow(void *arg) {
  nd_group g;
  nd_group_init(&g, (nd_pool *)arg);
  for (int i = 0; i < SLOW_TASKS; i++) nd_spawn(&g, slow_task, NULL);
  return nd_group_wait(&g);
}

static void test_stats(void **state) {
  (void)state;
  nd_pool *p = open_pool(2);
  nd_pool_stats st;
  nd_pool_stats_get(p, &st);
  assert_int_equal(st.tasks, 0);
  assert_int_equal(st.injected, 0);
  assert_int_equal(st.mem_in_use, 0);
  assert_int_equal(st.mem_peak, 0);

  atomic_store(&g_counter, 0);
  fib_arg root = {p, 2, FIB_N, 0};
  nd_group g;
  nd_group_init(&g, p);
  nd_spawn(&g, fib_task, &root);
  assert_int_equal(nd_group_wait(&g), 0);
  assert_int_equal(root.result, FIB_VALUE);
  /* Enough work that the second worker is awake and looks for it: one task
   * spawns SLOW_TASKS tasks of SLOW_TASK_US each (>= 12 ms in all). */
  assert_int_equal(nd_pool_run(p, spawn_slow, p), 0);
  assert_int_equal(atomic_load(&g_counter), SLOW_TASKS);
  nd_pool_stats_get(p, &st);
  printf("  fib: tasks %llu steals %llu failed %llu sleeps %llu wakes %llu injected %llu\n",
         (unsigned long long)st.tasks, (unsigned long long)st.steals,
         (unsigned long long)st.failed_steals, (unsigned long long)st.sleeps,
         (unsigned long long)st.wakes, (unsigned long long)st.injected);
  assert_true(st.tasks + st.inlined >= FIB_CALLS + SLOW_TASKS);
  assert_int_equal(st.injected, 2);
  assert_true(st.steals + st.failed_steals > 0);

  /* Idle far longer than the spin time: the workers go to sleep. */
  sleep_ms(50);
  nd_pool_stats_get(p, &st);
  assert_true(st.sleeps > 0);

  /* Work given to a sleeping pool wakes a worker. */
  nd_pool_stats_reset(p);
  nd_pool_stats_get(p, &st);
  assert_int_equal(st.tasks, 0);
  assert_int_equal(st.steals, 0);
  assert_int_equal(st.wakes, 0);
  assert_int_equal(st.injected, 0);
  atomic_store(&g_counter, 0);
  idx_arg a = {2};
  nd_group_init(&g, p);
  nd_spawn(&g, count_task, &a);
  assert_int_equal(nd_group_wait(&g), 0);
  assert_int_equal(atomic_load(&g_counter), 1);
  nd_pool_stats_get(p, &st);
  assert_int_equal(st.tasks, 1);
  assert_int_equal(st.injected, 1);
  assert_true(st.wakes >= 1);
  nd_pool_close(p);
}

/* ---------------------------------------------------------------- global */

static void test_global_pool(void **state) {
  (void)state;
  nd_pool *g1 = NULL, *g2 = NULL;
  assert_int_equal(nd_pool_global(&g1), 0);
  assert_int_equal(nd_pool_global(&g2), 0);
  assert_non_null(g1);
  assert_ptr_equal(g1, g2);
  unsigned n = nd_pool_threads(g1);
  if (!getenv("NIDAG_THREADS")) assert_int_equal(n, nd_usable_cpus());
  atomic_store(&g_counter, 0);
  atomic_store(&g_bad_index, 0);
  idx_arg a = {n};
  nd_group g;
  nd_group_init(&g, NULL); /* NULL: the global pool */
  for (int i = 0; i < 500; i++) nd_spawn(&g, count_task, &a);
  assert_int_equal(nd_group_wait(&g), 0);
  assert_int_equal(atomic_load(&g_counter), 500);
  assert_int_equal(atomic_load(&g_bad_index), 0);
  fib_arg root = {g1, n, 15, 0};
  assert_int_equal(nd_pool_run(g1, fib_task, &root), 0);
  assert_int_equal(root.result, 610);
  /* Not closed: the global pool stops at exit. */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_usable_cpus),
      cmocka_unit_test(test_open_close),
      cmocka_unit_test(test_default_threads),
      cmocka_unit_test(test_fib),
      cmocka_unit_test(test_spawn_into_parent_group),
      cmocka_unit_test(test_group_wait_error),
      cmocka_unit_test(test_pool_run),
      cmocka_unit_test(test_overflow),
      cmocka_unit_test(test_stats),
      cmocka_unit_test(test_global_pool),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
