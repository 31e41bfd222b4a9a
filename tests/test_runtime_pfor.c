/* Tests of nd_parallel_for and nd_parallel_reduce.
 *
 * - coverage: every chunking x chunk sizes {0, 1, 7, 1000, > n} x 1, 2, 3
 *   and 8 workers x begin 0 and begin > 0: every index is visited exactly
 *   once, chunks follow the chunk grid, and the chunk boundaries are the
 *   same for every worker count;
 * - empty ranges, bad chunking, body errors (stop and propagate);
 * - nesting: an outer parallel_for whose body spawns tasks that each run an
 *   inner parallel_for, plus a parallel_for called directly in the outer
 *   body, from the main thread and from inside a task, on 1, 2, 3 and 8
 *   workers: no deadlock and exact totals;
 * - a reduction of doubles with wildly varying magnitudes (so the order of
 *   additions matters, which the test checks) that is bitwise identical for
 *   1, 2, 3 and 8 workers, every chunking and several chunk values.
 * Data are seeded (printed; NIDAG_TEST_SEED overrides).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nidag/runtime.h"
#include "tests/testutil.h"

static const unsigned g_worker_counts[] = {1, 2, 3, 8};
#define N_POOLS (sizeof g_worker_counts / sizeof g_worker_counts[0])
static nd_pool *g_pools[N_POOLS];
static uint64_t g_seed;

static const nd_chunking g_chunkings[] = {ND_STATIC, ND_STATIC_CYCLIC, ND_DYNAMIC, ND_GUIDED};
#define N_CHUNKINGS 4
static const char *const g_chunking_names[] = {"static", "static-cyclic", "dynamic", "guided"};


static int open_pools(void **state) {
  (void)state;
  return nd_test_open_pools(g_pools, g_worker_counts, N_POOLS);
}

static int close_pools(void **state) {
  (void)state;
  nd_test_close_pools(g_pools, N_POOLS);
  return 0;
}

/* -------------------------------------------------------------- coverage */

#define COVER_N 10007

typedef struct cover_ctx {
  size_t begin, end, chunk, eff_chunk;
  nd_chunking how;
  _Atomic uint8_t *hits;
  _Atomic uint8_t *starts; /* 1 where a body call began */
  _Atomic int bad;         /* first violated rule, 0 if none */
} cover_ctx;

static void flag(cover_ctx *c, int why) {
  int zero = 0;
  atomic_compare_exchange_strong(&c->bad, &zero, why);
}

static int cover_body(void *vctx, size_t lo, size_t hi) {
  cover_ctx *c = vctx;
  if (lo >= hi || lo < c->begin || hi > c->end) {
    flag(c, 1);
    return 0;
  }
  size_t off = lo - c->begin, len = hi - lo;
  if (c->how != ND_GUIDED) {
    /* Fixed chunks on the grid begin + k * chunk. */
    if (off % c->eff_chunk != 0) flag(c, 2);
    if (len != c->eff_chunk && hi != c->end) flag(c, 3);
    if (len > c->eff_chunk) flag(c, 4);
  } else {
    /* Guided: at least the chunk (or what remains); the first chunk is
     * max(chunk, n / 8), rounded either way. */
    if (len < c->eff_chunk && hi != c->end) flag(c, 5);
    size_t n = c->end - c->begin;
    if (off == 0) {
      size_t lo8 = n / ND_GUIDED_DIVISOR, hi8 = (n + ND_GUIDED_DIVISOR - 1) / ND_GUIDED_DIVISOR;
      size_t mn = lo8 > c->eff_chunk ? lo8 : c->eff_chunk;
      size_t mx = hi8 > c->eff_chunk ? hi8 : c->eff_chunk;
      if (mx > n) mx = n;
      if (mn > n) mn = n;
      if (len < mn || len > mx) flag(c, 6);
    }
  }
  atomic_store_explicit(&c->starts[off], 1, memory_order_relaxed);
  for (size_t i = off; i < off + len; i++)
    atomic_fetch_add_explicit(&c->hits[i], 1, memory_order_relaxed);
  return 0;
}

