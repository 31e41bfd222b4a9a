/* Tests of the bounded Chase-Lev deque (runtime/deque.h).
 *
 * Single-threaded: LIFO pop, FIFO steal, capacity and wrap-around, init
 * errors. Under contention: one owner pushes and pops while 1-3 thieves
 * steal; every item (index + 1, never NULL) must be taken exactly once,
 * counted in per-item atomic counters. Three phases per thief count:
 *  - mixed: random push bursts and pops;
 *  - pop-heavy: the owner keeps the deque at 0-2 items, so most pops race
 *    the thieves for the last item;
 *  - full: a small ring; thieves are parked, the owner fills it until push
 *    fails exactly at capacity, then thieves resume while the owner keeps
 *    pushing into a nearly full ring (failed pushes are retried, never lost).
 * The owner's pattern is seeded (printed; NIDAG_TEST_SEED overrides).
 */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "runtime/deque.h"
#include "tests/testutil.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define ND_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define ND_TEST_SANITIZED 1
#endif
#endif
#ifndef ND_TEST_SANITIZED
#define ND_TEST_SANITIZED 0
#endif

/* Items per phase per thief count: 3 thief counts x (mixed + pop-heavy +
 * full) = 18M items, each pushed once and taken once, in release builds. */
#if ND_TEST_SANITIZED
#define ITEMS_PER_PHASE 500000u
#else
#define ITEMS_PER_PHASE 2000000u
#endif
#define MAX_THIEVES 3
#define BIG_CAPACITY 1024u
#define SMALL_CAPACITY 64u
#define MAX_BURST 96u /* > SMALL_CAPACITY so bursts also hit a full ring */

static uint64_t g_seed;


static void *item_of(size_t i) { return (void *)(uintptr_t)(i + 1); }

/* ------------------------------------------------------- single thread */

static void test_init_errors(void **state) {
  (void)state;
  const size_t bad[] = {0, 1, 3, 6, 100, 1023, 1025};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    nd__deque d;
    assert_int_equal(nd__deque_init(&d, bad[i]), ND_EINVAL);
  }
  const size_t good[] = {2, 4, 1024};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    nd__deque d;
    assert_int_equal(nd__deque_init(&d, good[i]), 0);
    assert_int_equal(nd__deque_size(&d), 0);
    assert_null(nd__deque_pop(&d));
    nd__deque_destroy(&d);
    assert_null(d.slots);
  }
}

static void test_lifo_pop(void **state) {
  (void)state;
  nd__deque d;
  assert_int_equal(nd__deque_init(&d, 16), 0);
  for (size_t i = 0; i < 10; i++) assert_true(nd__deque_push(&d, item_of(i)));
  assert_int_equal(nd__deque_size(&d), 10);
  for (size_t i = 10; i-- > 0;) assert_ptr_equal(nd__deque_pop(&d), item_of(i));
  assert_null(nd__deque_pop(&d));
  assert_null(nd__deque_pop(&d)); /* empty pop leaves the deque usable */
  assert_true(nd__deque_push(&d, item_of(42)));
  assert_ptr_equal(nd__deque_pop(&d), item_of(42));
  nd__deque_destroy(&d);
}

static void test_fifo_steal(void **state) {
  (void)state;
  nd__deque d;
  void *out = NULL;
  assert_int_equal(nd__deque_init(&d, 16), 0);
  assert_int_equal(nd__deque_steal(&d, &out), ND__STEAL_EMPTY);
  for (size_t i = 0; i < 10; i++) assert_true(nd__deque_push(&d, item_of(i)));
  for (size_t i = 0; i < 10; i++) {
    assert_int_equal(nd__deque_steal(&d, &out), ND__STEAL_OK);
    assert_ptr_equal(out, item_of(i));
  }
  assert_int_equal(nd__deque_steal(&d, &out), ND__STEAL_EMPTY);
  assert_null(nd__deque_pop(&d));
  /* Both ends: steal takes the oldest, pop the newest. */
  for (size_t i = 0; i < 4; i++) assert_true(nd__deque_push(&d, item_of(i)));
  assert_int_equal(nd__deque_steal(&d, &out), ND__STEAL_OK);
  assert_ptr_equal(out, item_of(0));
  assert_ptr_equal(nd__deque_pop(&d), item_of(3));
  assert_int_equal(nd__deque_steal(&d, &out), ND__STEAL_OK);
  assert_ptr_equal(out, item_of(1));
  assert_ptr_equal(nd__deque_pop(&d), item_of(2)); /* the last-item path */
  assert_null(nd__deque_pop(&d));
  assert_int_equal(nd__deque_steal(&d, &out), ND__STEAL_EMPTY);
  nd__deque_destroy(&d);
}

