/* An idle pool uses no CPU.
 *
 * A pool of 2 workers does a burst of work (fork-join and parallel_for),
 * then sits idle. About 20 ms after the work ended, the process's CPU time
 * (getrusage(RUSAGE_SELF), user + system, all threads) is measured across a
 * 200 ms sleep of the main thread; it must stay under 2% of that (4 ms).
 * This measures CPU time, not wall time: a slow or loaded machine makes the
 * sleep longer, not the idle workers busier. The same for a pool that never
 * received work, and for an 8-worker pool after work.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <cmocka.h>

#include "nidag/runtime.h"

#define SETTLE_MS 20
#define IDLE_MS 200
#define MAX_IDLE_CPU_US 4000 /* 2% of IDLE_MS */

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static int64_t cpu_us(void) {
  struct rusage ru;
  assert_int_equal(getrusage(RUSAGE_SELF, &ru), 0);
  return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec +
         ru.ru_stime.tv_usec;
}

/* Per-thread CPU time from /proc/self/task/<tid>/schedstat (ns), to say
 * which thread used the CPU when the process-wide check fails. Diagnostic
 * only: the assertion uses getrusage. */
#define MAX_TASKS 64

typedef struct thread_cpu {
  int n;
  long tid[MAX_TASKS];
  char name[MAX_TASKS][32];
  uint64_t ns[MAX_TASKS];
} thread_cpu;

static void snapshot_threads(thread_cpu *tc) {
  tc->n = 0;
  DIR *d = opendir("/proc/self/task");
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL && tc->n < MAX_TASKS) {
    if (e->d_name[0] == '.') continue;
    char path[300];
    int i = tc->n;
    tc->tid[i] = strtol(e->d_name, NULL, 10);
    tc->name[i][0] = 0;
    tc->ns[i] = 0;
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (f) {
      if (fgets(tc->name[i], sizeof tc->name[i], f)) tc->name[i][strcspn(tc->name[i], "\n")] = 0;
      fclose(f);
    }
    snprintf(path, sizeof path, "/proc/self/task/%s/schedstat", e->d_name);
    f = fopen(path, "r");
    if (f) {
      unsigned long long ns = 0;
      if (fscanf(f, "%llu", &ns) == 1) tc->ns[i] = ns;
      fclose(f);
    }
    tc->n++;
  }
  closedir(d);
}

static void print_thread_delta(const thread_cpu *a, const thread_cpu *b) {
  for (int i = 0; i < b->n; i++) {
    uint64_t before = 0;
    for (int j = 0; j < a->n; j++)
      if (a->tid[j] == b->tid[i]) before = a->ns[j];
    uint64_t used = b->ns[i] - before;
    if (used >= 100000) /* 0.1 ms */
      printf("    thread %ld '%s': %.2f ms of CPU\n", b->tid[i], b->name[i], (double)used / 1e6);
  }
}

/* CPU time the whole process used while the main thread slept IDLE_MS. */
static int64_t idle_cpu_us(void) {
  thread_cpu a, b;
  sleep_ms(SETTLE_MS);
  snapshot_threads(&a);
  int64_t before = cpu_us();
  sleep_ms(IDLE_MS);
  int64_t used = cpu_us() - before;
  snapshot_threads(&b);
  print_thread_delta(&a, &b);
  return used;
}

typedef struct fib_arg {
  nd_pool *p;
  int n;
  long result;
} fib_arg;

static int fib_task(void *arg) {
  fib_arg *a = arg;
  if (a->n < 2) {
    a->result = a->n;
    return 0;
  }
  fib_arg x = {a->p, a->n - 1, 0}, y = {a->p, a->n - 2, 0};
  nd_group g;
  nd_group_init(&g, a->p);
  nd_spawn(&g, fib_task, &x);
  nd_spawn(&g, fib_task, &y);
  int rc = nd_group_wait(&g);
  a->result = x.result + y.result;
  return rc;
}

static int sum_body(void *ctx, size_t lo, size_t hi) {
  _Atomic uint64_t *sum = ctx;
  uint64_t s = 0;
  for (size_t i = lo; i < hi; i++) s += i * i;
  atomic_fetch_add(sum, s);
  return 0;
}

static void burst(nd_pool *p) {
  fib_arg root = {p, 22, 0};
  assert_int_equal(nd_pool_run(p, fib_task, &root), 0);
  assert_int_equal(root.result, 17711);
  _Atomic uint64_t sum = 0;
  const size_t n = 1000000;
  assert_int_equal(nd_parallel_for(p, 0, n, ND_DYNAMIC, 1000, sum_body, (void *)&sum), 0);
  uint64_t want = 0;
  for (size_t i = 0; i < n; i++) want += i * i;
  assert_true(atomic_load(&sum) == want);
}

static nd_pool *open_pool(unsigned threads) {
  nd_runtime_opts o = {0};
  o.threads = threads;
  nd_pool *p = NULL;
  assert_int_equal(nd_pool_open(&p, &o), 0);
  return p;
}

static void check_idle(nd_pool *p, const char *what) {
  int64_t used = idle_cpu_us();
  nd_pool_stats st;
  nd_pool_stats_get(p, &st);
  printf("  %s: %lld us of CPU in %d ms idle (limit %d us); sleeps %llu\n", what,
         (long long)used, IDLE_MS, MAX_IDLE_CPU_US, (unsigned long long)st.sleeps);
  assert_true(used < MAX_IDLE_CPU_US);
}

static void test_idle_after_work(void **state) {
  (void)state;
  nd_pool *p = open_pool(2);
  burst(p);
  check_idle(p, "2 workers after a burst");
  /* And again: a second burst, then idle again. */
  burst(p);
  check_idle(p, "2 workers after a second burst");
  nd_pool_close(p);
}

static void test_idle_never_used(void **state) {
  (void)state;
  nd_pool *p = open_pool(2);
  check_idle(p, "2 workers, never used");
  nd_pool_close(p);
}

static void test_idle_many_workers(void **state) {
  (void)state;
  nd_pool *p = open_pool(8);
  burst(p);
  check_idle(p, "8 workers after a burst");
  nd_pool_close(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_idle_after_work),
      cmocka_unit_test(test_idle_never_used),
      cmocka_unit_test(test_idle_many_workers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