static void test_coverage(void **state) {
  (void)state;
  const size_t chunks[] = {0, 1, 7, 1000, COVER_N + 5};
  const size_t begins[] = {0, 1234567};
  _Atomic uint8_t *hits = calloc(COVER_N, 1), *starts = calloc(COVER_N, 1);
  uint8_t *ref_starts = calloc(COVER_N, 1);
  assert_non_null(hits);
  assert_non_null(starts);
  assert_non_null(ref_starts);
  for (size_t h = 0; h < N_CHUNKINGS; h++)
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++)
      for (size_t b = 0; b < sizeof begins / sizeof begins[0]; b++)
        for (size_t w = 0; w < N_POOLS; w++) {
          cover_ctx c = {.begin = begins[b], .end = begins[b] + COVER_N, .chunk = chunks[k],
                         .how = g_chunkings[h], .hits = hits, .starts = starts};
          c.eff_chunk = chunks[k] ? chunks[k]
                                  : (COVER_N + ND_DEFAULT_CHUNKS - 1) / ND_DEFAULT_CHUNKS;
          memset((void *)hits, 0, COVER_N);
          memset((void *)starts, 0, COVER_N);
          int rc = nd_parallel_for(g_pools[w], c.begin, c.end, c.how, c.chunk, cover_body, &c);
          size_t wrong = 0, first_wrong = SIZE_MAX;
          for (size_t i = 0; i < COVER_N; i++)
            if (atomic_load(&hits[i]) != 1) {
              wrong++;
              if (first_wrong == SIZE_MAX) first_wrong = i;
            }
          int same_grid = w == 0 || memcmp(ref_starts, (void *)starts, COVER_N) == 0;
          if (rc || wrong || atomic_load(&c.bad) || !same_grid)
            printf("  FAIL %s chunk=%zu begin=%zu workers=%u: rc=%d, %zu indices not visited "
                   "once (first %zu), rule %d broken, same chunk grid as 1 worker: %d\n",
                   g_chunking_names[h], chunks[k], begins[b], g_worker_counts[w], rc, wrong,
                   first_wrong, atomic_load(&c.bad), same_grid);
          assert_int_equal(rc, 0);
          assert_int_equal(wrong, 0);
          assert_int_equal(atomic_load(&c.bad), 0);
          assert_true(same_grid);
          if (w == 0) memcpy(ref_starts, (void *)starts, COVER_N);
        }
  free((void *)hits);
  free((void *)starts);
  free(ref_starts);
}

static _Atomic int g_calls;

static int count_calls(void *ctx, size_t lo, size_t hi) {
  (void)ctx, (void)lo, (void)hi;
  atomic_fetch_add(&g_calls, 1);
  return 0;
}

static void test_empty_and_invalid(void **state) {
  (void)state;
  for (size_t w = 0; w < N_POOLS; w++)
    for (size_t h = 0; h < N_CHUNKINGS; h++) {
      atomic_store(&g_calls, 0);
      assert_int_equal(nd_parallel_for(g_pools[w], 0, 0, g_chunkings[h], 0, count_calls, NULL), 0);
      assert_int_equal(nd_parallel_for(g_pools[w], 99, 99, g_chunkings[h], 7, count_calls, NULL),
                       0);
      assert_int_equal(atomic_load(&g_calls), 0);
      /* One item. */
      assert_int_equal(nd_parallel_for(g_pools[w], 5, 6, g_chunkings[h], 0, count_calls, NULL), 0);
      assert_int_equal(atomic_load(&g_calls), 1);
    }
  assert_int_equal(nd_parallel_for(g_pools[1], 0, 100, (nd_chunking)99, 0, count_calls, NULL),
                   ND_EINVAL);
  assert_int_equal(nd_parallel_for(g_pools[1], 0, 100, (nd_chunking)-1, 0, count_calls, NULL),
                   ND_EINVAL);
}

static void test_global_pool_for(void **state) {
  (void)state;
  _Atomic uint8_t *hits = calloc(COVER_N, 1), *starts = calloc(COVER_N, 1);
  assert_non_null(hits);
  assert_non_null(starts);
  cover_ctx c = {.begin = 0, .end = COVER_N, .chunk = 3, .eff_chunk = 3, .how = ND_DYNAMIC,
                 .hits = hits, .starts = starts};
  assert_int_equal(nd_parallel_for(NULL, 0, COVER_N, ND_DYNAMIC, 3, cover_body, &c), 0);
  for (size_t i = 0; i < COVER_N; i++) assert_int_equal(atomic_load(&hits[i]), 1);
  assert_int_equal(atomic_load(&c.bad), 0);
  free((void *)hits);
  free((void *)starts);
}