static void test_capacity(void **state) {
  (void)state;
  const size_t cap = 8;
  nd__deque d;
  void *out = NULL;
  assert_int_equal(nd__deque_init(&d, cap), 0);
  for (size_t i = 0; i < cap; i++) assert_true(nd__deque_push(&d, item_of(i)));
  assert_false(nd__deque_push(&d, item_of(99)));
  assert_false(nd__deque_push(&d, item_of(99)));
  assert_int_equal(nd__deque_size(&d), (int64_t)cap);
  /* A full ring still holds exactly the pushed items, in order. */
  assert_int_equal(nd__deque_steal(&d, &out), ND__STEAL_OK);
  assert_ptr_equal(out, item_of(0));
  assert_true(nd__deque_push(&d, item_of(cap))); /* room for exactly one */
  assert_false(nd__deque_push(&d, item_of(99)));
  assert_ptr_equal(nd__deque_pop(&d), item_of(cap));
  assert_ptr_equal(nd__deque_pop(&d), item_of(cap - 1));
  for (size_t i = 1; i < cap - 1; i++) {
    assert_int_equal(nd__deque_steal(&d, &out), ND__STEAL_OK);
    assert_ptr_equal(out, item_of(i));
  }
  assert_int_equal(nd__deque_steal(&d, &out), ND__STEAL_EMPTY);

  /* Wrap around the ring many times, full each time: FIFO through steal. */
  size_t next_in = 1000, next_out = 1000;
  for (int round = 0; round < 100; round++) {
    while (nd__deque_push(&d, item_of(next_in))) next_in++;
    assert_int_equal(next_in - next_out, cap);
    for (int k = 0; k < 3 + round % 5; k++) {
      assert_int_equal(nd__deque_steal(&d, &out), ND__STEAL_OK);
      assert_ptr_equal(out, item_of(next_out));
      next_out++;
    }
  }
  while (nd__deque_steal(&d, &out) == ND__STEAL_OK) {
    assert_ptr_equal(out, item_of(next_out));
    next_out++;
  }
  assert_int_equal(next_out, next_in);
  nd__deque_destroy(&d);
}

/* ---------------------------------------------------------- contention */

enum phase { PHASE_MIXED, PHASE_POP_HEAVY, PHASE_FULL };

typedef struct shared {
  nd__deque dq;
  size_t n;
  _Atomic uint32_t *taken; /* per item */
  _Atomic int done;
  _Atomic int pause;  /* thieves park while set */
  _Atomic int parked; /* thieves currently parked */
  _Atomic int bad_item;
  _Atomic uint64_t stolen;
  _Atomic uint64_t lost_races;
} shared;

static void take(shared *s, void *item) {
  uintptr_t v = (uintptr_t)item;
  if (v == 0 || v > s->n) {
    atomic_store(&s->bad_item, 1);
    return;
  }
  atomic_fetch_add_explicit(&s->taken[v - 1], 1, memory_order_relaxed);
}

