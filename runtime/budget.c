/* The memory budget: tasks that declare a cost only start when the sum of
 * the costs of running tasks stays within the pool's budget.
 *
 * How it works
 * ------------
 * mem_in_use is the sum of the costs of admitted, unfinished tasks. A ready
 * task is admitted by a CAS that adds its cost only if the sum stays within
 * the budget. A task that does not fit is parked on a FIFO wait list under
 * mem_lock; whoever releases cost re-scans the list and schedules every
 * parked task that now fits (first fit, in arrival order).
 *
 * The race to avoid: a task fails to fit, and before it is parked the last
 * running task releases and finds the list empty; nobody would ever admit
 * it. So parking increments mem_waiting and then retries admission under
 * the lock, and release decrements mem_in_use and then reads mem_waiting:
 * with sequentially consistent operations at least one of the two sees the
 * other, and whoever does scans the list.
 */
#include "runtime/runtime_int.h"

bool nd__budget_try_acquire(nd_pool *p, size_t cost) {
  if (cost == 0) return true;
  size_t cur = atomic_load(&p->mem_in_use);
  do {
    /* Without a budget the sum is still kept, for mem_in_use and mem_peak. */
    if (p->mem_budget && cost > p->mem_budget - (cur < p->mem_budget ? cur : p->mem_budget))
      return false;
  } while (!atomic_compare_exchange_weak(&p->mem_in_use, &cur, cur + cost));
  size_t now = cur + cost, peak = atomic_load_explicit(&p->mem_peak, memory_order_relaxed);
  while (now > peak && !atomic_compare_exchange_weak(&p->mem_peak, &peak, now)) {
  }
  return true;
}

/* Under mem_lock: schedule every parked task that fits now. */
static void admit_locked(nd__worker *w) {
  nd_pool *p = w->pool;
  nd__task *prev = NULL, *t = p->mem_wait_head;
  while (t) {
    nd__task *next = t->next;
    if (nd__budget_try_acquire(p, ((nd__costed *)t)->cost)) {
      if (prev)
        prev->next = next;
      else
        p->mem_wait_head = next;
      if (p->mem_wait_tail == t) p->mem_wait_tail = prev;
      atomic_fetch_sub(&p->mem_waiting, 1);
      nd__schedule(w, t);
    } else {
      prev = t;
    }
    t = next;
  }
}

void nd__budget_park(nd__worker *w, nd__costed *c) {
  nd_pool *p = w->pool;
  pthread_mutex_lock(&p->mem_lock);
  c->task.next = NULL;
  if (p->mem_wait_tail)
    p->mem_wait_tail->next = &c->task;
  else
    p->mem_wait_head = &c->task;
  p->mem_wait_tail = &c->task;
  atomic_fetch_add(&p->mem_waiting, 1);
  admit_locked(w);
  pthread_mutex_unlock(&p->mem_lock);
}

void nd__budget_release(nd__worker *w, size_t cost) {
  nd_pool *p = w->pool;
  if (cost == 0) return;
  atomic_fetch_sub(&p->mem_in_use, cost);
  if (atomic_load(&p->mem_waiting) == 0) return;
  pthread_mutex_lock(&p->mem_lock);
  admit_locked(w);
  pthread_mutex_unlock(&p->mem_lock);
}