/* ---------------------------------------------------------- body errors */

#define ERR_N 200000

typedef struct err_ctx {
  size_t err_lo, err_hi; /* indices whose chunk fails */
  int code_lo, code_hi;
  _Atomic size_t visited;
  _Atomic int failed;          /* a body has returned an error */
  _Atomic size_t after_error;  /* items in chunks begun after that */
} err_ctx;

static int err_body(void *vctx, size_t lo, size_t hi) {
  err_ctx *e = vctx;
  atomic_fetch_add(&e->visited, hi - lo);
  if (atomic_load(&e->failed)) atomic_fetch_add(&e->after_error, hi - lo);
  if (lo <= e->err_lo && e->err_lo < hi) {
    atomic_store(&e->failed, 1);
    return e->code_lo;
  }
  if (lo <= e->err_hi && e->err_hi < hi) {
    atomic_store(&e->failed, 1);
    return e->code_hi;
  }
  return 0;
}

static void test_body_error(void **state) {
  (void)state;
  for (size_t w = 0; w < N_POOLS; w++)
    for (size_t h = 0; h < N_CHUNKINGS; h++) {
      err_ctx e = {.err_lo = 10, .err_hi = SIZE_MAX, .code_lo = ND_ERANGE};
      int rc = nd_parallel_for(g_pools[w], 0, ERR_N, g_chunkings[h], 1, err_body, &e);
      size_t v = atomic_load(&e.visited), after = atomic_load(&e.after_error);
      printf("  %s, %u workers: error at 10 of %d, %zu items visited, %zu of them in chunks "
             "begun after the error\n",
             g_chunking_names[h], g_worker_counts[w], ERR_N, v, after);
      assert_int_equal(rc, ND_ERANGE);
      assert_true(v >= 1); /* with several claimers the failing chunk may come first */
      if (g_worker_counts[w] == 1) {
        /* One claimer takes chunks in order and stops after the error. */
        if (g_chunkings[h] == ND_GUIDED)
          assert_true(v <= ERR_N / ND_GUIDED_DIVISOR + 1);
        else
          assert_int_equal(v, 11);
      } else {
        /* No claimer kept taking chunks after the error. Chunks begun before
         * the failing body returned do not count: the failing chunk may be
         * claimed first and run last (a preempted claimer, or a late start
         * of the claimer that owns its block), so even v == ERR_N is legal.
         * A claimer that has not yet seen the stop may begin a few more
         * chunks; 1/4 of the range leaves a wide margin for preemption while
         * still catching a claimer that ignores the stop. */
        assert_true(after < ERR_N / 4);
      }

      /* Two failing chunks: one of the two codes. */
      err_ctx e2 = {.err_lo = 100, .err_hi = ERR_N - 1, .code_lo = ND_EIO, .code_hi = ND_EFORMAT};
      rc = nd_parallel_for(g_pools[w], 0, ERR_N, g_chunkings[h], 64, err_body, &e2);
      assert_true(rc == ND_EIO || rc == ND_EFORMAT);

      /* Error in the last chunk: everything before it ran. */
      err_ctx e3 = {.err_lo = 9999, .err_hi = SIZE_MAX, .code_lo = ND_EIO};
      assert_int_equal(nd_parallel_for(g_pools[w], 0, 10000, g_chunkings[h], 1000, err_body, &e3),
                       ND_EIO);
    }
}

/* ---------------------------------------------------------------- nested */

#define OUTER_N 12
#define TASKS_PER_ITEM 3
#define INNER_N 2000
#define DIRECT_N 500

typedef struct nest_ctx {
  nd_pool *p;
  _Atomic uint8_t *inner_hits;  /* OUTER_N * TASKS_PER_ITEM * INNER_N */
  _Atomic uint8_t *direct_hits; /* OUTER_N * DIRECT_N */
  _Atomic int outer_hits[OUTER_N];
} nest_ctx;

typedef struct inner_job {
  nest_ctx *n;
  size_t slot; /* outer * TASKS_PER_ITEM + task */
} inner_job;