static void *thief_main(void *arg) {
  shared *s = arg;
  uint64_t stolen = 0, lost = 0;
  while (!atomic_load_explicit(&s->done, memory_order_acquire)) {
    if (atomic_load_explicit(&s->pause, memory_order_acquire)) {
      atomic_fetch_add(&s->parked, 1);
      while (atomic_load_explicit(&s->pause, memory_order_acquire) &&
             !atomic_load_explicit(&s->done, memory_order_acquire))
        sched_yield();
      atomic_fetch_sub(&s->parked, 1);
      continue;
    }
    void *out = NULL;
    nd__steal_result r = nd__deque_steal(&s->dq, &out);
    if (r == ND__STEAL_OK) {
      take(s, out);
      stolen++;
    } else if (r == ND__STEAL_LOST) {
      lost++;
    } else {
      sched_yield(); /* 2 cores, up to 4 threads: let the owner run */
    }
  }
  atomic_fetch_add(&s->stolen, stolen);
  atomic_fetch_add(&s->lost_races, lost);
  return NULL;
}

typedef struct owner_result {
  uint64_t popped, push_full, full_checks_failed, full_rounds;
} owner_result;

/* Push item i, popping (and taking) one item whenever the ring is full. */
static void push_or_make_room(shared *s, size_t i, owner_result *res) {
  while (!nd__deque_push(&s->dq, item_of(i))) {
    res->push_full++;
    void *it = nd__deque_pop(&s->dq);
    if (it) {
      take(s, it);
      res->popped++;
    }
  }
}

static void owner_run(shared *s, enum phase ph, int nthieves, uint64_t *rng,
                      owner_result *res) {
  size_t i = 0;
  while (i < s->n) {
    if (ph == PHASE_MIXED) {
      size_t burst = 1 + (size_t)(splitmix64(rng) % MAX_BURST);
      for (size_t k = 0; k < burst && i < s->n; k++) push_or_make_room(s, i++, res);
      size_t pops = (size_t)(splitmix64(rng) % (burst + 1));
      for (size_t k = 0; k < pops; k++) {
        void *it = nd__deque_pop(&s->dq);
        if (!it) break;
        take(s, it);
        res->popped++;
      }
    } else if (ph == PHASE_POP_HEAVY) {
      uint64_t r = splitmix64(rng);
      size_t burst = 1 + (size_t)(r & 1); /* 1 or 2 items, then pop them */
      for (size_t k = 0; k < burst && i < s->n; k++) push_or_make_room(s, i++, res);
      for (size_t k = 0; k < burst + ((r >> 1) & 1); k++) {
        void *it = nd__deque_pop(&s->dq);
        if (it) {
          take(s, it);
          res->popped++;
        }
      }
    } else { /* PHASE_FULL */
      if ((i / SMALL_CAPACITY) % 64 == 0 && nthieves > 0) {
        /* Park the thieves, then fill the ring: push must fail exactly at
         * capacity. */
        atomic_store(&s->pause, 1);
        while (atomic_load(&s->parked) != nthieves) sched_yield();
        int64_t before = nd__deque_size(&s->dq);
        int64_t pushed = 0;
        while (i < s->n && nd__deque_push(&s->dq, item_of(i))) {
          i++;
          pushed++;
        }
        if (i < s->n) {
          res->full_rounds++;
          if (before + pushed != (int64_t)SMALL_CAPACITY ||
              nd__deque_size(&s->dq) != (int64_t)SMALL_CAPACITY ||
              nd__deque_push(&s->dq, item_of(i)))
            res->full_checks_failed++;
        }
        atomic_store(&s->pause, 0);
      }
      /* Keep the ring near full while thieves drain it. */
      for (size_t k = 0; k < SMALL_CAPACITY && i < s->n; k++) {
        if (nd__deque_push(&s->dq, item_of(i))) {
          i++;
        } else {
          res->push_full++;
          if (splitmix64(rng) & 1) {
            void *it = nd__deque_pop(&s->dq);
            if (it) {
              take(s, it);
              res->popped++;
            }
          } else {
            sched_yield();
          }
        }
      }
    }
  }
  /* Drain: once nothing more is pushed, a NULL pop means empty. */
  for (void *it; (it = nd__deque_pop(&s->dq)) != NULL;) {
    take(s, it);
    res->popped++;
  }
}

