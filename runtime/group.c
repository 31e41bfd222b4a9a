/* Fork-join groups: nd_spawn, nd_group_wait and nd_pool_run, and the
 * free lists of spawned-task records.
 *
 * How a group counts
 * ------------------
 * The common case is one thread spawning and then running most of its own
 * tasks while it waits, so that case touches no shared counter. The owner
 * (the thread that initialised the group) keeps two plain counters:
 * spawned_ and done_local_ (its own tasks that it also ran). Everything else
 * goes through one atomic word, remote_: +1 when a task completes anywhere
 * except "owner-spawned, owner-run", and -1 when a thread other than the
 * owner spawns into the group (a task spawning a sibling). The group is
 * complete exactly when remote_ == spawned_ - done_local_ (mod 2^32, with
 * fewer than 2^31 tasks outstanding).
 *
 * A waiting owner that runs out of work "arms" the group before sleeping: it
 * subtracts that target from remote_, after which completion means
 * remote_ == 0, and the thread whose increment takes remote_ from -1 to 0
 * knows it finished the group and wakes the owner. It decides whom to wake
 * from fields read before its increment, because once the owner sees the
 * group complete it may return and the group (often on its stack) is gone.
 * The only later use of the group's address is the futex wake syscall, which
 * is harmless on reused memory: futex waiters always re-check their word.
 */
#include <limits.h>

#include "runtime/runtime_int.h"

/* ------------------------------------------------ spawned records */

/* Give n records from the shared list (or a new slab) to the caller's list.
 * Returns the first record and links the rest into *list; NULL on ENOMEM. */
static nd__spawned *take_records(nd_pool *p, nd__spawned **list, size_t *nlist, size_t n) {
  pthread_mutex_lock(&p->slab_lock);
  if (!p->shared_free) {
    nd__spawned *slab = NULL;
    if (p->nslabs == p->slab_cap) {
      size_t cap = p->slab_cap ? 2 * p->slab_cap : 16;
      void **s = nd_realloc(p->slabs, cap * sizeof *s);
      if (s) {
        p->slabs = s;
        p->slab_cap = cap;
      }
    }
    if (p->nslabs < p->slab_cap) slab = nd_malloc(ND__SLAB_TASKS * sizeof *slab);
    if (!slab) {
      pthread_mutex_unlock(&p->slab_lock);
      return NULL;
    }
    p->slabs[p->nslabs++] = slab;
    for (size_t i = 0; i < ND__SLAB_TASKS; i++)
      slab[i].task.next = i + 1 < ND__SLAB_TASKS ? &slab[i + 1].task : (nd__task *)p->shared_free;
    p->shared_free = slab;
  }
  nd__spawned *first = p->shared_free;
  nd__spawned *last = first;
  size_t taken = 1;
  while (taken < n && last->task.next) {
    last = (nd__spawned *)last->task.next;
    taken++;
  }
  p->shared_free = (nd__spawned *)last->task.next;
  pthread_mutex_unlock(&p->slab_lock);
  last->task.next = (nd__task *)*list;
  *list = (nd__spawned *)first->task.next;
  *nlist += taken - 1;
  return first;
}

static inline nd__spawned *record_alloc(nd__worker *w) {
  nd__spawned *t = w->free_list;
  if (t) {
    w->free_list = (nd__spawned *)t->task.next;
    w->nfree--;
    return t;
  }
  return take_records(w->pool, &w->free_list, &w->nfree, ND__SLAB_TASKS);
}

/* Return a slab's worth of records to the pool once a worker (usually a
 * thief) has collected too many. */
static void give_back(nd__worker *w) {
  nd__spawned *first = w->free_list, *last = first;
  for (size_t i = 1; i < ND__SLAB_TASKS; i++) last = (nd__spawned *)last->task.next;
  w->free_list = (nd__spawned *)last->task.next;
  w->nfree -= ND__SLAB_TASKS;
  nd_pool *p = w->pool;
  pthread_mutex_lock(&p->slab_lock);
  last->task.next = (nd__task *)p->shared_free;
  p->shared_free = first;
  pthread_mutex_unlock(&p->slab_lock);
}

static inline void record_free(nd__worker *w, nd__spawned *t) {
  t->task.next = (nd__task *)w->free_list;
  w->free_list = t;
  if (++w->nfree > ND__FREE_HIGH) give_back(w);
}

/* ------------------------------------------------------ completion */

static inline void set_err(nd_group *g, int r) {
  if (r == 0) return;
  int zero = 0;
  atomic_compare_exchange_strong(&g->err_, &zero, r);
}

void nd__group_task_done(nd_group *g, bool remote_spawned) {
  if (!remote_spawned && g->owner_ == nd__thread_token()) {
    g->done_local_++;
    return;
  }
  /* Read everything needed before the increment: see the header comment. */
  nd_pool *p = g->pool_;
  bool worker_owner = g->owner_is_worker_ != 0;
  _Atomic uint32_t *word = &g->remote_;
  uint32_t old = atomic_fetch_add(word, 1);
  if (old == UINT32_MAX) {
    if (worker_owner)
      nd__wake_all(p);
    else
      nd__futex_wake(word, INT_MAX);
  }
}