typedef struct hit_ctx {
  _Atomic uint8_t *hits;
} hit_ctx;

static int hit_body(void *vctx, size_t lo, size_t hi) {
  hit_ctx *h = vctx;
  for (size_t i = lo; i < hi; i++) atomic_fetch_add_explicit(&h->hits[i], 1, memory_order_relaxed);
  return 0;
}

static int inner_task(void *arg) {
  inner_job *j = arg;
  hit_ctx h = {j->n->inner_hits + j->slot * INNER_N};
  nd_chunking how = g_chunkings[j->slot % N_CHUNKINGS];
  size_t chunk = (j->slot % 3) * 7; /* 0, 7, 14 */
  return nd_parallel_for(j->n->p, 0, INNER_N, how, chunk, hit_body, &h);
}

static int outer_body(void *vctx, size_t lo, size_t hi) {
  nest_ctx *n = vctx;
  for (size_t i = lo; i < hi; i++) {
    atomic_fetch_add(&n->outer_hits[i], 1);
    inner_job jobs[TASKS_PER_ITEM];
    nd_group g;
    nd_group_init(&g, n->p);
    for (size_t t = 0; t < TASKS_PER_ITEM; t++) {
      jobs[t] = (inner_job){n, i * TASKS_PER_ITEM + t};
      nd_spawn(&g, inner_task, &jobs[t]);
    }
    /* A parallel_for directly inside this parallel_for body, while the
     * spawned tasks may be running. */
    hit_ctx h = {n->direct_hits + i * DIRECT_N};
    int rc = nd_parallel_for(n->p, 0, DIRECT_N, g_chunkings[i % N_CHUNKINGS], 1, hit_body, &h);
    int rc2 = nd_group_wait(&g);
    if (rc) return rc;
    if (rc2) return rc2;
  }
  return 0;
}

static int nested_from_task(void *arg) {
  return nd_parallel_for(((nest_ctx *)arg)->p, 0, OUTER_N, ND_DYNAMIC, 1, outer_body, arg);
}

static void check_nested(nest_ctx *n) {
  for (size_t i = 0; i < OUTER_N; i++) assert_int_equal(atomic_load(&n->outer_hits[i]), 1);
  size_t bad = 0;
  for (size_t i = 0; i < OUTER_N * TASKS_PER_ITEM * INNER_N; i++)
    bad += atomic_load(&n->inner_hits[i]) != 1;
  for (size_t i = 0; i < OUTER_N * DIRECT_N; i++) bad += atomic_load(&n->direct_hits[i]) != 1;
  assert_int_equal(bad, 0);
}

static void reset_nested(nest_ctx *n) {
  memset((void *)n->inner_hits, 0, OUTER_N * TASKS_PER_ITEM * INNER_N);
  memset((void *)n->direct_hits, 0, OUTER_N * DIRECT_N);
  for (size_t i = 0; i < OUTER_N; i++) atomic_store(&n->outer_hits[i], 0);
}

static void test_nested(void **state) {
  (void)state;
  nest_ctx *n = calloc(1, sizeof *n);
  assert_non_null(n);
  n->inner_hits = calloc(OUTER_N * TASKS_PER_ITEM * INNER_N, 1);
  n->direct_hits = calloc(OUTER_N * DIRECT_N, 1);
  assert_non_null(n->inner_hits);
  assert_non_null(n->direct_hits);
  for (size_t w = 0; w < N_POOLS; w++) {
    n->p = g_pools[w];
    for (size_t h = 0; h < N_CHUNKINGS; h++) {
      reset_nested(n);
      assert_int_equal(nd_parallel_for(n->p, 0, OUTER_N, g_chunkings[h], 0, outer_body, n), 0);
      check_nested(n);
    }
    reset_nested(n);
    assert_int_equal(nd_pool_run(n->p, nested_from_task, n), 0);
    check_nested(n);
  }
  free((void *)n->inner_hits);
  free((void *)n->direct_hits);
  free(n);
}

/* ------------------------------------------------------------- reduction */

#define RED_N 200003
#define RED_GRAIN 37

typedef struct part {
  double sum;
  uint64_t count;
  uint64_t idx_sum;
} part;