static void run_contention(enum phase ph, int nthieves) {
  static const char *names[] = {"mixed", "pop-heavy", "full"};
  shared *s = calloc(1, sizeof *s);
  assert_non_null(s);
  size_t cap = ph == PHASE_FULL ? SMALL_CAPACITY : BIG_CAPACITY;
  assert_int_equal(nd__deque_init(&s->dq, cap), 0);
  s->n = ITEMS_PER_PHASE;
  s->taken = calloc(s->n, sizeof *s->taken);
  assert_non_null(s->taken);
  uint64_t rng = g_seed ^ ((uint64_t)ph << 32) ^ (uint64_t)nthieves;

  pthread_t th[MAX_THIEVES];
  for (int t = 0; t < nthieves; t++)
    assert_int_equal(pthread_create(&th[t], NULL, thief_main, s), 0);
  owner_result res = {0};
  owner_run(s, ph, nthieves, &rng, &res);
  atomic_store_explicit(&s->done, 1, memory_order_release);
  for (int t = 0; t < nthieves; t++) assert_int_equal(pthread_join(th[t], NULL), 0);

  /* A thief may still have been mid-steal when the owner saw the deque
   * empty; after the joins every steal has been counted. */
  void *out = NULL;
  assert_int_equal(nd__deque_steal(&s->dq, &out), ND__STEAL_EMPTY);
  assert_null(nd__deque_pop(&s->dq));
  assert_int_equal(atomic_load(&s->bad_item), 0);
  size_t missing = 0, dup = 0, first_bad = SIZE_MAX;
  for (size_t i = 0; i < s->n; i++) {
    uint32_t c = atomic_load_explicit(&s->taken[i], memory_order_relaxed);
    if (c != 1 && first_bad == SIZE_MAX) first_bad = i;
    if (c == 0) missing++;
    if (c > 1) dup++;
  }
  uint64_t stolen = atomic_load(&s->stolen);
  printf("  %-9s thieves=%d items=%zu popped=%llu stolen=%llu lost-races=%llu "
         "push-full=%llu full-rounds=%llu\n",
         names[ph], nthieves, s->n, (unsigned long long)res.popped,
         (unsigned long long)stolen, (unsigned long long)atomic_load(&s->lost_races),
         (unsigned long long)res.push_full, (unsigned long long)res.full_rounds);
  if (missing || dup)
    printf("  FAIL: %zu items lost, %zu taken more than once (first bad item %zu)\n",
           missing, dup, first_bad);
  assert_int_equal(missing, 0);
  assert_int_equal(dup, 0);
  assert_int_equal(res.popped + stolen, s->n);
  if (ph == PHASE_FULL) {
    assert_true(res.full_rounds > 0);
    assert_int_equal(res.full_checks_failed, 0);
    assert_true(res.push_full > 0);
  }
  nd__deque_destroy(&s->dq);
  free(s->taken);
  free(s);
}

static void test_contention_mixed(void **state) {
  (void)state;
  for (int t = 1; t <= MAX_THIEVES; t++) run_contention(PHASE_MIXED, t);
}

static void test_contention_pop_heavy(void **state) {
  (void)state;
  for (int t = 1; t <= MAX_THIEVES; t++) run_contention(PHASE_POP_HEAVY, t);
}

static void test_contention_full(void **state) {
  (void)state;
  for (int t = 1; t <= MAX_THIEVES; t++) run_contention(PHASE_FULL, t);
}

int main(void) {
  g_seed = nd_test_seed("test_runtime_deque", 0x5eed0001u);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init_errors),      cmocka_unit_test(test_lifo_pop),
      cmocka_unit_test(test_fifo_steal),       cmocka_unit_test(test_capacity),
      cmocka_unit_test(test_contention_mixed), cmocka_unit_test(test_contention_pop_heavy),
      cmocka_unit_test(test_contention_full),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
