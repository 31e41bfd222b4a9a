/* Allocation faults injected into the runtime: every constructor and every
 * graph-building call fails cleanly with ND_ENOMEM (no crash, no leak under
 * ASan), and succeeds once allocations are allowed again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "nidag/runtime.h"

/* Allocator that fails every allocation once `budget` successful ones have
 * been made (budget < 0: never fails). */
static _Atomic long budget = -1;
static _Atomic long live;

static bool allowed(void) {
  long b = atomic_load(&budget);
  if (b < 0) return true;
  while (b > 0)
    if (atomic_compare_exchange_weak(&budget, &b, b - 1)) return true;
  return false;
}

static void *f_malloc(void *ud, size_t n) {
  (void)ud;
  if (!allowed()) return NULL;
  void *p = malloc(n);
  if (p) atomic_fetch_add(&live, 1);
  return p;
}

static void *f_realloc(void *ud, void *p, size_t n) {
  (void)ud;
  if (!allowed()) return NULL;
  void *q = realloc(p, n);
  if (q && !p) atomic_fetch_add(&live, 1);
  return q;
}

static void f_free(void *ud, void *p) {
  (void)ud;
  if (p) atomic_fetch_sub(&live, 1);
  free(p);
}

static int install(void **state) {
  (void)state;
  nd_allocator a = {f_malloc, f_realloc, f_free, NULL};
  return nd_set_allocator(&a);
}

static int uninstall(void **state) {
  (void)state;
  return nd_set_allocator(NULL);
}

static int noop(nd_task_ctx *ctx, void *arg) {
  (void)ctx;
  atomic_fetch_add((_Atomic int *)arg, 1);
  return 0;
}

static void test_pool_open_faults(void **state) {
  (void)state;
  int failures = 0;
  for (long n = 0;; n++) {
    atomic_store(&budget, n);
    nd_runtime_opts o = {.threads = 2};
    nd_pool *p = NULL;
    int rc = nd_pool_open(&p, &o);
    atomic_store(&budget, -1);
    if (rc == 0) {
      nd_pool_close(p);
      break;
    }
    assert_int_equal(rc, ND_ENOMEM);
    assert_null(p);
    assert_int_equal(atomic_load(&live), 0);
    failures++;
  }
  assert_true(failures > 0);
  assert_int_equal(atomic_load(&live), 0);
}

/* Build a small diamond with the N-th allocation failing; whichever call
 * fails returns ND_ENOMEM and the graph can still be freed (and, once the
 * faults stop, built and run). */
static int build_diamond(nd_taskgraph **out, _Atomic int *ran) {
  nd_taskgraph *g = NULL;
  int rc = nd_taskgraph_new(&g);
  if (rc) return rc;
  int64_t ids[4];
  for (int i = 0; i < 4; i++) {
    ids[i] = nd_taskgraph_add(g, noop, ran, "node");
    if (ids[i] < 0) {
      nd_taskgraph_free(g);
      return (int)ids[i];
    }
  }
  const int edges[4][2] = {{1, 0}, {2, 0}, {3, 1}, {3, 2}};
  for (int e = 0; e < 4; e++) {
    rc = nd_taskgraph_depend(g, ids[edges[e][0]], ids[edges[e][1]]);
    if (rc) {
      nd_taskgraph_free(g);
      return rc;
    }
  }
  *out = g;
  return 0;
}

static void test_graph_faults(void **state) {
  (void)state;
  nd_runtime_opts o = {.threads = 2};
  nd_pool *p = NULL;
  assert_int_equal(nd_pool_open(&p, &o), 0);
  long base = atomic_load(&live);
  int failures = 0;
  for (long n = 0;; n++) {
    _Atomic int ran = 0;
    nd_taskgraph *g = NULL;
    atomic_store(&budget, n);
    int rc = build_diamond(&g, &ran);
    if (rc == 0) rc = nd_taskgraph_run(p, g, NULL);
    atomic_store(&budget, -1);
    if (rc == 0) {
      assert_int_equal(atomic_load(&ran), 4);
      nd_taskgraph_free(g);
      break;
    }
    assert_int_equal(rc, ND_ENOMEM);
    assert_int_equal(atomic_load(&ran), 0); /* a failed start runs nothing */
    nd_taskgraph_free(g);
    /* The pool may keep what it grew (its record slabs), so live memory is
     * checked after nd_pool_close below, and ASan checks for leaks. */
    assert_true(atomic_load(&live) >= base);
    failures++;
  }
  assert_true(failures > 0);
  nd_pool_close(p);
  assert_int_equal(atomic_load(&live), 0);
}

static int sum_body(void *ctx, size_t lo, size_t hi, void *partial) {
  (void)ctx;
  for (size_t i = lo; i < hi; i++) *(double *)partial += (double)i;
  return 0;
}
static void zero(void *ctx, void *partial) {
  (void)ctx;
  *(double *)partial = 0;
}
static void add(void *ctx, void *into, const void *from) {
  (void)ctx;
  *(double *)into += *(const double *)from;
}

static void test_reduce_fault(void **state) {
  (void)state;
  nd_runtime_opts o = {.threads = 2};
  nd_pool *p = NULL;
  assert_int_equal(nd_pool_open(&p, &o), 0);
  nd_reduce_desc d = {.grain = 100, .chunking = ND_DYNAMIC, .partial_size = sizeof(double),
                      .init = zero, .body = sum_body, .combine = add};
  double r = -1;
  atomic_store(&budget, 0);
  assert_int_equal(nd_parallel_reduce(p, 0, 10000, &d, &r), ND_ENOMEM);
  atomic_store(&budget, -1);
  assert_int_equal(nd_parallel_reduce(p, 0, 10000, &d, &r), 0);
  assert_true(r == 49995000.0);
  nd_pool_close(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pool_open_faults),
      cmocka_unit_test(test_graph_faults),
      cmocka_unit_test(test_reduce_fault),
  };
  return cmocka_run_group_tests(tests, install, uninstall);
}