typedef struct red_ctx {
  const double *x;
  size_t begin, grain;
  size_t fail_at; /* SIZE_MAX: none */
  _Atomic int bad;
} red_ctx;

static void red_init(void *ctx, void *partial) {
  (void)ctx;
  memset(partial, 0, sizeof(part));
}

static int red_body(void *vctx, size_t lo, size_t hi, void *partial) {
  red_ctx *c = vctx;
  part *p = partial;
  /* A body call never spans two leaves. */
  if (hi <= lo || (lo - c->begin) / c->grain != (hi - 1 - c->begin) / c->grain)
    atomic_store(&c->bad, 1);
  if (lo <= c->fail_at && c->fail_at < hi) return ND_EIO;
  for (size_t i = lo; i < hi; i++) {
    p->sum += c->x[i];
    p->count++;
    p->idx_sum += i;
  }
  return 0;
}

static void red_combine(void *ctx, void *into, const void *from) {
  (void)ctx;
  part *a = into;
  const part *b = from;
  a->sum += b->sum;
  a->count += b->count;
  a->idx_sum += b->idx_sum;
}

static double *make_data(void) {
  double *x = malloc(RED_N * sizeof *x);
  assert_non_null(x);
  uint64_t s = g_seed;
  for (size_t i = 0; i < RED_N; i++) {
    uint64_t r = splitmix64(&s);
    double m = 1.0 + (double)(r >> 11) / 9007199254740992.0;
    int e = (int)(splitmix64(&s) % 121) - 60; /* magnitudes 2^-60 .. 2^60 */
    x[i] = ((r & 1) ? -1.0 : 1.0) * ldexp(m, e);
  }
  return x;
}

static nd_reduce_desc make_desc(red_ctx *c, size_t grain, nd_chunking how, size_t chunk) {
  nd_reduce_desc d = {.grain = grain, .chunking = how, .chunk = chunk,
                      .partial_size = sizeof(part), .init = red_init, .body = red_body,
                      .combine = red_combine, .ctx = c};
  return d;
}

static void test_reduce_bitwise(void **state) {
  (void)state;
  double *x = make_data();
  /* The data make the order of additions visible: forward and backward
   * naive sums differ, so a schedule-dependent order would show. */
  double fwd = 0, bwd = 0;
  for (size_t i = 0; i < RED_N; i++) fwd += x[i];
  for (size_t i = RED_N; i-- > 0;) bwd += x[i];
  printf("  naive forward %.17g, backward %.17g\n", fwd, bwd);
  assert_memory_not_equal(&fwd, &bwd, sizeof fwd);

  const size_t begins[] = {0, 5};
  const size_t chunks[] = {0, 1, 3, 64, 100000};
  for (size_t b = 0; b < 2; b++) {
    size_t begin = begins[b];
    uint64_t want_idx = 0;
    for (size_t i = begin; i < RED_N; i++) want_idx += i;
    part ref;
    int have_ref = 0;
    for (size_t w = 0; w < N_POOLS; w++)
      for (size_t h = 0; h < N_CHUNKINGS; h++)
        for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
          red_ctx c = {.x = x, .begin = begin, .grain = RED_GRAIN, .fail_at = SIZE_MAX};
          nd_reduce_desc d = make_desc(&c, RED_GRAIN, g_chunkings[h], chunks[k]);
          part got;
          memset(&got, 0xAB, sizeof got);
          assert_int_equal(nd_parallel_reduce(g_pools[w], begin, RED_N, &d, &got), 0);
          assert_int_equal(atomic_load(&c.bad), 0);
          assert_int_equal(got.count, RED_N - begin);
          assert_int_equal(got.idx_sum, want_idx);
          if (!have_ref) {
            ref = got;
            have_ref = 1;
            printf("  begin %zu grain %d: sum %.17g\n", begin, RED_GRAIN, got.sum);
          } else if (memcmp(&ref.sum, &got.sum, sizeof got.sum) != 0) {
            printf("  FAIL: %u workers, %s, chunk %zu: %.17g != %.17g\n", g_worker_counts[w],
                   g_chunking_names[h], chunks[k], got.sum, ref.sum);
          }
          assert_memory_equal(&ref, &got, sizeof got);
        }
  }

  /* Grain 0 means 4096. */
  for (size_t w = 0; w < N_POOLS; w++) {
    red_ctx c0 = {.x = x, .begin = 0, .grain = 4096, .fail_at = SIZE_MAX};
    red_ctx c1 = c0;
    nd_reduce_desc d0 = make_desc(&c0, 0, ND_DYNAMIC, 0);
    nd_reduce_desc d1 = make_desc(&c1, 4096, ND_STATIC, 2);
    part a, b;
    assert_int_equal(nd_parallel_reduce(g_pools[w], 0, RED_N, &d0, &a), 0);
    assert_int_equal(nd_parallel_reduce(g_pools[w], 0, RED_N, &d1, &b), 0);
    assert_memory_equal(&a, &b, sizeof a);
    assert_int_equal(a.count, RED_N);
    assert_int_equal(atomic_load(&c0.bad), 0);
  }
  free(x);
}