static nd__task *exec_spawned(nd__worker *w, nd__task *base) {
  nd__spawned *t = (nd__spawned *)base;
  nd_task_fn fn = t->fn;
  void *arg = t->arg;
  nd_group *g = t->group;
  bool remote = t->remote;
  record_free(w, t);
  set_err(g, fn(arg));
  nd__group_task_done(g, remote);
  return NULL;
}

static inline uint32_t group_target(const nd_group *g) {
  return g->spawned_ - g->done_local_ - g->armed_;
}

static bool group_complete(void *arg) {
  nd_group *g = arg;
  return atomic_load_explicit(&g->remote_, memory_order_acquire) == group_target(g);
}

static void group_arm(void *arg) {
  nd_group *g = arg;
  uint32_t need = group_target(g);
  g->armed_ += need;
  atomic_fetch_sub(&g->remote_, need);
}

/* ---------------------------------------------------------- public */

void nd_group_init(nd_group *g, nd_pool *p) {
  if (!p && nd_pool_global(&p) != 0) p = NULL;
  nd__worker *w = nd__current_worker();
  g->pool_ = p;
  g->owner_ = nd__thread_token();
  g->spawned_ = 0;
  g->done_local_ = 0;
  g->armed_ = 0;
  atomic_init(&g->remote_, 0);
  atomic_init(&g->err_, 0);
  g->owner_is_worker_ = w && p && w->pool == p;
}

static void fill(nd__spawned *t, nd_group *g, nd_task_fn fn, void *arg, bool owner) {
  t->task.exec = exec_spawned;
  t->fn = fn;
  t->arg = arg;
  t->group = g;
  t->remote = !owner;
  if (owner)
    g->spawned_++;
  else
    atomic_fetch_sub_explicit(&g->remote_, 1, memory_order_relaxed);
}

/* Through the injection queue (from a thread that is not a worker of g's
 * pool). ND_ENOMEM when no record can be had. */
static int submit_from_outside(nd_group *g, nd_task_fn fn, void *arg, bool owner) {
  nd__spawned *spare = NULL;
  size_t nspare = 0;
  nd__spawned *t = take_records(g->pool_, &spare, &nspare, 1);
  if (!t) return ND_ENOMEM;
  fill(t, g, fn, arg, owner);
  nd__inject(g->pool_, &t->task);
  return 0;
}

void nd_spawn(nd_group *g, nd_task_fn fn, void *arg) {
  nd_pool *p = g->pool_;
  nd__worker *w = nd__current_worker();
  bool owner = g->owner_ == nd__thread_token();
  if (p && w && w->pool == p) {
    nd__deque *d = &w->deque;
    nd__spawned *t = NULL;
    /* A full deque means plenty of queued work: run this one now. */
    int64_t queued = nd__deque_size(d);
    if (queued <= d->mask) t = record_alloc(w);
    if (!t) {
      nd__count(&w->stats.inlined);
      set_err(g, fn(arg));
      return;
    }
    fill(t, g, fn, arg, owner);
    if (!nd__deque_push(d, t)) { /* cannot happen: only we push, top only grows */
      nd__inject(p, &t->task);
      return;
    }
    nd__notify_after_push(w, queued == 0);
    return;
  }
  if (!p || submit_from_outside(g, fn, arg, owner) != 0)
    set_err(g, fn(arg)); /* no pool, or out of memory: run it here */
}

int nd_group_wait(nd_group *g) {
  nd__worker *w = nd__current_worker();
  if (g->pool_ && g->owner_is_worker_ && w && w->pool == g->pool_) {
    while (!group_complete(g)) {
      nd__task *t = nd__find_work(w);
      if (!t) t = nd__idle(w, group_complete, g, group_arm);
      if (t) nd__run_chain(w, t);
    }
  } else if (g->pool_) {
    group_arm(g);
    uint32_t v;
    while ((v = atomic_load(&g->remote_)) != 0) nd__futex_wait(&g->remote_, v);
  }
  return atomic_load(&g->err_);
}

int nd_pool_run(nd_pool *p, nd_task_fn fn, void *arg) {
  if (!p) {
    int rc = nd_pool_global(&p);
    if (rc) return rc;
  }
  nd__worker *w = nd__current_worker();
  if (w && w->pool == p) return fn(arg);
  /* fn may rely on running on a worker of p (nd_parallel_for and graph runs
   * do), so it is never run here: out of memory is an error instead. */
  nd_group g;
  nd_group_init(&g, p);
  if (submit_from_outside(&g, fn, arg, true) != 0) return ND_ENOMEM;
  return nd_group_wait(&g);
}