typedef struct red_task_arg {
  nd_pool *p;
  const double *x;
  part out;
} red_task_arg;

static int reduce_in_task(void *arg) {
  red_task_arg *a = arg;
  red_ctx c = {.x = a->x, .begin = 0, .grain = RED_GRAIN, .fail_at = SIZE_MAX};
  nd_reduce_desc d = make_desc(&c, RED_GRAIN, ND_GUIDED, 5);
  return nd_parallel_reduce(a->p, 0, RED_N, &d, &a->out);
}

static void test_reduce_in_task(void **state) {
  (void)state;
  double *x = make_data();
  red_ctx c = {.x = x, .begin = 0, .grain = RED_GRAIN, .fail_at = SIZE_MAX};
  nd_reduce_desc d = make_desc(&c, RED_GRAIN, ND_STATIC, 0);
  part ref;
  assert_int_equal(nd_parallel_reduce(g_pools[0], 0, RED_N, &d, &ref), 0);
  for (size_t w = 0; w < N_POOLS; w++) {
    red_task_arg a = {g_pools[w], x, {0, 0, 0}};
    assert_int_equal(nd_pool_run(g_pools[w], reduce_in_task, &a), 0);
    assert_memory_equal(&a.out, &ref, sizeof ref);
  }
  free(x);
}

static void test_reduce_empty_and_errors(void **state) {
  (void)state;
  double *x = make_data();
  for (size_t w = 0; w < N_POOLS; w++) {
    red_ctx c = {.x = x, .begin = 7, .grain = RED_GRAIN, .fail_at = SIZE_MAX};
    nd_reduce_desc d = make_desc(&c, RED_GRAIN, ND_DYNAMIC, 0);
    part got, zero;
    memset(&zero, 0, sizeof zero);
    memset(&got, 0xAB, sizeof got);
    assert_int_equal(nd_parallel_reduce(g_pools[w], 7, 7, &d, &got), 0);
    assert_memory_equal(&got, &zero, sizeof got); /* the identity */

    for (size_t h = 0; h < N_CHUNKINGS; h++) {
      red_ctx ce = {.x = x, .begin = 0, .grain = RED_GRAIN, .fail_at = 1000};
      nd_reduce_desc de = make_desc(&ce, RED_GRAIN, g_chunkings[h], 1);
      assert_int_equal(nd_parallel_reduce(g_pools[w], 0, RED_N, &de, &got), ND_EIO);
    }
    nd_reduce_desc bad = d;
    bad.body = NULL;
    assert_int_equal(nd_parallel_reduce(g_pools[w], 0, 100, &bad, &got), ND_EINVAL);
    bad = d;
    bad.chunking = (nd_chunking)42;
    assert_int_equal(nd_parallel_reduce(g_pools[w], 0, 100, &bad, &got), ND_EINVAL);
  }
  free(x);
}

int main(void) {
  g_seed = nd_test_seed("test_runtime_pfor", 0x5eed0003u);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_coverage),
      cmocka_unit_test(test_empty_and_invalid),
      cmocka_unit_test(test_global_pool_for),
      cmocka_unit_test(test_body_error),
      cmocka_unit_test(test_nested),
      cmocka_unit_test(test_reduce_bitwise),
      cmocka_unit_test(test_reduce_in_task),
      cmocka_unit_test(test_reduce_empty_and_errors),
  };
  return cmocka_run_group_tests(tests, open_pools, close_pools);
}
